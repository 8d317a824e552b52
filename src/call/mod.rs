//! Calls: ids, the state machine, port pairs (pure), and the registry.

pub mod id;
pub mod ports;
pub mod state;

pub use id::CallId;
