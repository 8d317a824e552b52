//! Audio: codecs, packets, SDP and the queue a client's audio waits in (pure),
//! plus the per-call media sessions and the shared media clock (IO).

pub mod g711;
pub mod playout;
pub mod rtp;
pub mod sdp;

pub mod clock;
pub mod session;
