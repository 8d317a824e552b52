//! siprelay: bridges SIP calls and their G.711 RTP audio to WebSocket clients.
//!
//! The pure core (`wire`, `media::{g711, rtp, sdp, playout}`, `call::{state,
//! ports, id}`) knows the protocols and the audio and never touches a socket
//! or the clock. The shells around it (`sip`, `media::{engine, clock}`,
//! `http`) do the IO. See the README's architecture section.

pub mod accounts;
pub mod call;
pub mod client;
pub mod clock_time;
pub mod config;
pub mod daemon;
pub mod devices;
pub mod events;
pub mod http;
pub mod local;
pub mod media;
pub mod metrics;
pub mod prompts;
pub mod record;
pub mod resources;
pub mod sip;

pub mod switchboard;
pub mod wire;
