//! `MediaSession`: one connected call's RTP socket and audio state (IO shell).
//!
//! Two parties touch a session: the media clock, which sends one frame per
//! tick from the playout queue, and the session's receive task, which turns
//! RTP from the far end into frames for the call's owner. The only lock is
//! the per-call `outbound` mutex, taken once per tick and once per client
//! audio message; it is never held across an await.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::task::AbortHandle;

use std::sync::OnceLock;

use super::dtmf::{DtmfDetector, DtmfError, DtmfSender};
use super::jitter::JitterBuffer;
use super::playout::{QueueFull, FRAME_SAMPLES};
use super::prompt::{OutboundAudio, Prompt, PromptEnded};
use super::rtp::{Arrival, ReceptionStats, RtpPacket};
use super::sdp::Codec;
use super::tap::RecordTap;
use crate::call::ports::PortLease;
use crate::call::CallId;
use crate::client::ClientHandle;
use crate::wire::audio;

/// Most audio a client may queue ahead of playout: 60 s.
pub const PLAYOUT_CAPACITY: usize = 60 * 8000;

/// What the media clock needs each tick, behind one lock.
#[derive(Debug)]
pub struct Outbound {
    pub audio: OutboundAudio,
    /// Digits to send; while any wait, they go out instead of the audio.
    pub dtmf: DtmfSender,
    /// Where RTP goes: the SDP address until the far end's first packet, then
    /// wherever that packet came from (symmetric RTP).
    pub peer: SocketAddr,
}

/// A call's RTP counts, written by its receive task and the media clock,
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
        }
    }
}

/// A bound RTP socket and the port pair it holds. Dropping it closes the
/// socket first, then returns the pair.
#[derive(Debug)]
pub struct RtpBinding {
    pub socket: UdpSocket,
    pub lease: PortLease,
}

#[derive(Debug)]
pub struct MediaSession {
    pub call: CallId,
    pub rtp: RtpBinding,
    pub codec: Codec,
    /// The far end's telephone-event payload type, if it takes RFC 4733 DTMF.
    pub telephone_event: Option<u8>,
    pub outbound: Mutex<Outbound>,
    pub stats: MediaStats,
    /// Both directions for the recording, once it starts (when the call is recorded).
    pub recording: OnceLock<Mutex<RecordTap>>,
    /// Told when a prompt ends (`PLAYED`, hang-up after play).
    prompt_listener: OnceLock<PromptListener>,
    /// Told when the far end presses a key.
    dtmf_listener: OnceLock<DtmfListener>,
    /// Set while a device owns the call: the far end's audio waits here and
    /// goes to the device one frame per tick, on the media clock.
    device_out: Mutex<Option<DeviceOut>>,
    /// Whether `device_out` is set: the clock checks this, not the lock,
    /// on every tick of every call.
    feeds_device: AtomicBool,
    /// Set when the call ends: the clock drops the session at its next tick.
    stopped: AtomicBool,
    /// The receive task, aborted when the call ends. (A flag checked per
    /// packet would cost a select and a waker registration per packet.)
    receiver: Mutex<Option<AbortHandle>>,
}

impl MediaSession {
    pub fn new(
        call: CallId,
        rtp: RtpBinding,
        codec: Codec,
        telephone_event: Option<u8>,
        peer: SocketAddr,
    ) -> Arc<Self> {
        Arc::new(MediaSession {
            call,
            rtp,
            codec,
            telephone_event,
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
            receiver: Mutex::new(None),
        })
    }

    /// Queues client audio (16-bit LE PCM bytes) for playout; it cuts off
    /// any prompt playing (barge-in).
    pub fn push_pcm(&self, bytes: &[u8]) -> Result<(), QueueFull> {
        let (queued, cut) = self.outbound().audio.push_client(bytes);
        if let Some(ended) = cut {
            self.prompt_ended(ended);
        }
        queued
    }

    /// Plays a prompt from the next tick on, instead of queued audio.
    pub fn play(&self, prompt: Prompt, greeting: bool) {
        let replaced = self.outbound().audio.play(prompt, greeting);
        if let Some(ended) = replaced {
            self.prompt_ended(ended);
        }
    }

    /// `CLEAR`: stops any prompt and drops the client's queued audio.
    pub fn clear(&self) {
        let cut = self.outbound().audio.clear();
        if let Some(ended) = cut {
            self.prompt_ended(ended);
        }
    }

    /// Records both directions from the next tick on.
    pub fn start_recording(&self, tap: RecordTap) {
        let _ = self.recording.set(Mutex::new(tap));
    }

    /// Sends DTMF digits to the far end, after any still waiting.
    pub fn send_dtmf(&self, digits: &str) -> Result<(), DtmfError> {
        self.outbound().dtmf.push(digits)
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

    /// Records the far end's audio (decoded) at its RTP timestamp.
    fn record_far(&self, timestamp: u32, pcm: &[i16]) {
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

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.abort_receiver();
    }

    fn abort_receiver(&self) {
        if let Some(task) = self
            .receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// The far end's audio goes to `owner` from now on (a device that came
    /// back on a new connection).
    pub fn switch_owner(self: &Arc<Self>, owner: Arc<ClientHandle>) {
        self.abort_receiver();
        if !self.is_stopped() {
            self.start_receiving(owner);
        }
    }

    /// Starts the receive task, forwarding the far end's audio to `owner`
    /// unless it takes no audio (a call driven over REST).
    pub fn start_receiving(self: &Arc<Self>, owner: Arc<ClientHandle>) {
        self.outbound()
            .audio
            .follow_device_clock(owner.device_format.is_some());
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
        let task = tokio::spawn(receive(self.clone(), sink));
        let mut slot = self.receiver.lock().unwrap_or_else(|e| e.into_inner());
        if self.is_stopped() {
            task.abort();
        } else {
            *slot = Some(task.abort_handle());
        }
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
    /// Media clock, once a tick: the device's next frame.
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

    fn feed_device(&self, timestamp: u32, pcm: &[i16]) {
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

/// A call's audio flowing to a client, for as long as this lives (the
/// receive task may be aborted at any await: Drop still runs).
struct AudioStream(Arc<ClientHandle>);

impl Drop for AudioStream {
    fn drop(&mut self) {
        self.0.audio_stream_ended();
    }
}

/// Where a receive task puts the far end's decoded audio.
enum FarAudio {
    /// Text frames to an application, as they arrive.
    Client(AudioStream),
    /// The device's jitter buffer, read by the media clock.
    Device,
    /// Nowhere but the recording (a call driven over REST).
    Nowhere,
}

/// Receives the far end's RTP until the call stops (the task is aborted),
/// passing each packet's decoded audio on as `sink` says.
async fn receive(session: Arc<MediaSession>, sink: FarAudio) {
    let mut datagram = [0u8; 2048];
    let mut decoded = [0i16; 2048];
    let mut forward = match &sink {
        FarAudio::Client(owner) => Some(Forwarder::new(session.call.clone(), owner.0.clone())),
        FarAudio::Device | FarAudio::Nowhere => None,
    };
    let to_device = matches!(sink, FarAudio::Device);
    let mut latched: Option<SocketAddr> = None;
    let mut reception = ReceptionStats::default();
    let mut dtmf = DtmfDetector::default();
    // Added, not stored: a new receive task (after an owner switch) adds to
    // what the one before it counted.
    let mut expected_reported = 0;
    loop {
        let (len, from) = match session.rtp.socket.recv_from(&mut datagram).await {
            Ok(r) => r,
            // ICMP port unreachable from an earlier send shows up here on
            // Linux; it says nothing about this socket, so keep going.
            Err(_) => continue,
        };
        let stats = &session.stats;
        let packet = match RtpPacket::parse(&datagram[..len]) {
            Ok(p) if latched.is_none_or(|addr| addr == from) => p,
            _ => {
                stats.packets_ignored.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        if latched.is_none() {
            // The first real RTP packet decides where ours go from now on.
            latched = Some(from);
            session.outbound().peer = from;
        }
        let is_event = session.telephone_event == Some(packet.payload_type);
        if packet.payload_type != session.codec.payload_type && !is_event {
            stats.packets_ignored.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let arrival = reception.on_packet(packet.sequence, packet.timestamp);
        let expected = reception.expected();
        stats.packets_expected.fetch_add(
            expected.saturating_sub(expected_reported),
            Ordering::Relaxed,
        );
        expected_reported = expected.max(expected_reported);
        match arrival {
            Arrival::InOrder => {}
            Arrival::OutOfOrder => {
                stats.packets_out_of_order.fetch_add(1, Ordering::Relaxed);
            }
            Arrival::Late => {
                stats.packets_out_of_order.fetch_add(1, Ordering::Relaxed);
                stats.packets_late.fetch_add(1, Ordering::Relaxed);
            }
            // Its audio was heard already.
            Arrival::Duplicate => {
                stats.packets_duplicated.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        }
        stats.packets_in.fetch_add(1, Ordering::Relaxed);
        stats.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
        if is_event {
            if let (Some(digit), Some(listener)) = (
                dtmf.on_packet(packet.timestamp, packet.payload),
                session.dtmf_listener.get(),
            ) {
                (listener.0)(digit);
            }
            continue;
        }
        let pcm = &mut decoded[..packet.payload.len()];
        session.codec.law.decode(packet.payload, pcm);
        session.record_far(packet.timestamp, pcm);
        if let Some(forward) = &mut forward {
            forward.push(pcm);
        } else if to_device {
            session.feed_device(packet.timestamp, pcm);
        }
    }
}

/// Turns RTP payloads of any duration into 20 ms frames for the owner.
struct Forwarder {
    call: CallId,
    owner: Arc<ClientHandle>,
    pcm: [i16; FRAME_SAMPLES],
    filled: usize,
}

impl Forwarder {
    fn new(call: CallId, owner: Arc<ClientHandle>) -> Self {
        Forwarder {
            call,
            owner,
            pcm: [0; FRAME_SAMPLES],
            filled: 0,
        }
    }

    fn push(&mut self, mut pcm: &[i16]) {
        while !pcm.is_empty() {
            let take = pcm.len().min(FRAME_SAMPLES - self.filled);
            self.pcm[self.filled..self.filled + take].copy_from_slice(&pcm[..take]);
            self.filled += take;
            pcm = &pcm[take..];

            if self.filled == FRAME_SAMPLES {
                self.emit();
            }
        }
    }

    fn emit(&mut self) {
        self.filled = 0;
        let mut bytes = [0u8; FRAME_SAMPLES * 2];
        for (pair, s) in bytes.chunks_exact_mut(2).zip(self.pcm) {
            pair.copy_from_slice(&s.to_le_bytes());
        }
        let mut text = String::with_capacity(FRAME_SAMPLES * 3 + 64);
        audio::write_event(self.owner.dialect, self.call.as_str(), &bytes, &mut text);
        self.owner.send_audio(text);
    }
}
