//! `ClientHandle`: the daemon's side of one connected WebSocket client.
//!
//! Everything the daemon tells a client goes through one bounded queue,
//! drained by that client's writer task, so a call's audio and its `BYE`
//! arrive in the order they happened. Audio is dropped (and counted) when
//! the client falls behind by more than about 2 s per call it owns; control
//! events are never dropped, but a client that lets thousands of them pile
//! up has stopped reading and is disconnected. Nothing here ever blocks the
//! sender, so a stalled client cannot delay RTP for any call, its own
//! included.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::wire::{Dialect, Event};

pub type ClientId = u64;

/// Messages a client may have unread before it is deemed dead.
pub const QUEUE: usize = 4096;
/// Audio frames a client may have unread, per call whose audio it receives
/// (100 frames: 2 s of that call).
pub const AUDIO_FRAMES_PER_CALL: usize = 100;

/// One queued message.
#[derive(Debug)]
pub enum Outgoing {
    Control(String),
    Audio(String),
    /// A device's audio: one binary frame in its own format.
    DeviceAudio(Vec<u8>),
    /// A WebSocket ping (keep-alive for devices).
    Ping,
}

/// Which incoming calls a client is offered (`/ws?offers=...`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OfferFilter {
    /// Every incoming call (the default).
    #[default]
    All,
    /// None: the client only places calls.
    Nothing,
    /// Calls whose called number (Request-URI user), or the name of the
    /// SIP account they came in on, is one of these.
    Numbers(Vec<String>),
}

impl OfferFilter {
    /// `all`, `none`, or a comma-separated list of called numbers.
    pub fn parse(text: &str) -> OfferFilter {
        match text.trim() {
            "" | "all" => OfferFilter::All,
            "none" => OfferFilter::Nothing,
            list => OfferFilter::Numbers(
                list.split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
        }
    }

    /// Whether a call to `called`, on `account` if any, is offered.
    pub fn wants(&self, called: &str, account: Option<&str>) -> bool {
        match self {
            OfferFilter::All => true,
            OfferFilter::Nothing => false,
            OfferFilter::Numbers(names) => names
                .iter()
                .any(|n| n == called || Some(n.as_str()) == account),
        }
    }
}

#[derive(Debug)]
pub struct ClientHandle {
    pub id: ClientId,
    pub dialect: Dialect,
    pub offers: OfferFilter,
    queue: mpsc::Sender<Outgoing>,
    /// Cancelled when the connection must close (too slow, shutdown).
    pub closing: CancellationToken,
    /// Audio frames queued and not yet written.
    audio_queued: AtomicUsize,
    /// Calls whose audio currently flows to this client.
    audio_streams: AtomicUsize,
    frames_dropped: AtomicU64,
    /// False for the stand-in owner of calls driven over REST.
    takes_audio: bool,
    /// Set for a device: its audio goes as binary frames in this format.
    pub device_format: Option<crate::devices::AudioFormat>,
    /// Set for a device: its extension, the caller id of the calls it places.
    pub extension: Option<String>,
    /// Set for a device that is a SIP account: the calls it places go out through it.
    pub account: Option<String>,
    /// Why the connection is being closed, for its close frame.
    close_reason: std::sync::Mutex<Option<(u16, String)>>,
}

impl ClientHandle {
    pub fn new(
        id: ClientId,
        dialect: Dialect,
        offers: OfferFilter,
    ) -> (ClientHandle, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let handle = ClientHandle {
            id,
            dialect,
            offers,
            queue: tx,
            closing: CancellationToken::new(),
            audio_queued: AtomicUsize::new(0),
            audio_streams: AtomicUsize::new(0),
            frames_dropped: AtomicU64::new(0),
            takes_audio: true,
            device_format: None,
            extension: None,
            account: None,
            close_reason: Default::default(),
        };
        (handle, rx)
    }

    /// A device's connection: offered only what the switchboard routes to
    /// it, its audio binary in `format`.
    pub fn device(
        id: ClientId,
        device: &crate::devices::DeviceConfig,
    ) -> (ClientHandle, mpsc::Receiver<Outgoing>) {
        let (mut handle, rx) = ClientHandle::new(id, Dialect::V1, OfferFilter::Nothing);
        handle.device_format = Some(device.format);
        handle.extension = Some(device.extension.clone());
        handle.account = device.account.clone();
        (handle, rx)
    }

    /// Who this client is as a caller: a device's extension, else `client-{id}`.
    pub fn caller_id(&self) -> String {
        self.extension
            .clone()
            .unwrap_or_else(|| format!("client-{}", self.id))
    }

    /// Closes the connection with this close code and reason.
    pub fn close_with(&self, code: u16, reason: impl Into<String>) {
        *self.close_reason.lock().unwrap_or_else(|e| e.into_inner()) = Some((code, reason.into()));
        self.closing.cancel();
    }

    /// The close code and reason to send (1001, going away, unless set).
    pub fn close_reason(&self) -> (u16, String) {
        self.close_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| (1001, "siprelay closing this connection".into()))
    }

    /// The owner of calls placed or answered over REST: it is offered
    /// nothing, takes no audio, and what it would be told goes nowhere
    /// (watchers of `GET /events` hear it instead).
    pub fn detached(id: ClientId) -> ClientHandle {
        let (mut handle, _dropped) = ClientHandle::new(id, Dialect::V1, OfferFilter::Nothing);
        handle.takes_audio = false;
        handle
    }

    pub fn takes_audio(&self) -> bool {
        self.takes_audio
    }

    /// Queues a control event in this client's dialect.
    pub fn send_event(&self, event: &Event<'_>) {
        self.send_text(event.format(self.dialect));
    }

    /// Queues a control message already formatted.
    pub fn send_text(&self, text: String) {
        if let Err(mpsc::error::TrySendError::Full(_)) =
            self.queue.try_send(Outgoing::Control(text))
        {
            tracing::warn!(client = self.id, "client stopped reading; closing it");
            self.closing.cancel();
        }
    }

    /// Queues a WebSocket ping; skipped if the queue is full (the peer is
    /// not reading, and its silence will end the connection anyway).
    pub fn send_ping(&self) {
        let _ = self.queue.try_send(Outgoing::Ping);
    }

    /// Queues one audio frame, or drops it if the client is behind.
    pub fn send_audio(&self, text: String) {
        self.queue_audio(Outgoing::Audio(text));
    }

    /// Queues one binary audio frame for a device, or drops it if the device is behind.
    pub fn send_device_audio(&self, frame: Vec<u8>) {
        self.queue_audio(Outgoing::DeviceAudio(frame));
    }

    fn queue_audio(&self, message: Outgoing) {
        let budget = AUDIO_FRAMES_PER_CALL * self.audio_streams.load(Ordering::Relaxed).max(1);
        // Counted before it is queued: the writer may take it off the queue
        // (and count it out) before `try_send` even returns here.
        let queued = self.audio_queued.fetch_add(1, Ordering::AcqRel);
        if queued >= budget || self.queue.try_send(message).is_err() {
            self.audio_queued.fetch_sub(1, Ordering::AcqRel);
            self.frames_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The writer took a message off the queue.
    pub fn dequeued(&self, message: &Outgoing) {
        if let Outgoing::Audio(_) | Outgoing::DeviceAudio(_) = message {
            self.audio_queued.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A call's audio starts (or stops) flowing to this client.
    pub fn audio_stream_started(&self) {
        self.audio_streams.fetch_add(1, Ordering::Relaxed);
    }

    pub fn audio_stream_ended(&self) {
        self.audio_streams.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn frames_dropped(&self) -> u64 {
        self.frames_dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(h: &ClientHandle, rx: &mut mpsc::Receiver<Outgoing>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            h.dequeued(&m);
            out.push(match m {
                Outgoing::Control(t) | Outgoing::Audio(t) => t,
                Outgoing::DeviceAudio(b) => format!("{} bytes", b.len()),
                Outgoing::Ping => "ping".into(),
            });
        }
        out
    }

    #[test]
    fn audio_is_dropped_and_counted_past_the_per_call_budget() {
        let (h, mut rx) = ClientHandle::new(1, Dialect::V1, OfferFilter::All);
        h.audio_stream_started();
        h.audio_stream_started();
        for i in 0..2 * AUDIO_FRAMES_PER_CALL + 5 {
            h.send_audio(format!("RTP:{i}"));
        }
        assert_eq!(h.frames_dropped(), 5);
        assert_eq!(drain(&h, &mut rx).len(), 2 * AUDIO_FRAMES_PER_CALL);
        // Once the writer caught up, audio is accepted again.
        h.send_audio("RTP:late".into());
        assert_eq!(h.frames_dropped(), 5);
        assert!(!h.closing.is_cancelled());
    }

    #[test]
    fn control_keeps_its_place_after_audio() {
        let (h, mut rx) = ClientHandle::new(1, Dialect::V1, OfferFilter::All);
        h.send_audio("RTP:a".into());
        h.send_event(&Event::Bye { call: "c" });
        assert_eq!(drain(&h, &mut rx), ["RTP:a", "BYE:c"]);
    }

    #[test]
    fn a_client_that_never_reads_is_closed() {
        let (h, _rx) = ClientHandle::new(1, Dialect::V1, OfferFilter::All);
        for _ in 0..QUEUE {
            h.send_event(&Event::Pong);
        }
        assert!(!h.closing.is_cancelled());
        h.send_event(&Event::Pong);
        assert!(h.closing.is_cancelled());
    }

    #[test]
    fn offer_filters() {
        assert!(OfferFilter::parse("").wants("2000", None));
        assert!(!OfferFilter::parse("none").wants("2000", Some("office")));
        let f = OfferFilter::parse("2000, 2001");
        assert!(f.wants("2001", None) && !f.wants("200", None));
        let f = OfferFilter::parse("office");
        assert!(f.wants("2000", Some("office")) && !f.wants("2000", Some("home")));
        assert!(!f.wants("2000", None));
    }
}
