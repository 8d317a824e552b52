//! Shared harness for the end-to-end tests: the real daemon on ephemeral
//! loopback ports, a SIP peer, and a WebSocket client.
#![allow(dead_code)]

pub mod audio;
pub mod http;
pub mod registrar;
pub mod sip;
pub mod stream;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use siprelay::config::Config;
use siprelay::daemon::Daemon;
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Each test gets its own slice of RTP ports, so tests in one binary can
/// run in parallel without fighting over ports. The slices lie below
/// Linux's ephemeral range (32768 up), where the tests' own `bind(:0)`
/// sockets would otherwise take ports a daemon counts on.
pub fn rtp_range(pairs: u16) -> (u16, u16) {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = pairs as u32 * 2 + 2;
    let offset =
        (std::process::id() * 200 + NEXT.fetch_add(span as u16, Ordering::Relaxed) as u32) % 20000;
    let start = (10000 + offset) & !1;
    (start as u16, (start + pairs as u32 * 2 - 1) as u16)
}

pub async fn start_daemon() -> Daemon {
    start_with(Config::loopback(rtp_range(20))).await
}

pub async fn start_with(config: Config) -> Daemon {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Daemon::start(config).await.expect("daemon starts")
}

pub struct WsClient {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    pub async fn connect(daemon: &Daemon) -> WsClient {
        Self::connect_path(daemon.http_addr, "/ws").await
    }

    pub async fn connect_path(http: SocketAddr, path: &str) -> WsClient {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}{path}"))
            .await
            .expect("ws connects");
        let mut c = WsClient { ws };
        // A round trip proves the daemon has registered this client.
        c.send("PING").await;
        c.expect("PONG").await;
        c
    }

    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::Text(text.into())).await.unwrap();
    }

    /// The next text frame, skipping audio unless `audio` is set.
    pub async fn next_text(&mut self, wait: Duration, audio: bool) -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.ws.next()).await.ok()?? {
                Ok(Message::Text(t)) if audio || !t.starts_with("RTP:") => {
                    return Some(t.to_string())
                }
                Ok(Message::Text(_))
                | Ok(Message::Ping(_))
                | Ok(Message::Pong(_))
                | Ok(Message::Binary(_))
                | Ok(Message::Frame(_)) => {}
                Ok(Message::Close(_)) | Err(_) => return None,
            }
        }
    }

    /// Waits for a control message starting with `prefix`; panics on anything else.
    pub async fn expect(&mut self, prefix: &str) -> String {
        let got = self.next_text(Duration::from_secs(10), false).await;
        match got {
            Some(t) if t.starts_with(prefix) => t,
            other => panic!("expected {prefix}..., got {other:?}"),
        }
    }

    /// Collects the PCM of `RTP` frames for `duration`.
    pub async fn record(&mut self, duration: Duration) -> Vec<i16> {
        let mut pcm = Vec::new();
        let deadline = Instant::now() + duration;
        while let Some(t) = self
            .next_text(deadline.saturating_duration_since(Instant::now()), true)
            .await
        {
            if let Some(rest) = t.strip_prefix("RTP:") {
                let b64 = rest.rsplit("##").next().unwrap();
                pcm.extend(audio::from_le_bytes(&B64.decode(b64).unwrap()));
            }
        }
        pcm
    }
}

/// The id at the end of `VERB:...##{id}` or `VERB:{id}`.
pub fn call_id_of(message: &str) -> String {
    let args = message.split_once(':').map(|(_, a)| a).unwrap_or_default();
    args.rsplit("##").next().unwrap().to_string()
}

/// Places a call from `peer` to 2000 and answers it from `ws`: returns the
/// call id and the peer's dialog, with the call connected on both sides.
pub async fn connected_call(ws: &mut WsClient, peer: &mut sip::SipPeer) -> (String, sip::Dialog) {
    let mut d = peer.invite("1001", "2000", Some("0")).await;
    let id = call_id_of(&ws.expect("RING_ANS:").await);
    ws.send(&format!("CALL_ANS:{id}")).await;
    let ok = peer.expect_response("INVITE", 200).await;
    peer.ack(&mut d, &ok).await;
    ws.expect("CALL_ANS:").await;
    (id, d)
}
