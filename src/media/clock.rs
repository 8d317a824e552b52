//! `MediaClock`: the shards that carry every call's RTP, both ways.
//!
//! A timer per call would cost 50 wake-ups a second per call; here each
//! shard (one per core, each on a thread of its own, apart from SIP and
//! HTTP) wakes 200 times a second in all, whatever its number of calls,
//! and sends each call's packet when it is due. The packet is encoded
//! into one reused buffer: no allocation per frame. The
//! same shard task receives its calls' RTP through its intake (one epoll
//! set for all of them), so a call costs no task of its own.
//!
//! Each call has a grid: frame k is due 20 ms × k after its first, so the
//! far end gets 50 packets a second true to wall time. The clock wakes
//! every 5 ms (a slot), and a call's frames go out at an offset of its own
//! from the grid, at most three slots (15 ms) either way, so the stream
//! never drifts from wall time. The offset follows the client:
//! - a talkspurt's first frame (a whole frame of client audio after
//!   silence, a prompt or `CLEAR`) goes out at the next slot, as early as
//!   three slots before its grid point, and the offset becomes that slot's;
//! - while the client speaks, a frame that has not come by its slot is
//!   waited for, up to three slots past the grid point, instead of
//!   sending silence and leaving that frame 20 ms of backlog; the offset
//!   moves to the slot it went out on.
//!
//! So a client sending in real time waits about 5 ms per frame instead of
//! up to 20, and its packets stay evenly spaced once the offset has
//! settled.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::dtmf::DtmfTick;
use super::intake::{intake, IntakeWaker, RtpIntake};
use super::playout::FRAME_SAMPLES;
use super::rtp::{write_header, HEADER_LEN};
use super::session::MediaSession;
use super::tap::{RecordingSink, TappedFrame};

pub const TICK: Duration = Duration::from_millis(20);
/// Slots per frame: the clock wakes every `TICK / SLOTS`.
const SLOTS: u64 = 4;

pub struct MediaClock {
    shards: Vec<Arc<Shard>>,
    next: AtomicUsize,
}

#[derive(Default)]
struct Shard {
    /// Sessions added since the last slot; the shard's task moves them into
    /// its own list, so adding a call never waits for a slot to finish.
    joining: Mutex<Vec<Arc<MediaSession>>>,
}

impl MediaClock {
    /// Starts `shards` shard tasks, running until `shutdown` is cancelled.
    /// Recorded calls' frames go to `recordings`. Fails if a shard cannot
    /// have its epoll set: a daemon without media must not start.
    pub fn start(
        shards: usize,
        recordings: Option<Arc<dyn RecordingSink>>,
        shutdown: CancellationToken,
    ) -> std::io::Result<Arc<MediaClock>> {
        let mut all = Vec::new();
        for i in 0..shards.max(1) {
            let shard = Arc::new(Shard::default());
            spawn_shard_thread(i, shard.clone(), recordings.clone(), shutdown.clone())?;
            all.push(shard);
        }
        Ok(Arc::new(MediaClock {
            shards: all,
            next: AtomicUsize::new(0),
        }))
    }

    /// From the next slot on, `session` sends a frame every 20 ms until stopped.
    pub fn add(&self, session: Arc<MediaSession>) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len();
        self.shards[i]
            .joining
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(session);
    }
}

/// One call's outbound stream as the clock sees it.
struct Stream {
    session: Arc<MediaSession>,
    /// The grid point (a slot, counted from the shard's start) of the next frame.
    grid: u64,
    /// Slots from its grid point at which each frame goes out (-3 to 3).
    offset: i64,
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    first: bool,
    /// Protects each packet when the call's media is SRTP.
    srtp: Option<super::srtp::SrtpContext>,
}

/// Room for the biggest packet a stream sends: a G.711 frame and an SRTP tag.
const PACKET: usize = HEADER_LEN + FRAME_SAMPLES + super::srtp::MAX_TAG;

impl Stream {
    fn new(session: Arc<MediaSession>, now: u64) -> Self {
        // Random starting points (RFC 3550 5.1), derived from the call id's hash.
        let seed = {
            use std::hash::{BuildHasher, RandomState};
            RandomState::new().hash_one(session.call.as_str())
        };
        Stream {
            srtp: session.srtp.as_ref().map(|k| k.sender()),
            session,
            grid: now,
            offset: 0,
            ssrc: seed as u32,
            sequence: (seed >> 32) as u16,
            timestamp: (seed >> 16) as u32,
            first: true,
        }
    }

    /// At slot `now`: sends the call's next frame when it is due (see the
    /// module's doc) and hands it to the recording; false once the call
    /// has stopped.
    fn on_slot(
        &mut self,
        now: u64,
        pcm: &mut [i16; FRAME_SAMPLES],
        packet: &mut [u8; PACKET],
        recorded: &mut Vec<TappedFrame>,
    ) -> bool {
        let s = &*self.session;
        if s.is_stopped() {
            return false;
        }
        let (now_at, grid) = (now as i64, self.grid as i64);
        let reach = SLOTS as i64 - 1;
        let talkspurt = s.talkspurt_waits() && now_at + reach >= grid;
        if !talkspurt {
            if now_at < grid + self.offset {
                return true;
            }
            if s.starved() && now_at < grid + reach {
                return true;
            }
        }
        self.offset = (now_at - grid).clamp(-reach, reach);
        self.grid += SLOTS;
        self.send_frame(pcm, packet, recorded);
        true
    }

    /// Sends the call's next frame and hands it to the recording.
    fn send_frame(
        &mut self,
        pcm: &mut [i16; FRAME_SAMPLES],
        packet: &mut [u8; PACKET],
        recorded: &mut Vec<TappedFrame>,
    ) {
        let s = &*self.session;
        let (peer, prompt_ended, dtmf) = {
            let mut out = s.outbound();
            let dtmf = out.dtmf.next_frame(s.telephone_event.is_some(), pcm);
            let ended = match dtmf {
                DtmfTick::Idle => out.audio.next_frame(pcm),
                _ => None,
            };
            s.note_queue(&out);
            (out.peer, ended, dtmf)
        };
        if let Some(ended) = prompt_ended {
            s.prompt_ended(ended);
        }
        s.tick_device();
        if let Some(tap) = s.recording.get() {
            recorded.push(tap.lock().unwrap_or_else(|e| e.into_inner()).tick(pcm));
        }
        let (header, payload) = packet.split_at_mut(HEADER_LEN);
        let len = match (dtmf, s.telephone_event) {
            (
                DtmfTick::Event {
                    event,
                    first,
                    start_offset,
                },
                Some(pt),
            ) => {
                // All packets of one event carry the timestamp of its start.
                let start = self.timestamp.wrapping_sub(start_offset);
                write_header(
                    header.try_into().unwrap(),
                    first,
                    pt,
                    self.sequence,
                    start,
                    self.ssrc,
                );
                event.write((&mut payload[..4]).try_into().unwrap());
                HEADER_LEN + 4
            }
            _ => {
                write_header(
                    header.try_into().unwrap(),
                    self.first,
                    s.codec.payload_type,
                    self.sequence,
                    self.timestamp,
                    self.ssrc,
                );
                s.codec.law.encode(pcm, payload);
                HEADER_LEN + FRAME_SAMPLES
            }
        };
        let len = match &mut self.srtp {
            Some(srtp) => match srtp.protect(packet, len) {
                Ok(len) => len,
                Err(_) => return,
            },
            None => len,
        };
        match s.rtp.socket.try_send_to(&packet[..len], peer) {
            Ok(_) => s.stats.packets_out.fetch_add(1, Ordering::Relaxed),
            Err(_) => s.stats.send_errors.fetch_add(1, Ordering::Relaxed),
        };
        self.first = false;
        self.sequence = self.sequence.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(FRAME_SAMPLES as u32);
    }
}

/// Runs shard `index` on a thread of its own with a single-threaded
/// runtime: SIP and HTTP work (a flood of requests, thousands of WebSocket
/// clients) runs on the daemon's runtime and can never hold up a slot.
/// Returns once the shard has its epoll set, or the reason it cannot.
fn spawn_shard_thread(
    index: usize,
    shard: Arc<Shard>,
    recordings: Option<Arc<dyn RecordingSink>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name(format!("media-{index}"))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                // The epoll set registers with this thread's reactor.
                let (intake, waker) = match intake() {
                    Ok(pair) => pair,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                run_shard(shard, intake, waker, recordings, shutdown).await;
            });
        })?;
    ready_rx
        .recv()
        .map_err(|_| std::io::Error::other("media thread ended before it started"))?
}

async fn run_shard(
    shard: Arc<Shard>,
    mut intake: RtpIntake,
    waker: IntakeWaker,
    recordings: Option<Arc<dyn RecordingSink>>,
    shutdown: CancellationToken,
) {
    let mut ticker = interval(TICK / SLOTS as u32);
    // A late slot is followed by catch-up slots, so the far end still gets
    // 50 packets a second and RTP timestamps stay true to wall time.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut streams: Vec<Stream> = Vec::new();
    let mut pcm = [0i16; FRAME_SAMPLES];
    let mut packet = [0u8; PACKET];
    let mut recorded = Vec::new();
    // Slots since the shard started.
    let mut now: u64 = 0;
    let shutdown = shutdown.cancelled_owned();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => return,
            _ = ticker.tick() => {}
            ready = waker.readable() => {
                match ready {
                    Ok(guard) => intake.drain(guard),
                    Err(e) => tracing::error!(error = %e, "RTP intake failed"),
                }
                continue;
            }
        }
        if Arc::strong_count(&shard) == 1 {
            // The clock is gone (a daemon dropped without shutting down).
            return;
        }
        join(&shard, &mut streams, &mut intake, &waker, now);
        let before = streams.len();
        streams.retain_mut(|s| s.on_slot(now, &mut pcm, &mut packet, &mut recorded));
        if streams.len() < before {
            intake.remove_stopped(&waker);
        }
        if !recorded.is_empty() {
            let next = Vec::with_capacity(recorded.len());
            let batch = std::mem::replace(&mut recorded, next);
            if let Some(sink) = &recordings {
                sink.submit(batch);
            }
        }
        now += 1;
    }
}

/// Takes in the sessions added since the last tick: sent to from this tick,
/// received from now.
fn join(
    shard: &Shard,
    streams: &mut Vec<Stream>,
    intake: &mut RtpIntake,
    waker: &IntakeWaker,
    now: u64,
) {
    let mut joining = shard.joining.lock().unwrap_or_else(|e| e.into_inner());
    for session in joining.drain(..) {
        if let Err(e) = intake.add(waker, session.clone()) {
            tracing::error!(call = %session.call, error = %e, "cannot receive RTP for the call");
        }
        streams.push(Stream::new(session, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::ports::{PortLease, PortPairAllocator};
    use crate::call::CallId;
    use crate::media::rtp::RtpPacket;
    use crate::media::sdp::Codec;
    use crate::media::session::RtpBinding;
    use crate::media::socket::RtpSocket;
    use std::net::UdpSocket;

    /// A session sending to `far`, and the slots' shared buffers.
    fn stream(far: &UdpSocket) -> Stream {
        let pool = Arc::new(Mutex::new(PortPairAllocator::new(40000, 40003)));
        let binding = RtpBinding {
            socket: RtpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap(),
            lease: PortLease::take(&pool).unwrap(),
            discarded: None,
        };
        let session = MediaSession::new(
            CallId::from("slot-test"),
            binding,
            Codec::PCMU,
            None,
            far.local_addr().unwrap(),
            None,
        );
        Stream::new(session, 0)
    }

    /// Runs slots `slots`, returning those on which a packet went out with
    /// its RTP timestamp and whether it carried the client's tone.
    fn run(
        stream: &mut Stream,
        far: &UdpSocket,
        slots: std::ops::Range<u64>,
    ) -> Vec<(u64, u32, bool)> {
        let mut pcm = [0i16; FRAME_SAMPLES];
        let mut packet = [0u8; PACKET];
        let mut recorded = Vec::new();
        let mut sent = Vec::new();
        let mut buf = [0u8; 2048];
        for now in slots {
            assert!(stream.on_slot(now, &mut pcm, &mut packet, &mut recorded));
            if let Ok(n) = far.recv(&mut buf) {
                let p = RtpPacket::parse(&buf[..n]).unwrap();
                let mut decoded = [0i16; FRAME_SAMPLES];
                Codec::PCMU.law.decode(p.payload, &mut decoded);
                let loud = decoded.iter().any(|s| s.unsigned_abs() > 1000);
                sent.push((now, p.timestamp, loud));
            }
        }
        sent
    }

    fn frame_of(value: i16) -> Vec<u8> {
        std::iter::repeat_n(value.to_le_bytes(), FRAME_SAMPLES)
            .flatten()
            .collect()
    }

    #[test]
    fn the_offset_follows_the_client_and_stays_within_three_slots() {
        let far = UdpSocket::bind("127.0.0.1:0").unwrap();
        // Loopback delivers within the send; the timeout only bounds a
        // slot that sent nothing.
        far.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let mut s = stream(&far);
        let tone = frame_of(8000);
        let mut sent = Vec::new();
        // Silence on the grid: slots 0, 4, 8.
        sent.extend(run(&mut s, &far, 0..10));
        // A talkspurt queued between slots 9 and 10 goes out at 10, two
        // slots before its grid point 12; the next frame, queued in time,
        // at 14.
        s.session.push_pcm(&tone).unwrap();
        sent.extend(run(&mut s, &far, 10..14));
        s.session.push_pcm(&tone).unwrap();
        sent.extend(run(&mut s, &far, 14..15));
        // The next is late: nothing goes out at 18 (no silence); it comes
        // before 19 and goes out then, and the offset moves there.
        sent.extend(run(&mut s, &far, 15..19));
        s.session.push_pcm(&tone).unwrap();
        sent.extend(run(&mut s, &far, 19..23));
        s.session.push_pcm(&tone).unwrap();
        sent.extend(run(&mut s, &far, 23..24));
        // The talkspurt ends: its next frame is waited for until three
        // slots past the grid point (31), then silence follows at 35.
        sent.extend(run(&mut s, &far, 24..36));
        let slots: Vec<(u64, bool)> = sent.iter().map(|p| (p.0, p.2)).collect();
        assert_eq!(
            slots,
            vec![
                (0, false),
                (4, false),
                (8, false),
                (10, true),
                (14, true),
                (19, true),
                (23, true),
                (31, false),
                (35, false)
            ]
        );
        // RTP timestamps stay one frame apart whatever the slot, and frame
        // k never leaves more than three slots from its grid point 4k.
        let stamps: Vec<u32> = sent.iter().map(|p| p.1).collect();
        assert!(stamps.windows(2).all(|w| w[1].wrapping_sub(w[0]) == 160));
        for (k, p) in sent.iter().enumerate() {
            assert!(p.0.abs_diff(4 * k as u64) <= 3, "frame {k} at slot {}", p.0);
        }
    }

    #[test]
    fn digits_keep_the_call_s_slots() {
        let far = UdpSocket::bind("127.0.0.1:0").unwrap();
        far.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let mut s = stream(&far);
        let mut sent = run(&mut s, &far, 0..2);
        // The client speaks one frame (at slot 2, offset -2), then asks for
        // a digit: no hold for audio it will not send, the digit's frames
        // go out on the call's slots 6, 10, ...
        s.session.push_pcm(&frame_of(8000)).unwrap();
        sent.extend(run(&mut s, &far, 2..3));
        s.session.send_dtmf("5").unwrap();
        sent.extend(run(&mut s, &far, 3..15));
        let slots: Vec<u64> = sent.iter().map(|p| p.0).collect();
        assert_eq!(slots, vec![0, 2, 6, 10, 14]);
        assert!(sent[2..].iter().all(|p| p.2), "the in-band digit is heard");
    }

    #[test]
    fn a_deep_queue_keeps_the_grid() {
        let far = UdpSocket::bind("127.0.0.1:0").unwrap();
        far.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let mut s = stream(&far);
        // 2 s of audio at once, as a text-to-speech engine sends it.
        for _ in 0..100 {
            s.session.push_pcm(&frame_of(8000)).unwrap();
        }
        let sent = run(&mut s, &far, 0..200);
        // Frame k goes out at slot 4k: 50 frames in 200 slots, no more.
        let slots: Vec<u64> = sent.iter().map(|p| p.0).collect();
        assert_eq!(slots, (0..50).map(|k| 4 * k).collect::<Vec<_>>());
        assert!(sent.iter().all(|p| p.2));
    }
}
