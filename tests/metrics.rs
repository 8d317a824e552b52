//! `GET /metrics` over a known set of calls: each counter moves by exactly
//! what happened.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::audio;
use common::http::{self, post};
use common::sip::SipPeer;
use common::{call_id_of, connected_call, rtp_range, start_with, WsClient};
use siprelay::config::Config;

/// Every sample line, `name{labels}` → value.
async fn scrape(addr: std::net::SocketAddr) -> HashMap<String, f64> {
    let r = http::get(addr, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

fn get(m: &HashMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("{series} missing from {m:#?}"))
}

#[tokio::test]
async fn counters_move_by_exactly_what_the_calls_did() {
    let daemon = start_with(Config::loopback(rtp_range(4))).await;
    let http = daemon.http_addr;
    let before = scrape(http).await;
    assert_eq!(get(&before, "siprelay_rtp_port_pairs_free"), 4.0);
    assert_eq!(get(&before, "siprelay_websocket_clients"), 0.0);
    // Before any call, only the answered calls' series, at 0.
    let mut initial: Vec<(String, f64)> = before
        .iter()
        .filter(|(k, _)| k.starts_with("siprelay_calls_total"))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    initial.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        initial,
        vec![
            (
                r#"siprelay_calls_total{direction="inbound",status="200"}"#.to_string(),
                0.0
            ),
            (
                r#"siprelay_calls_total{direction="outbound",status="200"}"#.to_string(),
                0.0
            ),
        ]
    );

    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;

    // 1. Inbound, answered, 50 packets of audio, the caller hangs up.
    let (_, mut d) = connected_call(&mut ws, &mut peer).await;
    let (rtp, _) = d.media.unwrap();
    peer.send_tone(rtp, 0, &audio::tone(440.0, 160 * 50, 8000.0))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let during = scrape(http).await;
    assert_eq!(
        get(&during, r#"siprelay_calls_active{direction="inbound"}"#),
        1.0
    );
    assert_eq!(get(&during, "siprelay_rtp_port_pairs_free"), 3.0);
    assert_eq!(
        get(&during, r#"siprelay_rtp_packets_total{direction="in"}"#),
        50.0
    );
    assert_eq!(
        get(&during, r#"siprelay_rtp_bytes_total{direction="in"}"#),
        50.0 * 172.0
    );
    peer.bye(&mut d).await;
    ws.expect("BYE:").await;

    // 2. Inbound, rejected by the client with 603.
    let ring = peer.invite("1001", "2000", Some("0")).await;
    let id = call_id_of(&ws.expect("RING_ANS:").await);
    ws.send(&format!("RING_IGNORE:{id}")).await;
    let resp = peer.expect_response("INVITE", 603).await;
    peer.ack_failure(&ring, &resp).await;

    // 3. Outbound over REST, the far end is busy.
    let placed = post(
        http,
        "/calls",
        &format!(r#"{{"to":"sip:1002@{}"}}"#, peer.addr),
    )
    .await;
    assert_eq!(placed.status, 201);
    let (busy, from) = peer.accept_invite().await;
    let invite = busy.invite.clone().unwrap();
    peer.respond(&invite, from, 486, "Busy Here", Some(&busy.local_tag), None)
        .await;
    peer.expect_request("ACK").await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let after = scrape(http).await;
    let calls = |direction: &str, status: u16| {
        get(
            &after,
            &format!(r#"siprelay_calls_total{{direction="{direction}",status="{status}"}}"#),
        )
    };
    assert_eq!(calls("inbound", 200), 1.0);
    assert_eq!(calls("inbound", 603), 1.0);
    assert_eq!(calls("outbound", 486), 1.0);
    assert_eq!(calls("outbound", 200), 0.0);
    assert_eq!(
        after
            .keys()
            .filter(|k| k.starts_with("siprelay_calls_total"))
            .count(),
        4,
        "no other outcomes"
    );
    assert_eq!(
        get(&after, r#"siprelay_calls_active{direction="inbound"}"#),
        0.0
    );
    assert_eq!(
        get(&after, r#"siprelay_calls_active{direction="outbound"}"#),
        0.0
    );
    // Ended calls' RTP stays counted.
    assert_eq!(
        get(&after, r#"siprelay_rtp_packets_total{direction="in"}"#),
        50.0
    );
    assert_eq!(get(&after, "siprelay_rtp_packets_lost_total"), 0.0);
    assert_eq!(get(&after, "siprelay_rtp_packets_duplicated_total"), 0.0);
    let sent = get(&after, r#"siprelay_rtp_packets_total{direction="out"}"#);
    assert!(sent >= 50.0, "the call sent audio back: {sent}");
    assert_eq!(
        get(&after, r#"siprelay_rtp_bytes_total{direction="out"}"#),
        sent * 172.0
    );
    // Only the answered call has a setup time.
    assert_eq!(
        get(
            &after,
            r#"siprelay_call_setup_seconds_count{direction="inbound"}"#
        ),
        1.0
    );
    assert_eq!(
        get(
            &after,
            r#"siprelay_call_setup_seconds_count{direction="outbound"}"#
        ),
        0.0
    );
    assert_eq!(get(&after, "siprelay_websocket_clients"), 1.0);
    assert_eq!(get(&after, "siprelay_rtp_port_pairs_free"), 4.0);
    assert_eq!(get(&after, "siprelay_client_frames_dropped_total"), 0.0);
    daemon.shutdown().await;
}

#[tokio::test]
async fn reordered_and_duplicated_rtp_is_counted() {
    let daemon = start_with(Config::loopback(rtp_range(2))).await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let (_, mut d) = connected_call(&mut ws, &mut peer).await;
    let (rtp, _) = d.media.unwrap();
    // Sequence numbers 0..10 with 3 missing, 6 sent twice, 2 after 5.
    for seq in [0u16, 1, 4, 5, 2, 6, 6, 7, 8, 9] {
        let mut pkt = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        pkt[2..4].copy_from_slice(&seq.to_be_bytes());
        pkt[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        pkt.extend([0xFFu8; 160]);
        peer.rtp.send_to(&pkt, rtp).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let m = scrape(daemon.http_addr).await;
    assert_eq!(
        get(&m, r#"siprelay_rtp_packets_total{direction="in"}"#),
        9.0
    );
    assert_eq!(get(&m, "siprelay_rtp_packets_lost_total"), 1.0);
    assert_eq!(get(&m, "siprelay_rtp_packets_duplicated_total"), 1.0);
    assert_eq!(get(&m, "siprelay_rtp_packets_out_of_order_total"), 1.0);
    // 2 arrived 3 packets (480 samples) behind 5: too late for 40 ms.
    assert_eq!(get(&m, "siprelay_rtp_packets_late_total"), 1.0);
    peer.bye(&mut d).await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn health_and_readiness() {
    let daemon = start_with(Config::loopback(rtp_range(2))).await;
    let r = http::get(daemon.http_addr, "/healthz").await;
    assert_eq!((r.status, r.body.as_slice()), (200, b"ok\n".as_slice()));
    let r = http::get(daemon.http_addr, "/readyz").await;
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["ready"], true);
    assert_eq!(body["sip"], true);
    assert_eq!(body["rtp_port_pairs_free"], 2);
    daemon.shutdown().await;
}
