//! `MediaClock`: the shards that carry every call's RTP, both ways.
//!
//! A timer per call would cost 50 wake-ups a second per call; here each
//! shard (one per worker thread) wakes 50 times a second in all and sends
//! one packet for each of its calls. The packet is encoded into one reused
//! buffer: no allocation per frame. The same shard task receives its calls'
//! RTP through its intake (one epoll set for all of them), so a call costs
//! no task of its own.

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
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    first: bool,
}

impl Stream {
    fn new(session: Arc<MediaSession>) -> Self {
        // Random starting points (RFC 3550 5.1), derived from the call id's hash.
        let seed = {
            use std::hash::{BuildHasher, RandomState};
            RandomState::new().hash_one(session.call.as_str())
        };
        Stream {
            session,
            ssrc: seed as u32,
            sequence: (seed >> 32) as u16,
            timestamp: (seed >> 16) as u32,
            first: true,
        }
    }

    /// Sends this tick's frame (and hands it to the recording); false once
    /// the call has stopped.
    fn tick(
        &mut self,
        pcm: &mut [i16; FRAME_SAMPLES],
        packet: &mut [u8; HEADER_LEN + FRAME_SAMPLES],
        recorded: &mut Vec<TappedFrame>,
    ) -> bool {
        let s = &*self.session;
        if s.is_stopped() {
            return false;
        }
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
        true
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
    let mut ticker = interval(TICK);
    // A late tick is followed by catch-up ticks, so the far end still gets
    // 50 packets a second and RTP timestamps stay true to wall time.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut streams: Vec<Stream> = Vec::new();
    let mut pcm = [0i16; FRAME_SAMPLES];
    let mut packet = [0u8; HEADER_LEN + FRAME_SAMPLES];
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
            ready = waker.readable() => {
                match ready {
                    Ok(guard) => intake.drain(guard),
                    Err(e) => tracing::error!(error = %e, "RTP intake failed"),
                }
                continue;
            }
        }
        join(&shard, &mut streams, &mut intake, &waker);
        let mut recorded = Vec::new();
        streams.retain_mut(|s| s.tick(&mut pcm, &mut packet, &mut recorded));
        intake.remove_stopped(&waker);
        if let Some(sink) = &recordings {
            sink.submit(recorded);
        }
    }
}

/// Takes in the sessions added since the last tick: sent to from this tick,
/// received from now.
fn join(shard: &Shard, streams: &mut Vec<Stream>, intake: &mut RtpIntake, waker: &IntakeWaker) {
    let mut joining = shard.joining.lock().unwrap_or_else(|e| e.into_inner());
    for session in joining.drain(..) {
        if let Err(e) = intake.add(waker, session.clone()) {
            tracing::error!(call = %session.call, error = %e, "cannot receive RTP for the call");
        }
        streams.push(Stream::new(session));
    }
}
