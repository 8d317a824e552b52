//! The SIP side: one task, one UDP socket for every call (told apart by
//! Call-ID). It places calls at a steady rate, ACKs their 200 OK, hands the
//! daemon's RTP port to the media thread, hangs calls up with BYE at a
//! steady rate, and answers the daemon's own BYEs. INVITE and BYE are
//! retransmitted as RFC 3261 says (T1 = 500 ms, 32 s to give up).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::shared::Shared;
use crate::sipmsg::{self, Dialog, Msg};

const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
const GIVE_UP: Duration = Duration::from_secs(32);
/// How often due calls are placed or hung up.
const PACE: Duration = Duration::from_millis(2);

pub enum Cmd {
    /// Place every call, `rate` per second.
    Place { rate: f64 },
    /// BYE every connected call, `rate` per second.
    HangUp { rate: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    /// INVITE sent; `provisional` once a 1xx came.
    Inviting {
        provisional: bool,
    },
    Connected,
    Failed(u16),
    /// BYE sent, waiting for its response.
    Terminating,
    Terminated,
    EndedByDaemon,
}

struct Call {
    call_id: String,
    callee: String,
    from_tag: String,
    invite_branch: String,
    rtp_port: u16,
    state: State,
    to_tag: String,
    target: String,
    /// The request being retransmitted (INVITE or BYE) and when.
    pending: Option<String>,
    first_sent: Instant,
    next_rtx: Instant,
    rtx_interval: Duration,
}

/// Progress the controller watches.
#[derive(Default)]
pub struct Progress {
    pub placed: AtomicU64,
    pub answered: AtomicU64,
    pub failed: AtomicU64,
    pub byes_sent: AtomicU64,
    /// Calls connected and not yet over (BYE answered or timed out, or the
    /// daemon's BYE).
    pub live: AtomicU64,
}

#[derive(Debug, Default, Serialize)]
pub struct SipReport {
    pub placed: u64,
    pub set_up: u64,
    pub failed: u64,
    /// Final status of failed calls (408: no final response within 32 s).
    pub failure_statuses: BTreeMap<u16, u64>,
    pub ended_by_daemon: u64,
    pub invite_retransmissions: u64,
    pub byes_sent: u64,
    pub byes_ok: u64,
    pub byes_failed: u64,
    pub bye_retransmissions: u64,
    /// 200 OKs that came after the bench had given the call up (counted
    /// in `failed` as 408); they are ACKed and ended with BYE.
    pub late_answers: u64,
    /// Messages for no known call, or unparseable.
    pub stray_messages: u64,
    /// First INVITE to last INVITE, and first INVITE to last 200 OK (s).
    pub placing_s: f64,
    pub answering_s: f64,
}

pub struct SipUac {
    sock: UdpSocket,
    local: SocketAddr,
    daemon: SocketAddr,
    run: String,
    calls: Vec<Call>,
    shared: Arc<Shared>,
    progress: Arc<Progress>,
    report: SipReport,
    first_invite: Option<Instant>,
    last_invite: Option<Instant>,
    last_answer: Option<Instant>,
    branches: u64,
}

impl SipUac {
    /// `clients`: calls go to numbers `c0`..`c{clients-1}`, one per WebSocket
    /// client (None: all to `bench`, offered to every client).
    pub async fn new(
        daemon: SocketAddr,
        rtp_ports: &[u16],
        clients: Option<usize>,
        shared: Arc<Shared>,
        progress: Arc<Progress>,
    ) -> std::io::Result<SipUac> {
        let std_sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
        std_sock.set_nonblocking(true)?;
        // Bursts of 200 OKs and BYE responses must not overflow the buffer.
        let _ = socket2::SockRef::from(&std_sock).set_recv_buffer_size(4 << 20);
        let sock = UdpSocket::from_std(std_sock)?;
        let local = sock.local_addr()?;
        let run = format!(
            "{:x}{:x}",
            std::process::id(),
            shared.epoch_ns % 0xFFFF_FFFF
        );
        let now = Instant::now();
        let calls = rtp_ports
            .iter()
            .enumerate()
            .map(|(i, &rtp_port)| Call {
                call_id: sipmsg::call_id(i, &run),
                callee: callee(i, clients),
                from_tag: format!("bt{i}x{run}"),
                invite_branch: format!("z9hG4bK{run}i{i}"),
                rtp_port,
                state: State::Idle,
                to_tag: String::new(),
                target: String::new(),
                pending: None,
                first_sent: now,
                next_rtx: now,
                rtx_interval: T1,
            })
            .collect();
        Ok(SipUac {
            sock,
            local,
            daemon,
            run,
            calls,
            shared,
            progress,
            report: SipReport::default(),
            first_invite: None,
            last_invite: None,
            last_answer: None,
            branches: 0,
        })
    }

    /// Runs until `commands` closes; returns the totals.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Cmd>) -> SipReport {
        let mut buf = vec![0u8; 65536];
        let mut pace = tokio::time::interval(PACE);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // (start, rate, next index) of the placing and the hanging up.
        let mut placing: Option<(Instant, f64, usize)> = None;
        let mut hanging: Option<(Instant, f64, usize)> = None;
        let mut last_scan = Instant::now();
        loop {
            tokio::select! {
                r = self.sock.recv_from(&mut buf) => {
                    if let Ok((n, _)) = r {
                        self.on_datagram(&buf[..n]).await;
                    }
                }
                cmd = commands.recv() => match cmd {
                    Some(Cmd::Place { rate }) => placing = Some((Instant::now(), rate, 0)),
                    Some(Cmd::HangUp { rate }) => hanging = Some((Instant::now(), rate, 0)),
                    None => break,
                },
                _ = pace.tick() => {
                    let now = Instant::now();
                    if let Some((start, rate, next)) = &mut placing {
                        while *next < self.calls.len() && due(*start, *rate, *next) <= now {
                            self.place(*next).await;
                            *next += 1;
                        }
                    }
                    if let Some((start, rate, next)) = &mut hanging {
                        while *next < self.calls.len() && due(*start, *rate, *next) <= now {
                            self.hang_up(*next).await;
                            *next += 1;
                        }
                    }
                    if now.duration_since(last_scan) >= Duration::from_millis(50) {
                        last_scan = now;
                        self.retransmit(now).await;
                    }
                }
            }
        }
        let secs = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        self.report.placing_s = secs(self.first_invite, self.last_invite);
        self.report.answering_s = secs(self.first_invite, self.last_answer);
        self.report
    }

    fn dialog(&self, i: usize) -> Dialog<'_> {
        let c = &self.calls[i];
        Dialog {
            local: self.local,
            daemon: self.daemon,
            index: i,
            call_id: &c.call_id,
            from_tag: &c.from_tag,
            callee: &c.callee,
        }
    }

    fn new_branch(&mut self) -> String {
        self.branches += 1;
        format!("z9hG4bK{}n{}", self.run, self.branches)
    }

    async fn send(&self, text: &str) {
        let _ = self.sock.send_to(text.as_bytes(), self.daemon).await;
    }

    async fn place(&mut self, i: usize) {
        let c = &self.calls[i];
        let invite = self.dialog(i).invite(&c.invite_branch, c.rtp_port);
        self.send(&invite).await;
        let now = Instant::now();
        self.first_invite.get_or_insert(now);
        self.last_invite = Some(now);
        self.report.placed += 1;
        self.progress.placed.fetch_add(1, Relaxed);
        let c = &mut self.calls[i];
        c.state = State::Inviting { provisional: false };
        c.pending = Some(invite);
        c.first_sent = now;
        c.next_rtx = now + T1;
        c.rtx_interval = T1;
    }

    async fn hang_up(&mut self, i: usize) {
        if self.calls[i].state != State::Connected {
            return;
        }
        let branch = self.new_branch();
        let c = &self.calls[i];
        let bye = self.dialog(i).bye(&branch, &c.target, &c.to_tag);
        self.send(&bye).await;
        self.report.byes_sent += 1;
        self.progress.byes_sent.fetch_add(1, Relaxed);
        let now = Instant::now();
        let c = &mut self.calls[i];
        c.state = State::Terminating;
        c.pending = Some(bye);
        c.first_sent = now;
        c.next_rtx = now + T1;
        c.rtx_interval = T1;
    }

    async fn retransmit(&mut self, now: Instant) {
        for i in 0..self.calls.len() {
            let c = &mut self.calls[i];
            let Some(pending) = &c.pending else { continue };
            if now < c.next_rtx {
                continue;
            }
            if now.duration_since(c.first_sent) >= GIVE_UP {
                c.pending = None;
                match c.state {
                    State::Inviting { .. } => self.fail(i, 408),
                    State::Terminating => {
                        self.calls[i].state = State::Terminated;
                        self.report.byes_failed += 1;
                        self.progress.live.fetch_sub(1, Relaxed);
                    }
                    _ => {}
                }
                continue;
            }
            // Once a 1xx came, the INVITE is no longer retransmitted (Timer A stops).
            if c.state == (State::Inviting { provisional: true }) {
                continue;
            }
            let bye = c.state == State::Terminating;
            c.rtx_interval = if bye {
                (c.rtx_interval * 2).min(T2)
            } else {
                c.rtx_interval * 2
            };
            c.next_rtx = now + c.rtx_interval;
            let _ = self.sock.try_send_to(pending.as_bytes(), self.daemon);
            if bye {
                self.report.bye_retransmissions += 1;
            } else {
                self.report.invite_retransmissions += 1;
            }
        }
    }

    fn fail(&mut self, i: usize, status: u16) {
        self.calls[i].state = State::Failed(status);
        self.calls[i].pending = None;
        self.report.failed += 1;
        *self.report.failure_statuses.entry(status).or_default() += 1;
        self.progress.failed.fetch_add(1, Relaxed);
    }

    async fn on_datagram(&mut self, data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        let Some(msg) = Msg::parse(&text) else {
            self.report.stray_messages += 1;
            return;
        };
        let Some(i) = msg
            .header("Call-ID")
            .and_then(|id| sipmsg::index_of(id, &self.run))
            .filter(|&i| i < self.calls.len())
        else {
            self.report.stray_messages += 1;
            if msg.method().is_some_and(|m| m != "ACK") {
                self.send(&sipmsg::response(&msg, 481, "Call Does Not Exist"))
                    .await;
            }
            return;
        };
        match (msg.status(), msg.method()) {
            (Some(status), _) => self.on_response(i, status, &msg).await,
            (None, Some("BYE")) => {
                self.send(&sipmsg::response(&msg, 200, "OK")).await;
                let c = &mut self.calls[i];
                if matches!(c.state, State::Connected | State::Terminating) {
                    if c.state == State::Connected {
                        self.report.ended_by_daemon += 1;
                    }
                    c.state = State::EndedByDaemon;
                    c.pending = None;
                    self.shared.ended_by_daemon[i].store(true, Relaxed);
                    self.progress.live.fetch_sub(1, Relaxed);
                }
            }
            (None, Some("ACK")) => {}
            (None, Some(_)) => self.send(&sipmsg::response(&msg, 200, "OK")).await,
            (None, None) => self.report.stray_messages += 1,
        }
    }

    async fn on_response(&mut self, i: usize, status: u16, msg: &Msg<'_>) {
        let Some((_, method)) = msg.cseq() else {
            self.report.stray_messages += 1;
            return;
        };
        let state = self.calls[i].state;
        match (method, state) {
            ("INVITE", State::Inviting { .. }) if status < 200 => {
                self.calls[i].state = State::Inviting { provisional: true };
            }
            ("INVITE", State::Inviting { .. }) if status < 300 => {
                let now = Instant::now();
                let setup_us = now.duration_since(self.calls[i].first_sent).as_micros() as u64;
                self.learn_dialog(i, msg);
                self.calls[i].pending = None;
                self.ack_2xx(i).await;
                match sipmsg::sdp_media(msg.body) {
                    Some((rtp, 0)) if rtp.ip().is_loopback() => {
                        self.calls[i].state = State::Connected;
                        self.shared.setup_latency.record(setup_us);
                        self.shared.peer_port[i].store(rtp.port(), Relaxed);
                        self.report.set_up += 1;
                        self.progress.answered.fetch_add(1, Relaxed);
                        self.progress.live.fetch_add(1, Relaxed);
                        self.last_answer = Some(now);
                    }
                    // An answer we cannot use: count it failed and end the call.
                    _ => {
                        self.fail(i, 606);
                        self.calls[i].state = State::Connected;
                        self.progress.live.fetch_add(1, Relaxed);
                        self.hang_up(i).await;
                    }
                }
            }
            ("INVITE", State::Inviting { .. }) => {
                let ack = self.dialog(i).ack(
                    &self.calls[i].invite_branch,
                    &self.dialog(i).request_uri(),
                    msg.header("To").and_then(sipmsg::tag_of),
                );
                self.send(&ack).await;
                self.fail(i, status);
            }
            // A 200 OK after we gave up (no final response within 32 s):
            // ACK it as RFC 3261 requires, then end the call at once.
            ("INVITE", State::Failed(408)) if (200..300).contains(&status) => {
                self.report.late_answers += 1;
                self.learn_dialog(i, msg);
                self.calls[i].state = State::Connected;
                self.progress.live.fetch_add(1, Relaxed);
                self.ack_2xx(i).await;
                self.hang_up(i).await;
            }
            // A retransmitted 200 OK: our ACK was lost (or is late).
            ("INVITE", State::Connected | State::Terminating) if (200..300).contains(&status) => {
                self.ack_2xx(i).await;
            }
            ("BYE", State::Terminating) if status >= 200 => {
                let c = &mut self.calls[i];
                let bye_us = c.first_sent.elapsed().as_micros() as u64;
                c.state = State::Terminated;
                c.pending = None;
                if status < 300 {
                    self.report.byes_ok += 1;
                    self.shared.bye_latency.record(bye_us);
                } else {
                    self.report.byes_failed += 1;
                }
                self.progress.live.fetch_sub(1, Relaxed);
            }
            _ => {}
        }
    }

    /// Remembers the dialog a 2xx established: the daemon's tag and Contact.
    fn learn_dialog(&mut self, i: usize, ok: &Msg<'_>) {
        let c = &mut self.calls[i];
        c.to_tag = ok
            .header("To")
            .and_then(sipmsg::tag_of)
            .unwrap_or_default()
            .to_string();
        c.target = match ok.header("Contact").map(sipmsg::uri_of) {
            Some(uri) if !uri.is_empty() => uri.to_string(),
            _ => format!("sip:bench@{}", self.daemon),
        };
    }

    async fn ack_2xx(&mut self, i: usize) {
        let branch = self.new_branch();
        let c = &self.calls[i];
        let ack = self.dialog(i).ack(&branch, &c.target, Some(&c.to_tag));
        self.send(&ack).await;
    }
}

/// When call `index` is due at `rate` per second from `start`.
fn due(start: Instant, rate: f64, index: usize) -> Instant {
    start + Duration::from_secs_f64(index as f64 / rate.max(0.001))
}

/// The number call `i` dials: `c{i % clients}`, or `bench` when every
/// client is offered every call.
pub fn callee(i: usize, clients: Option<usize>) -> String {
    match clients {
        Some(k) => format!("c{}", i % k.max(1)),
        None => "bench".to_string(),
    }
}
