//! `ClientHandle`: the daemon's side of one connected WebSocket client.
//!
//! Everything the daemon tells a client goes through two bounded queues
//! drained by that client's writer task: control events, which must never
//! be lost, and audio frames, which are dropped (and counted) when the
//! client does not keep up. A full queue never blocks the sender, so a
//! stalled client cannot delay RTP for any call, its own included.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::wire::{Dialect, Event};

pub type ClientId = u64;

/// Control events a client may have unread before it is deemed dead.
pub const CONTROL_QUEUE: usize = 1024;
/// Audio frames a client may have unread (about 2 s of one call).
pub const AUDIO_QUEUE: usize = 100;

#[derive(Debug)]
pub struct ClientHandle {
    pub id: ClientId,
    pub dialect: Dialect,
    control: mpsc::Sender<String>,
    audio: mpsc::Sender<String>,
    /// Cancelled when the connection must close (too slow, shutdown, replaced).
    pub closing: CancellationToken,
    frames_dropped: AtomicU64,
}

/// The receiving ends, owned by the connection's writer task.
pub struct ClientQueues {
    pub control: mpsc::Receiver<String>,
    pub audio: mpsc::Receiver<String>,
}

impl ClientHandle {
    pub fn new(id: ClientId, dialect: Dialect) -> (ClientHandle, ClientQueues) {
        let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let (audio_tx, audio_rx) = mpsc::channel(AUDIO_QUEUE);
        let handle = ClientHandle {
            id,
            dialect,
            control: control_tx,
            audio: audio_tx,
            closing: CancellationToken::new(),
            frames_dropped: AtomicU64::new(0),
        };
        (
            handle,
            ClientQueues {
                control: control_rx,
                audio: audio_rx,
            },
        )
    }

    /// Queues a control event. A client that lets a thousand of them pile up
    /// has stopped reading: it is closed rather than allowed to grow memory.
    pub fn send_event(&self, event: &Event<'_>) {
        self.send_text(event.format(self.dialect));
    }

    pub fn send_text(&self, text: String) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.control.try_send(text) {
            tracing::warn!(
                client = self.id,
                "client stopped reading control events; closing it"
            );
            self.closing.cancel();
        }
    }

    /// Queues one audio frame, or drops it if the client is behind.
    pub fn send_audio(&self, text: String) {
        if self.audio.try_send(text).is_err() {
            self.frames_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn frames_dropped(&self) -> u64 {
        self.frames_dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_is_dropped_and_counted_when_the_client_lags() {
        let (h, mut q) = ClientHandle::new(1, Dialect::V1);
        for i in 0..AUDIO_QUEUE + 5 {
            h.send_audio(format!("RTP:{i}"));
        }
        assert_eq!(h.frames_dropped(), 5);
        assert_eq!(q.audio.try_recv().unwrap(), "RTP:0");
        assert!(!h.closing.is_cancelled());
    }

    #[test]
    fn a_client_that_never_reads_control_events_is_closed() {
        let (h, _q) = ClientHandle::new(1, Dialect::V1);
        for _ in 0..CONTROL_QUEUE {
            h.send_event(&Event::Pong);
        }
        assert!(!h.closing.is_cancelled());
        h.send_event(&Event::Pong);
        assert!(h.closing.is_cancelled());
    }
}
