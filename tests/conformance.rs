//! SIP conformance real user agents rely on, against a SIP peer written for
//! the tests: 420 for an unknown `Require`, the capability headers of 2xx
//! and OPTIONS, `CALL_ANS` only after the ACK (in `calls.rs`), session
//! timers (RFC 4028) and reliable provisional responses (RFC 3262) as
//! callee and as caller. Session intervals are a few seconds here (the
//! daemon's floor lowered from 90 s); their timing is tested on a
//! simulated clock in `call::session_timer`.

mod common;

use std::time::Duration;

use common::sip::{sdp_offer, SipMessage, SipPeer};
use common::{call_id_of, rtp_range, start_with, WsClient};
use siprelay::config::Config;

fn config() -> Config {
    let mut config = Config::loopback(rtp_range(4));
    config.min_se = 2;
    config
}

fn tokens(m: &SipMessage, name: &str) -> Vec<String> {
    m.all(name)
        .iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect()
}

#[tokio::test]
async fn unknown_extensions_get_420_and_capabilities_are_announced() {
    let daemon = start_with(config()).await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;

    let d = peer
        .invite_with("1001", "2000", Some("0"), "Require: precondition, foo\r\n")
        .await;
    let refused = peer.expect_response("INVITE", 420).await;
    assert_eq!(tokens(&refused, "Unsupported"), ["precondition", "foo"]);
    peer.ack_failure(&d, &refused).await;
    assert_eq!(
        ws.next_text(Duration::from_millis(300), false).await,
        None,
        "never offered"
    );

    // The positive control: what siprelay supports may be required.
    let mut d = peer
        .invite_with(
            "1001",
            "2000",
            Some("0"),
            "Supported: timer, 100rel\r\nRequire: timer\r\nSession-Expires: 1800\r\nMin-SE: 90\r\n",
        )
        .await;
    let id = call_id_of(&ws.expect("RING_ANS:").await);
    ws.send(&format!("CALL_ANS:{id}")).await;
    let ok = peer.expect_response("INVITE", 200).await;
    assert_eq!(ok.header("Session-Expires"), Some("1800;refresher=uac"));
    assert_eq!(tokens(&ok, "Require"), ["timer"]);
    let allow = tokens(&ok, "Allow");
    for method in [
        "invite", "ack", "bye", "cancel", "options", "update", "prack",
    ] {
        assert!(allow.contains(&method.to_string()), "{allow:?}");
    }
    let supported = tokens(&ok, "Supported");
    assert!(supported.contains(&"timer".into()) && supported.contains(&"100rel".into()));
    peer.ack(&mut d, &ok).await;
    ws.expect("CALL_ANS:").await;

    // Out-of-dialog OPTIONS, as PBXs qualify a peer.
    let options = format!(
        "OPTIONS sip:siprelay@{daemon} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKopt1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:qualify@{me}>;tag=q1\r\nTo: <sip:siprelay@{daemon}>\r\n\
         Call-ID: opt-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        daemon = daemon.sip_addr(),
        me = peer.addr
    );
    peer.send_raw(&options).await;
    let ok = peer.expect_response("OPTIONS", 200).await;
    assert!(tokens(&ok, "Allow").contains(&"invite".into()));
    assert_eq!(tokens(&ok, "Accept"), ["application/sdp"]);
    assert!(tokens(&ok, "Supported").contains(&"timer".into()));
    daemon.shutdown().await;
}

#[tokio::test]
async fn as_callee_a_session_whose_refreshes_stop_is_ended() {
    let daemon = start_with(config()).await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;

    // Below the floor: 422 with the floor as Min-SE.
    let d = peer
        .invite_with(
            "1001",
            "2000",
            Some("0"),
            "Supported: timer\r\nSession-Expires: 1\r\n",
        )
        .await;
    let small = peer.expect_response("INVITE", 422).await;
    assert_eq!(small.header("Min-SE"), Some("2"));
    peer.ack_failure(&d, &small).await;

    let mut d = peer
        .invite_with(
            "1001",
            "2000",
            Some("0"),
            "Supported: timer\r\nSession-Expires: 3;refresher=uac\r\nMin-SE: 2\r\n",
        )
        .await;
    let id = call_id_of(&ws.expect("RING_ANS:").await);
    ws.send(&format!("CALL_ANS:{id}")).await;
    let ok = peer.expect_response("INVITE", 200).await;
    assert_eq!(ok.header("Session-Expires"), Some("3;refresher=uac"));
    peer.ack(&mut d, &ok).await;
    ws.expect("CALL_ANS:").await;

    // One refresh from the far end, answered with the timer it asks for.
    let offer = sdp_offer(peer.rtp_addr, "0");
    peer.send_in_dialog_with(
        &mut d,
        "INVITE",
        "Supported: timer\r\nSession-Expires: 3;refresher=uac\r\n",
        Some(&offer),
    )
    .await;
    let refreshed = peer.expect_response("INVITE", 200).await;
    assert_eq!(refreshed.header("Session-Expires"), Some("3;refresher=uac"));
    assert!(refreshed.body.contains("m=audio"), "the SDP already agreed");
    peer.send_in_dialog(&mut d, "ACK", None).await;

    // Then nothing: siprelay gives the session up with BYE.
    let (bye, from) = peer.expect_request("BYE").await;
    peer.respond(&bye, from, 200, "OK", None, None).await;
    assert_eq!(ws.expect("BYE:").await, format!("BYE:{id}"));
    daemon.shutdown().await;
}

#[tokio::test]
async fn as_caller_prack_a_422_retry_refreshes_and_a_481_ends_the_call() {
    let daemon = start_with(config()).await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    ws.send(&format!("CALL:sip:1002@{}", peer.addr)).await;
    let id = call_id_of(&ws.expect("CALLING:").await);

    let (d, from) = peer.accept_invite().await;
    let first = d.invite.clone().unwrap();
    let supported = tokens(&first, "Supported");
    assert!(
        supported.contains(&"100rel".into()) && supported.contains(&"timer".into()),
        "{supported:?}"
    );
    assert_eq!(first.header("Session-Expires"), Some("1800"));
    assert_eq!(first.header("Min-SE"), Some("2"));
    peer.respond_with(
        &first,
        from,
        422,
        "Session Interval Too Small",
        Some("t422"),
        "Min-SE: 3600\r\n",
        None,
    )
    .await;
    peer.expect_request("ACK").await;

    let (d, from) = peer.accept_invite().await;
    let invite = d.invite.clone().unwrap();
    assert_eq!(
        invite.header("Session-Expires"),
        Some("3600"),
        "asks again with Min-SE"
    );
    assert_eq!(invite.header("Call-ID"), first.header("Call-ID"));

    // A reliable 180: siprelay PRACKs it.
    let cseq: u32 = invite
        .header("CSeq")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    peer.respond_with(
        &invite,
        from,
        180,
        "Ringing",
        Some(&d.local_tag),
        "Require: 100rel\r\nRSeq: 7\r\n",
        None,
    )
    .await;
    let (prack, prack_from) = peer.expect_request("PRACK").await;
    assert_eq!(
        prack.header("RAck"),
        Some(format!("7 {cseq} INVITE").as_str())
    );
    peer.respond(&prack, prack_from, 200, "OK", None, None)
        .await;
    assert_eq!(ws.expect("RINGING:").await, format!("RINGING:{id}"));

    // Answered with a 3 s session that siprelay refreshes.
    let body = sdp_offer(peer.rtp_addr, "0");
    peer.respond_with(
        &invite,
        from,
        200,
        "OK",
        Some(&d.local_tag),
        "Require: timer\r\nSession-Expires: 3;refresher=uac\r\n",
        Some(&body),
    )
    .await;
    peer.expect_request("ACK").await;
    assert_eq!(ws.expect("CALL_ANS:").await, format!("CALL_ANS:{id}"));

    let (refresh, from) = peer.expect_request("INVITE").await;
    assert_eq!(refresh.header("Session-Expires"), Some("3;refresher=uac"));
    assert!(refresh.body.contains("m=audio"));
    peer.respond_with(
        &refresh,
        from,
        200,
        "OK",
        None,
        "Session-Expires: 3;refresher=uac\r\n",
        Some(&body),
    )
    .await;
    peer.expect_request("ACK").await;

    // The next refresh finds the dialog gone: the call ends with BYE.
    let (refresh, from) = peer.expect_request("INVITE").await;
    peer.respond(
        &refresh,
        from,
        481,
        "Call/Transaction Does Not Exist",
        None,
        None,
    )
    .await;
    let (bye, from) = peer.expect_request("BYE").await;
    peer.respond(&bye, from, 200, "OK", None, None).await;
    assert_eq!(ws.expect("BYE:").await, format!("BYE:{id}"));
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_caller_that_requires_100rel_gets_a_reliable_180_until_its_prack() {
    let daemon = start_with(config()).await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let mut d = peer
        .invite_with(
            "1001",
            "2000",
            Some("0"),
            "Supported: 100rel\r\nRequire: 100rel\r\n",
        )
        .await;
    let ringing = peer.expect_response("INVITE", 180).await;
    assert_eq!(tokens(&ringing, "Require"), ["100rel"]);
    assert_eq!(ringing.header("RSeq"), Some("1"));
    // Not PRACKed yet: sent again.
    let again = peer.expect_response("INVITE", 180).await;
    assert_eq!(again.header("RSeq"), Some("1"));

    d.remote_tag = ringing.to_tag().unwrap();
    d.remote_target = ringing
        .header("Contact")
        .unwrap()
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_string();
    peer.send_in_dialog_with(&mut d, "PRACK", "RAck: 1 1 INVITE\r\n", None)
        .await;
    peer.expect_response("PRACK", 200).await;
    // Drain a retransmission that crossed the PRACK; then no more.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(2500);
    let mut late = 0;
    while let Some((m, _)) = peer
        .recv(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        if m.status() == Some(180) {
            late += 1;
        }
    }
    assert!(late <= 1, "{late} 180s after the PRACK");

    let id = call_id_of(&ws.expect("RING_ANS:").await);
    ws.send(&format!("CALL_ANS:{id}")).await;
    let ok = peer.expect_response("INVITE", 200).await;
    peer.ack(&mut d, &ok).await;
    assert_eq!(ws.expect("CALL_ANS:").await, format!("CALL_ANS:{id}"));
    daemon.shutdown().await;
}
