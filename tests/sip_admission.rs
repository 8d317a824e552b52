//! Who may reach SIP, tried against the running daemon from loopback's
//! other addresses (127.0.0.2 and up are strangers; 127.0.0.1 is trusted
//! by default): a flooding source is cut off after its 16 requests per 2 s
//! over UDP and TCP, scanners and sources outside `sip_allow` get no
//! answer, unconfirmed calls are capped per source, and an answer never
//! ACKed ends the call as "no ACK" without sending media.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::sip::SipPeer;
use common::{call_id_of, http, rtp_range, start_with, WsClient};
use siprelay::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn options(from: SocketAddr, transport: &str, n: usize, user_agent: &str) -> String {
    format!(
        "OPTIONS sip:siprelay@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {from};branch=z9hG4bK-opt-{n}-{port};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@{from}>;tag=t{n}\r\nTo: <sip:siprelay@127.0.0.1>\r\n\
         Call-ID: options-{n}-{port}\r\nCSeq: {n} OPTIONS\r\nUser-Agent: {user_agent}\r\n\
         Content-Length: 0\r\n\r\n",
        port = from.port(),
    )
}

/// Sends `count` OPTIONS from `peer` at once and counts the 200s within a second.
async fn answered(peer: &mut SipPeer, count: usize, user_agent: &str) -> usize {
    for n in 0..count {
        peer.send_raw(&options(peer.addr, "UDP", n + 1, user_agent))
            .await;
    }
    let mut ok = 0;
    while let Some((m, _)) = peer.recv(Duration::from_secs(1)).await {
        if m.status() == Some(200) && m.cseq_method() == "OPTIONS" {
            ok += 1;
        }
    }
    ok
}

async fn refused(daemon: &siprelay::daemon::Daemon, reason: &str) -> u64 {
    metric(
        daemon,
        &format!("siprelay_sip_refused_total{{reason=\"{reason}\"}}"),
    )
    .await
}

async fn ended(daemon: &siprelay::daemon::Daemon, cause: &str) -> u64 {
    metric(
        daemon,
        &format!("siprelay_call_ends_total{{cause=\"{cause}\"}}"),
    )
    .await
}

async fn metric(daemon: &siprelay::daemon::Daemon, series: &str) -> u64 {
    let body = http::get(daemon.http_addr, "/metrics").await.body;
    let text = String::from_utf8_lossy(&body);
    let series = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn a_flooding_source_is_cut_off_while_trusted_loopback_is_not() {
    let daemon = start_with(Config::loopback(rtp_range(4))).await;
    let mut stranger = SipPeer::at("127.0.0.2", daemon.sip_addr()).await;
    assert_eq!(answered(&mut stranger, 40, "probe").await, 16);
    // Ignored now, even for a single request.
    assert_eq!(answered(&mut stranger, 1, "probe").await, 0);
    assert!(refused(&daemon, "flood").await >= 25);
    // The positive control: the same burst from 127.0.0.1 is all answered.
    let mut local = SipPeer::new(daemon.sip_addr()).await;
    assert_eq!(answered(&mut local, 40, "probe").await, 40);
}

#[tokio::test]
async fn a_flood_over_tcp_is_cut_off_too() {
    let mut config = Config::loopback(rtp_range(4));
    config.sip_listen_tcp = Some("127.0.0.1:0".parse().unwrap());
    let daemon = start_with(config).await;
    let tcp = daemon.sip.listening().tcp.unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let mut stream = socket.connect(tcp).await.unwrap();
    let me = stream.local_addr().unwrap();
    for n in 1..=30 {
        let msg = options(me, "TCP", n, "probe");
        stream.write_all(msg.as_bytes()).await.unwrap();
    }
    let mut text = String::new();
    let mut buf = vec![0u8; 65536];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // The connection counted as the first of the 16.
    assert_eq!(text.matches("SIP/2.0 200").count(), 15, "{text}");
}

#[tokio::test]
async fn scanners_get_no_answer_and_phones_do() {
    let daemon = start_with(Config::loopback(rtp_range(4))).await;
    let mut scanner = SipPeer::at("127.0.0.4", daemon.sip_addr()).await;
    assert_eq!(answered(&mut scanner, 1, "friendly-scanner").await, 0);
    // Whatever it sends next, it is ignored.
    assert_eq!(answered(&mut scanner, 1, "baresip").await, 0);
    let mut phone = SipPeer::at("127.0.0.5", daemon.sip_addr()).await;
    assert_eq!(answered(&mut phone, 1, "baresip v1.0.0").await, 1);
    assert_eq!(refused(&daemon, "scanner").await, 1);
}

#[tokio::test]
async fn only_allowed_networks_reach_sip() {
    let mut config = Config::loopback(rtp_range(4));
    config.sip_protection.allow = vec!["127.0.0.1/32".parse().unwrap()];
    let daemon = start_with(config).await;
    let mut outside = SipPeer::at("127.0.0.6", daemon.sip_addr()).await;
    assert_eq!(answered(&mut outside, 3, "baresip").await, 0);
    let mut inside = SipPeer::new(daemon.sip_addr()).await;
    assert_eq!(answered(&mut inside, 3, "baresip").await, 3);
    assert_eq!(refused(&daemon, "not_allowed").await, 3);
}

#[tokio::test]
async fn one_source_cannot_keep_more_than_its_share_of_calls_ringing() {
    let mut config = Config::loopback(rtp_range(8));
    config.sip_protection.max_ringing_per_source = 2;
    let daemon = start_with(config).await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut stranger = SipPeer::at("127.0.0.7", daemon.sip_addr()).await;
    for _ in 0..3 {
        stranger.invite("1001", "2000", Some("0")).await;
    }
    let busy = stranger.expect_response("INVITE", 503).await;
    assert_eq!(busy.header("Retry-After"), Some("30"));
    ws.expect("RING_ANS:").await;
    ws.expect("RING_ANS:").await;
    assert!(ws
        .next_text(Duration::from_millis(500), false)
        .await
        .is_none());
    // Another source's call still rings.
    let other = SipPeer::at("127.0.0.8", daemon.sip_addr()).await;
    other.invite("1002", "2000", Some("0")).await;
    ws.expect("RING_ANS:").await;
    assert_eq!(refused(&daemon, "ringing").await, 1);
}

#[tokio::test]
async fn an_answer_never_acked_ends_as_no_ack_and_sends_no_media() {
    let mut config = Config::loopback(rtp_range(4));
    // 64×T1 without an ACK: 3.2 s instead of 32.
    config.sip_t1 = Duration::from_millis(50);
    config.greeting = siprelay::config::Greeting::BuiltIn;
    let daemon = start_with(config).await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut caller = SipPeer::at("127.0.0.9", daemon.sip_addr()).await;
    caller.invite("1001", "2000", Some("0")).await;
    let id = call_id_of(&ws.expect("RING_ANS:").await);
    ws.send(&format!("CALL_ANS:{id}")).await;
    caller.expect_response("INVITE", 200).await;
    // No ACK: the 200 is retransmitted for 64×T1, then the call ends
    // with a BYE, and nothing was ever sent to the SDP's address.
    caller.expect_request("BYE").await;
    ws.expect("BYE:").await;
    let (_, packets, _) = caller.record(Duration::from_millis(300)).await;
    assert_eq!(packets, 0, "no RTP to an unconfirmed address");
    assert_eq!(ended(&daemon, "no-ack").await, 1);
    assert_eq!(ended(&daemon, "remote").await, 0);
    // The positive control: an ACKed call from the same source gets media.
    let mut d = caller.invite("1001", "2000", Some("0")).await;
    let id = call_id_of(&ws.expect("RING_ANS:").await);
    ws.send(&format!("CALL_ANS:{id}")).await;
    // (The first call's retransmitted 200s may still be queued.)
    let call_id = d.call_id.clone();
    let (ok, _) = caller
        .expect("the second call's 200", |m| {
            m.status() == Some(200) && m.header("Call-ID") == Some(call_id.as_str())
        })
        .await;
    caller.ack(&mut d, &ok).await;
    let (_, packets, _) = caller.record(Duration::from_millis(500)).await;
    assert!(packets > 10, "{packets} packets after the ACK");
}
