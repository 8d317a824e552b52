//! The REST calls API and `GET /events` against the real daemon, with the
//! SIP peer of the tests on the other side: calls placed, answered, played
//! to and hung up over HTTP, and every error status.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::audio::{self, assert_tone, write_tone_wav};
use common::http::{self, post, request, request_with_body, EventStream};
use common::sip::SipPeer;
use common::{rtp_range, start_with, WsClient};
use siprelay::config::Config;

fn assets(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("siprelay-api-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    write_tone_wav(&dir.join("beep.wav"), 16000, 1, 600.0, 0.8);
    std::fs::write(dir.join("fake.wav"), b"RIFF....not really").unwrap();
    dir
}

fn config(name: &str, pairs: u16) -> Config {
    let mut config = Config::loopback(rtp_range(pairs));
    config.assets_dir = assets(name);
    config
}

#[tokio::test]
async fn a_call_placed_over_rest_plays_its_file_then_hangs_up() {
    let daemon = start_with(config("dial", 4)).await;
    let http = daemon.http_addr;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let mut events = EventStream::open(http, "/events").await;

    let body = format!(
        r#"{{"to":"sip:1002@{}","play":"beep.wav","hangup_after_play":true}}"#,
        peer.addr
    );
    let placed = post(http, "/calls", &body).await;
    assert_eq!(
        placed.status,
        201,
        "{}",
        String::from_utf8_lossy(&placed.body)
    );
    let call = placed.json();
    let id = call["id"].as_str().unwrap().to_string();
    assert_eq!(
        placed.header("location"),
        Some(format!("/calls/{id}").as_str())
    );
    assert_eq!(call["direction"], "outbound");
    assert_eq!(call["owner"], "api");
    assert_eq!(events.expect("CALLING").await["call_id"], id.as_str());

    let (d, from) = peer.accept_invite().await;
    peer.answer(&d, from, 0).await;
    assert_eq!(events.expect("CALL_ANS").await["call_id"], id.as_str());
    let view = http::get(http, &format!("/calls/{id}")).await.json();
    assert_eq!(view["state"], "connected");
    assert_eq!(view["codec"], "PCMU");
    assert_eq!(view["sip_status"], 200);

    let (heard, _, _) = peer.record(Duration::from_millis(700)).await;
    assert_tone(&heard[400..4000], 600.0, "the callee hears the file");
    let played = events.expect("PLAYED").await;
    assert_eq!(played["name"], "beep.wav");
    let (bye, from) = peer.expect_request("BYE").await;
    peer.respond(&bye, from, 200, "OK", None, None).await;
    assert_eq!(events.expect("BYE").await["call_id"], id.as_str());
    // Gone from the session manager.
    assert_eq!(http::get(http, &format!("/calls/{id}")).await.status, 404);
    assert_eq!(
        http::get(http, "/calls").await.json(),
        serde_json::json!([])
    );
    daemon.shutdown().await;
}

#[tokio::test]
async fn an_incoming_call_is_answered_and_hung_up_over_rest_and_events_tell_it_in_order() {
    let daemon = start_with(config("answer", 4)).await;
    let http = daemon.http_addr;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    // No WebSocket client: the watcher alone makes the call ring.
    let mut events = EventStream::open(http, "/events").await;
    let mut d = peer.invite("1001", "2000", Some("0")).await;
    let ring = events.expect("RING_ANS").await;
    assert_eq!(
        (ring["from"].as_str(), ring["to"].as_str()),
        (Some("1001"), Some("2000"))
    );
    assert_eq!(ring["direction"], "inbound");
    let id = ring["call_id"].as_str().unwrap().to_string();
    let mut this_call = EventStream::open(http, &format!("/events?call={id}")).await;
    let mut other_call = EventStream::open(http, "/events?call=0000000000000000").await;

    let listed = http::get(http, "/calls").await.json();
    assert_eq!(listed[0]["state"], "offered");
    assert_eq!(listed[0]["owner"], serde_json::Value::Null);

    let answered = post(http, &format!("/calls/{id}/answer"), "").await;
    assert_eq!(
        answered.status,
        200,
        "{}",
        String::from_utf8_lossy(&answered.body)
    );
    // 200 OK sent; connected once the caller ACKs it.
    assert_eq!(answered.json()["state"], "answering");
    assert_eq!(answered.json()["owner"], "api");
    let ok = peer.expect_response("INVITE", 200).await;
    peer.ack(&mut d, &ok).await;
    // Answering twice is a state error.
    assert_eq!(
        post(http, &format!("/calls/{id}/answer"), "").await.status,
        409
    );

    // The caller's audio arrives (counted) although no client takes it.
    let (rtp, _) = d.media.unwrap();
    peer.send_tone(rtp, 0, &audio::tone(440.0, 160 * 25, 8000.0))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let view = http::get(http, &format!("/calls/{id}")).await.json();
    assert_eq!(view["rtp"]["packets_in"], 25);
    assert!(view["rtp"]["packets_out"].as_u64().unwrap() > 0, "{view}");

    let hung = request(http, "DELETE", &format!("/calls/{id}"), &[]).await;
    assert_eq!(hung.status, 204);
    let (bye, from) = peer.expect_request("BYE").await;
    peer.respond(&bye, from, 200, "OK", None, None).await;

    for stream in [&mut events, &mut this_call] {
        let names: Vec<_> = [stream.expect("CALL_ANS").await, stream.expect("BYE").await]
            .iter()
            .map(|e| e["call_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, [id.clone(), id.clone()]);
    }
    assert!(
        other_call.next(Duration::from_millis(200)).await.is_none(),
        "a stream for another call hears nothing"
    );
    daemon.shutdown().await;
}

#[tokio::test]
async fn an_offer_is_rejected_over_rest_and_a_far_end_bye_ends_a_rest_call() {
    let daemon = start_with(config("reject", 4)).await;
    let http = daemon.http_addr;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let mut events = EventStream::open(http, "/events").await;

    let d = peer.invite("1001", "2000", Some("0")).await;
    let id = events.expect("RING_ANS").await["call_id"]
        .as_str()
        .unwrap()
        .to_string();
    let bad = post(http, &format!("/calls/{id}/reject"), r#"{"status":200}"#).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["code"], "bad_request");
    let rejected = post(http, &format!("/calls/{id}/reject"), r#"{"status":603}"#).await;
    assert_eq!(rejected.status, 204);
    let resp = peer.expect_response("INVITE", 603).await;
    peer.ack_failure(&d, &resp).await;
    assert_eq!(events.expect("RING_IGNORE").await["call_id"], id.as_str());

    // Placed over REST, hung up by the far end.
    let body = format!(r#"{{"to":"sip:1002@{}"}}"#, peer.addr);
    let id = post(http, "/calls", &body).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (mut d, from) = peer.accept_invite().await;
    peer.answer(&d, from, 8).await;
    events.expect("CALLING").await;
    events.expect("CALL_ANS").await;
    assert_eq!(
        http::get(http, &format!("/calls/{id}")).await.json()["codec"],
        "PCMA"
    );
    peer.bye(&mut d).await;
    assert_eq!(events.expect("BYE").await["call_id"], id.as_str());
    daemon.shutdown().await;
}

#[tokio::test]
async fn every_error_has_its_status_and_a_json_body() {
    let daemon = start_with(config("errors", 1)).await;
    let http = daemon.http_addr;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let target = format!("sip:1002@{}", peer.addr);
    let expect = |status: u16, code: &'static str| {
        move |r: http::HttpResponse| {
            let text = String::from_utf8_lossy(&r.body).to_string();
            assert_eq!(r.status, status, "{text}");
            assert_eq!(r.json()["error"]["code"], code, "{text}");
            assert!(r.json()["error"]["message"].as_str().is_some());
        }
    };
    for body in [
        "not json",
        "[]",
        r#"{"to": 5}"#,
        r#"{"to": ""}"#,
        r#"{"to": "1002", "surprise": true}"#,
        r#"{"to": "sip:"}"#,
        // No --sip-server: a plain number has nowhere to go.
        r#"{"to": "1002"}"#,
        r#"{"to": "sip:1@127.0.0.1", "hangup_after_play": true}"#,
        r#"{"to": "sip:1@127.0.0.1", "play": "../Cargo.toml.wav"}"#,
    ] {
        expect(400, "bad_request")(post(http, "/calls", body).await);
    }
    // Dial strings are checked as CALL checks them, before anything else.
    for (body, why) in [
        (
            r#"{"to": "1002@elsewhere"}"#,
            "use a sip: URI to name a host",
        ),
        (r#"{"to": "10 02"}"#, "white space"),
    ] {
        let r = post(http, "/calls", body).await;
        assert_eq!(r.status, 400);
        let message = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains(why), "{message}");
    }
    let huge = format!(r#"{{"to": "{}"}}"#, "9".repeat(70 * 1024));
    expect(413, "payload_too_large")(post(http, "/calls", &huge).await);
    let play = |name: &str| format!(r#"{{"to": "{target}", "play": "{name}"}}"#);
    expect(404, "not_found")(post(http, "/calls", &play("absent.wav")).await);
    expect(415, "unsupported_media_type")(post(http, "/calls", &play("fake.wav")).await);
    // Config::loopback does not record.
    let record = format!(r#"{{"to": "{target}", "record": true}}"#);
    expect(409, "wrong_state")(post(http, "/calls", &record).await);

    let nobody = "/calls/0123456789abcdef";
    expect(404, "not_found")(http::get(http, nobody).await);
    expect(404, "not_found")(request(http, "DELETE", nobody, &[]).await);
    for verb in ["answer", "reject", "hangup"] {
        expect(404, "not_found")(post(http, &format!("{nobody}/{verb}"), "").await);
    }
    expect(404, "not_found")(post(http, &format!("{nobody}/play"), r#"{"name":"beep.wav"}"#).await);

    // The one port pair taken by a call still dialling: the next gets 503,
    // and the daemon is not ready for more.
    let first = post(http, "/calls", &format!(r#"{{"to": "{target}"}}"#)).await;
    assert_eq!(first.status, 201);
    let id = first.json()["id"].as_str().unwrap().to_string();
    let (d, from) = peer.accept_invite().await;
    expect(503, "no_ports")(post(http, "/calls", &format!(r#"{{"to": "{target}"}}"#)).await);
    let ready = http::get(http, "/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["rtp_port_pairs_free"], 0);
    // Wrong states: an outgoing call cannot be answered or rejected, and
    // nothing plays before it connects.
    expect(409, "wrong_state")(post(http, &format!("/calls/{id}/answer"), "").await);
    expect(409, "wrong_state")(post(http, &format!("/calls/{id}/reject"), "").await);
    expect(409, "wrong_state")(
        post(http, &format!("/calls/{id}/play"), r#"{"name":"beep.wav"}"#).await,
    );
    peer.answer(&d, from, 0).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    expect(400, "bad_request")(post(http, &format!("/calls/{id}/play"), "{}").await);
    expect(404, "not_found")(
        post(
            http,
            &format!("/calls/{id}/play"),
            r#"{"name":"absent.wav"}"#,
        )
        .await,
    );
    expect(415, "unsupported_media_type")(
        post(http, &format!("/calls/{id}/play"), r#"{"name":"fake.wav"}"#).await,
    );
    let played = post(http, &format!("/calls/{id}/play"), r#"{"name":"beep.wav"}"#).await;
    assert_eq!(played.status, 204);
    let (heard, _, _) = peer.record(Duration::from_millis(600)).await;
    assert_tone(&heard[800..4000], 600.0, "POST /play is heard");
    assert_eq!(
        post(http, &format!("/calls/{id}/hangup"), "").await.status,
        204
    );
    let (bye, from) = peer.expect_request("BYE").await;
    peer.respond(&bye, from, 200, "OK", None, None).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(http::get(http, "/readyz").await.status, 200);
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_token_guards_every_rest_route() {
    let mut config = config("token", 2);
    config.api_token = Some("sesame-0123456789abcdef".into());
    let daemon = start_with(config).await;
    let http = daemon.http_addr;
    let routes = [
        ("GET", "/calls"),
        ("POST", "/calls"),
        ("GET", "/calls/0123456789abcdef"),
        ("POST", "/calls/0123456789abcdef/answer"),
        ("POST", "/calls/0123456789abcdef/dtmf"),
        ("GET", "/devices"),
        ("GET", "/accounts"),
        ("GET", "/accounts/office"),
        ("GET", "/events"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
    ];
    // At once: each refusal from one address is answered later than the
    // one before (the guard's slow-down), so one after the other would take long.
    let refused = futures_util::future::join_all(
        routes
            .iter()
            .map(|(method, path)| request(http, method, path, &[])),
    )
    .await;
    for ((method, path), r) in routes.iter().zip(&refused) {
        assert_eq!(r.status, 401, "{method} {path}");
        assert_eq!(r.json()["error"]["code"], "unauthorized", "{method} {path}");
    }
    let bearer = [("Authorization", "Bearer sesame-0123456789abcdef")];
    let metrics = String::from_utf8(request(http, "GET", "/metrics", &bearer).await.body).unwrap();
    assert!(
        metrics.contains("siprelay_http_refused_total{reason=\"token\"} 11"),
        "{metrics}"
    );
    let ok = request(http, "GET", "/calls", &bearer).await;
    assert_eq!(ok.status, 200);
    let ok = request_with_body(
        http,
        "GET",
        "/calls?token=sesame-0123456789abcdef",
        &[],
        b"",
    )
    .await;
    assert_eq!(ok.status, 200);
    daemon.shutdown().await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let daemon = start_with(config("openapi", 2)).await;
    let doc = http::get(daemon.http_addr, "/openapi.json").await.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/calls", "post"),
        ("/calls", "get"),
        ("/calls/{id}", "get"),
        ("/calls/{id}", "delete"),
        ("/calls/{id}/answer", "post"),
        ("/calls/{id}/reject", "post"),
        ("/calls/{id}/hangup", "post"),
        ("/calls/{id}/play", "post"),
        ("/calls/{id}/dtmf", "post"),
        ("/devices", "get"),
        ("/accounts", "get"),
        ("/accounts/{name}", "get"),
        ("/events", "get"),
        ("/recordings", "get"),
        ("/recordings/{id}", "get"),
        ("/recordings/{id}", "delete"),
        ("/recordings/{id}.wav", "get"),
        ("/metrics", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    let place = &doc["components"]["schemas"]["PlaceCall"];
    assert_eq!(place["required"], serde_json::json!(["to"]));
    daemon.shutdown().await;
}

#[tokio::test]
async fn websocket_clients_are_unaffected_by_rest_watchers() {
    // A client and a watcher both hear of the same call; the client answers.
    let daemon = start_with(config("both", 2)).await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut events = EventStream::open(daemon.http_addr, "/events").await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let (id, mut d) = common::connected_call(&mut ws, &mut peer).await;
    events.expect("RING_ANS").await;
    let answered = events.expect("CALL_ANS").await;
    assert_eq!(answered["call_id"], id.as_str());
    let view = http::get(daemon.http_addr, &format!("/calls/{id}"))
        .await
        .json();
    assert!(
        view["owner"].as_str().unwrap().starts_with("client-"),
        "{view}"
    );
    peer.bye(&mut d).await;
    ws.expect("BYE:").await;
    events.expect("BYE").await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn web_pages_of_other_sites_cannot_drive_or_read_the_api() {
    let mut c = config("cross-site", 2);
    c.allowed_origins = vec!["https://app.example.com".into()];
    let daemon = start_with(c).await;
    let http = daemon.http_addr;
    let body = br#"{"to":"sip:1002@127.0.0.1:9"}"#;

    // A form or text/plain post (what a page may send without asking): 415.
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ] {
        let r = request_with_body(http, "POST", "/calls", &[("Content-Type", ct)], body).await;
        assert_eq!(r.status, 415, "{ct}");
        assert_eq!(r.json()["error"]["code"], "unsupported_media_type");
    }
    // Another site's page: 403, even with JSON; nothing was placed.
    let evil = [("Origin", "http://evil.example")];
    let r = request_with_body(http, "POST", "/calls", &evil, body).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "forbidden");
    assert_eq!(
        http::get(http, "/calls").await.json(),
        serde_json::json!([])
    );
    // A rebinding DNS name: the page's origin is its own, but Host is not ours.
    let rebound = [
        ("Host", "evil.example:8080"),
        ("Origin", "http://evil.example:8080"),
    ];
    assert_eq!(
        request(http, "GET", "/recordings", &rebound).await.status,
        403
    );
    assert_eq!(
        request(http, "GET", "/calls", &[("Host", "evil.example")])
            .await
            .status,
        403
    );
    // The WebSocket upgrade from another site is refused before the 101.
    let url = format!("ws://{http}/ws");
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        url.as_str(),
    )
    .unwrap();
    req.headers_mut()
        .insert("Origin", "http://evil.example".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(req)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("403"), "{refused}");

    // The positive controls: our own origin, an allowed one, no origin.
    for origin in [format!("http://{http}"), "https://app.example.com".into()] {
        let r = request_with_body(http, "GET", "/calls", &[("Origin", origin.as_str())], b"").await;
        assert_eq!(r.status, 200, "{origin}");
    }
    let placed = request_with_body(http, "POST", "/calls", &[], body).await;
    assert_eq!(
        placed.status,
        201,
        "{}",
        String::from_utf8_lossy(&placed.body)
    );
    let metrics = String::from_utf8(http::get(http, "/metrics").await.body).unwrap();
    assert!(
        metrics.contains("siprelay_http_refused_total{reason=\"origin\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("siprelay_http_refused_total{reason=\"host\"} 2"),
        "{metrics}"
    );
    daemon.shutdown().await;
}
