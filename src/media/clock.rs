//! `MediaClock`: the shards that carry every call's RTP, both ways.
//!
//! A timer per call would cost 50 wake-ups a second per call; here each
//! shard (one per worker thread) wakes 50 times a second in all and sends
//! one packet for each of its calls. The packet is encoded into one reused
//! buffer: no allocation per frame. The same shard task receives its calls'
//! RTP through its intake (one epoll set for all of them), so a call costs
//! no task of its own.
//!
//! A call's frames go out every 20 ms on one of four 5 ms slots. The slot
//! moves to the client: when its audio starts a talkspurt (see
//! `prompt::Pushed`), the frame goes out at the next slot, 5 ms at most
//! after it came, and the call keeps that slot. A client sending in real
//! time thus waits at most one slot for each frame, not up to a whole
//! frame, and a late frame re-times the call instead of leaving 20 ms of
//! backlog behind it.

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
    /// Sessions added since the last tick; the shard's task moves them into
    /// its own list, so adding a call never waits for a tick to finish.
    joining: Mutex<Vec<Arc<MediaSession>>>,
}

impl MediaClock {
    /// Starts `shards` ticker tasks, running until `shutdown` is cancelled.
    /// Recorded calls' frames go to `recordings`.
    pub fn start(
        shards: usize,
        recordings: Option<Arc<dyn RecordingSink>>,
        shutdown: CancellationToken,
    ) -> Arc<MediaClock> {
        let shards: Vec<Arc<Shard>> = (0..shards.max(1))
            .map(|_| Arc::new(Shard::default()))
            .collect();
        for shard in &shards {
            tokio::spawn(run_shard(
                shard.clone(),
                recordings.clone(),
                shutdown.clone(),
            ));
        }
        Arc::new(MediaClock {
            shards,
            next: AtomicUsize::new(0),
        })
    }

    /// From the next tick on, `session` sends a frame every 20 ms until stopped.
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
    /// The slot (counted from the shard's start) of the next frame.
    due: u64,
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    first: bool,
}

impl Stream {
    fn new(session: Arc<MediaSession>, now: u64) -> Self {
        // Random starting points (RFC 3550 5.1), derived from the call id's hash.
        let seed = {
            use std::hash::{BuildHasher, RandomState};
            RandomState::new().hash_one(session.call.as_str())
        };
        Stream {
            session,
            due: now,
            ssrc: seed as u32,
            sequence: (seed >> 32) as u16,
            timestamp: (seed >> 16) as u32,
            first: true,
        }
    }

    /// At slot `now`: sends the call's frame if it is due, or if the
    /// client's audio just started a talkspurt (and hands it to the
    /// recording); false once the call has stopped.
    fn on_slot(
        &mut self,
        now: u64,
        pcm: &mut [i16; FRAME_SAMPLES],
        packet: &mut [u8; HEADER_LEN + FRAME_SAMPLES],
        recorded: &mut Vec<TappedFrame>,
    ) -> bool {
        let s = &*self.session;
        if s.is_stopped() {
            return false;
        }
        if now < self.due && !s.take_talkspurt() {
            return true;
        }
        self.due = now + SLOTS;
        self.send_frame(pcm, packet, recorded);
        true
    }

    /// Sends the call's next frame and hands it to the recording.
    fn send_frame(
        &mut self,
        pcm: &mut [i16; FRAME_SAMPLES],
        packet: &mut [u8; HEADER_LEN + FRAME_SAMPLES],
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
        match s.rtp.socket.try_send_to(&packet[..len], peer) {
            Ok(_) => s.stats.packets_out.fetch_add(1, Ordering::Relaxed),
            Err(_) => s.stats.send_errors.fetch_add(1, Ordering::Relaxed),
        };
        self.first = false;
        self.sequence = self.sequence.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(FRAME_SAMPLES as u32);
    }
}

async fn run_shard(
    shard: Arc<Shard>,
    recordings: Option<Arc<dyn RecordingSink>>,
    shutdown: CancellationToken,
) {
    let (mut intake, waker) = match intake() {
        Ok(i) => i,
        Err(e) => {
            // Without epoll there is no media at all; say so loudly.
            tracing::error!(error = %e, "cannot create the RTP intake; calls of this shard get no media");
            return;
        }
    };
    let mut ticker = interval(TICK / SLOTS as u32);
    // A late tick is followed by catch-up ticks, so the far end still gets
    // 50 packets a second and RTP timestamps stay true to wall time.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut streams: Vec<Stream> = Vec::new();
    let mut pcm = [0i16; FRAME_SAMPLES];
    let mut packet = [0u8; HEADER_LEN + FRAME_SAMPLES];
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
        join(&shard, &mut streams, &mut intake, &waker, now);
        streams.retain_mut(|s| s.on_slot(now, &mut pcm, &mut packet, &mut recorded));
        intake.remove_stopped(&waker);
        // One batch per 20 ms, as the recorder's bounded queue counts them.
        if now % SLOTS == SLOTS - 1 && !recorded.is_empty() {
            let batch = std::mem::take(&mut recorded);
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
        };
        let session = MediaSession::new(
            CallId::from("slot-test"),
            binding,
            Codec::PCMU,
            None,
            far.local_addr().unwrap(),
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
        let mut packet = [0u8; HEADER_LEN + FRAME_SAMPLES];
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
    fn a_talkspurt_goes_out_at_the_next_slot_and_the_call_keeps_it() {
        let far = UdpSocket::bind("127.0.0.1:0").unwrap();
        // Loopback delivers within the send; the timeout only bounds a
        // slot that sent nothing.
        far.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut s = stream(&far);
        // Silence on slots 0, 4, 8: one frame per four slots.
        let before = run(&mut s, &far, 0..10);
        assert_eq!(
            before.iter().map(|p| p.0).collect::<Vec<_>>(),
            vec![0, 4, 8]
        );
        assert!(before.iter().all(|p| !p.2));
        // The client's first frame comes between slots 9 and 10: it goes
        // out at slot 10, not at 12, and the call's frames follow every
        // four slots from there, the client keeping pace.
        s.session.push_pcm(&frame_of(8000)).unwrap();
        let mut after = run(&mut s, &far, 10..14);
        s.session.push_pcm(&frame_of(8000)).unwrap();
        after.extend(run(&mut s, &far, 14..18));
        assert_eq!(
            after.iter().map(|p| (p.0, p.2)).collect::<Vec<_>>(),
            vec![(10, true), (14, true)]
        );
        // RTP timestamps stay one frame apart whatever the slot.
        let stamps: Vec<u32> = before.iter().chain(&after).map(|p| p.1).collect();
        assert!(stamps.windows(2).all(|w| w[1].wrapping_sub(w[0]) == 160));
        // Nothing more while the client keeps pace: no talkspurt, the slot holds.
        s.session.push_pcm(&frame_of(8000)).unwrap();
        let steady = run(&mut s, &far, 18..23);
        assert_eq!(steady.iter().map(|p| p.0).collect::<Vec<_>>(), vec![18, 22]);
    }
}
