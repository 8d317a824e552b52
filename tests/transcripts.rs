//! Replays every golden transcript in `protocol/transcripts/` against the
//! real daemon (format: `protocol/transcripts/README.md`).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::sip::{Dialog, SipMessage, SipPeer};
use common::{rtp_range, start_with, WsClient};
use siprelay::config::Config;

/// Where the peer's SIP conversation stands.
#[derive(Default)]
struct SipState {
    dialog: Option<Dialog>,
    /// The last final response to our INVITE.
    final_response: Option<SipMessage>,
    /// The INVITE we received (as callee) and where it came from.
    invite: Option<(SipMessage, SocketAddr)>,
    /// The last request we received and whether we already answered it finally.
    last_request: Option<(SipMessage, SocketAddr, bool)>,
}

struct Replay {
    file: String,
    peer: SipPeer,
    clients: HashMap<String, WsClient>,
    http: SocketAddr,
    dialect_path: &'static str,
    vars: HashMap<String, String>,
    sip: SipState,
}

impl Replay {
    async fn client(&mut self, name: &str) -> &mut WsClient {
        if !self.clients.contains_key(name) {
            let c = WsClient::connect_path(self.http, self.dialect_path).await;
            self.clients.insert(name.to_string(), c);
        }
        self.clients.get_mut(name).unwrap()
    }

    fn substitute(&self, text: &str) -> String {
        let mut out = text.replace("{peer}", &self.peer.addr.to_string());
        for (k, v) in &self.vars {
            out = out.replace(&format!("{{{k}}}"), v);
        }
        out
    }

    async fn step(&mut self, line_no: usize, line: &str) {
        let at = format!("{}:{line_no}: {line}", self.file);
        let (actor, rest) = line.split_once(' ').unwrap_or((line, ""));
        match actor {
            "ws>" | "ws2>" => {
                let text = self.substitute(rest);
                let name = actor.trim_end_matches('>').to_string();
                self.client(&name).await.send(&text).await;
            }
            "ws<" | "ws2<" => {
                let name = actor.trim_end_matches('<').to_string();
                let pattern = self.substitute(rest);
                let got = self
                    .client(&name)
                    .await
                    .next_text(Duration::from_secs(10), false)
                    .await;
                let got = got.unwrap_or_else(|| panic!("{at}: nothing received"));
                match match_pattern(&pattern, &got) {
                    Some(bound) => self.vars.extend(bound),
                    None => panic!("{at}: received {got:?}"),
                }
            }
            "sip>" => self.sip_send(rest, &at).await,
            "sip<" => self.sip_expect(rest, &at).await,
            _ => panic!("{at}: unknown actor"),
        }
    }

    async fn sip_send(&mut self, rest: &str, at: &str) {
        let words: Vec<&str> = rest.split_whitespace().collect();
        match words.as_slice() {
            ["INVITE", from, to, codecs] => {
                let formats = codecs.replace(',', " ");
                self.sip = SipState {
                    dialog: Some(self.peer.invite(from, to, Some(&formats)).await),
                    ..SipState::default()
                };
            }
            ["ACK"] => {
                let resp = self
                    .sip
                    .final_response
                    .clone()
                    .unwrap_or_else(|| panic!("{at}: no final response to ACK"));
                let d = self.sip.dialog.as_mut().unwrap();
                if resp.status() == Some(200) {
                    self.peer.ack(d, &resp).await;
                } else {
                    self.peer.ack_failure(d, &resp).await;
                }
            }
            ["BYE"] => self.peer.send_bye(self.sip.dialog.as_mut().unwrap()).await,
            ["CANCEL"] => self.peer.cancel(self.sip.dialog.as_ref().unwrap()).await,
            [status, reason @ ..] => {
                let status: u16 = status
                    .parse()
                    .unwrap_or_else(|_| panic!("{at}: not a status"));
                let reason = if reason.is_empty() {
                    "OK".to_string()
                } else {
                    reason.join(" ")
                };
                // The last request, unless it was already answered: then the pending INVITE.
                let (req, from) = match &mut self.sip.last_request {
                    Some((req, from, answered)) if !*answered => {
                        *answered = status >= 200;
                        (req.clone(), *from)
                    }
                    _ => self
                        .sip
                        .invite
                        .clone()
                        .unwrap_or_else(|| panic!("{at}: nothing to answer")),
                };
                let d = self.sip.dialog.clone().unwrap();
                if req.method() == Some("INVITE") && status == 200 {
                    self.peer.send_answer(&d, from, 0).await;
                } else {
                    self.peer
                        .respond(&req, from, status, &reason, Some(&d.local_tag), None)
                        .await;
                }
            }
            _ => panic!("{at}: cannot perform"),
        }
    }

    async fn sip_expect(&mut self, rest: &str, at: &str) {
        let words: Vec<&str> = rest.split_whitespace().collect();
        match words.as_slice() {
            ["INVITE"] => {
                let (d, from) = self.peer.accept_invite().await;
                let invite = d.invite.clone().unwrap();
                self.sip = SipState {
                    dialog: Some(d),
                    invite: Some((invite.clone(), from)),
                    last_request: Some((invite, from, false)),
                    ..SipState::default()
                };
            }
            [method] if method.chars().all(|c| c.is_ascii_uppercase()) => {
                let (req, from) = self.peer.expect_request(method).await;
                if *method != "ACK" {
                    self.sip.last_request = Some((req, from, false));
                }
            }
            [status, method @ ..] => {
                let status: u16 = status
                    .parse()
                    .unwrap_or_else(|_| panic!("{at}: not a status"));
                let method = method.first().copied().unwrap_or("INVITE");
                let resp = self.peer.expect_response(method, status).await;
                if method == "INVITE" && status >= 200 {
                    self.sip.final_response = Some(resp);
                }
            }
            _ => panic!("{at}: cannot expect"),
        }
    }
}

/// Matches `got` against `pattern`, where each unbound `{name}` captures a
/// run of characters up to the next literal text. Returns the bindings.
fn match_pattern(pattern: &str, got: &str) -> Option<HashMap<String, String>> {
    let mut bound = HashMap::new();
    let mut rest_pattern = pattern;
    let mut rest = got;
    loop {
        match rest_pattern.find('{') {
            None => return (rest == rest_pattern).then_some(bound),
            Some(open) => {
                let close = rest_pattern[open..].find('}')? + open;
                let (literal, name) = (&rest_pattern[..open], &rest_pattern[open + 1..close]);
                rest = rest.strip_prefix(literal)?;
                rest_pattern = &rest_pattern[close + 1..];
                let next_literal_end = rest_pattern.find('{').unwrap_or(rest_pattern.len());
                let next_literal = &rest_pattern[..next_literal_end];
                let end = if next_literal.is_empty() {
                    rest.len()
                } else {
                    rest.find(next_literal)?
                };
                if end == 0 {
                    return None;
                }
                bound.insert(name.to_string(), rest[..end].to_string());
                rest = &rest[end..];
            }
        }
    }
}

async fn replay(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut config = Config::loopback(rtp_range(8));
    let mut dialect_path = "/ws";
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("@ring-timeout ") {
            config.ring_timeout = Duration::from_secs(v.trim().parse().unwrap());
        }
        if line.trim() == "@dialect legacy" {
            dialect_path = "/ws?dialect=legacy";
        }
    }
    let daemon = start_with(config).await;
    let mut r = Replay {
        file: path.file_name().unwrap().to_string_lossy().to_string(),
        peer: SipPeer::new(daemon.sip_addr()).await,
        clients: HashMap::new(),
        http: daemon.http_addr,
        dialect_path,
        vars: HashMap::new(),
        sip: SipState::default(),
    };
    // Client 1 is connected before anything happens, so calls are offered to it.
    r.client("ws").await;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('@') {
            continue;
        }
        r.step(i + 1, line).await;
    }
    daemon.shutdown().await;
}

fn transcripts() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol/transcripts");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn every_golden_transcript_replays() {
    let files = transcripts();
    assert!(files.len() >= 10, "transcripts are present");
    futures_util::future::join_all(files.iter().map(|f| replay(f))).await;
}

#[test]
fn pattern_matching_binds_and_checks_variables() {
    let b = match_pattern("RING_ANS:1001##{call}", "RING_ANS:1001##abc").unwrap();
    assert_eq!(b["call"], "abc");
    assert!(match_pattern("RING_ANS:1001##{call}", "RING_ANS:1002##abc").is_none());
    let b = match_pattern("ERROR:409 call {c} is gone", "ERROR:409 call x1 is gone").unwrap();
    assert_eq!(b["c"], "x1");
    assert!(match_pattern("BYE", "BYE:x").is_none());
}
