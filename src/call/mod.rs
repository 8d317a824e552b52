//! Calls: ids, the state machine, port pairs (pure), and the registry.

pub mod handle;
pub mod id;
pub mod ports;
pub mod session_timer;
pub mod state;

pub use handle::{Call, Control, Script};
pub use id::CallId;
