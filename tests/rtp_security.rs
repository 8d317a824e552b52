//! RTP hijacking ("RTP bleed") tried against the real daemon: a stranger
//! who learns or guesses a call's port and sends to it while the call rings
//! and after, and a far end whose first packets carry a payload type that
//! was not negotiated. Only the far end in the SDP is the call's.

mod common;

use std::time::Duration;

use common::audio;
use common::sip::{sdp_media, SipPeer};
use common::{call_id_of, rtp_range, start_with, WsClient};
use siprelay::config::Config;
use tokio::net::UdpSocket;

/// `pcm` as paced µ-law RTP from `sock` to `to`, with payload type `pt`.
async fn send(sock: &UdpSocket, to: std::net::SocketAddr, pt: u8, ssrc: u32, pcm: &[i16]) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for (i, frame) in pcm.chunks(160).enumerate() {
        tick.tick().await;
        let mut pkt = vec![0x80, pt, 0, 0, 0, 0, 0, 0];
        pkt[2..4].copy_from_slice(&(i as u16).to_be_bytes());
        pkt[4..8].copy_from_slice(&((i * 160) as u32).to_be_bytes());
        pkt.extend_from_slice(&ssrc.to_be_bytes());
        pkt.extend(frame.iter().map(|&s| audio::ulaw_encode(s)));
        sock.send_to(&pkt, to).await.unwrap();
    }
}

/// Datagrams `sock` receives within `wait`.
async fn count(sock: &UdpSocket, wait: Duration) -> usize {
    let mut buf = [0u8; 2048];
    let mut n = 0;
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Ok(_)) = tokio::time::timeout(
        deadline.saturating_duration_since(tokio::time::Instant::now()),
        sock.recv_from(&mut buf),
    )
    .await
    {
        n += 1;
    }
    n
}

#[tokio::test]
async fn a_stranger_cannot_take_over_a_calls_media() {
    let daemon = start_with(Config::loopback(rtp_range(2))).await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    let mut d = peer.invite("1001", "2000", Some("0")).await;
    let id = call_id_of(&ws.expect("RING_ANS:").await);
    ws.send(&format!("CALL_ANS:{id}")).await;
    let ok = peer.expect_response("INVITE", 200).await;
    let (port, _) = sdp_media(&ok.body);

    // While the call waits for its ACK the stranger sends its 1000 Hz.
    send(
        &stranger,
        port,
        0,
        0xBAD,
        &audio::tone(1000.0, 160 * 10, 8000.0),
    )
    .await;
    peer.ack(&mut d, &ok).await;
    ws.expect("CALL_ANS:").await;

    // Then both send: the far end its 440 Hz from its SDP address, the
    // stranger its 1000 Hz from elsewhere.
    let tone = audio::tone(440.0, 160 * 50, 8000.0);
    let far = send(&peer.rtp, port, 0, 0x600D, &tone);
    let bad = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        send(
            &stranger,
            port,
            0,
            0xBAD,
            &audio::tone(1000.0, 160 * 40, 8000.0),
        )
        .await
    };
    let (_, _, heard, to_stranger) = tokio::join!(
        far,
        bad,
        ws.record(Duration::from_millis(1000)),
        count(&stranger, Duration::from_millis(1000))
    );
    audio::assert_tone(
        &heard[..],
        440.0,
        "the client hears the far end, not the stranger",
    );
    assert_eq!(to_stranger, 0, "nothing of the call goes to the stranger");
    let (_, to_far, _) = peer.record(Duration::from_millis(300)).await;
    assert!(
        to_far > 5,
        "the far end gets the call's RTP: {to_far} packets"
    );
    daemon.shutdown().await;
}

#[tokio::test]
async fn packets_of_a_payload_type_not_negotiated_do_not_latch() {
    let daemon = start_with(Config::loopback(rtp_range(2))).await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let (id, d) = common::connected_call(&mut ws, &mut peer).await;
    let (port, _) = d.media.unwrap();
    // A stranger first, with payload type 18 (G.729, not negotiated), then
    // the far end's PCMU from its SDP address.
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    send(
        &stranger,
        port,
        18,
        0xBAD,
        &audio::tone(1000.0, 160 * 5, 8000.0),
    )
    .await;
    let tone = audio::tone(440.0, 160 * 40, 8000.0);
    let far = send(&peer.rtp, port, 0, 0x600D, &tone);
    let (_, heard, to_stranger) = tokio::join!(
        far,
        ws.record(Duration::from_millis(800)),
        count(&stranger, Duration::from_millis(800))
    );
    audio::assert_tone(&heard[..], 440.0, "the far end's audio");
    assert_eq!(to_stranger, 0);
    let view = common::http::get(daemon.http_addr, &format!("/calls/{id}"))
        .await
        .json();
    assert!(view["rtp"]["packets_in"].as_u64().unwrap() >= 30, "{view}");
    daemon.shutdown().await;
}
