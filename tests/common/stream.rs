//! SIP over a byte stream (TCP or TLS) for the tests, from RFC 3261
//! section 18.3: messages framed by Content-Length, written as plain text.

use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout, Instant};

use super::sip::SipMessage;

pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// One SIP connection.
pub struct StreamSip {
    io: Pin<Box<dyn Stream>>,
    buf: Vec<u8>,
    /// Messages read while waiting for something else.
    backlog: Vec<SipMessage>,
}

impl StreamSip {
    pub fn new(io: impl Stream + 'static) -> StreamSip {
        StreamSip {
            io: Box::pin(io),
            buf: Vec::new(),
            backlog: Vec::new(),
        }
    }

    pub async fn send(&mut self, text: &str) {
        self.io.write_all(text.as_bytes()).await.unwrap();
        self.io.flush().await.unwrap();
    }

    /// One whole message from the buffer, if there is one.
    fn take(&mut self) -> Option<SipMessage> {
        // Keep-alive CRLFs between messages (RFC 5626) are skipped.
        while self.buf.starts_with(b"\r\n") {
            self.buf.drain(..2);
        }
        let text = String::from_utf8_lossy(&self.buf).to_string();
        let end = text.find("\r\n\r\n")?;
        let head = &text[..end];
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                let name = name.trim();
                (name.eq_ignore_ascii_case("Content-Length") || name == "l")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        let total = end + 4 + length;
        if self.buf.len() < total {
            return None;
        }
        let raw: Vec<u8> = self.buf.drain(..total).collect();
        SipMessage::parse(&String::from_utf8_lossy(&raw))
    }

    pub async fn recv(&mut self, wait: Duration) -> Option<SipMessage> {
        if !self.backlog.is_empty() {
            return Some(self.backlog.remove(0));
        }
        let deadline = Instant::now() + wait;
        loop {
            if let Some(m) = self.take() {
                return Some(m);
            }
            let mut chunk = [0u8; 8192];
            let n = timeout(
                deadline.saturating_duration_since(Instant::now()),
                self.io.read(&mut chunk),
            )
            .await
            .ok()?
            .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Waits for a message matching `pred`, keeping the others for later.
    pub async fn expect(&mut self, what: &str, pred: impl Fn(&SipMessage) -> bool) -> SipMessage {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(i);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(m) = self.recv(left).await else {
                let seen: Vec<_> = skipped
                    .iter()
                    .map(|m: &SipMessage| m.start.clone())
                    .collect();
                panic!("timed out waiting for {what}; saw {seen:?}");
            };
            if pred(&m) {
                self.backlog.extend(skipped);
                return m;
            }
            skipped.push(m);
        }
    }

    pub async fn expect_response(&mut self, method: &str, status: u16) -> SipMessage {
        self.expect(&format!("{status} to {method}"), |m| {
            m.status() == Some(status) && m.cseq_method() == method
        })
        .await
    }

    pub async fn expect_request(&mut self, method: &str) -> SipMessage {
        self.expect(method, |m| m.method() == Some(method)).await
    }

    /// Answers `req` with `status`, copying Via/From/To/Call-ID/CSeq.
    pub async fn respond(&mut self, req: &SipMessage, status: &str, contact: &str, body: &str) {
        let mut out = format!("SIP/2.0 {status}\r\n");
        for v in req.all("Via") {
            out.push_str(&format!("Via: {v}\r\n"));
        }
        let to = req.header("To").unwrap();
        let to = if to.contains("tag=") {
            to.to_string()
        } else {
            format!("{to};tag=stream1")
        };
        out.push_str(&format!(
            "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: {contact}\r\n",
            req.header("From").unwrap(),
            req.header("Call-ID").unwrap(),
            req.header("CSeq").unwrap(),
        ));
        if !body.is_empty() {
            out.push_str("Content-Type: application/sdp\r\n");
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        self.send(&out).await;
    }
}
