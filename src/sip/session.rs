//! The SIP extensions siprelay's dialogs take part in, and the headers that
//! say so: session timers (RFC 4028) kept by [`SessionRefresh`] around the
//! pure [`SessionTimer`], reliable provisional responses (RFC 3262), and
//! the capability headers (`Allow`, `Supported`, `Accept`) of OPTIONS
//! answers and 2xx responses.

use std::time::Instant;

use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Header, Headers, Request, Response};
use tokio::task::JoinHandle;

#[cfg(test)]
use crate::call::session_timer::MIN_SE;
use crate::call::session_timer::{Answer, Due, SessionExpires, SessionTimer};
use crate::call::state::Input;

/// The methods siprelay answers.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, PRACK";
/// The extensions siprelay supports; a `Require` of anything else is 420.
pub const SUPPORTED: &[&str] = &["timer", "100rel"];
/// The bodies siprelay understands.
pub const ACCEPT: &str = "application/sdp";

/// `Allow` and `Supported`, for 2xx responses and requests that start a dialog.
pub fn capability_headers() -> Vec<Header> {
    vec![
        Header::Allow(ALLOW.into()),
        Header::Supported(SUPPORTED.join(", ").into()),
    ]
}

/// The comma-separated tokens of every header called `name`, lower-cased.
pub fn tokens<'a>(headers: impl IntoIterator<Item = &'a Header>, name: &str) -> Vec<String> {
    headers
        .into_iter()
        .filter(|h| h.name().eq_ignore_ascii_case(name))
        .flat_map(|h| {
            h.value()
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The extensions a request requires that siprelay does not support
/// (answered 420 with them in `Unsupported`, RFC 3261 section 8.2.2.3).
pub fn unsupported(req: &Request) -> Vec<String> {
    tokens(req.headers.iter(), "Require")
        .into_iter()
        .filter(|t| !SUPPORTED.contains(&t.as_str()))
        .collect()
}

/// Whether a message lists `token` in a header called `name`.
pub fn lists(headers: &Headers, name: &str, token: &str) -> bool {
    tokens(headers.iter(), name).iter().any(|t| t == token)
}

fn header(headers: &Headers, name: &str) -> Option<String> {
    headers
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))
        .map(|h| h.value().trim().to_string())
}

/// What a request from the far end asks of the session timer, given the
/// shortest interval siprelay takes (`floor`).
pub fn answer_request(now: Instant, headers: &Headers, floor: u32) -> Answer {
    let requested = header(headers, "Session-Expires").and_then(|v| SessionExpires::parse(&v));
    let min_se = header(headers, "Min-SE").and_then(|v| v.parse().ok());
    SessionTimer::answer(
        now,
        requested,
        min_se,
        lists(headers, "Supported", "timer"),
        floor,
    )
}

/// The headers of a 2xx that agrees to `answer`'s timer.
pub fn answer_headers(answer: &Answer) -> Vec<Header> {
    match answer {
        Answer::Timer {
            header, require, ..
        } => {
            let mut h = vec![Header::SessionExpires(header.header_value().into())];
            if *require {
                h.push(Header::Require("timer".into()));
            }
            h
        }
        Answer::None | Answer::TooSmall(_) => Vec::new(),
    }
}

/// The `Session-Expires` of a response.
pub fn response_session_expires(resp: &Response) -> Option<SessionExpires> {
    header(&resp.headers, "Session-Expires").and_then(|v| SessionExpires::parse(&v))
}

/// A refresh's final response (None: none came), or why it was not sent.
type RefreshResult = Result<Option<Response>, String>;

/// A dialog's session timer and the refresh it may have under way.
pub struct SessionRefresh {
    timer: Option<SessionTimer>,
    pending: Option<JoinHandle<RefreshResult>>,
    /// The shortest interval siprelay takes.
    floor: u32,
}

impl SessionRefresh {
    pub fn new(floor: u32) -> SessionRefresh {
        SessionRefresh {
            timer: None,
            pending: None,
            floor,
        }
    }

    pub fn set(&mut self, timer: Option<SessionTimer>) {
        self.timer = timer;
    }

    /// When [`SessionRefresh::on_due`] should run.
    pub fn deadline(&self) -> Option<Instant> {
        self.timer.as_ref().map(SessionTimer::poll_timeout)
    }

    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// The timer is due: sends a refresh (a re-INVITE with our SDP, in the
    /// background), or tells the call its session expired.
    pub fn on_due(&mut self, now: Instant, dialog: &InviteDialog, our_sdp: &str) -> Option<Input> {
        match self.timer.as_mut()?.handle_timeout(now)? {
            Due::Expired => {
                tracing::info!("session timer expired: the far end stopped refreshing");
                Some(Input::SessionExpired)
            }
            Due::Refresh(se) if self.pending.is_none() => {
                let dialog = dialog.clone();
                let mut headers = vec![
                    Header::SessionExpires(se.header_value().into()),
                    Header::ContentType("application/sdp".into()),
                ];
                headers.extend(capability_headers());
                let body = our_sdp.as_bytes().to_vec();
                tracing::debug!(interval = se.seconds, "refreshing the session");
                self.pending = Some(tokio::spawn(async move {
                    dialog
                        .reinvite(Some(headers), Some(body))
                        .await
                        .map_err(|e| e.to_string())
                }));
                None
            }
            Due::Refresh(_) => None,
        }
    }

    /// The refresh under way, as a future for the call's `select!`.
    pub async fn refreshed(&mut self) -> RefreshResult {
        match self.pending.as_mut() {
            Some(task) => {
                let result = task.await;
                self.pending = None;
                result.unwrap_or_else(|e| Err(e.to_string()))
            }
            None => std::future::pending().await,
        }
    }

    /// How our refresh ended: the timer runs on, or the call is over
    /// (RFC 4028 section 10: 408 or 481 mean the dialog is gone).
    pub fn on_refreshed(&mut self, now: Instant, result: RefreshResult) -> Option<Input> {
        match result {
            Ok(Some(resp))
                if resp.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful =>
            {
                let renewed =
                    SessionTimer::accepted(now, response_session_expires(&resp), self.floor);
                match (self.timer.as_mut(), renewed) {
                    (Some(timer), Some(renewed)) => timer.refreshed(now, renewed),
                    (_, renewed) => self.timer = renewed,
                }
                None
            }
            Ok(Some(resp)) if matches!(resp.status_code.code(), 408 | 481) => {
                tracing::info!(
                    status = resp.status_code.code(),
                    "session refresh found no dialog"
                );
                Some(Input::SessionExpired)
            }
            Ok(Some(resp)) => {
                tracing::info!(
                    status = resp.status_code.code(),
                    "session refresh refused; trying again later"
                );
                None
            }
            Ok(None) | Err(_) => {
                tracing::info!("session refresh unanswered");
                Some(Input::SessionExpired)
            }
        }
    }

    /// The far end refreshed (a re-INVITE or UPDATE we answered per `answer`).
    pub fn on_remote_refresh(&mut self, now: Instant, answer: &Answer) {
        match answer {
            Answer::Timer { timer, .. } => match self.timer.as_mut() {
                Some(t) => t.refreshed(now, timer.clone()),
                None => self.timer = Some(timer.clone()),
            },
            // A refresh without Session-Expires turns the timer off.
            Answer::None => self.timer = None,
            Answer::TooSmall(_) => {}
        }
    }
}

/// Reliable provisional responses (RFC 3262) as the callee: the 180 is
/// sent with `Require: 100rel` and an `RSeq`, and sent again (T1 doubling,
/// up to 64 T1) until its PRACK arrives or the call is answered.
pub struct ReliableRinging {
    next: Option<Instant>,
    wait: std::time::Duration,
    sent_for: std::time::Duration,
}

/// RFC 3261's T1.
const T1: std::time::Duration = std::time::Duration::from_millis(500);

impl ReliableRinging {
    pub const RSEQ: u32 = 1;

    /// The 180's headers.
    pub fn headers() -> Vec<Header> {
        vec![
            Header::Require("100rel".into()),
            Header::RSeq(Self::RSEQ.to_string().into()),
        ]
    }

    pub fn start(now: Instant) -> ReliableRinging {
        ReliableRinging {
            next: Some(now + T1),
            wait: T1,
            sent_for: T1,
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.next
    }

    /// Due: true to send the 180 again; None when 64 T1 have passed
    /// without a PRACK (the offer stands; retransmitting stops).
    pub fn on_due(&mut self, now: Instant) -> bool {
        match self.next {
            Some(due) if now >= due => {
                if self.sent_for >= T1 * 64 {
                    self.next = None;
                    return false;
                }
                self.wait = (self.wait * 2).min(std::time::Duration::from_secs(4));
                self.sent_for += self.wait;
                self.next = Some(now + self.wait);
                true
            }
            _ => false,
        }
    }

    /// The PRACK came, or a final response went out.
    pub fn stop(&mut self) {
        self.next = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(extra: &str) -> Request {
        let text = format!(
            "INVITE sip:2000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
             From: <sip:1001@127.0.0.1>;tag=a\r\nTo: <sip:2000@127.0.0.1>\r\nCall-ID: c1\r\n\
             CSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        Request::try_from(text.as_str()).unwrap()
    }

    #[test]
    fn unknown_required_extensions_are_named() {
        assert!(unsupported(&request("")).is_empty());
        assert!(unsupported(&request("Require: timer, 100rel\r\n")).is_empty());
        assert_eq!(
            unsupported(&request("Require: timer\r\nRequire: precondition, Foo\r\n")),
            ["precondition", "foo"]
        );
    }

    #[test]
    fn a_timer_request_gets_its_answer_headers() {
        let now = Instant::now();
        let req = request("Supported: timer\r\nSession-Expires: 1800\r\nMin-SE: 90\r\n");
        let answer = answer_request(now, &req.headers, MIN_SE);
        let headers: Vec<String> = answer_headers(&answer)
            .iter()
            .map(|h| h.to_string())
            .collect();
        assert_eq!(
            headers,
            ["Session-Expires: 1800;refresher=uac", "Require: timer"]
        );
        let req = request("Session-Expires: 30\r\n");
        assert_eq!(
            answer_request(now, &req.headers, MIN_SE),
            Answer::TooSmall(90)
        );
    }

    #[test]
    fn reliable_ringing_backs_off_and_gives_up_after_64_t1() {
        let t0 = Instant::now();
        let mut r = ReliableRinging::start(t0);
        let mut sends = Vec::new();
        while let Some(due) = r.deadline() {
            if r.on_due(due) {
                sends.push((due - t0).as_millis());
            }
        }
        assert_eq!(&sends[..4], &[500, 1500, 3500, 7500]);
        assert!(*sends.last().unwrap() <= 32_000, "{sends:?}");
        let mut r = ReliableRinging::start(t0);
        r.stop();
        assert_eq!(r.deadline(), None);
    }
}
