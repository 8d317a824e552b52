//! `MediaSession`: one connected call's RTP socket and audio state (IO shell).
//!
//! One shard of the media clock owns a session's both directions: each
//! 20 ms it sends one frame from the playout queue, and its intake hands
//! every datagram from the far end to the call's `RtpReceiver`. The locks
//! on the audio path are per call and never held across an await: the
//! `outbound` mutex, taken once per frame and once per client audio message
//! (and once when the far end's address is latched); and, only for calls
//! that have them, the recording tap and the device's jitter buffer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::sync::OnceLock;

use super::dtmf::{DtmfError, DtmfSender};
use super::jitter::JitterBuffer;
use super::playout::{QueueFull, FRAME_SAMPLES};
use super::prompt::{OutboundAudio, Prompt, PromptEnded};
use super::receive::{AudioStream, FarAudio};
use super::sdp::Codec;
use super::socket::RtpSocket;
use super::tap::RecordTap;
use crate::call::ports::PortLease;
use crate::call::CallId;
use crate::client::ClientHandle;

/// Most audio a client may queue ahead of playout: 60 s.
pub const PLAYOUT_CAPACITY: usize = 60 * 8000;

/// What the media clock needs for each frame, behind one lock.
#[derive(Debug)]
pub struct Outbound {
    pub audio: OutboundAudio,
    /// Digits to send; while any wait, they go out instead of the audio.
    pub dtmf: DtmfSender,
    /// Where RTP goes: the SDP address until the far end's first packet, then
    /// wherever that packet came from (symmetric RTP).
    pub peer: SocketAddr,
}

/// A call's RTP counts, written by its receiver and the media clock,
/// read by `GET /calls` and `/metrics`.
#[derive(Debug, Default)]
pub struct MediaStats {
    /// Packets of the call's codec received from the far end (duplicates not counted).
    pub packets_in: AtomicU64,
    pub bytes_in: AtomicU64,
    /// What the far end's sequence numbers say it sent.
    pub packets_expected: AtomicU64,
    pub packets_out_of_order: AtomicU64,
    pub packets_late: AtomicU64,
    pub packets_duplicated: AtomicU64,
    pub packets_out: AtomicU64,
    /// Packets from a source other than the latched one, of another payload
    /// type, or not RTP at all.
    pub packets_ignored: AtomicU64,
    pub send_errors: AtomicU64,
}

impl MediaStats {
    pub fn totals(&self) -> crate::metrics::RtpTotals {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let packets_out = get(&self.packets_out);
        crate::metrics::RtpTotals {
            packets_in: get(&self.packets_in),
            bytes_in: get(&self.bytes_in),
            packets_out,
            // Every packet sent is one 20 ms G.711 frame.
            bytes_out: packets_out * (super::rtp::HEADER_LEN + FRAME_SAMPLES) as u64,
            lost: get(&self.packets_expected).saturating_sub(get(&self.packets_in)),
            late: get(&self.packets_late),
            out_of_order: get(&self.packets_out_of_order),
            duplicated: get(&self.packets_duplicated),
            send_errors: get(&self.send_errors),
            ignored: get(&self.packets_ignored),
        }
    }
}

/// A bound RTP socket and the port pair it holds. Dropping it closes the
/// socket first, then returns the pair.
#[derive(Debug)]
pub struct RtpBinding {
    pub socket: RtpSocket,
    pub lease: PortLease,
    /// Datagrams dropped when the call was answered; None: not yet done.
    pub discarded: Option<usize>,
}

impl RtpBinding {
    /// Drops whatever reached the socket before the call was answered (a
    /// stranger's packets sent to a port it guessed while the call rang):
    /// nothing from then reaches anyone. Done when our 200 OK goes out, so
    /// what the caller sends after its ACK is kept however late media starts.
    pub fn discard_before_answer(&mut self) {
        let dropped = self.socket.discard_pending();
        *self.discarded.get_or_insert(0) += dropped;
    }
}

#[derive(Debug)]
pub struct MediaSession {
    pub call: CallId,
    pub rtp: RtpBinding,
    pub codec: Codec,
    /// The far end's telephone-event payload type, if it takes RFC 4733 DTMF.
    pub telephone_event: Option<u8>,
    /// Set when the call's media is SRTP: the clock protects what it sends
    /// and the receiver checks what comes, each with its own context.
    pub srtp: Option<super::srtp::SrtpKeys>,
    pub outbound: Mutex<Outbound>,
    pub stats: MediaStats,
    /// Both directions for the recording, once it starts (when the call is recorded).
    pub recording: OnceLock<Mutex<RecordTap>>,
    /// Told when a prompt ends (`PLAYED`, hang-up after play).
    prompt_listener: OnceLock<PromptListener>,
    /// Told when the far end presses a key.
    dtmf_listener: OnceLock<DtmfListener>,
    /// Set while a device owns the call: the far end's audio waits here and
    /// goes to the device one frame per 20 ms, on the media clock.
    device_out: Mutex<Option<DeviceOut>>,
    /// Whether `device_out` is set: the clock checks this, not the lock,
    /// on every frame of every call.
    feeds_device: AtomicBool,
    /// Set when the call ends: the clock drops the session at its next slot.
    stopped: AtomicBool,
    /// Mirrors `OutboundAudio::talkspurt_ready` (see `clock.rs`), for the
    /// clock to read without the lock. Written under the lock only.
    talkspurt: AtomicBool,
    /// Mirrors `OutboundAudio::starved`, for the clock to read without the lock.
    starved: AtomicBool,
    /// Where the far end's audio goes from now on, until the receiver takes
    /// it up (`new_far_audio_set` says whether there is one, without the lock).
    new_far_audio: Mutex<Option<FarAudio>>,
    new_far_audio_set: AtomicBool,
}

impl MediaSession {
    pub fn new(
        call: CallId,
        rtp: RtpBinding,
        codec: Codec,
        telephone_event: Option<u8>,
        peer: SocketAddr,
        srtp: Option<super::srtp::SrtpKeys>,
    ) -> Arc<Self> {
        Arc::new(MediaSession {
            call,
            rtp,
            codec,
            telephone_event,
            srtp,
            outbound: Mutex::new(Outbound {
                audio: OutboundAudio::new(PLAYOUT_CAPACITY),
                dtmf: DtmfSender::default(),
                peer,
            }),
            stats: MediaStats::default(),
            recording: OnceLock::new(),
            prompt_listener: OnceLock::new(),
            dtmf_listener: OnceLock::new(),
            device_out: Mutex::new(None),
            feeds_device: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            talkspurt: AtomicBool::new(false),
            starved: AtomicBool::new(false),
            new_far_audio: Mutex::new(None),
            new_far_audio_set: AtomicBool::new(false),
        })
    }

    /// Queues client audio (16-bit LE PCM bytes) for playout; it cuts off
    /// any prompt playing (barge-in).
    pub fn push_pcm(&self, bytes: &[u8]) -> Result<(), QueueFull> {
        let (queued, cut) = {
            let mut out = self.outbound();
            let pushed = out.audio.push_client(bytes);
            self.note_queue(&out);
            pushed
        };
        if let Some(ended) = cut {
            self.prompt_ended(ended);
        }
        queued
    }

    /// Whether a talkspurt waits to go out (see `OutboundAudio::talkspurt_ready`).
    pub fn talkspurt_waits(&self) -> bool {
        self.talkspurt.load(Ordering::Relaxed)
    }

    /// Whether the client was speaking and its next frame has not come
    /// (see `OutboundAudio::starved`).
    pub fn starved(&self) -> bool {
        self.starved.load(Ordering::Relaxed)
    }

    /// Keeps `talkspurt` and `starved` true to the queue; called with the
    /// lock held after every change to it. While digits are being sent,
    /// neither holds: the digits go out on the call's usual slots.
    pub fn note_queue(&self, out: &Outbound) {
        let digits = !out.dtmf.is_idle();
        self.talkspurt
            .store(out.audio.talkspurt_ready() && !digits, Ordering::Relaxed);
        self.starved
            .store(out.audio.starved() && !digits, Ordering::Relaxed);
    }

    /// Plays a prompt from the next frame on, instead of queued audio.
    pub fn play(&self, prompt: Prompt, greeting: bool) {
        let replaced = {
            let mut out = self.outbound();
            let replaced = out.audio.play(prompt, greeting);
            self.note_queue(&out);
            replaced
        };
        if let Some(ended) = replaced {
            self.prompt_ended(ended);
        }
    }

    /// `CLEAR`: stops any prompt and drops the client's queued audio.
    pub fn clear(&self) {
        let cut = {
            let mut out = self.outbound();
            let cut = out.audio.clear();
            self.note_queue(&out);
            cut
        };
        if let Some(ended) = cut {
            self.prompt_ended(ended);
        }
    }

    /// Records both directions from the next frame on.
    pub fn start_recording(&self, tap: RecordTap) {
        let _ = self.recording.set(Mutex::new(tap));
    }

    /// Sends DTMF digits to the far end, after any still waiting.
    pub fn send_dtmf(&self, digits: &str) -> Result<(), DtmfError> {
        let mut out = self.outbound();
        let queued = out.dtmf.push(digits);
        self.note_queue(&out);
        queued
    }

    /// Whom to tell when the far end presses a key; set once, when media starts.
    pub fn on_dtmf(&self, listener: impl Fn(char) + Send + Sync + 'static) {
        let _ = self.dtmf_listener.set(DtmfListener(Box::new(listener)));
    }

    /// Whom to tell when a prompt ends; set once, when media starts.
    pub fn on_prompt_end(&self, listener: impl Fn(&PromptEnded) + Send + Sync + 'static) {
        let _ = self.prompt_listener.set(PromptListener(Box::new(listener)));
    }

    pub fn prompt_ended(&self, ended: PromptEnded) {
        tracing::debug!(call = %self.call, prompt = %ended.name, completed = ended.completed, "prompt ended");
        if let Some(listener) = self.prompt_listener.get() {
            (listener.0)(&ended);
        }
    }

    /// The far end pressed a key (an RFC 4733 event ended).
    pub(super) fn far_end_pressed(&self, digit: char) {
        if let Some(listener) = self.dtmf_listener.get() {
            (listener.0)(digit);
        }
    }

    /// Records the far end's audio (decoded) at its RTP timestamp.
    pub(super) fn record_far(&self, timestamp: u32, pcm: &[i16]) {
        if let Some(tap) = self.recording.get() {
            tap.lock()
                .unwrap_or_else(|e| e.into_inner())
                .far
                .push(timestamp, pcm);
        }
    }

    pub fn outbound(&self) -> std::sync::MutexGuard<'_, Outbound> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // in a way that matters more than losing the call's audio.
        self.outbound.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends both directions: nothing more is sent or passed on, and the
    /// clock drops the session (and with it the socket and port pair) at
    /// its next slot.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// The far end's audio goes to `owner` from now on (a device that came
    /// back on a new connection).
    pub fn switch_owner(&self, owner: Arc<ClientHandle>) {
        if !self.is_stopped() {
            self.start_receiving(owner);
        }
    }

    /// The far end's audio goes to `owner` (unless it takes no audio: a
    /// call driven over REST) from the next datagram on.
    pub fn start_receiving(&self, owner: Arc<ClientHandle>) {
        {
            let mut out = self.outbound();
            out.audio.follow_device_clock(owner.device_format.is_some());
            self.note_queue(&out);
        }
        *self.device_out.lock().unwrap_or_else(|e| e.into_inner()) =
            owner.device_format.map(|format| {
                owner.audio_stream_started();
                DeviceOut {
                    owner: owner.clone(),
                    format,
                    jitter: JitterBuffer::new(),
                }
            });
        self.feeds_device
            .store(owner.device_format.is_some(), Ordering::Release);
        let sink = match owner.device_format {
            Some(_) => FarAudio::Device,
            None if owner.takes_audio() => {
                owner.audio_stream_started();
                FarAudio::Client(AudioStream(owner))
            }
            None => FarAudio::Nowhere,
        };
        *self.new_far_audio.lock().unwrap_or_else(|e| e.into_inner()) = Some(sink);
        self.new_far_audio_set.store(true, Ordering::Release);
    }

    /// The receiver's side of `start_receiving`: the new sink, if any.
    pub(super) fn take_new_far_audio(&self) -> Option<FarAudio> {
        if !self.new_far_audio_set.load(Ordering::Acquire)
            || !self.new_far_audio_set.swap(false, Ordering::AcqRel)
        {
            return None;
        }
        self.new_far_audio
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// The far end's audio on its way to a device.
#[derive(Debug)]
struct DeviceOut {
    owner: Arc<ClientHandle>,
    format: crate::devices::AudioFormat,
    jitter: JitterBuffer,
}

impl Drop for DeviceOut {
    fn drop(&mut self) {
        self.owner.audio_stream_ended();
    }
}

impl MediaSession {
    /// Media clock, once a frame: the device's next frame.
    pub fn tick_device(&self) {
        if !self.feeds_device.load(Ordering::Acquire) {
            return;
        }
        let mut out = self.device_out.lock().unwrap_or_else(|e| e.into_inner());
        let Some(out) = out.as_mut() else {
            return;
        };
        let mut pcm = [0i16; FRAME_SAMPLES];
        out.jitter.pop_frame(&mut pcm);
        let mut frame = Vec::with_capacity(out.format.frame_bytes());
        out.format.encode(&pcm, &mut frame);
        out.owner.send_device_audio(frame);
    }

    pub(super) fn feed_device(&self, timestamp: u32, pcm: &[i16]) {
        if let Some(out) = self
            .device_out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            out.jitter.push(timestamp, pcm);
        }
    }
}

struct PromptListener(Box<dyn Fn(&PromptEnded) + Send + Sync>);

struct DtmfListener(Box<dyn Fn(char) + Send + Sync>);

impl std::fmt::Debug for DtmfListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DtmfListener")
    }
}

impl std::fmt::Debug for PromptListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PromptListener")
    }
}
