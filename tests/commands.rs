//! Bad input from clients, the legacy dialect, access control, slow clients
//! and symmetric RTP: each against the real daemon.

mod common;

use std::time::Duration;

use base64::Engine;
use common::audio::{self, assert_tone};
use common::sip::SipPeer;
use common::{connected_call, rtp_range, start_daemon, start_with, WsClient, B64};
use futures_util::SinkExt;
use siprelay::config::Config;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn bad_commands_get_errors_and_change_nothing() {
    let daemon = start_daemon().await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let (id, mut d) = connected_call(&mut ws, &mut peer).await;

    let oversized = format!("RTP:{id}##{}", "A".repeat(2 << 20));
    let cases: Vec<(String, &str)> = vec![
        ("DANCE".into(), "ERROR:400 unknown command DANCE"),
        ("".into(), "ERROR:400 empty message"),
        ("CALL_ANS".into(), "ERROR:400 CALL_ANS needs an argument"),
        (
            format!("RTP:{id}##not base64!"),
            "ERROR:400 bad base64 audio",
        ),
        (
            "RTP:nosuchcall##AAAA".into(),
            "ERROR:404 unknown call nosuchcall",
        ),
        (
            "HANGUP:nosuchcall".into(),
            "ERROR:404 unknown call nosuchcall",
        ),
        (format!("CALL_ANS:{id}"), "ERROR:409"),
        ("CALL:bob@evil.example".into(), "ERROR:400 bad number"),
        (
            "CALL:1002".into(),
            "ERROR:400 no account and no SIP server configured",
        ),
        (oversized, "ERROR:413"),
    ];
    for (command, expected) in &cases {
        ws.send(command).await;
        let got = ws.expect("ERROR:").await;
        assert!(got.starts_with(expected), "{:.40} → {got}", command);
    }
    ws.ws
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert!(ws
        .expect("ERROR:")
        .await
        .starts_with("ERROR:400 binary frames"));

    // The call is unharmed: audio still flows and the connection still answers.
    ws.send("PING").await;
    ws.expect("PONG").await;
    let pcm = audio::tone(800.0, 4000, 8000.0);
    ws.send(&format!(
        "RTP:{id}##{}",
        B64.encode(audio::to_le_bytes(&pcm))
    ))
    .await;
    let (heard, _, _) = peer.record(Duration::from_millis(400)).await;
    assert_tone(&heard, 800.0, "audio after the errors");
    peer.bye(&mut d).await;
    ws.expect("BYE:").await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn id_less_forms_address_the_connections_only_call() {
    let daemon = start_daemon().await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    ws.send("RTP:AAAA").await;
    assert!(ws
        .expect("ERROR:")
        .await
        .starts_with("ERROR:404 this connection has no call"));
    let (id, _d) = connected_call(&mut ws, &mut peer).await;
    let pcm = audio::tone(500.0, 4000, 8000.0);
    ws.send(&format!("RTP:{}", B64.encode(audio::to_le_bytes(&pcm))))
        .await;
    let (heard, _, _) = peer.record(Duration::from_millis(400)).await;
    assert_tone(&heard, 500.0, "bare RTP reaches the only call");
    ws.send("BYE").await;
    let (bye, from) = peer.expect_request("BYE").await;
    peer.respond(&bye, from, 200, "OK", None, None).await;
    assert_eq!(ws.expect("BYE:").await, format!("BYE:{id}"));
    daemon.shutdown().await;
}

#[tokio::test]
async fn legacy_dialect_speaks_the_seed_relays_forms() {
    let daemon = start_daemon().await;
    let mut ws = WsClient::connect_path(daemon.http_addr, "/ws?dialect=legacy").await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let (id, mut d) = connected_call(&mut ws, &mut peer).await;
    let (daemon_rtp, _) = d.media.unwrap();

    // Audio to the client is hex, without a call id.
    let tone = audio::tone(440.0, 4000, 8000.0);
    let (_, frames) = tokio::join!(peer.send_tone(daemon_rtp, 0, &tone), async {
        let mut pcm = Vec::new();
        while let Some(t) = ws.next_text(Duration::from_millis(500), true).await {
            let hex = t.strip_prefix("RTP:").expect("only audio now");
            assert!(
                !hex.contains("##") && hex.len() == 640,
                "one 20 ms frame of hex: {}",
                hex.len()
            );
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            pcm.extend(audio::from_le_bytes(&bytes));
        }
        pcm
    });
    assert_tone(&frames[800..], 440.0, "legacy client hears the caller");

    // Audio from the client is hex too.
    let pcm = audio::to_le_bytes(&audio::tone(900.0, 4000, 8000.0));
    let hex: String = pcm.iter().map(|b| format!("{b:02x}")).collect();
    ws.send(&format!("RTP:{hex}")).await;
    let (heard, _, _) = peer.record(Duration::from_millis(400)).await;
    assert_tone(&heard, 900.0, "caller hears the legacy client");

    peer.bye(&mut d).await;
    assert_eq!(ws.expect("BYE").await, "BYE", "legacy BYE carries no id");
    ws.send("CALL:sip:nobody@127.0.0.1:9").await;
    let _ = id;
    daemon.shutdown().await;
}

#[tokio::test]
async fn legacy_call_failed_has_no_call_id() {
    let daemon = start_daemon().await;
    let mut ws = WsClient::connect_path(daemon.http_addr, "/ws?dialect=legacy").await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    ws.send(&format!("CALL:sip:bob@{}", peer.addr)).await;
    ws.expect("CALLING:").await;
    let (d, from) = peer.accept_invite().await;
    peer.respond(
        d.invite.as_ref().unwrap(),
        from,
        404,
        "Not Found",
        Some("t1"),
        None,
    )
    .await;
    assert_eq!(ws.expect("CALL_FAILED:").await, "CALL_FAILED:404 Not Found");
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_token_is_required_when_one_is_configured() {
    let mut config = Config::loopback(rtp_range(2));
    config.api_token = Some("s3cret-token-0123456789".into());
    let daemon = start_with(config).await;
    let url = format!("ws://{}/ws", daemon.http_addr);
    let err = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    let err = tokio_tungstenite::connect_async(format!("{url}?token=wrong"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    let mut ws =
        WsClient::connect_path(daemon.http_addr, "/ws?token=s3cret-token-0123456789").await;
    ws.send("PING").await;
    ws.expect("PONG").await;
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            url.as_str(),
        )
        .unwrap();
    request.headers_mut().insert(
        "Authorization",
        "Bearer s3cret-token-0123456789".parse().unwrap(),
    );
    assert!(tokio_tungstenite::connect_async(request).await.is_ok());
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_never_stalls_rtp() {
    let daemon = start_daemon().await;
    // A small receive buffer, so the kernel cannot hide the stall for long.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let stream = socket.connect(daemon.http_addr).await.unwrap();
    let url = format!("ws://{}/ws", daemon.http_addr);
    let (raw, _) = tokio_tungstenite::client_async(
        url.as_str(),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    let mut ws = WsClient { ws: raw };
    ws.send("PING").await;
    ws.expect("PONG").await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let (_id, d) = connected_call(&mut ws, &mut peer).await;
    let (daemon_rtp, _) = d.media.unwrap();
    // From now on the client reads nothing while the caller talks for 5 s.
    let tone = audio::tone(440.0, 40000, 8000.0);
    let (_, (_, packets, _)) = tokio::join!(
        peer.send_tone(daemon_rtp, 0, &tone),
        peer.record(Duration::from_secs(5))
    );
    assert!(
        packets >= 235,
        "RTP kept flowing to the caller: {packets} packets in 5 s"
    );
    let owner = daemon.board.clients().into_iter().next().unwrap();

    assert!(
        owner.frames_dropped() > 0,
        "frames for the stalled client were dropped, not queued"
    );
    drop(ws);
    daemon.shutdown().await;
}

#[tokio::test]
async fn rtp_latches_to_the_first_source_and_ignores_others() {
    let daemon = start_daemon().await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let (_id, d) = connected_call(&mut ws, &mut peer).await;
    let (daemon_rtp, _) = d.media.unwrap();
    // The far end sends from a port other than its SDP says (a NAT would).
    let natted = SipPeer::new(daemon.sip_addr()).await;
    let intruder = SipPeer::new(daemon.sip_addr()).await;
    natted
        .send_tone(daemon_rtp, 0, &audio::tone(700.0, 800, 8000.0))
        .await;
    let (_, packets, source) = natted.record(Duration::from_millis(300)).await;
    assert!(
        packets >= 10,
        "RTP now goes where the far end's packets come from"
    );
    assert_eq!(source, Some(daemon_rtp));
    // Packets from anyone else are ignored.
    while ws
        .next_text(Duration::from_millis(100), true)
        .await
        .is_some()
    {}
    let intrusion = async {
        intruder
            .send_tone(daemon_rtp, 0, &audio::tone(2500.0, 4000, 8000.0))
            .await;
    };
    let (_, heard) = tokio::join!(intrusion, ws.record(Duration::from_millis(600)));
    assert!(
        audio::rms(&heard) < 50.0,
        "the intruder's tone must not reach the client"
    );
    daemon.shutdown().await;
}
