//! Audio: codecs, packets, SDP, the queues and buffers a call's audio waits
//! in, prompt decoding (pure), plus the per-call media sessions and the
//! shared media clock (IO).

pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod pace;
pub mod playout;
pub mod prompt;
pub mod rtp;
pub mod sdp;
pub mod srtp;
pub mod tap;
pub mod wav;

pub mod clock;
pub mod intake;
pub mod receive;
pub mod session;
pub mod socket;
