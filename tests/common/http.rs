//! A minimal HTTP/1.1 client for the REST tests: one request per
//! connection, the raw status, headers and body back.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends `method path` with extra header lines; reads to connection close.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    request_with_body(addr, method, path, headers, b"").await
}

/// `POST path` with a JSON body, as `curl -d` sends it (form content type).
pub async fn post(addr: SocketAddr, path: &str, body: &str) -> HttpResponse {
    request_with_body(addr, "POST", path, &[], body.as_bytes()).await
}

/// Sends a request with a body; reads to connection close.
pub async fn request_with_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).await.expect("HTTP connects");
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("Host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    req.push_str("Connection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("Content-Type"))
        {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    // A server may answer (413) and close before reading all of a large body.
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    request(addr, "GET", path, &[]).await
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&data[..eol]).to_string();
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
}

/// A `GET /events` stream read as it arrives.
pub struct EventStream {
    stream: TcpStream,
    buffered: String,
}

impl EventStream {
    /// Opens the stream and waits for the response head (200): from then
    /// on every event is captured.
    pub async fn open(addr: SocketAddr, path: &str) -> EventStream {
        let mut stream = TcpStream::connect(addr).await.expect("HTTP connects");
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut s = EventStream {
            stream,
            buffered: String::new(),
        };
        let head = s
            .read_until("\r\n\r\n", std::time::Duration::from_secs(5))
            .await;
        let head = head.expect("a response head");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("text/event-stream"),
            "{head}"
        );
        s
    }

    async fn read_until(&mut self, end: &str, wait: std::time::Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(at) = self.buffered.find(end) {
                let taken: String = self.buffered.drain(..at + end.len()).collect();
                return Some(taken);
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut buf))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buffered.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }

    /// The next event's JSON, skipping keep-alive comments; None after `wait`.
    pub async fn next(&mut self, wait: std::time::Duration) -> Option<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let chunk = self.read_until("\n\n", left).await?;
            // The body is chunked: SSE lines sit between chunk-size lines.
            if let Some(data) = chunk.lines().find_map(|l| l.strip_prefix("data: ")) {
                return Some(serde_json::from_str(data).expect("event data is JSON"));
            }
        }
    }

    /// The next event, which must be `name`.
    pub async fn expect(&mut self, name: &str) -> serde_json::Value {
        let e = self
            .next(std::time::Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("no {name} event"));
        assert_eq!(e["event"], name, "{e}");
        e
    }
}
