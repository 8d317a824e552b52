//! Call set-up and tear-down paths end to end: outgoing calls, every
//! failure status, cancel, timeouts, port exhaustion, disconnects.

mod common;

use std::time::Duration;

use base64::Engine;
use common::audio::{self, assert_tone};
use common::sip::SipPeer;
use common::{call_id_of, connected_call, rtp_range, start_daemon, start_with, WsClient, B64};
use siprelay::config::Config;

#[tokio::test]
async fn outgoing_call_rings_connects_carries_audio_and_client_hangs_up() {
    let daemon = start_daemon().await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;

    ws.send(&format!("CALL:sip:bob@{}", peer.addr)).await;
    let calling = ws.expect("CALLING:").await;
    assert!(
        calling.starts_with(&format!("CALLING:sip:bob@{}##", peer.addr)),
        "{calling}"
    );
    let id = call_id_of(&calling);

    let (d, from) = peer.accept_invite().await;
    let offer = d.invite.as_ref().unwrap().body.clone();
    assert!(
        offer.contains("RTP/AVP 0 8 101"),
        "offer has PCMU, PCMA, telephone-event: {offer}"
    );
    let invite = d.invite.clone().unwrap();
    peer.respond(&invite, from, 180, "Ringing", Some(&d.local_tag), None)
        .await;
    assert_eq!(ws.expect("RINGING:").await, format!("RINGING:{id}"));
    // The peer answers with A-law only.
    peer.answer(&d, from, 8).await;
    assert_eq!(ws.expect("CALL_ANS:").await, format!("CALL_ANS:{id}"));

    let (daemon_rtp, _) = d.media.unwrap();
    let tone = audio::tone(600.0, 8000, 8000.0);
    let (_, heard) = tokio::join!(
        peer.send_tone(daemon_rtp, 8, &tone),
        ws.record(Duration::from_millis(900))
    );
    assert_tone(&heard[1600..], 600.0, "client hears the callee over PCMA");

    let pcm = audio::tone(1200.0, 6000, 8000.0);
    // Sent in odd-sized pieces, as a streaming text-to-speech engine would.
    let bytes = audio::to_le_bytes(&pcm);
    for chunk in bytes.chunks(999) {
        ws.send(&format!("RTP:{id}##{}", B64.encode(chunk))).await;
    }
    let (heard, _, _) = peer.record(Duration::from_millis(700)).await;
    assert_tone(&heard, 1200.0, "callee hears the client over PCMA");

    // A session refresh (re-INVITE) is answered with the codec agreed, PCMA
    // alone, not with siprelay's first offer.
    let mut d = d;
    let refresh = common::sip::sdp_offer(peer.rtp_addr, "0 8");
    peer.send_in_dialog(&mut d, "INVITE", Some(&refresh)).await;
    let ok = peer.expect_response("INVITE", 200).await;
    assert!(
        ok.body.contains("m=audio ") && ok.body.contains("RTP/AVP 8\r\n"),
        "{}",
        ok.body
    );
    peer.send_in_dialog(&mut d, "ACK", None).await;

    ws.send(&format!("HANGUP:{id}")).await;
    let (bye, from) = peer.expect_request("BYE").await;
    peer.respond(&bye, from, 200, "OK", None, None).await;
    assert_eq!(ws.expect("BYE:").await, format!("BYE:{id}"));
    daemon.shutdown().await;
}

#[tokio::test]
async fn plain_numbers_are_dialled_at_the_configured_sip_server() {
    // The peer is the SIP server; it learns the daemon's address once that runs.
    let mut peer = SipPeer::new("127.0.0.1:9".parse().unwrap()).await;
    let mut config = Config::loopback(rtp_range(4));
    config.sip_server = Some(peer.addr.to_string());
    let daemon = start_with(config).await;
    peer.daemon = daemon.sip_addr();
    let mut ws = WsClient::connect(&daemon).await;
    ws.send("CALL:1002").await;
    let id = call_id_of(&ws.expect("CALLING:1002##").await);
    let (d, from) = peer.accept_invite().await;
    let invite = d.invite.clone().unwrap();
    assert!(
        invite
            .start
            .starts_with(&format!("INVITE sip:1002@{} SIP/2.0", peer.addr)),
        "{}",
        invite.start
    );
    peer.respond(&invite, from, 404, "Not Found", Some("t404"), None)
        .await;
    assert_eq!(
        ws.expect("CALL_FAILED:").await,
        format!("CALL_FAILED:404 Not Found##{id}")
    );
    daemon.shutdown().await;
}

#[tokio::test]
async fn declines_and_failures_are_reported_with_their_status() {
    let daemon = start_daemon().await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    for (status, reason, expected) in [
        (486, "Busy Here", "CALL_IGNORE:{id}"),
        (603, "Decline", "CALL_IGNORE:{id}"),
        (
            480,
            "Temporarily Unavailable",
            "CALL_FAILED:480 Temporarily Unavailable##{id}",
        ),
        (
            503,
            "Service Unavailable",
            "CALL_FAILED:503 Service Unavailable##{id}",
        ),
    ] {
        ws.send(&format!("CALL:sip:carol@{}", peer.addr)).await;
        let id = call_id_of(&ws.expect("CALLING:").await);
        let (d, from) = peer.accept_invite().await;
        peer.respond(
            d.invite.as_ref().unwrap(),
            from,
            status,
            reason,
            Some("tfail"),
            None,
        )
        .await;
        let got = ws.expect(expected.split(':').next().unwrap()).await;
        assert_eq!(got, expected.replace("{id}", &id));
        // The daemon acknowledges the failure (ACK on the INVITE's branch).
        peer.expect_request("ACK").await;
    }
    assert_eq!(daemon.board.call_count(), 0);
    daemon.shutdown().await;
}

#[tokio::test]
async fn an_incoming_call_with_no_client_connected_gets_480() {
    let daemon = start_daemon().await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let d = peer.invite("1001", "2000", Some("0")).await;
    let resp = peer.expect_response("INVITE", 480).await;
    peer.ack_failure(&d, &resp).await;
    assert_eq!(
        daemon.board.free_port_pairs(),
        20,
        "the port pair went back"
    );
    daemon.shutdown().await;
}

#[tokio::test]
async fn an_offer_without_g711_gets_488() {
    let daemon = start_daemon().await;
    let _ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let d = peer.invite("1001", "2000", Some("18")).await;
    let resp = peer.expect_response("INVITE", 488).await;
    peer.ack_failure(&d, &resp).await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn client_rejections_send_486_and_603() {
    let daemon = start_daemon().await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    for (verb, status) in [("CALL_IGNORE", 486), ("RING_IGNORE", 603), ("HANGUP", 486)] {
        let d = peer.invite("1001", "2000", Some("0")).await;
        let id = call_id_of(&ws.expect("RING_ANS:").await);
        ws.send(&format!("{verb}:{id}")).await;
        let resp = peer.expect_response("INVITE", status).await;
        peer.ack_failure(&d, &resp).await;
    }
    daemon.shutdown().await;
}

#[tokio::test]
async fn caller_cancel_withdraws_the_offer() {
    let daemon = start_daemon().await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let d = peer.invite("1001", "2000", Some("0")).await;
    let id = call_id_of(&ws.expect("RING_ANS:").await);
    peer.cancel(&d).await;
    peer.expect_response("CANCEL", 200).await;
    let resp = peer.expect_response("INVITE", 487).await;
    peer.ack_failure(&d, &resp).await;
    assert_eq!(ws.expect("RING_IGNORE:").await, format!("RING_IGNORE:{id}"));
    ws.send(&format!("CALL_ANS:{id}")).await;
    assert!(ws.expect("ERROR:").await.starts_with("ERROR:404"));
    daemon.shutdown().await;
}

#[tokio::test]
async fn an_unanswered_call_is_rejected_with_480_after_the_ring_timeout() {
    let mut config = Config::loopback(rtp_range(4));
    config.ring_timeout = Duration::from_secs(1);
    let daemon = start_with(config).await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let d = peer.invite("1001", "2000", Some("0")).await;
    let id = call_id_of(&ws.expect("RING_ANS:").await);
    let resp = peer.expect_response("INVITE", 480).await;
    peer.ack_failure(&d, &resp).await;
    assert_eq!(ws.expect("RING_IGNORE:").await, format!("RING_IGNORE:{id}"));
    daemon.shutdown().await;
}

#[tokio::test]
async fn port_exhaustion_fails_calls_with_503_both_ways() {
    let daemon = start_with(Config::loopback(rtp_range(1))).await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    // The one pair goes to a ringing call.
    let _first = peer.invite("1001", "2000", Some("0")).await;
    ws.expect("RING_ANS:").await;
    let second = peer.invite("1001", "2000", Some("0")).await;
    let resp = peer.expect_response("INVITE", 503).await;
    peer.ack_failure(&second, &resp).await;
    ws.send(&format!("CALL:sip:x@{}", peer.addr)).await;
    let failed = ws.expect("CALL_FAILED:").await;
    assert!(failed.starts_with("CALL_FAILED:503 "), "{failed}");
    assert_eq!(
        call_id_of(&failed).len(),
        16,
        "the failed call still has an id: {failed}"
    );
    daemon.shutdown().await;
}

#[tokio::test]
async fn outgoing_call_cancelled_while_ringing() {
    let daemon = start_daemon().await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    ws.send(&format!("CALL:sip:bob@{}", peer.addr)).await;
    let id = call_id_of(&ws.expect("CALLING:").await);
    let (d, from) = peer.accept_invite().await;
    let invite = d.invite.clone().unwrap();
    peer.respond(&invite, from, 180, "Ringing", Some(&d.local_tag), None)
        .await;
    ws.expect("RINGING:").await;
    ws.send(&format!("HANGUP:{id}")).await;
    let (cancel, from) = peer.expect_request("CANCEL").await;
    peer.respond(&cancel, from, 200, "OK", Some(&d.local_tag), None)
        .await;
    peer.respond(
        &invite,
        from,
        487,
        "Request Terminated",
        Some(&d.local_tag),
        None,
    )
    .await;
    assert_eq!(ws.expect("BYE:").await, format!("BYE:{id}"));
    peer.expect_request("ACK").await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_client_that_disconnects_has_its_calls_hung_up() {
    let daemon = start_daemon().await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let (_id, _d) = connected_call(&mut ws, &mut peer).await;
    drop(ws);
    let (bye, from) = peer.expect_request("BYE").await;
    peer.respond(&bye, from, 200, "OK", None, None).await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn first_client_to_answer_owns_the_call_and_the_others_hear_it_withdrawn() {
    let daemon = start_daemon().await;
    let mut a = WsClient::connect(&daemon).await;
    let mut b = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let mut d = peer.invite("1001", "2000", Some("0")).await;
    let id = call_id_of(&a.expect("RING_ANS:1001##").await);
    assert_eq!(call_id_of(&b.expect("RING_ANS:1001##").await), id);
    a.send(&format!("CALL_ANS:{id}")).await;
    assert_eq!(b.expect("RING_IGNORE:").await, format!("RING_IGNORE:{id}"));
    b.send(&format!("CALL_ANS:{id}")).await;
    assert!(b.expect("ERROR:").await.starts_with("ERROR:409"));
    b.send(&format!("RTP:{id}##AAAA")).await;
    assert!(b.expect("ERROR:").await.starts_with("ERROR:403"));
    b.send(&format!("HANGUP:{id}")).await;
    assert!(b.expect("ERROR:").await.starts_with("ERROR:403"));
    let ok = peer.expect_response("INVITE", 200).await;
    // Connected only once the caller has ACKed the 200 (PROTOCOL.md).
    let early = a.next_text(Duration::from_millis(300), false).await;
    assert_eq!(early, None, "no CALL_ANS before the ACK");
    peer.ack(&mut d, &ok).await;
    assert_eq!(a.expect("CALL_ANS:").await, format!("CALL_ANS:{id}"));
    peer.bye(&mut d).await;
    a.expect("BYE:").await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn shutdown_hangs_up_calls_and_closes_clients() {
    let daemon = start_daemon().await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let (id, _d) = connected_call(&mut ws, &mut peer).await;
    let ringing = peer.invite("1001", "2001", Some("0")).await;
    ws.expect("RING_ANS:").await;

    let stopping = tokio::spawn(daemon.shutdown());
    let (bye, from) = peer.expect_request("BYE").await;
    peer.respond(&bye, from, 200, "OK", None, None).await;
    let resp = peer.expect_response("INVITE", 503).await;
    peer.ack_failure(&ringing, &resp).await;
    let mut told = Vec::new();
    while let Some(t) = ws.next_text(Duration::from_secs(5), false).await {
        told.push(t);
    }
    // Both calls ended, in either order, and then the close frame ended the stream.
    told.sort();
    assert_eq!(told.len(), 2, "{told:?}");
    assert_eq!(told[0], format!("BYE:{id}"));
    assert!(told[1].starts_with("RING_IGNORE:"), "{told:?}");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("shutdown finishes")
        .unwrap();
}

#[tokio::test]
async fn clients_are_offered_only_the_numbers_they_take() {
    let daemon = start_daemon().await;
    let mut sales = WsClient::connect_path(daemon.http_addr, "/ws?offers=2000,2001").await;
    let mut dialer = WsClient::connect_path(daemon.http_addr, "/ws?offers=none").await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;

    let d = peer.invite("1001", "2001", Some("0")).await;
    let id = call_id_of(&sales.expect("RING_ANS:1001##").await);
    sales.send(&format!("CALL_IGNORE:{id}")).await;
    let resp = peer.expect_response("INVITE", 486).await;
    peer.ack_failure(&d, &resp).await;

    // Nobody takes 3000: rejected at once, and the dialer heard of neither call.
    let d = peer.invite("1001", "3000", Some("0")).await;
    let resp = peer.expect_response("INVITE", 480).await;
    peer.ack_failure(&d, &resp).await;
    dialer.send("PING").await;
    assert_eq!(dialer.expect("").await, "PONG");
    daemon.shutdown().await;
}
