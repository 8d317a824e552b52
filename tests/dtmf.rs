//! DTMF both ways against the test SIP peer: RFC 4733 telephone-events when
//! the peer offers them, in-band tones when it does not.

mod common;

use std::time::Duration;

use common::audio::{self, power_at};
use common::sip::SipPeer;
use common::{call_id_of, start_daemon, WsClient};
use tokio::time::{timeout, Instant};

/// An answered call from the peer offering `formats`.
async fn call(
    ws: &mut WsClient,
    peer: &mut SipPeer,
    formats: &str,
) -> (String, common::sip::Dialog) {
    let mut d = peer.invite("1001", "2000", Some(formats)).await;
    let id = call_id_of(&ws.expect("RING_ANS:").await);
    ws.send(&format!("CALL_ANS:{id}")).await;
    let ok = peer.expect_response("INVITE", 200).await;
    assert!(
        !formats.contains("101") || ok.body.contains("telephone-event"),
        "the answer keeps telephone-event: {}",
        ok.body
    );
    peer.ack(&mut d, &ok).await;
    ws.expect("CALL_ANS:").await;
    (id, d)
}

fn event_packet(seq: u16, ts: u32, marker: bool, event: u8, end: bool, duration: u16) -> Vec<u8> {
    let mut p = vec![0x80, 101 | if marker { 0x80 } else { 0 }];
    p.extend(seq.to_be_bytes());
    p.extend(ts.to_be_bytes());
    p.extend(0x1234_5678u32.to_be_bytes());
    p.extend([event, if end { 0x8A } else { 0x0A }]);
    p.extend(duration.to_be_bytes());
    p
}

#[tokio::test]
async fn far_end_key_presses_reach_the_client_once_each() {
    let daemon = start_daemon().await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let (id, mut d) = call(&mut ws, &mut peer, "0 101").await;
    let (rtp, _) = d.media.unwrap();
    let mut seq = 0u16;
    for (event, ts) in [(5u8, 8000u32), (11, 16000)] {
        for i in 0..4u16 {
            let p = event_packet(seq, ts, i == 0, event, false, (i + 1) * 160);
            peer.rtp.send_to(&p, rtp).await.unwrap();
            seq += 1;
        }
        for _ in 0..3 {
            peer.rtp
                .send_to(&event_packet(seq, ts, false, event, true, 800), rtp)
                .await
                .unwrap();
            seq += 1;
        }
    }
    assert_eq!(ws.expect("DTMF:").await, format!("DTMF:{id}##5"));
    assert_eq!(ws.expect("DTMF:").await, format!("DTMF:{id}###"));
    assert_eq!(
        ws.next_text(Duration::from_millis(200), false).await,
        None,
        "each key once, whatever the retransmissions"
    );
    peer.bye(&mut d).await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn client_digits_go_out_as_telephone_events() {
    let daemon = start_daemon().await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let (id, mut d) = call(&mut ws, &mut peer, "0 101").await;
    ws.send(&format!("DTMF:{id}##1x")).await;
    assert!(ws.expect("ERROR:").await.starts_with("ERROR:400"));
    ws.send(&format!("DTMF:{id}##1#")).await;
    // Collect telephone-event packets for a second.
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(1000);
    let mut buf = [0u8; 2048];
    while let Ok(Ok((n, _))) = timeout(
        deadline.saturating_duration_since(Instant::now()),
        peer.rtp.recv_from(&mut buf),
    )
    .await
    {
        let p = &buf[..n];
        if p[1] & 0x7F == 101 {
            let ts = u32::from_be_bytes(p[4..8].try_into().unwrap());
            let duration = u16::from_be_bytes([p[14], p[15]]);
            events.push((p[12], p[1] & 0x80 != 0, p[13] & 0x80 != 0, ts, duration));
        }
    }
    assert_eq!(events.len(), 14, "two digits of 7 packets each: {events:?}");
    for (digit, packets) in [(1u8, &events[..7]), (11, &events[7..])] {
        assert!(
            packets.iter().all(|p| p.0 == digit && p.3 == packets[0].3),
            "one event, one timestamp: {packets:?}"
        );
        assert!(
            packets[0].1 && packets[1..].iter().all(|p| !p.1),
            "the marker on the first packet only"
        );
        assert_eq!(
            packets.iter().filter(|p| p.2).count(),
            3,
            "three end packets"
        );
        assert_eq!(packets[6].4, 800, "100 ms");
    }
    assert!(events[7].3 > events[0].3, "the second digit starts later");
    peer.bye(&mut d).await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn without_telephone_events_digits_are_heard_in_band() {
    let daemon = start_daemon().await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let (id, mut d) = call(&mut ws, &mut peer, "0").await;
    // Drain what was queued before the digit.
    peer.record(Duration::from_millis(100)).await;
    ws.send(&format!("DTMF:{id}##1")).await;
    let (heard, _, _) = peer.record(Duration::from_millis(400)).await;
    let loud = audio::loud_frames(&heard, 1000.0);
    assert!(loud.len() >= 160 * 4, "{} samples of tone", loud.len());
    let row_col = power_at(&loud, 697.0) + power_at(&loud, 1209.0);
    let other = power_at(&loud, 852.0) + power_at(&loud, 1477.0);
    assert!(row_col > 50.0 * other, "697 + 1209 Hz: the key 1");
    peer.bye(&mut d).await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn digits_over_rest_and_key_presses_on_the_event_stream() {
    let daemon = start_daemon().await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut events = common::http::EventStream::open(daemon.http_addr, "/events").await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let (id, mut d) = call(&mut ws, &mut peer, "0 101").await;
    let path = format!("/calls/{id}/dtmf");
    let bad = common::http::post(daemon.http_addr, &path, r#"{"digits":"12z"}"#).await;
    assert_eq!(bad.status, 400);
    let sent = common::http::post(daemon.http_addr, &path, r#"{"digits":"9"}"#).await;
    assert_eq!(sent.status, 204);
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(2);
    let digit = loop {
        let (n, _) = timeout(
            deadline.saturating_duration_since(Instant::now()),
            peer.rtp.recv_from(&mut buf),
        )
        .await
        .expect("a telephone-event arrives")
        .unwrap();
        if n >= 16 && buf[1] & 0x7F == 101 {
            break buf[12];
        }
    };
    assert_eq!(digit, 9);

    let (rtp, _) = d.media.unwrap();
    peer.rtp
        .send_to(&event_packet(1, 4000, true, 4, true, 800), rtp)
        .await
        .unwrap();
    assert_eq!(ws.expect("DTMF:").await, format!("DTMF:{id}##4"));
    events.expect("RING_ANS").await;
    events.expect("CALL_ANS").await;
    let pressed = events.expect("DTMF").await;
    assert_eq!(pressed["digit"], "4");
    peer.bye(&mut d).await;
    daemon.shutdown().await;
}
