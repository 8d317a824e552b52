//! A registrar for the tests, written from RFC 3261 section 10 and RFC 2617
//! with plain strings over UDP (not siprelay's SIP stack): it challenges
//! every REGISTER without credentials with 401 (MD5, qop=auth), checks the
//! digest itself, and grants a lifetime of its choosing.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use md5::{Digest, Md5};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::sip::SipMessage;

pub const REALM: &str = "registrar.test";

/// How the registrar answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Challenge, then grant this many seconds to a correct digest.
    Grant { expires: u32 },
    /// Answer every REGISTER with this status (no challenge).
    Refuse(u16),
    /// Read and say nothing.
    Silent,
}

/// One REGISTER as the registrar saw it, with its verdict.
#[derive(Debug, Clone)]
pub struct Seen {
    pub msg: SipMessage,
    pub from: SocketAddr,
    /// It carried an Authorization header with the right digest.
    pub authorized: bool,
    /// Expires it asked for: the Contact's `expires` parameter or the header.
    pub expires: Option<u32>,
    pub status: u16,
}

pub struct Registrar {
    pub addr: SocketAddr,
    pub seen: mpsc::UnboundedReceiver<Seen>,
    /// OPTIONS requests (keep-alives), answered 200.
    pub options: mpsc::UnboundedReceiver<SipMessage>,
    /// When set, the `received`/`rport` the registrar claims to have seen.
    nat: Arc<Mutex<Option<SocketAddr>>>,
    mode: Arc<Mutex<Mode>>,
    task: tokio::task::JoinHandle<()>,
}

impl Registrar {
    /// A registrar on an ephemeral loopback port for `user` with `password`.
    pub async fn start(user: &str, password: &str, mode: Mode) -> Registrar {
        Self::start_on("127.0.0.1:0", user, password, mode).await
    }

    pub async fn start_on(bind: &str, user: &str, password: &str, mode: Mode) -> Registrar {
        let sock = UdpSocket::bind(bind).await.unwrap();
        let addr = sock.local_addr().unwrap();
        let (tx, seen) = mpsc::unbounded_channel();
        let (options_tx, options) = mpsc::unbounded_channel();
        let mode = Arc::new(Mutex::new(mode));
        let nat = Arc::new(Mutex::new(None));
        let task = tokio::spawn(serve(
            sock,
            user.to_string(),
            password.to_string(),
            mode.clone(),
            nat.clone(),
            tx,
            options_tx,
        ));
        Registrar {
            addr,
            seen,
            options,
            nat,
            mode,
            task,
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Claims from now on that requests come from `public` (a NAT in between).
    pub fn set_nat(&self, public: SocketAddr) {
        *self.nat.lock().unwrap() = Some(public);
    }

    /// The next REGISTER within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Seen> {
        tokio::time::timeout(wait, self.seen.recv()).await.ok()?
    }

    /// Waits for a REGISTER the registrar accepted.
    pub async fn next_granted(&mut self, wait: Duration) -> Seen {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let seen = self.next(left).await.expect("a granted REGISTER in time");
            if seen.status == 200 {
                return seen;
            }
        }
    }

    /// Stops answering and closes the socket.
    pub fn stop(self) {
        self.task.abort();
    }
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `name="value"` and `name=value` parameters of a Digest header.
fn digest_params(value: &str) -> Vec<(String, String)> {
    let value = value.trim().strip_prefix("Digest").unwrap_or(value);
    let mut out = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        let Some((name, after)) = rest.split_once('=') else {
            break;
        };
        let (val, after) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (&q[..end], q.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim(), &after[end..])
        };
        out.push((name.trim().to_string(), val.to_string()));
        rest = after.trim_start_matches([',', ' ']).trim();
    }
    out
}

/// Checks an Authorization header against RFC 2617 with qop=auth.
pub fn digest_ok(header: &str, method: &str, user: &str, password: &str, nonce: &str) -> bool {
    let p = digest_params(header);
    let get = |k: &str| {
        p.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    };
    let (Some(username), Some(realm), Some(got_nonce), Some(uri), Some(response)) = (
        get("username"),
        get("realm"),
        get("nonce"),
        get("uri"),
        get("response"),
    ) else {
        return false;
    };
    if username != user || realm != REALM || got_nonce != nonce {
        return false;
    }
    let ha1 = md5_hex(&format!("{user}:{REALM}:{password}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    let expected = match (get("qop"), get("nc"), get("cnonce")) {
        (Some(qop), Some(nc), Some(cnonce)) => {
            md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"))
        }
        _ => md5_hex(&format!("{ha1}:{nonce}:{ha2}")),
    };
    response == expected
}

fn asked_expires(msg: &SipMessage) -> Option<u32> {
    msg.header("Contact")
        .and_then(|c| c.split(';').find_map(|p| p.trim().strip_prefix("expires=")))
        .and_then(|v| v.trim().parse().ok())
        .or_else(|| msg.header("Expires").and_then(|v| v.trim().parse().ok()))
}

/// A response to `req` copying its Via (with `received` and `rport`),
/// From, To (tagged), Call-ID and CSeq.
pub fn response(req: &SipMessage, from: SocketAddr, status: &str, extra: &str) -> String {
    let mut out = format!("SIP/2.0 {status}\r\n");
    for (i, via) in req.all("Via").iter().enumerate() {
        if i == 0 {
            let via = via.replace(";rport", "");
            out.push_str(&format!(
                "Via: {via};received={};rport={}\r\n",
                from.ip(),
                from.port()
            ));
        } else {
            out.push_str(&format!("Via: {via}\r\n"));
        }
    }
    let to = req.header("To").unwrap_or_default();
    let to = if to.contains("tag=") {
        to.to_string()
    } else {
        format!("{to};tag=reg1")
    };
    out.push_str(&format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
        req.header("From").unwrap_or_default(),
        req.header("Call-ID").unwrap_or_default(),
        req.header("CSeq").unwrap_or_default(),
    ));
    out
}

async fn serve(
    sock: UdpSocket,
    user: String,
    password: String,
    mode: Arc<Mutex<Mode>>,
    nat: Arc<Mutex<Option<SocketAddr>>>,
    tx: mpsc::UnboundedSender<Seen>,
    options: mpsc::UnboundedSender<SipMessage>,
) {
    let mut buf = vec![0u8; 65536];
    let nonce = "5f0a1b2c3d4e5f60";
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            return;
        };
        let Some(msg) = SipMessage::parse(&String::from_utf8_lossy(&buf[..n])) else {
            continue;
        };
        let seen_from = nat.lock().unwrap().unwrap_or(from);
        if msg.method() == Some("OPTIONS") {
            let ok = response(&msg, seen_from, "200 OK", "");
            let _ = sock.send_to(ok.as_bytes(), from).await;
            let _ = options.send(msg);
            continue;
        }
        if msg.method() != Some("REGISTER") {
            continue;
        }
        let mode = mode.lock().unwrap().clone();
        let authorized = msg
            .header("Authorization")
            .is_some_and(|h| digest_ok(h, "REGISTER", &user, &password, nonce));
        let expires = asked_expires(&msg);
        let (status, text) = match mode {
            Mode::Silent => (0, None),
            Mode::Refuse(status) => (status, Some(response(&msg, seen_from, &format!("{status} Refused"), ""))),
            Mode::Grant { .. } if !authorized => (
                401,
                Some(response(
                    &msg,
                    seen_from,
                    "401 Unauthorized",
                    &format!("WWW-Authenticate: Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm=MD5, qop=\"auth\"\r\n"),
                )),
            ),
            Mode::Grant { expires: grant } => {
                let contact = msg.header("Contact").unwrap_or_default();
                let contact = contact.split(";expires").next().unwrap_or_default();
                let grant = if expires == Some(0) { 0 } else { grant };
                (
                    200,
                    Some(response(
                        &msg,
                        seen_from,
                        "200 OK",
                        &format!("Contact: {contact};expires={grant}\r\n"),
                    )),
                )
            }
        };
        if let Some(text) = text {
            let _ = sock.send_to(text.as_bytes(), from).await;
        }
        let _ = tx.send(Seen {
            msg,
            from,
            authorized,
            expires,
            status,
        });
    }
}
