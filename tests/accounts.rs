//! SIP accounts against a registrar written for the tests: digest
//! challenges, the lifetime the registrar grants, refreshes, wrong
//! passwords, unregistering at shutdown, and what `GET /accounts`, `REG`
//! events and the logs show (never the password).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::registrar::{Mode, Registrar};
use common::{rtp_range, start_with, WsClient};
use siprelay::accounts::AccountConfig;
use siprelay::config::{Config, Secret};

const PASSWORD: &str = "pw-3c9f-never-logged";

fn account(registrar: &Registrar, password: &str) -> AccountConfig {
    AccountConfig {
        name: "office".into(),
        username: "2000".into(),
        password: Secret::new(password),
        domain: "pbx.test".into(),
        registrar: Some(registrar.addr.to_string().parse().unwrap()),
        auth_username: None,
        outbound_proxy: None,
        transport: Default::default(),
        expires: 300,
        register: true,
        default: false,
        srtp: Default::default(),
        keepalive_interval: None,
    }
}

fn config(accounts: Vec<AccountConfig>) -> Config {
    let mut config = Config::loopback(rtp_range(2));
    config.accounts = accounts;
    config
}

async fn account_state(http: std::net::SocketAddr) -> serde_json::Value {
    let r = common::http::get(http, "/accounts").await;
    assert_eq!(r.status, 200);
    r.json()[0].clone()
}

#[tokio::test]
async fn registers_with_digest_refreshes_on_the_grant_and_unregisters_at_shutdown() {
    let mut registrar = Registrar::start("2000", PASSWORD, Mode::Silent).await;
    let daemon = start_with(config(vec![account(&registrar, PASSWORD)])).await;
    let mut ws = WsClient::connect(&daemon).await;
    assert_eq!(
        account_state(daemon.http_addr).await["state"],
        "registering"
    );

    // Silent so far, so the client is connected before anything is granted.
    registrar.set_mode(Mode::Grant { expires: 2 });
    let challenged = loop {
        let seen = registrar
            .next(Duration::from_secs(10))
            .await
            .expect("a REGISTER");
        if seen.status == 401 {
            break seen;
        }
    };
    assert!(!challenged.authorized);
    assert_eq!(
        challenged.expires,
        Some(300),
        "asks for its configured lifetime"
    );
    assert!(challenged.msg.header("Via").unwrap().contains(";rport"));
    let call_id = challenged.msg.header("Call-ID").unwrap();
    assert!(
        call_id.ends_with("@127.0.0.1"),
        "our own Call-ID suffix: {call_id}"
    );
    assert!(challenged
        .msg
        .header("To")
        .unwrap()
        .contains("sip:2000@pbx.test"));
    assert!(
        challenged
            .msg
            .start
            .starts_with("REGISTER sip:pbx.test SIP/2.0"),
        "{}",
        challenged.msg.start
    );
    let granted = registrar.next_granted(Duration::from_secs(5)).await;
    assert!(granted.authorized, "the digest answers the challenge");
    assert_eq!(ws.expect("REG:").await, "REG:office##registered");

    let state = account_state(daemon.http_addr).await;
    assert_eq!(state["name"], "office");
    assert_eq!(state["aor"], "sip:2000@pbx.test");
    assert_eq!(state["state"], "registered");
    assert_eq!(
        state["expires"], 2,
        "the lifetime granted, not the one asked for"
    );
    assert_eq!(state["last_status"], 200);
    assert!(state["registered_at"].as_str().unwrap().ends_with('Z'));
    assert!(!state.to_string().contains(PASSWORD));

    // Refreshed before the 2 s grant runs out, in the same registration.
    let refresh = registrar.next_granted(Duration::from_secs(5)).await;
    assert_eq!(refresh.msg.header("Call-ID"), granted.msg.header("Call-ID"));
    let cseq = |s: &common::registrar::Seen| -> u32 {
        s.msg
            .header("CSeq")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(cseq(&refresh) > cseq(&granted));
    let metrics =
        String::from_utf8(common::http::get(daemon.http_addr, "/metrics").await.body).unwrap();
    assert!(
        metrics.contains("siprelay_registrations_total{account=\"office\",outcome=\"registered\",status=\"200\"}"),
        "{metrics}"
    );

    daemon.shutdown().await;
    let mut unregistered = false;
    while let Some(seen) = registrar.next(Duration::from_millis(500)).await {
        if seen.expires == Some(0) && seen.status == 200 {
            unregistered = true;
        }
    }
    assert!(unregistered, "Expires: 0 sent at shutdown");
}

#[tokio::test]
async fn a_wrong_password_fails_once_without_a_retry_loop() {
    let mut registrar = Registrar::start("2000", PASSWORD, Mode::Silent).await;
    let daemon = start_with(config(vec![account(&registrar, "not-the-password")])).await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut events = common::http::EventStream::open(daemon.http_addr, "/events").await;
    registrar.set_mode(Mode::Grant { expires: 60 });

    let failed = ws.expect("REG:").await;
    assert!(failed.starts_with("REG:office##failed##401 "), "{failed}");
    let event = events.expect("REG").await;
    assert_eq!(event["account"], "office");
    assert_eq!(event["state"], "failed");
    assert_eq!(event["status"], 401);
    let state = account_state(daemon.http_addr).await;
    assert_eq!(state["state"], "failed");
    assert_eq!(state["last_status"], 401);
    assert!(state["last_error"]
        .as_str()
        .unwrap()
        .contains("wrong credentials"));

    // One challenged attempt: the first REGISTER and its answer to the
    // challenge (retransmissions of the silent phase aside), then quiet.
    let mut answered = 0;
    while let Some(seen) = registrar.next(Duration::from_secs(3)).await {
        if seen.status != 0 {
            answered += 1;
            assert!(!seen.authorized);
        }
    }
    assert_eq!(answered, 2, "no tight retry loop");
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_refusing_registrar_is_reported_with_its_status() {
    let mut registrar = Registrar::start("2000", PASSWORD, Mode::Refuse(503)).await;
    let daemon = start_with(config(vec![account(&registrar, PASSWORD)])).await;
    let seen = registrar.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(seen.status, 503);
    // A transient refusal is retried on the backoff: again after about 1 s.
    registrar.set_mode(Mode::Grant { expires: 60 });
    registrar.next_granted(Duration::from_secs(5)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let state = account_state(daemon.http_addr).await;
        if state["state"] == "registered" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon.shutdown().await;
}

#[test]
fn no_log_line_or_printed_config_carries_the_password() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut registrar = rt.block_on(Registrar::start(
        "2000",
        PASSWORD,
        Mode::Grant { expires: 60 },
    ));
    let dir = std::env::temp_dir().join(format!("siprelay-accounts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("siprelay.toml");
    std::fs::write(
        &file,
        format!(
            "[[accounts]]\nname = \"office\"\nusername = \"2000\"\npassword = \"{PASSWORD}\"\n\
             domain = \"pbx.test\"\nregistrar = \"{}\"\n",
            registrar.addr
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_siprelay");
    let (low, high) = rtp_range(2);
    let common_args = [
        "--config".to_string(),
        file.to_str().unwrap().to_string(),
        "--sip-listen".into(),
        "127.0.0.1:0".into(),
        "--http-listen".into(),
        "127.0.0.1:0".into(),
        "--rtp-ports".into(),
        format!("{low}-{high}"),
        "--no-record".into(),
    ];
    let printed = Command::new(bin)
        .args(&common_args)
        .arg("--check-config")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(printed.contains("pbx.test"), "{printed}");
    assert!(!printed.contains(PASSWORD), "{printed}");

    let mut child = Command::new(bin)
        .args(&common_args)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let reader = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    rt.block_on(async {
        registrar.next_granted(Duration::from_secs(10)).await;
        // Let the daemon log what it does with the answer.
        tokio::time::sleep(Duration::from_millis(300)).await;
    });
    let status = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
    let log = reader.join().unwrap();
    assert!(
        log.iter()
            .any(|l| l.contains("registration") && l.contains("registered")),
        "the positive control: the log tells of the registration"
    );
    assert!(
        log.iter().any(|l| l.contains("Authorization")),
        "SIP traced at this level"
    );
    let leaks: Vec<_> = log.iter().filter(|l| l.contains(PASSWORD)).collect();
    assert!(leaks.is_empty(), "{leaks:?}");
}

/// A registrar over TCP that challenges, then grants `expires`; every
/// REGISTER it answers is reported.
async fn tcp_registrar(
    listener: tokio::net::TcpListener,
    expires: u32,
    seen: tokio::sync::mpsc::UnboundedSender<u16>,
) {
    use common::registrar::{digest_ok, response, REALM};
    let nonce = "tcp-nonce-1";
    // Aborting the registrar drops this set, which closes its connections.
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((stream, from)) = listener.accept().await {
        let seen = seen.clone();
        connections.spawn(async move {
            let mut sip = common::stream::StreamSip::new(stream);
            while let Some(msg) = sip.recv(Duration::from_secs(60)).await {
                if msg.method() != Some("REGISTER") {
                    continue;
                }
                let authorized = msg
                    .header("Authorization")
                    .is_some_and(|h| digest_ok(h, "REGISTER", "2000", PASSWORD, nonce));
                let (status, text) = if authorized {
                    let contact = msg.header("Contact").unwrap_or_default();
                    let contact = contact.split(";expires").next().unwrap_or_default();
                    (200, response(&msg, from, "200 OK", &format!("Contact: {contact};expires={expires}\r\n")))
                } else {
                    let challenge = format!("WWW-Authenticate: Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm=MD5\r\n");
                    (401, response(&msg, from, "401 Unauthorized", &challenge))
                };
                sip.send(&text).await;
                let _ = seen.send(status);
            }
        });
    }
}

#[tokio::test]
async fn over_tcp_a_registrar_that_restarts_is_registered_with_again() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let registrar = tokio::spawn(tcp_registrar(listener, 2, tx.clone()));

    let mut a = AccountConfig {
        registrar: Some(addr.to_string().parse().unwrap()),
        transport: siprelay::config::SipTransport::Tcp,
        ..account(&Registrar::start("x", "y", Mode::Silent).await, PASSWORD)
    };
    a.expires = 60;
    let daemon = start_with(config(vec![a])).await;
    async fn next(seen: &mut tokio::sync::mpsc::UnboundedReceiver<u16>) -> Option<u16> {
        tokio::time::timeout(Duration::from_secs(10), seen.recv())
            .await
            .ok()
            .flatten()
    }
    assert_eq!(next(&mut seen).await, Some(401));
    assert_eq!(next(&mut seen).await, Some(200));
    let state = account_state(daemon.http_addr).await;
    assert_eq!(state["state"], "registered", "{state}");

    // The registrar goes away (its connections with it) while the 2 s
    // grant runs out, and comes back on the same port a moment later:
    // the refresh reaches it, challenge and all, and the account stays
    // registered.
    registrar.abort();
    let _ = registrar.await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let _registrar = tokio::spawn(tcp_registrar(listener, 2, tx));
    assert_eq!(
        next(&mut seen).await,
        Some(401),
        "a new connection, a new challenge"
    );
    assert_eq!(next(&mut seen).await, Some(200));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while account_state(daemon.http_addr).await["state"] != "registered" {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon.shutdown().await;
}

#[tokio::test]
async fn keepalives_and_the_address_the_registrar_saw() {
    let mut registrar = Registrar::start("2000", PASSWORD, Mode::Grant { expires: 2 }).await;
    let mut a = account(&registrar, PASSWORD);
    a.keepalive_interval = Some(1);
    let daemon = start_with(config(vec![a])).await;
    let first = registrar.next_granted(Duration::from_secs(5)).await;
    assert!(first
        .msg
        .header("Contact")
        .unwrap()
        .contains(&daemon.sip_addr().to_string()));

    // OPTIONS keep-alives over UDP while registered.
    let ping = tokio::time::timeout(Duration::from_secs(5), registrar.options.recv())
        .await
        .expect("a keep-alive within 5 s")
        .unwrap();
    assert!(
        ping.start.starts_with("OPTIONS sip:pbx.test SIP/2.0"),
        "{}",
        ping.start
    );
    assert!(ping.header("From").unwrap().contains("sip:2000@pbx.test"));

    // A NAT in between: the registrar sees another address, and the next
    // refresh's Contact carries it (rport/received, RFC 3581).
    let public: std::net::SocketAddr = "192.0.2.55:40000".parse().unwrap();
    registrar.set_nat(public);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let seen = registrar
            .next_granted(deadline - tokio::time::Instant::now())
            .await;
        if seen
            .msg
            .header("Contact")
            .unwrap()
            .contains("192.0.2.55:40000")
        {
            break;
        }
    }
    daemon.shutdown().await;
}
