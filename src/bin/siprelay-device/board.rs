//! One simulated board: its connection, its clock, its one call.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use siprelay::devices::AudioFormat;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::{Answer, Options};

const FRAME: usize = 160;

/// How a connection ended.
pub enum Ended {
    /// `--calls` calls are over.
    Done,
    /// The connection dropped: reconnect.
    Lost,
    /// siprelay will not have us (wrong token, replaced): give up.
    Refused(String),
}

struct Call {
    id: String,
    connected_at: Option<Instant>,
    /// Next sample of `--play` to send.
    position: usize,
    /// `HANGUP` sent (for `--hangup-after`).
    hung_up: bool,
}

pub struct Board {
    options: Options,
    format: AudioFormat,
    play: Vec<i16>,
    call: Option<Call>,
    calls_done: u32,
    heard: Vec<i16>,
    dialled: bool,
    /// Enter presses, for `--answer press`.
    presses: Option<mpsc::Receiver<()>>,
}

impl Board {
    pub fn new(options: Options, play: Vec<i16>) -> Board {
        let presses = (options.answer == Answer::Press).then(|| {
            let (tx, rx) = mpsc::channel(4);
            std::thread::spawn(move || {
                let mut line = String::new();
                while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
                    if tx.blocking_send(()).is_err() {
                        return;
                    }
                    line.clear();
                }
            });
            rx
        });
        Board {
            format: options.format.into(),
            options,
            play,
            call: None,
            calls_done: 0,
            heard: Vec::new(),
            dialled: false,
            presses,
        }
    }

    pub async fn run_connection(&mut self) -> Result<Ended, String> {
        let url = format!(
            "{}/device/{}",
            self.options.url.trim_end_matches('/'),
            self.options.id
        );
        let mut request = url.into_client_request().map_err(|e| e.to_string())?;
        let bearer = format!("Bearer {}", self.options.token)
            .parse()
            .map_err(|_| "the token is not a valid header value".to_string())?;
        request.headers_mut().insert("Authorization", bearer);
        let ws = match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => ws,
            Err(WsError::Http(response)) if response.status().as_u16() == 401 => {
                return Ok(Ended::Refused("401: unknown device or wrong token".into()))
            }
            Err(e) => return Err(e.to_string()),
        };
        println!("[device] connected as {}", self.options.id);
        let (mut tx, mut rx) = ws.split();
        let send = |text: String| Message::Text(text.into());
        tx.send(send(format!("HELLO:{}", self.options.hello)))
            .await
            .map_err(|e| e.to_string())?;
        if let (Some(number), false) = (&self.options.dial, self.dialled) {
            self.dialled = true;
            tx.send(send(format!("CALL:{number}")))
                .await
                .map_err(|e| e.to_string())?;
        }

        // The board's 20 ms, on its own crystal.
        let period = Duration::from_secs_f64(0.020 / (1.0 + self.options.drift_ppm * 1e-6));
        let mut ticker = tokio::time::interval(period);
        let mut burst: Vec<Vec<u8>> = Vec::new();
        loop {
            let press = async {
                match &mut self.presses {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                message = rx.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        for reply in self.on_text(text.as_str()) {
                            tx.send(send(reply)).await.map_err(|e| e.to_string())?;
                        }
                        if self.options.calls.is_some_and(|n| self.calls_done >= n) {
                            let _ = tx.send(Message::Close(None)).await;
                            return Ok(Ended::Done);
                        }
                    }
                    Some(Ok(Message::Binary(frame))) => self.on_audio(&frame),
                    Some(Ok(Message::Close(Some(close)))) if close.code == CloseCode::from(4000) => {
                        return Ok(Ended::Refused(format!("replaced: {}", close.reason)));
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        println!("[device] connection lost");
                        return Ok(Ended::Lost);
                    }
                    Some(Ok(_)) => {}
                },
                _ = ticker.tick() => {
                    let Some(frame) = self.next_frame() else {
                        burst.clear();
                        continue;
                    };
                    burst.push(frame);
                    if burst.len() >= self.options.burst as usize {
                        for frame in burst.drain(..) {
                            tx.feed(Message::Binary(frame.into())).await.map_err(|e| e.to_string())?;
                        }
                        tx.flush().await.map_err(|e| e.to_string())?;
                    }
                    if let Some(id) = self.due_for_hangup() {
                        tx.send(send(format!("HANGUP:{id}"))).await.map_err(|e| e.to_string())?;
                    }
                }
                Some(()) = press => {
                    if let Some(call) = self.call.as_ref().filter(|c| c.connected_at.is_none()) {
                        tx.send(send(format!("CALL_ANS:{}", call.id))).await.map_err(|e| e.to_string())?;
                    }
                }
            }
        }
    }

    /// Reacts to one message; returns what to send back.
    fn on_text(&mut self, text: &str) -> Vec<String> {
        println!("[device] < {text}");
        let (verb, args) = text.split_once(':').unwrap_or((text, ""));
        let id = args.rsplit("##").next().unwrap_or_default().to_string();
        match verb {
            "RING_ANS" if self.call.is_none() => {
                self.call = Some(Call {
                    id: id.clone(),
                    connected_at: None,
                    position: 0,
                    hung_up: false,
                });
                match self.options.answer {
                    Answer::Auto => return vec![format!("CALL_ANS:{id}")],
                    Answer::Press => println!("[device] ringing: press Enter to answer"),
                    Answer::Never => {}
                }
            }
            "CALLING" => {
                self.call = Some(Call {
                    id,
                    connected_at: None,
                    position: 0,
                    hung_up: false,
                })
            }
            "CALL_ANS" => {
                if let Some(call) = self.call.as_mut().filter(|c| c.id == id) {
                    // A resumed call (after a reconnect) keeps its place.
                    if call.connected_at.is_none() {
                        call.connected_at = Some(Instant::now());
                        self.heard.clear();
                    }
                } else {
                    self.call = Some(Call {
                        id,
                        connected_at: Some(Instant::now()),
                        position: 0,
                        hung_up: false,
                    });
                }
            }
            "BYE" | "CALL_FAILED" | "CALL_IGNORE" | "RING_IGNORE"
                if self.call.as_ref().is_some_and(|c| c.id == id) =>
            {
                self.call = None;
                self.calls_done += 1;
                self.save_recording();
            }
            _ => {}
        }
        Vec::new()
    }

    fn on_audio(&mut self, frame: &[u8]) {
        if self.call.as_ref().is_some_and(|c| c.connected_at.is_some()) {
            let mut pcm = Vec::with_capacity(frame.len() * 2);
            if self.format.decode_to_pcm_bytes(frame, &mut pcm).is_ok() {
                self.heard.extend(
                    pcm.chunks_exact(2)
                        .map(|b| i16::from_le_bytes([b[0], b[1]])),
                );
            }
        }
    }

    /// This tick's frame while a call is connected: the file, then silence.
    fn next_frame(&mut self) -> Option<Vec<u8>> {
        let call = self.call.as_mut().filter(|c| c.connected_at.is_some())?;
        let mut pcm = [0i16; FRAME];
        let rest = self.play.get(call.position..).unwrap_or_default();
        let n = rest.len().min(FRAME);
        pcm[..n].copy_from_slice(&rest[..n]);
        call.position += FRAME;
        let mut frame = Vec::with_capacity(self.format.frame_bytes());
        self.format.encode(&pcm, &mut frame);
        Some(frame)
    }

    fn due_for_hangup(&mut self) -> Option<String> {
        let after = Duration::from_secs_f64(self.options.hangup_after?);
        let call = self.call.as_mut().filter(|c| !c.hung_up)?;
        if call.connected_at?.elapsed() < after {
            return None;
        }
        // Once: the BYE that follows ends the call here.
        call.hung_up = true;
        Some(call.id.clone())
    }

    fn save_recording(&self) {
        let Some(path) = &self.options.record else {
            return;
        };
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let written = hound::WavWriter::create(path, spec).and_then(|mut w| {
            for &s in &self.heard {
                w.write_sample(s)?;
            }
            w.finalize()
        });
        match written {
            Ok(()) => println!(
                "[device] recorded {:.1} s to {}",
                self.heard.len() as f64 / 8000.0,
                path.display()
            ),
            Err(e) => eprintln!("[device] cannot write {}: {e}", path.display()),
        }
    }
}
