//! Resource limits seen from outside: WebSocket clients past `max_clients`
//! get a clear 503, `/readyz` names the cause, and a freed slot is taken
//! again.

mod common;

use std::time::Duration;

use common::{http, rtp_range, start_with, WsClient};
use siprelay::config::Config;

/// A WebSocket upgrade by hand: the status line and headers, and the
/// body when the daemon refuses (a 101 leaves the connection open).
async fn upgrade(addr: std::net::SocketAddr) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn clients_past_max_clients_are_refused_clearly_until_one_leaves() {
    let mut config = Config::loopback(rtp_range(4));
    config.max_clients = 2;
    let daemon = start_with(config).await;
    let ready = http::get(daemon.http_addr, "/readyz").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["websocket_slots_free"], 2);

    let first = WsClient::connect(&daemon).await;
    let _second = WsClient::connect(&daemon).await;
    let (status, refused) = upgrade(daemon.http_addr).await;
    assert_eq!(status, 503, "{refused}");
    assert!(
        refused.to_ascii_lowercase().contains("retry-after: 5"),
        "{refused}"
    );
    assert!(refused.contains("too_many_clients"), "{refused}");
    let ready = http::get(daemon.http_addr, "/readyz").await;
    assert_eq!(ready.status, 503);
    let problems = ready.json()["problems"].to_string();
    assert!(problems.contains("max_clients"), "{problems}");

    drop(first);
    let mut again = None;
    for _ in 0..50 {
        if upgrade(daemon.http_addr).await.0 == 101 {
            again = Some(());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "a freed slot is taken again");
}

/// Whatever a connection has sent when the daemon closes it, within `wait`.
async fn closed_within(stream: &mut tokio::net::TcpStream, wait: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut text = String::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(text),
            Ok(Ok(n)) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let mut config = Config::loopback(rtp_range(4));
    config.http_header_timeout = Duration::from_millis(500);
    let daemon = start_with(config).await;
    let addr = daemon.http_addr;
    // Slowloris: headers a few bytes at a time, never finished.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The positive control: a request sent at once is answered, and the
    // kept-alive connection is then closed once idle for the limit.
    let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
    kept.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = slow.write_all(b"X-Slow: 1\r\n").await;
    }
    let answered = closed_within(&mut kept, Duration::from_secs(3))
        .await
        .unwrap();
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    assert!(closed_within(&mut slow, Duration::from_secs(3))
        .await
        .is_some());
    assert!(closed_within(&mut idle, Duration::from_secs(3))
        .await
        .is_some());
}
