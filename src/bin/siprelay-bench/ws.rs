//! The WebSocket clients: one task per connection, as the application
//! would run them. A client answers the calls meant for it (caller `b{n}`
//! with `n % clients == its index`), reads every audio frame (marker →
//! RTP→WS latency and loss), and answers each frame with one frame of its
//! own carrying a fresh marker, so the daemon's playout is fed at exactly
//! the pace the daemon's audio arrives.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use crate::marker::{Marker, Tone};
use crate::shared::Shared;
use crate::stats::{Arrival, SeqTracker};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Totals over all clients.
#[derive(Debug, Default, Serialize)]
pub struct WsReport {
    pub clients: u64,
    pub connect_failures: u64,
    /// `RTP` frames read, and those carrying a valid bench marker.
    pub frames: u64,
    pub frames_marked: u64,
    /// Marked frames that came after a later one, or twice.
    pub frames_late: u64,
    pub frames_duplicated: u64,
    /// Gaps in the marker sequence (missing frames between received ones).
    pub frames_gaps: u64,
    /// Frames read after the call's `BYE` event (the daemon's writer sends
    /// control events ahead of audio already queued).
    pub frames_after_bye: u64,
    /// Frames sent back (each with a marker), and send failures.
    pub frames_sent: u64,
    pub send_failures: u64,
    pub ring_offers: u64,
    pub answers_sent: u64,
    pub ring_ignores: u64,
    pub call_ans_events: u64,
    pub bye_events: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// `CALL_ANS` sent again after `ERROR:403 ... was not offered to this
    /// client` for a call whose `RING_ANS` this client had read: the daemon
    /// sends the offer before it records whom it offered the call to.
    pub answer_retries: u64,
    /// Of `errors`, those 403s (answers that overtook the offer).
    pub answer_refusals: u64,
    /// Of `errors`, `404 unknown call`: audio for a call the daemon had
    /// just ended, sent before its `BYE` event was read.
    pub unknown_call_errors: u64,
    /// Connections the daemon closed (or that failed) before the bench did.
    pub closed_early: u64,
    pub close_samples: Vec<String>,
}

impl WsReport {
    pub fn merge(&mut self, o: WsReport) {
        self.clients += o.clients;
        self.connect_failures += o.connect_failures;
        self.frames += o.frames;
        self.frames_marked += o.frames_marked;
        self.frames_late += o.frames_late;
        self.frames_duplicated += o.frames_duplicated;
        self.frames_gaps += o.frames_gaps;
        self.frames_after_bye += o.frames_after_bye;
        self.frames_sent += o.frames_sent;
        self.send_failures += o.send_failures;
        self.ring_offers += o.ring_offers;
        self.answers_sent += o.answers_sent;
        self.ring_ignores += o.ring_ignores;
        self.call_ans_events += o.call_ans_events;
        self.bye_events += o.bye_events;
        self.errors += o.errors;
        self.answer_retries += o.answer_retries;
        self.answer_refusals += o.answer_refusals;
        self.unknown_call_errors += o.unknown_call_errors;
        self.closed_early += o.closed_early;
        for (mine, theirs) in [
            (&mut self.error_samples, o.error_samples),
            (&mut self.close_samples, o.close_samples),
        ] {
            for s in theirs {
                if mine.len() < 5 {
                    mine.push(s);
                }
            }
        }
    }
}

/// What one client needs.
pub struct ClientSetup {
    pub index: usize,
    pub clients: usize,
    /// The number this client takes calls to (`/ws?offers=`), or None: all.
    pub offers: Option<String>,
    pub http: SocketAddr,
    pub shared: Arc<Shared>,
    pub tone: Arc<Tone>,
    /// Frames per audio message the client sends: 1 answers each frame
    /// with one; F sends F frames after every F-th frame received.
    pub chunk: usize,
    /// Bounds how many clients connect at once.
    pub connecting: Arc<Semaphore>,
    /// Set when the client is registered (its PING answered), or failed.
    pub ready: tokio::sync::mpsc::Sender<bool>,
    pub stop: watch::Receiver<bool>,
}

struct CallWs {
    /// `BYE` read: audio that still comes is counted, not answered.
    ended: bool,
    frames: SeqTracker,
    sent: u32,
    /// Frames received since the last chunk was sent.
    owed: usize,
    answer_attempts: u32,
}

/// Times a refused answer is retried, and the pause before each retry.
const ANSWER_ATTEMPTS: u32 = 5;
const ANSWER_RETRY: Duration = Duration::from_millis(10);

struct Client {
    setup: ClientSetup,
    calls: HashMap<String, CallWs>,
    /// PCM of a chunk being built (chunks of more than one frame).
    chunk_pcm: Vec<u8>,
    /// Answers to send again: (when, call id).
    retries: Vec<(tokio::time::Instant, String)>,
    report: WsReport,
}

pub async fn run(setup: ClientSetup) -> WsReport {
    let mut c = Client {
        setup,
        calls: HashMap::new(),
        chunk_pcm: Vec::new(),
        retries: Vec::new(),
        report: WsReport::default(),
    };
    let permit = c.setup.connecting.clone().acquire_owned().await;
    let ws = connect(c.setup.http, c.setup.offers.as_deref()).await;
    drop(permit);
    let mut ws = match ws {
        Ok(ws) => {
            let _ = c.setup.ready.send(true).await;
            ws
        }
        Err(e) => {
            c.report.connect_failures = 1;
            c.report.close_samples.push(format!("connect: {e}"));
            let _ = c.setup.ready.send(false).await;
            return c.report;
        }
    };
    c.report.clients = 1;
    c.serve(&mut ws).await;
    c.report
}

async fn connect(http: SocketAddr, offers: Option<&str>) -> anyhow::Result<Ws> {
    let tcp = TcpStream::connect(http).await?;
    tcp.set_nodelay(true)?;
    // Frames are small: a small read buffer keeps 2,000 connections cheap.
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(
        match offers {
            Some(number) => format!("ws://{http}/ws?offers={number}"),
            None => format!("ws://{http}/ws"),
        },
        MaybeTlsStream::Plain(tcp),
        Some(config),
    )
    .await?;
    // The PONG proves the daemon has registered the client.
    ws.send(Message::Text("PING".into())).await?;
    let pong = tokio::time::timeout(Duration::from_secs(10), ws.next()).await?;
    match pong {
        Some(Ok(Message::Text(t))) if t.as_str() == "PONG" => Ok(ws),
        other => anyhow::bail!("expected PONG, got {other:?}"),
    }
}

impl Client {
    async fn serve(&mut self, ws: &mut Ws) {
        let mut stop = self.setup.stop.clone();
        loop {
            let next_retry = self.retries.iter().map(|(at, _)| *at).min();
            let message = tokio::select! {
                biased;
                _ = stop.changed() => break,
                _ = sleep_until(next_retry) => {
                    let now = tokio::time::Instant::now();
                    let (due, later) = std::mem::take(&mut self.retries)
                        .into_iter()
                        .partition(|(at, _)| *at <= now);
                    self.retries = later;
                    for (_, id) in due {
                        self.report.answer_retries += 1;
                        if ws.send(Message::Text(format!("CALL_ANS:{id}").into())).await.is_err() {
                            self.report.send_failures += 1;
                        }
                    }
                    continue;
                }
                m = ws.next() => m,
            };
            let reply = match message {
                Some(Ok(Message::Text(t))) => self.on_text(t.as_str()),
                Some(Ok(Message::Close(frame))) => {
                    self.closed_early(format!("close frame {frame:?}"));
                    return;
                }
                Some(Ok(_)) => None,
                Some(Err(e)) => {
                    self.closed_early(format!("error {e}"));
                    return;
                }
                None => {
                    self.closed_early("end of stream".into());
                    return;
                }
            };
            if let Some(text) = reply {
                match ws.send(Message::Text(text.into())).await {
                    Ok(()) => {}
                    Err(e) => {
                        self.report.send_failures += 1;
                        self.closed_early(format!("send: {e}"));
                        return;
                    }
                }
            }
        }
        // The bench is done: close, and read until the daemon's close frame.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = ws.close(None).await;
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }

    fn closed_early(&mut self, why: String) {
        self.report.closed_early += 1;
        self.report.close_samples.push(why);
    }

    /// Handles one text frame; returns the reply to send, if any.
    fn on_text(&mut self, t: &str) -> Option<String> {
        if let Some(rest) = t.strip_prefix("RTP:") {
            return self.on_audio(rest);
        }
        let r = &mut self.report;
        if let Some(rest) = t.strip_prefix("RING_ANS:") {
            r.ring_offers += 1;
            let (caller, id) = rest.rsplit_once("##")?;
            let n: usize = caller.strip_prefix('b')?.parse().ok()?;
            if n % self.setup.clients != self.setup.index {
                return None;
            }
            r.answers_sent += 1;
            self.calls.insert(
                id.to_string(),
                CallWs {
                    ended: false,
                    frames: SeqTracker::default(),
                    sent: 0,
                    owed: 0,
                    answer_attempts: 1,
                },
            );
            return Some(format!("CALL_ANS:{id}"));
        }
        if t.starts_with("CALL_ANS:") {
            r.call_ans_events += 1;
            self.setup.shared.ws_answers.fetch_add(1, Relaxed);
        } else if let Some(id) = t.strip_prefix("BYE:") {
            r.bye_events += 1;
            self.setup.shared.ws_byes.fetch_add(1, Relaxed);
            if let Some(call) = self.calls.get_mut(id) {
                call.ended = true;
            }
        } else if t.starts_with("RING_IGNORE:") {
            r.ring_ignores += 1;
        } else if let Some(e) = t.strip_prefix("ERROR:") {
            r.errors += 1;
            if e.starts_with("404 unknown call") {
                // Audio sent just before the call's end crossed the BYE.
                r.unknown_call_errors += 1;
            } else if !self.maybe_retry_answer(e) && self.report.error_samples.len() < 5 {
                self.report
                    .error_samples
                    .push(t.chars().take(120).collect());
            }
        }
        None
    }

    /// `403 call {id} was not offered to this client` for a call we were
    /// offered: the answer overtook the daemon's own bookkeeping; try again.
    fn maybe_retry_answer(&mut self, error: &str) -> bool {
        let Some(rest) = error.strip_prefix("403 call ") else {
            return false;
        };
        let Some(id) = rest.strip_suffix(" was not offered to this client") else {
            return false;
        };
        let Some(call) = self.calls.get_mut(id) else {
            return false;
        };
        self.report.answer_refusals += 1;
        {
            if call.answer_attempts < ANSWER_ATTEMPTS {
                call.answer_attempts += 1;
                let at = tokio::time::Instant::now() + ANSWER_RETRY;
                self.retries.push((at, id.to_string()));
            }
        }
        true
    }

    fn on_audio(&mut self, rest: &str) -> Option<String> {
        let shared = &self.setup.shared;
        let now = shared.now_us();
        self.report.frames += 1;
        let (id, b64) = rest.split_once("##")?;
        let call = self.calls.get_mut(id)?;
        if let Some(m) = Marker::from_pcm_base64(b64) {
            self.report.frames_marked += 1;
            shared
                .rtp_to_ws
                .record_if(&shared.recording, now.saturating_sub(m.sent_us));
            match call.frames.observe(u64::from(m.index), 28).1 {
                Arrival::InOrder { gap } => self.report.frames_gaps += gap,
                Arrival::Late => self.report.frames_late += 1,
                Arrival::Duplicate => self.report.frames_duplicated += 1,
            }
        }
        if call.ended {
            self.report.frames_after_bye += 1;
            return None;
        }
        // One frame back for each frame in, each with a fresh marker.
        call.owed += 1;
        let chunk = self.setup.chunk.max(1);
        if call.owed < chunk {
            return None;
        }
        call.owed = 0;
        let tone = &self.setup.tone;
        let mut out = String::with_capacity(8 + id.len() + chunk * 428);
        out.push_str("RTP:");
        out.push_str(id);
        out.push_str("##");
        let now = shared.now_us();
        if chunk == 1 {
            Marker {
                index: call.sent,
                sent_us: now,
            }
            .push_pcm_base64(&mut out);
            out.push_str(&tone.tail_b64);
        } else {
            // Frame j of a chunk counts as sent j × 20 ms later: when it
            // would have gone out had the client sent frame by frame.
            self.chunk_pcm.clear();
            for j in 0..chunk {
                let start = self.chunk_pcm.len();
                self.chunk_pcm.extend_from_slice(&tone.pcm_le);
                Marker {
                    index: call.sent.wrapping_add(j as u32),
                    sent_us: now + 20_000 * j as u64,
                }
                .write_pcm(&mut self.chunk_pcm[start..]);
            }
            B64.encode_string(&self.chunk_pcm, &mut out);
        }
        call.sent = call.sent.wrapping_add(chunk as u32);
        self.report.frames_sent += chunk as u64;
        Some(out)
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
