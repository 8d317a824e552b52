//! Calls through SIP accounts, against a SIP peer written for the tests
//! that plays the PBX: outgoing calls go to the account's domain and next
//! hop, From its AOR, and answer a 407 once with its digest; incoming calls
//! to the account's user are offered by the account's name, and a device
//! that is an account rings and dials through it.

mod common;

use std::time::Duration;

use common::registrar::{digest_ok, REALM};
use common::sip::SipPeer;
use common::{call_id_of, http, rtp_range, start_with, WsClient};
use siprelay::accounts::AccountConfig;
use siprelay::config::{Config, Secret};
use siprelay::devices::{AudioFormat, DeviceConfig};

const PASSWORD: &str = "pw-trunk-5e1d";
const NONCE: &str = "n-407-test";

/// A trunk that needs credentials only for the calls siprelay places.
fn trunk(peer: &SipPeer) -> AccountConfig {
    AccountConfig {
        name: "office".into(),
        username: "2000".into(),
        password: Secret::new(PASSWORD),
        domain: "pbx.test".into(),
        registrar: Some(peer.addr.to_string().parse().unwrap()),
        auth_username: None,
        outbound_proxy: None,
        transport: Default::default(),
        expires: 300,
        register: false,
        default: false,
        srtp: Default::default(),
        keepalive_interval: None,
    }
}

async fn daemon_for(peer: &mut SipPeer, devices: Vec<DeviceConfig>) -> siprelay::daemon::Daemon {
    let mut config = Config::loopback(rtp_range(4));
    config.accounts = vec![trunk(peer)];
    config.devices = devices;
    let daemon = start_with(config).await;
    peer.daemon = daemon.sip_addr();
    daemon
}

/// Answers the INVITE with 407 and takes the ACK; the retried INVITE next.
async fn challenge(peer: &mut SipPeer) -> common::sip::SipMessage {
    let (d, from) = peer.accept_invite().await;
    let invite = d.invite.clone().unwrap();
    let header = format!(
        "Proxy-Authenticate: Digest realm=\"{REALM}\", nonce=\"{NONCE}\", algorithm=MD5, qop=\"auth\"\r\n"
    );
    peer.respond_with(
        &invite,
        from,
        407,
        "Proxy Authentication Required",
        Some("t407"),
        &header,
        None,
    )
    .await;
    peer.expect_request("ACK").await;
    invite
}

#[tokio::test]
async fn outgoing_calls_go_through_the_account_and_answer_a_407_once() {
    let mut peer = SipPeer::new("127.0.0.1:9".parse().unwrap()).await;
    let daemon = daemon_for(&mut peer, vec![]).await;
    let mut ws = WsClient::connect(&daemon).await;

    // A plain number goes through the default (only) account.
    ws.send("CALL:1002").await;
    let id = call_id_of(&ws.expect("CALLING:1002##").await);
    let first = challenge(&mut peer).await;
    assert!(
        first.start.starts_with("INVITE sip:1002@pbx.test SIP/2.0"),
        "{}",
        first.start
    );
    assert!(first.header("From").unwrap().contains("sip:2000@pbx.test"));
    assert!(first.header("Proxy-Authorization").is_none());
    let (d, from) = peer.accept_invite().await;
    let retried = d.invite.clone().unwrap();
    let auth = retried
        .header("Proxy-Authorization")
        .expect("answered the challenge");
    assert!(digest_ok(auth, "INVITE", "2000", PASSWORD, NONCE), "{auth}");
    assert_eq!(retried.header("Call-ID"), first.header("Call-ID"));
    peer.answer(&d, from, 0).await;
    assert_eq!(ws.expect("CALL_ANS:").await, format!("CALL_ANS:{id}"));
    let view = http::get(daemon.http_addr, &format!("/calls/{id}"))
        .await
        .json();
    assert_eq!(view["account"], "office");
    assert_eq!(view["from"], "sip:2000@pbx.test");
    ws.send(&format!("HANGUP:{id}")).await;
    let (bye, from) = peer.expect_request("BYE").await;
    peer.respond(&bye, from, 200, "OK", None, None).await;
    assert_eq!(ws.expect("BYE:").await, format!("BYE:{id}"));

    // A challenge that fails again is the call's failure, not a loop.
    ws.send("CALL:1003##office").await;
    let id = call_id_of(&ws.expect("CALLING:1003##").await);
    challenge(&mut peer).await;
    let again = challenge(&mut peer).await;
    assert!(again.header("Proxy-Authorization").is_some());
    assert_eq!(
        ws.expect("CALL_FAILED:").await,
        format!("CALL_FAILED:407 Proxy Authentication Required##{id}")
    );
    let late = peer.recv(Duration::from_secs(2)).await;
    assert!(late.is_none(), "no third INVITE: {late:?}");

    ws.send("CALL:1004##nosuch").await;
    assert_eq!(
        ws.expect("ERROR:").await,
        "ERROR:404 no account named nosuch"
    );

    // The REST API names the account the same way.
    let r = http::post(
        daemon.http_addr,
        "/calls",
        r#"{"to":"1005","account":"office"}"#,
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["account"], "office");
    let (d, from) = peer.accept_invite().await;
    let invite = d.invite.clone().unwrap();
    assert!(invite.start.starts_with("INVITE sip:1005@pbx.test "));
    peer.respond(&invite, from, 486, "Busy Here", Some("t486"), None)
        .await;
    let r = http::post(
        daemon.http_addr,
        "/calls",
        r#"{"to":"1005","account":"nosuch"}"#,
    )
    .await;
    assert_eq!(r.status, 404);
    daemon.shutdown().await;
}

#[tokio::test]
async fn incoming_calls_on_an_account_are_offered_by_its_name() {
    let mut peer = SipPeer::new("127.0.0.1:9".parse().unwrap()).await;
    let mut config = Config::loopback(rtp_range(4));
    let mut account = trunk(&peer);
    // Not the peer's address: calls are the account's by their user alone.
    account.registrar = Some("127.0.0.2:5060".parse().unwrap());
    config.accounts = vec![account];
    let daemon = start_with(config).await;
    peer.daemon = daemon.sip_addr();
    let mut office = WsClient::connect_path(daemon.http_addr, "/ws?offers=office").await;
    let mut other = WsClient::connect_path(daemon.http_addr, "/ws?offers=3000").await;

    let _call = peer.invite("1001", "2000", Some("0")).await;
    let ring = office.expect("RING_ANS:").await;
    let id = call_id_of(&ring);
    assert_eq!(ring, format!("RING_ANS:1001##{id}"));
    let view = http::get(daemon.http_addr, &format!("/calls/{id}"))
        .await
        .json();
    assert_eq!(view["account"], "office");

    // The positive control: the other client takes its own number.
    let _call = peer.invite("1001", "3000", Some("0")).await;
    let ring = other.expect("RING_ANS:").await;
    let other_id = call_id_of(&ring);
    let stray = office.next_text(Duration::from_millis(300), false).await;
    assert!(stray.is_none(), "{stray:?}");
    let view = http::get(daemon.http_addr, &format!("/calls/{other_id}"))
        .await
        .json();
    assert_eq!(view["account"], serde_json::Value::Null);
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_device_that_is_an_account_rings_for_it_and_dials_through_it() {
    let mut peer = SipPeer::new("127.0.0.1:9".parse().unwrap()).await;
    let token = "door-token-0123456789";
    let door = DeviceConfig {
        id: "door".into(),
        token: token.into(),
        extension: "21".into(),
        format: AudioFormat::Pcmu,
        account: Some("office".into()),
    };
    let daemon = daemon_for(&mut peer, vec![door]).await;
    let mut app = WsClient::connect(&daemon).await;
    let mut board =
        WsClient::connect_path(daemon.http_addr, &format!("/device/door?token={token}")).await;
    assert_eq!(app.expect("DEVICE:").await, "DEVICE:door##online");

    // A call to the account's user rings the device, not the application.
    let _call = peer.invite("1001", "2000", Some("0")).await;
    let ring = board.expect("RING_ANS:").await;
    assert!(ring.starts_with("RING_ANS:1001##"), "{ring}");
    let stray = app.next_text(Duration::from_millis(300), false).await;
    assert!(stray.is_none(), "{stray:?}");
    board
        .send(&format!("CALL_IGNORE:{}", call_id_of(&ring)))
        .await;
    peer.expect_response("INVITE", 486).await;

    // The device dials a number: through the account.
    board.send("CALL:1002").await;
    board.expect("CALLING:1002##").await;
    let (d, from) = peer.accept_invite().await;
    let invite = d.invite.clone().unwrap();
    assert!(
        invite.start.starts_with("INVITE sip:1002@pbx.test "),
        "{}",
        invite.start
    );
    assert!(invite.header("From").unwrap().contains("sip:2000@pbx.test"));
    peer.respond(&invite, from, 486, "Busy Here", Some("t486"), None)
        .await;
    daemon.shutdown().await;
}
