//! The core bridge end to end: real SIP and RTP on loopback, real WebSocket
//! clients, audio checked by measuring tones.

mod common;

use std::time::Duration;

use base64::Engine;
use common::audio::{self, assert_tone};
use common::sip::SipPeer;
use common::{call_id_of, start_daemon, WsClient, B64};

#[tokio::test]
async fn incoming_call_is_answered_and_audio_flows_both_ways() {
    let daemon = start_daemon().await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;

    let mut d = peer.invite("1001", "2000", Some("0 8 101")).await;
    peer.expect_response("INVITE", 100).await;
    peer.expect_response("INVITE", 180).await;
    let ring = ws.expect("RING_ANS:1001##").await;
    let id = call_id_of(&ring);

    ws.send(&format!("CALL_ANS:{id}")).await;
    let ok = peer.expect_response("INVITE", 200).await;
    peer.ack(&mut d, &ok).await;
    assert_eq!(ws.expect("CALL_ANS:").await, format!("CALL_ANS:{id}"));
    let (daemon_rtp, pt) = d.media.unwrap();
    assert_eq!(pt, 0, "PCMU chosen: first G.711 in our offer");

    // Caller → client: 440 Hz.
    let send = {
        let tone = audio::tone(440.0, 8000, 8000.0);
        let peer_rtp = &peer;
        async move { peer_rtp.send_tone(daemon_rtp, 0, &tone).await }
    };
    let (_, heard) = tokio::join!(send, ws.record(Duration::from_millis(900)));
    assert_tone(&heard[1600..], 440.0, "client hears the caller");

    // Client → caller: 1 s of 1000 Hz sent in one message, re-framed by the daemon.
    let pcm = audio::tone(1000.0, 8000, 8000.0);
    ws.send(&format!(
        "RTP:{id}##{}",
        B64.encode(audio::to_le_bytes(&pcm))
    ))
    .await;
    let (heard, packets, _) = peer.record(Duration::from_millis(800)).await;
    assert!(
        packets >= 30,
        "RTP flows every 20 ms (got {packets} packets in 0.8 s)"
    );
    assert_tone(&heard, 1000.0, "caller hears the client");

    peer.bye(&mut d).await;
    assert_eq!(ws.expect("BYE:").await, format!("BYE:{id}"));
    daemon.shutdown().await;
}
