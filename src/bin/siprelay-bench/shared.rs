//! State shared by the bench's parts: the SIP actor, the media thread, the
//! WebSocket clients and the controller. Per-call entries are indexed by
//! call number (0..N); everything is atomics, nothing is locked per packet.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::stats::Histogram;

pub struct Shared {
    /// Wall-clock time base of the markers (ns since the Unix epoch). Wall
    /// clock, not monotonic, because kernel receive timestamps are.
    pub epoch_ns: u64,
    /// Set during the steady window: latency and jitter are recorded then.
    pub recording: AtomicBool,
    /// Cleared at hang-up: the media thread stops sending (receiving goes on).
    pub sending: AtomicBool,
    /// Tells the media thread to finish.
    pub quit: AtomicBool,
    /// Per call: the daemon's RTP port from its 200 OK (0 until then).
    pub peer_port: Box<[AtomicU16]>,
    /// Per call: the daemon ended it (BYE from the daemon): stop its RTP.
    pub ended_by_daemon: Box<[AtomicBool]>,
    /// INVITE sent → 200 OK received.
    pub setup_latency: Histogram,
    /// BYE sent → its 200 OK received.
    pub bye_latency: Histogram,
    /// Marker send time (bench RTP) → frame read from the WebSocket.
    pub rtp_to_ws: Histogram,
    /// Marker send time (WebSocket) → daemon's RTP packet's kernel receive time.
    pub ws_to_rtp: Histogram,
    /// |inter-arrival − 20 ms| of the daemon's consecutive RTP packets.
    pub interval_dev: Histogram,
    /// `BYE:{call_id}` events the WebSocket clients have read.
    pub ws_byes: AtomicU64,
    /// `CALL_ANS:{call_id}` events the WebSocket clients have read.
    pub ws_answers: AtomicU64,
    /// When (µs) a client frame last came out of the daemon in RTP.
    pub last_echo_us: AtomicU64,
}

impl Shared {
    pub fn new(calls: usize) -> Shared {
        Shared {
            epoch_ns: wall_ns(),
            recording: AtomicBool::new(false),
            sending: AtomicBool::new(true),
            quit: AtomicBool::new(false),
            peer_port: (0..calls).map(|_| AtomicU16::new(0)).collect(),
            ended_by_daemon: (0..calls).map(|_| AtomicBool::new(false)).collect(),
            setup_latency: Histogram::default(),
            bye_latency: Histogram::default(),
            rtp_to_ws: Histogram::default(),
            ws_to_rtp: Histogram::default(),
            interval_dev: Histogram::default(),
            ws_byes: AtomicU64::new(0),
            ws_answers: AtomicU64::new(0),
            last_echo_us: AtomicU64::new(0),
        }
    }

    /// µs since the bench started, by the wall clock.
    pub fn now_us(&self) -> u64 {
        wall_ns().saturating_sub(self.epoch_ns) / 1000
    }

    /// A kernel (wall-clock) timestamp as µs since the bench started.
    pub fn kernel_us(&self, sec: i64, nsec: i64) -> u64 {
        let ns = sec as u64 * 1_000_000_000 + nsec as u64;
        ns.saturating_sub(self.epoch_ns) / 1000
    }

    pub fn recording(&self) -> bool {
        self.recording.load(Relaxed)
    }
}

pub fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
