//! The media thread: every call's RTP, both ways, from one plain OS thread.
//!
//! One socket per call (the daemon latches each call to its source), one
//! 20 ms clock for all of them: each tick sends every connected call's
//! packet (non-blocking), then drains every call's socket with `recvmmsg`.
//! No tokio, no allocation per packet; arrival times are the kernel's.
//!
//! Outbound packets carry a marker (packet index, send time) in their first
//! µ-law codes, read back from the WebSocket for RTP→WS latency and loss.
//! Inbound packets are checked by sequence number (loss, lateness,
//! duplicates, send-interval deviation) and for the marker the WebSocket
//! client put in its audio (WS→RTP latency).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::marker::{Marker, Tone, FRAME, MARKER_LEN};
use crate::procfs;
use crate::rtpsock::{self, Datagram, Receiver};
use crate::shared::Shared;
use crate::stats::{Arrival, Histogram, SeqTracker, Summary};

const HEADER: usize = 12;
const PT_PCMU: u8 = 0;
pub const TICK: Duration = Duration::from_millis(20);
/// Late by more than this many ticks, the thread skips ticks instead of
/// bursting to catch up (a phone that falls behind does not send seconds of
/// audio at once).
const MAX_BEHIND: u64 = 5;

/// One call's RTP as the media thread sees it.
struct Stream {
    sock: UdpSocket,
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    sent: u64,
    send_errors: u64,
    inbound: Inbound,
}

/// What one call's daemon packets looked like.
#[derive(Default)]
struct Inbound {
    /// The daemon's packets by RTP sequence number.
    rx: SeqTracker,
    /// Kernel arrival (µs) of the highest sequence number so far.
    last_arrival_us: Option<u64>,
    /// The WebSocket client's frames by marker index.
    echoes: SeqTracker,
    silent: u64,
    silent_steady: u64,
    unmarked: u64,
    foreign: u64,
    other_pt: u64,
}

/// Totals over all calls, for the report.
#[derive(Debug, Default, Serialize)]
pub struct MediaReport {
    /// RTP packets the bench sent (all carry a marker).
    pub sent: u64,
    pub send_errors: u64,
    /// Daemon → bench, by RTP sequence number.
    pub received: u64,
    pub expected: u64,
    pub lost: u64,
    pub late: u64,
    pub duplicated: u64,
    /// Daemon packets of pure silence (nothing queued from the client at that tick).
    pub silent: u64,
    /// Of those, in the steady window.
    pub silent_steady: u64,
    /// Daemon packets neither silent nor carrying a valid marker (corrupted audio).
    pub unmarked: u64,
    /// From a port other than the call's daemon port.
    pub foreign: u64,
    pub other_payload_type: u64,
    /// WebSocket → RTP: client frames seen in the daemon's RTP (by marker index).
    pub echoes_received: u64,
    pub echoes_lost: u64,
    pub echoes_late: u64,
    pub echoes_duplicated: u64,
    /// How late the media thread's ticks fired (the bench's own health).
    pub tick_lag: Summary,
    pub ticks: u64,
    /// Ticks dropped because the thread was more than `MAX_BEHIND` late: the
    /// bench could not keep 50 packets a second per call.
    pub ticks_skipped: u64,
}

pub struct MediaThread {
    handle: JoinHandle<MediaReport>,
    tid: Arc<AtomicI64>,
}

impl MediaThread {
    /// Starts the thread over `sockets` (call i uses `sockets[i]`).
    pub fn start(sockets: Vec<UdpSocket>, shared: Arc<Shared>) -> MediaThread {
        let tid = Arc::new(AtomicI64::new(0));
        let tid2 = tid.clone();
        let handle = std::thread::Builder::new()
            .name("bench-media".into())
            .spawn(move || {
                tid2.store(procfs::thread_id(), Relaxed);
                run(sockets, &shared)
            })
            .expect("spawn media thread");
        MediaThread { handle, tid }
    }

    /// /proc path of the thread's CPU times.
    pub fn stat_path(&self) -> String {
        format!("/proc/self/task/{}/stat", self.tid.load(Relaxed))
    }

    /// Waits for the thread after `shared.quit` was set.
    pub fn join(self) -> MediaReport {
        self.handle.join().expect("media thread panicked")
    }
}

fn run(sockets: Vec<UdpSocket>, shared: &Shared) -> MediaReport {
    let seed = shared.epoch_ns;
    let mut streams: Vec<Stream> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, sock)| {
            let r = (seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).rotate_left(17);
            Stream {
                sock,
                ssrc: r as u32,
                seq: (r >> 32) as u16,
                timestamp: (r >> 16) as u32,
                sent: 0,
                send_errors: 0,
                inbound: Inbound::default(),
            }
        })
        .collect();
    let tone = Tone::new();
    let mut packet = [0u8; HEADER + FRAME];
    packet[HEADER..].copy_from_slice(&tone.ulaw);
    let mut receiver = Receiver::new();
    let tick_lag = Histogram::default();
    let start = Instant::now();
    let mut ticks: u64 = 0;
    let mut skipped: u64 = 0;
    while !shared.quit.load(Relaxed) {
        let mut due = start + TICK * (ticks + skipped) as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else {
            let behind = (now - due).as_micros() as u64 / TICK.as_micros() as u64;
            if behind > MAX_BEHIND {
                skipped += behind;
                due += TICK * behind as u32;
            }
        }
        tick_lag.record_if(
            &shared.recording,
            Instant::now().saturating_duration_since(due).as_micros() as u64,
        );
        ticks += 1;
        let sending = shared.sending.load(Relaxed);
        for (i, s) in streams.iter_mut().enumerate() {
            let port = shared.peer_port[i].load(Relaxed);
            if port == 0 {
                continue;
            }
            if sending && !shared.ended_by_daemon[i].load(Relaxed) {
                s.send(&mut packet, port, shared);
            }
            s.receive(&mut receiver, port, shared);
        }
    }
    // Whatever arrived since the last tick.
    for (i, s) in streams.iter_mut().enumerate() {
        let port = shared.peer_port[i].load(Relaxed);
        if port != 0 {
            s.receive(&mut receiver, port, shared);
        }
    }
    let mut r = MediaReport {
        tick_lag: tick_lag.summary(),
        ticks,
        ticks_skipped: skipped,
        ..MediaReport::default()
    };
    for st in &streams {
        r.sent += st.sent;
        r.send_errors += st.send_errors;
        let s = &st.inbound;
        r.received += s.rx.received;
        r.expected += s.rx.expected();
        r.lost += s.rx.lost();
        r.late += s.rx.late;
        r.duplicated += s.rx.duplicated;
        r.silent += s.silent;
        r.silent_steady += s.silent_steady;
        r.unmarked += s.unmarked;
        r.foreign += s.foreign;
        r.other_payload_type += s.other_pt;
        r.echoes_received += s.echoes.received;
        r.echoes_lost += s.echoes.lost();
        r.echoes_late += s.echoes.late;
        r.echoes_duplicated += s.echoes.duplicated;
    }
    r
}

impl Stream {
    fn send(&mut self, packet: &mut [u8; HEADER + FRAME], port: u16, shared: &Shared) {
        packet[0] = 0x80;
        packet[1] = (u8::from(self.sent == 0) << 7) | PT_PCMU;
        packet[2..4].copy_from_slice(&self.seq.to_be_bytes());
        packet[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        packet[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        let marker = Marker {
            index: self.sent as u32,
            sent_us: shared.now_us(),
        };
        packet[HEADER..HEADER + MARKER_LEN].copy_from_slice(&marker.to_codes());
        let to = SocketAddr::from(([127, 0, 0, 1], port));
        match self.sock.send_to(packet, to) {
            Ok(_) => self.sent += 1,
            Err(_) => self.send_errors += 1,
        }
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(FRAME as u32);
    }

    fn receive(&mut self, receiver: &mut Receiver, port: u16, shared: &Shared) {
        let inbound = &mut self.inbound;
        receiver.drain(&self.sock, |d| inbound.on_datagram(d, port, shared));
    }
}

impl Inbound {
    fn on_datagram(&mut self, d: Datagram<'_>, port: u16, shared: &Shared) {
        if d.from_port != port {
            self.foreign += 1;
            return;
        }
        let p = d.data;
        if p.len() < HEADER || p[0] >> 6 != 2 {
            self.foreign += 1;
            return;
        }
        if p[1] & 0x7F != PT_PCMU {
            self.other_pt += 1;
            return;
        }
        let arrival_us = match d.stamp {
            Some((sec, nsec)) => shared.kernel_us(sec, nsec),
            None => shared.now_us(),
        };
        let seq = u16::from_be_bytes([p[2], p[3]]);
        let (_, arrival) = self.rx.observe(u64::from(seq), 16);
        match arrival {
            Arrival::Duplicate => return,
            Arrival::Late => {}
            Arrival::InOrder { gap } => {
                if let (0, Some(prev)) = (gap, self.last_arrival_us) {
                    let interval = arrival_us as i64 - prev as i64;
                    shared
                        .interval_dev
                        .record_if(&shared.recording, (interval - 20_000).unsigned_abs());
                }
                self.last_arrival_us = Some(arrival_us);
            }
        }
        let payload = &p[HEADER..];
        match Marker::from_codes(payload) {
            Some(m) => {
                shared
                    .ws_to_rtp
                    .record_if(&shared.recording, arrival_us.saturating_sub(m.sent_us));
                self.echoes.observe(u64::from(m.index), 28);
                shared.last_echo_us.store(arrival_us, Relaxed);
            }
            None if payload.iter().all(|&b| b == 0xFF) => {
                self.silent += 1;
                if shared.recording() {
                    self.silent_steady += 1;
                }
            }
            None => self.unmarked += 1,
        }
    }
}

/// Binds `n` RTP sockets; returns them and their ports (for the SDP offers).
pub fn bind_sockets(n: usize) -> std::io::Result<(Vec<UdpSocket>, Vec<u16>)> {
    let mut socks = Vec::with_capacity(n);
    let mut ports = Vec::with_capacity(n);
    for _ in 0..n {
        let s = rtpsock::bind()?;
        ports.push(s.local_addr()?.port());
        socks.push(s);
    }
    Ok((socks, ports))
}
