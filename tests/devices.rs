//! Devices (`/device/{id}`) against the real daemon: a SIP call to a
//! device's extension rings it, its audio travels as binary frames in its
//! own format, and presence, auth, busy and offline behave.

mod common;

use std::time::Duration;

use base64::Engine;
use common::audio::{self, assert_tone};
use common::http;
use common::sip::SipPeer;
use common::{call_id_of, rtp_range, start_with, WsClient};
use futures_util::{SinkExt, StreamExt};
use siprelay::config::Config;
use siprelay::daemon::Daemon;
use siprelay::devices::{AudioFormat, DeviceConfig};
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "door-token-0123456789";

fn config(format: AudioFormat) -> Config {
    let mut config = Config::loopback(rtp_range(4));
    config.devices = vec![
        DeviceConfig {
            id: "door".into(),
            token: TOKEN.into(),
            extension: "2001".into(),
            format,
            account: None,
        },
        DeviceConfig {
            id: "gate".into(),
            token: "gate-token-0123456789".into(),
            extension: "2002".into(),
            format: AudioFormat::L16,
            account: None,
        },
    ];
    config
}

/// A board's side of `/device/{id}`, as firmware would hold it.
struct Board {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    format: AudioFormat,
    /// Audio frames received, decoded.
    heard: Vec<i16>,
    /// When each frame arrived.
    arrivals: Vec<Instant>,
}

impl Board {
    async fn connect(daemon: &Daemon, id: &str, token: &str, format: AudioFormat) -> Board {
        let mut b = Board::open(daemon, id, token, format).await;
        // Registered once a command has been answered.
        b.send("PING").await;
        b.expect("PONG").await;
        b
    }

    /// Connects without waiting for anything.
    async fn open(daemon: &Daemon, id: &str, token: &str, format: AudioFormat) -> Board {
        let url = format!("ws://{}/device/{id}?token={token}", daemon.http_addr);
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("device connects");
        Board {
            ws,
            format,
            heard: Vec::new(),
            arrivals: Vec::new(),
        }
    }

    async fn send(&mut self, text: &str) {
        self.ws.send(Message::Text(text.into())).await.unwrap();
    }

    /// The next text message, keeping audio frames; None after `wait`.
    async fn next_text(&mut self, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.ws.next()).await.ok()?? {
                Ok(Message::Text(t)) => return Some(t.to_string()),
                Ok(Message::Binary(frame)) => self.keep(&frame),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    fn keep(&mut self, frame: &[u8]) {
        assert_eq!(frame.len(), self.format.frame_bytes(), "one 20 ms frame");
        let mut pcm = Vec::new();
        self.format.decode_to_pcm_bytes(frame, &mut pcm).unwrap();
        self.heard.extend(audio::from_le_bytes(&pcm));
        self.arrivals.push(Instant::now());
    }

    async fn expect(&mut self, prefix: &str) -> String {
        match self.next_text(Duration::from_secs(10)).await {
            Some(t) if t.starts_with(prefix) => t,
            other => panic!("device expected {prefix}..., got {other:?}"),
        }
    }

    /// Collects audio for `duration`.
    async fn listen(&mut self, duration: Duration) {
        let deadline = Instant::now() + duration;
        while let Ok(Some(Ok(m))) = timeout(
            deadline.saturating_duration_since(Instant::now()),
            self.ws.next(),
        )
        .await
        {
            if let Message::Binary(frame) = m {
                self.keep(&frame);
            }
        }
    }

    /// Sends `pcm` as binary frames in real time, as an I2S codec would deliver it.
    async fn speak(&mut self, pcm: &[i16]) {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for frame in pcm.chunks(160) {
            tick.tick().await;
            let mut wire = Vec::new();
            self.format.encode(frame, &mut wire);
            self.ws.send(Message::Binary(wire.into())).await.unwrap();
        }
    }
}

#[tokio::test]
async fn a_call_to_a_devices_extension_rings_it_alone_and_audio_flows_as_binary_frames() {
    let daemon = start_with(config(AudioFormat::Pcmu)).await;
    let mut app = WsClient::connect(&daemon).await;
    let mut door = Board::connect(&daemon, "door", TOKEN, AudioFormat::Pcmu).await;
    assert_eq!(app.expect("DEVICE:").await, "DEVICE:door##online");

    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let mut d = peer.invite("1001", "2001", Some("0")).await;
    let ring = door.expect("RING_ANS:").await;
    assert!(ring.starts_with("RING_ANS:1001##"), "{ring}");
    let id = call_id_of(&ring);
    assert_eq!(
        app.next_text(Duration::from_millis(300), false).await,
        None,
        "applications are not offered a device's calls"
    );
    door.send(&format!("CALL_ANS:{id}")).await;
    let ok = peer.expect_response("INVITE", 200).await;
    peer.ack(&mut d, &ok).await;
    door.expect("CALL_ANS:").await;

    // Caller → device: 440 Hz arrives as 160-byte µ-law frames.
    let (rtp, _) = d.media.unwrap();
    peer.send_tone(rtp, 0, &audio::tone(440.0, 160 * 40, 8000.0))
        .await;
    door.listen(Duration::from_millis(200)).await;
    assert!(door.heard.len() >= 160 * 35, "{} samples", door.heard.len());
    let heard = door.heard.clone();
    assert_tone(
        &heard[heard.len() - 160 * 30..],
        440.0,
        "the device hears the caller",
    );

    // Device → caller: 1000 Hz in binary frames reaches the SIP peer.
    let tone = audio::tone(1000.0, 160 * 40, 8000.0);
    let ((), (caller_heard, _, _)) =
        tokio::join!(door.speak(&tone), peer.record(Duration::from_millis(900)));
    // What the peer read first is the silence queued since the answer.
    let end = caller_heard.len();
    assert_tone(
        &caller_heard[end - 5600..end - 1600],
        1000.0,
        "the caller hears the device",
    );

    let devices = http::get(daemon.http_addr, "/devices").await.json();
    assert_eq!(devices[0]["id"], "door");
    assert_eq!(devices[0]["online"], true);
    assert_eq!(devices[0]["call"], id.as_str());
    assert_eq!(devices[1]["id"], "gate");
    assert_eq!(devices[1]["online"], false);

    peer.bye(&mut d).await;
    assert_eq!(door.expect("BYE:").await, format!("BYE:{id}"));
    daemon.shutdown().await;
}

#[tokio::test]
async fn an_offline_device_is_480_and_a_busy_one_486() {
    let daemon = start_with(config(AudioFormat::Pcmu)).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let d = peer.invite("1001", "2001", Some("0")).await;
    let resp = peer.expect_response("INVITE", 480).await;
    peer.ack_failure(&d, &resp).await;

    let mut door = Board::connect(&daemon, "door", TOKEN, AudioFormat::Pcmu).await;
    let first = peer.invite("1001", "2001", Some("0")).await;
    door.expect("RING_ANS:").await;
    let second = peer.invite("1003", "2001", Some("0")).await;
    let resp = peer.expect_response("INVITE", 486).await;
    peer.ack_failure(&second, &resp).await;
    // A device has one call: it cannot dial while this one rings.
    door.send("CALL:sip:1002@127.0.0.1:9").await;
    assert!(door.expect("ERROR:").await.starts_with("ERROR:409"));
    drop(first);
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_wrong_token_or_an_unknown_id_is_refused_before_the_upgrade() {
    let daemon = start_with(config(AudioFormat::Pcmu)).await;
    let http = daemon.http_addr;
    for path in [
        "/device/door".to_string(),
        "/device/door?token=wrong".to_string(),
        format!("/device/nobody?token={TOKEN}"),
        // Another device's token does not open this one.
        "/device/door?token=gate-token-0123456789".to_string(),
    ] {
        let r = http::request(
            http,
            "GET",
            &path,
            &[
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
        )
        .await;
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.json()["error"]["code"], "unauthorized");
    }
    // Counted like the API's wrong tokens (and slowed down per address).
    let metrics = http::get(http, "/metrics").await.body;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("siprelay_http_refused_total{reason=\"device_token\"} 4"),
        "{metrics}"
    );
    let url = format!("ws://{http}/device/door?token=nope");
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
    // The bearer header works as well as the query.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{http}/device/door")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("bearer token accepted");
    ws.send(Message::Text("PING".into())).await.unwrap();
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_second_connection_replaces_the_first_and_presence_follows() {
    let daemon = start_with(config(AudioFormat::Pcmu)).await;
    let mut app = WsClient::connect(&daemon).await;
    let mut old = Board::connect(&daemon, "door", TOKEN, AudioFormat::Pcmu).await;
    assert_eq!(app.expect("DEVICE:").await, "DEVICE:door##online");
    old.send(r#"HELLO:{"firmware":"1.4.2","rssi":-61}"#).await;
    old.send("HELLO:not json").await;
    assert!(old.expect("ERROR:").await.starts_with("ERROR:400"));
    let devices = http::get(daemon.http_addr, "/devices").await.json();
    assert_eq!(devices[0]["info"]["firmware"], "1.4.2");
    assert_eq!(devices[0]["info"]["rssi"], -61);

    let mut new = Board::connect(&daemon, "door", TOKEN, AudioFormat::Pcmu).await;
    let closed = loop {
        match timeout(Duration::from_secs(5), old.ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => {
                break frame.expect("a close frame with a reason")
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!("the old connection was not closed: {other:?}"),
        }
    };
    assert_eq!(closed.code, CloseCode::from(4000));
    assert!(closed.reason.contains("replaced"), "{}", closed.reason);
    // Still online through the new connection: no event.
    assert_eq!(app.next_text(Duration::from_millis(300), false).await, None);
    let devices = http::get(daemon.http_addr, "/devices").await.json();
    assert_eq!(devices[0]["online"], true);
    assert_eq!(devices[0]["info"], serde_json::Value::Null);

    new.ws.close(None).await.unwrap();
    assert_eq!(app.expect("DEVICE:").await, "DEVICE:door##offline");
    let devices = http::get(daemon.http_addr, "/devices").await.json();
    assert_eq!(devices[0]["online"], false);
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_device_dials_out_and_talks_in_l16() {
    let daemon = start_with(config(AudioFormat::Pcmu)).await;
    let mut gate = Board::connect(&daemon, "gate", "gate-token-0123456789", AudioFormat::L16).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    gate.send(&format!("CALL:sip:1002@{}", peer.addr)).await;
    let calling = gate.expect("CALLING:").await;
    let id = call_id_of(&calling);
    let (d, from) = peer.accept_invite().await;
    peer.answer(&d, from, 0).await;
    gate.expect("CALL_ANS:").await;
    let (rtp, _) = d.media.unwrap();
    peer.send_tone(rtp, 0, &audio::tone(700.0, 160 * 30, 8000.0))
        .await;
    gate.listen(Duration::from_millis(200)).await;
    let heard = gate.heard.clone();
    assert_tone(
        &heard[heard.len() - 160 * 20..],
        700.0,
        "L16 frames of 320 bytes",
    );
    gate.send(&format!("HANGUP:{id}")).await;
    let (bye, from) = peer.expect_request("BYE").await;
    peer.respond(&bye, from, 200, "OK", None, None).await;
    assert_eq!(gate.expect("BYE:").await, format!("BYE:{id}"));
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_device_that_stops_answering_pings_goes_offline() {
    let mut config = config(AudioFormat::Pcmu);
    config.device_ping_interval = Duration::from_millis(300);
    let daemon = start_with(config).await;
    let mut app = WsClient::connect(&daemon).await;
    // Never read again: no pong goes back.
    let _door = Board::connect(&daemon, "door", TOKEN, AudioFormat::Pcmu).await;
    assert_eq!(app.expect("DEVICE:").await, "DEVICE:door##online");
    assert_eq!(app.expect("DEVICE:").await, "DEVICE:door##offline");
    let devices = http::get(daemon.http_addr, "/devices").await.json();
    assert_eq!(devices[0]["online"], false);
    daemon.shutdown().await;
}

/// The door, connected, in a call from the peer, and the call's id and
/// dialog, with the peer's RTP target.
async fn door_in_a_call(
    daemon: &Daemon,
    peer: &mut SipPeer,
) -> (Board, String, common::sip::Dialog) {
    let mut door = Board::connect(daemon, "door", TOKEN, AudioFormat::Pcmu).await;
    let mut d = peer.invite("1001", "2001", Some("0")).await;
    let id = call_id_of(&door.expect("RING_ANS:").await);
    door.send(&format!("CALL_ANS:{id}")).await;
    let ok = peer.expect_response("INVITE", 200).await;
    peer.ack(&mut d, &ok).await;
    door.expect("CALL_ANS:").await;
    (door, id, d)
}

#[tokio::test]
async fn a_device_that_drops_mid_call_resumes_it_within_the_grace_window() {
    let mut config = config(AudioFormat::Pcmu);
    config.device_reconnect_grace = Duration::from_secs(5);
    let daemon = start_with(config).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let (door, id, d) = door_in_a_call(&daemon, &mut peer).await;
    // A Wi-Fi blip: the TCP connection is gone, no close frame.
    drop(door);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let devices = http::get(daemon.http_addr, "/devices").await.json();
    assert_eq!(devices[0]["online"], false);

    let mut door = Board::open(&daemon, "door", TOKEN, AudioFormat::Pcmu).await;
    assert_eq!(
        door.expect("CALL_ANS:").await,
        format!("CALL_ANS:{id}"),
        "the call goes on"
    );
    let (rtp, _) = d.media.unwrap();
    peer.send_tone(rtp, 0, &audio::tone(440.0, 160 * 30, 8000.0))
        .await;
    door.listen(Duration::from_millis(200)).await;
    let heard = door.heard.clone();
    assert!(
        heard.len() >= 160 * 20,
        "{} samples after the return",
        heard.len()
    );
    assert_tone(
        &heard[heard.len() - 160 * 20..],
        440.0,
        "audio continues to the new connection",
    );
    while let Some((m, _)) = peer.recv(Duration::from_millis(100)).await {
        assert_ne!(m.method(), Some("BYE"), "the caller was not hung up on");
    }
    // The new connection owns the call: it can hang it up.
    door.send(&format!("HANGUP:{id}")).await;
    let (bye, from) = peer.expect_request("BYE").await;
    peer.respond(&bye, from, 200, "OK", None, None).await;
    assert_eq!(door.expect("BYE:").await, format!("BYE:{id}"));
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_device_that_does_not_come_back_in_time_has_its_call_hung_up() {
    let mut config = config(AudioFormat::Pcmu);
    config.device_reconnect_grace = Duration::from_millis(300);
    let daemon = start_with(config).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let (door, _id, _d) = door_in_a_call(&daemon, &mut peer).await;
    let dropped = Instant::now();
    drop(door);
    let (bye, from) = peer.expect_request("BYE").await;
    assert!(
        dropped.elapsed() >= Duration::from_millis(300),
        "not before the window ended"
    );
    peer.respond(&bye, from, 200, "OK", None, None).await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn an_application_calls_a_device_by_its_extension_without_sip() {
    let daemon = start_with(config(AudioFormat::Pcmu)).await;
    let mut app = WsClient::connect(&daemon).await;
    // Offline first: the call fails as an INVITE to it would.
    app.send("CALL:2001").await;
    app.expect("CALLING:2001##").await;
    assert!(app
        .expect("CALL_FAILED:")
        .await
        .starts_with("CALL_FAILED:480 "));

    let mut door = Board::connect(&daemon, "door", TOKEN, AudioFormat::Pcmu).await;
    app.expect("DEVICE:door##online").await;
    app.send("CALL:2001").await;
    let id = call_id_of(&app.expect("CALLING:2001##").await);
    assert_eq!(app.expect("RINGING:").await, format!("RINGING:{id}"));
    let ring = door.expect("RING_ANS:client-").await;
    let leg = call_id_of(&ring);
    door.send(&format!("CALL_ANS:{leg}")).await;
    door.expect("CALL_ANS:").await;
    assert_eq!(app.expect("CALL_ANS:").await, format!("CALL_ANS:{id}"));

    // Application → device.
    let tone = audio::to_le_bytes(&audio::tone(1000.0, 8000, 8000.0));
    app.send(&format!("RTP:{id}##{}", common::B64.encode(&tone)))
        .await;
    door.listen(Duration::from_millis(700)).await;
    let heard = door.heard.clone();
    let loud = audio::loud_frames(&heard, 1000.0);
    assert!(loud.len() >= 160 * 25, "{} loud samples", loud.len());
    assert_tone(&loud, 1000.0, "the device hears the application");

    // Device → application.
    let tone = audio::tone(600.0, 160 * 30, 8000.0);
    let ((), from_door) = tokio::join!(door.speak(&tone), app.record(Duration::from_millis(800)));
    let loud = audio::loud_frames(&from_door, 1000.0);
    assert!(loud.len() >= 160 * 20, "{} loud samples", loud.len());
    assert_tone(&loud, 600.0, "the application hears the device");

    app.send(&format!("HANGUP:{id}")).await;
    assert_eq!(app.expect("BYE:").await, format!("BYE:{id}"));
    assert_eq!(door.expect("BYE:").await, format!("BYE:{leg}"));
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_device_calls_another_device_and_an_application_number() {
    let daemon = start_with(config(AudioFormat::Pcmu)).await;
    let mut door = Board::connect(&daemon, "door", TOKEN, AudioFormat::Pcmu).await;
    let mut gate = Board::connect(&daemon, "gate", "gate-token-0123456789", AudioFormat::L16).await;
    door.send("CALL:2002").await;
    let id = call_id_of(&door.expect("CALLING:").await);
    let ring = gate.expect("RING_ANS:").await;
    assert!(
        ring.starts_with("RING_ANS:2001##"),
        "the caller id is the extension: {ring}"
    );
    let leg = call_id_of(&ring);
    // The gate is busy now: a SIP call to it gets 486.
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let busy = peer.invite("1001", "2002", Some("0")).await;
    let resp = peer.expect_response("INVITE", 486).await;
    peer.ack_failure(&busy, &resp).await;

    gate.send(&format!("CALL_ANS:{leg}")).await;
    gate.expect("CALL_ANS:").await;
    door.expect("RINGING:").await;
    door.expect("CALL_ANS:").await;
    let tone = audio::tone(440.0, 160 * 40, 8000.0);
    let ((), ()) = tokio::join!(door.speak(&tone), gate.listen(Duration::from_millis(900)));
    let loud = audio::loud_frames(&gate.heard, 1000.0);
    assert!(loud.len() >= 160 * 25, "{} loud samples", loud.len());
    assert_tone(
        &loud,
        440.0,
        "µ-law from one board reaches the other as L16",
    );
    gate.send(&format!("HANGUP:{leg}")).await;
    assert_eq!(door.expect("BYE:").await, format!("BYE:{id}"));

    // A number an application takes by name is answered inside siprelay too.
    let mut desk = WsClient::connect_path(daemon.http_addr, "/ws?offers=3000").await;
    door.send("CALL:3000").await;
    let id = call_id_of(&door.expect("CALLING:3000##").await);
    let ring = desk.expect("RING_ANS:2001##").await;
    desk.send(&format!("CALL_IGNORE:{}", call_id_of(&ring)))
        .await;
    assert_eq!(door.expect("RINGING:").await, format!("RINGING:{id}"));
    assert_eq!(
        door.expect("CALL_IGNORE:").await,
        format!("CALL_IGNORE:{id}")
    );
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_device_gets_the_far_ends_audio_paced_on_siprelays_clock() {
    let daemon = start_with(config(AudioFormat::Pcmu)).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let (mut door, _id, d) = door_in_a_call(&daemon, &mut peer).await;
    let (rtp, _) = d.media.unwrap();
    door.listen(Duration::from_millis(100)).await;
    door.heard.clear();
    door.arrivals.clear();
    // 25 packets of tone in bursts of 5 every 100 ms, as a far end behind a
    // bursty link delivers them, while the board listens.
    let tone = audio::tone(440.0, 160 * 25, 8000.0);
    let send = async {
        for (i, frame) in tone.chunks(160).enumerate() {
            if i > 0 && i % 5 == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let mut pkt = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
            pkt[2..4].copy_from_slice(&(i as u16).to_be_bytes());
            pkt[4..8].copy_from_slice(&((i * 160) as u32).to_be_bytes());
            pkt.extend(frame.iter().map(|&x| audio::ulaw_encode(x)));
            peer.rtp.send_to(&pkt, rtp).await.unwrap();
        }
    };
    let ((), ()) = tokio::join!(send, door.listen(Duration::from_millis(900)));
    let loud: Vec<usize> = door
        .heard
        .chunks(160)
        .enumerate()
        .filter(|(_, f)| audio::rms(f) > 1000.0)
        .map(|(i, _)| i)
        .collect();
    assert!(loud.len() >= 24, "{} frames of tone", loud.len());
    // Played out one frame a tick, not passed on in bursts of five.
    let bunched = loud
        .windows(2)
        .filter(|w| door.arrivals[w[1]] - door.arrivals[w[0]] < Duration::from_millis(5))
        .count();
    assert!(
        bunched <= 3,
        "{bunched} of {} frames came on the heels of the one before",
        loud.len()
    );
    // And between calls' audio, the frames keep coming: silence, every tick.
    assert!(
        door.heard.len() >= 160 * 40,
        "{} samples in 0.9 s",
        door.heard.len()
    );
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_device_that_reconnects_while_rung_is_rung_again_and_can_answer() {
    let daemon = start_with(config(AudioFormat::Pcmu)).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let mut door = Board::connect(&daemon, "door", TOKEN, AudioFormat::Pcmu).await;
    let mut d = peer.invite("1001", "2001", Some("0")).await;
    let id = call_id_of(&door.expect("RING_ANS:").await);
    drop(door);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut door = Board::open(&daemon, "door", TOKEN, AudioFormat::Pcmu).await;
    assert_eq!(
        door.expect("RING_ANS:").await,
        format!("RING_ANS:1001##{id}")
    );
    door.send(&format!("CALL_ANS:{id}")).await;
    let ok = peer.expect_response("INVITE", 200).await;
    peer.ack(&mut d, &ok).await;
    door.expect("CALL_ANS:").await;
    peer.bye(&mut d).await;
    assert_eq!(door.expect("BYE:").await, format!("BYE:{id}"));
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_call_ringing_a_device_that_does_not_come_back_is_refused_after_the_window() {
    let mut config = config(AudioFormat::Pcmu);
    config.device_reconnect_grace = Duration::from_millis(300);
    let daemon = start_with(config).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let mut door = Board::connect(&daemon, "door", TOKEN, AudioFormat::Pcmu).await;
    let d = peer.invite("1001", "2001", Some("0")).await;
    door.expect("RING_ANS:").await;
    let dropped = Instant::now();
    drop(door);
    let resp = peer.expect_response("INVITE", 480).await;
    assert!(
        dropped.elapsed() >= Duration::from_millis(300),
        "not before the window ended"
    );
    peer.ack_failure(&d, &resp).await;
    daemon.shutdown().await;
}
