//! SIP over TCP and TLS end to end: calls in and out over each, with the
//! test's own SIP peer on a stream (RFC 3261 section 18), a certificate made
//! in the test, and a bad certificate or key stopping the start.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::audio;
use common::sip::{sdp_media, sdp_offer, SipPeer};
use common::stream::StreamSip;
use common::{call_id_of, rtp_range, start_with, WsClient};
use siprelay::config::{Config, TlsListen};
use siprelay::daemon::Daemon;
use tokio::net::{TcpListener, TcpStream};

struct Certificate {
    cert: PathBuf,
    key: PathBuf,
    der: rustls::pki_types::CertificateDer<'static>,
    key_pem: String,
    cert_pem: String,
}

/// A self-signed certificate for 127.0.0.1, written to a temporary directory.
fn certificate(name: &str) -> Certificate {
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let dir = std::env::temp_dir().join(format!("siprelay-tls-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let cert_pem = made.cert.pem();
    let key_pem = made.signing_key.serialize_pem();
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, &key_pem).unwrap();
    Certificate {
        cert,
        key,
        der: made.cert.der().clone(),
        key_pem,
        cert_pem,
    }
}

fn config(tls: Option<&Certificate>) -> Config {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = Config::loopback(rtp_range(4));
    config.sip_listen_tcp = Some("127.0.0.1:0".parse().unwrap());
    if let Some(c) = tls {
        config.sip_listen_tls = Some(TlsListen {
            addr: "127.0.0.1:0".parse().unwrap(),
            cert: c.cert.clone(),
            key: c.key.clone(),
        });
        // Outgoing TLS trusts the test's own certificate.
        config.tls_ca = Some(c.cert.clone());
    }
    config
}

fn tls_client(c: &Certificate) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(c.der.clone()).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn tls_server(c: &Certificate) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    let chain = vec![c.der.clone()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// The INVITE a stream peer at `me` sends to user 2000 at `daemon`.
fn invite(
    transport: &str,
    scheme: &str,
    me: SocketAddr,
    daemon: SocketAddr,
    rtp: SocketAddr,
) -> String {
    let body = sdp_offer(rtp, "0");
    let param = transport.to_ascii_lowercase();
    format!(
        "INVITE {scheme}:2000@{daemon};transport={param} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {me};branch=z9hG4bK-{param}-1;rport\r\nMax-Forwards: 70\r\n\
         From: <{scheme}:1001@{me}>;tag=s1\r\nTo: <{scheme}:2000@{daemon}>\r\nCall-ID: stream-{param}@test\r\n\
         CSeq: 1 INVITE\r\nContact: <{scheme}:1001@{me};transport={param}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn in_dialog(
    method: &str,
    transport: &str,
    scheme: &str,
    me: SocketAddr,
    daemon: SocketAddr,
    to_tag: &str,
    cseq: u32,
) -> String {
    let param = transport.to_ascii_lowercase();
    format!(
        "{method} {scheme}:2000@{daemon};transport={param} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {me};branch=z9hG4bK-{param}-{cseq}{method};rport\r\nMax-Forwards: 70\r\n\
         From: <{scheme}:1001@{me}>;tag=s1\r\nTo: <{scheme}:2000@{daemon}>;tag={to_tag}\r\n\
         Call-ID: stream-{param}@test\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// A call in over `sip`, answered by a client, audio from the caller
/// heard by the client, hung up by the caller.
async fn call_in(
    daemon: &Daemon,
    mut sip: StreamSip,
    me: SocketAddr,
    transport: &str,
    scheme: &str,
    to: SocketAddr,
) {
    let mut ws = WsClient::connect(daemon).await;
    let media = SipPeer::new(daemon.sip_addr()).await;
    sip.send(&invite(transport, scheme, me, to, media.rtp_addr))
        .await;
    sip.expect_response("INVITE", 180).await;
    let id = call_id_of(&ws.expect("RING_ANS:1001##").await);
    ws.send(&format!("CALL_ANS:{id}")).await;
    let ok = sip.expect_response("INVITE", 200).await;
    let contact = ok.header("Contact").unwrap().to_ascii_lowercase();
    let param = transport.to_ascii_lowercase();
    assert!(contact.contains(&format!("{scheme}:")), "{contact}");
    assert!(contact.contains(&format!("transport={param}")), "{contact}");
    assert!(
        contact.contains(&format!(":{}", to.port())),
        "the {transport} listener: {contact}"
    );
    let to_tag = ok.to_tag().unwrap();
    sip.send(&in_dialog("ACK", transport, scheme, me, to, &to_tag, 1))
        .await;
    assert_eq!(ws.expect("CALL_ANS:").await, format!("CALL_ANS:{id}"));

    let (rtp, _) = sdp_media(&ok.body);
    let sender = tokio::spawn(async move {
        media
            .send_tone(rtp, 0, &audio::tone(440.0, 160 * 40, 8000.0))
            .await;
        media
    });
    let heard = ws.record(Duration::from_millis(700)).await;
    audio::assert_tone(
        &heard[1600..],
        440.0,
        "the caller's tone, over RTP beside SIP on a stream",
    );
    let _media = sender.await.unwrap();

    sip.send(&in_dialog("BYE", transport, scheme, me, to, &to_tag, 2))
        .await;
    sip.expect_response("BYE", 200).await;
    assert_eq!(ws.expect("BYE:").await, format!("BYE:{id}"));
}

/// A call out to a peer that listens on `listener`, turned down with 486.
async fn call_out(
    daemon: &Daemon,
    target: &str,
    transport: &str,
    accept: impl std::future::Future<Output = StreamSip>,
) {
    let mut ws = WsClient::connect(daemon).await;
    ws.send(&format!("CALL:{target}")).await;
    let id = call_id_of(&ws.expect("CALLING:").await);
    let mut sip = accept.await;
    let invite = sip.expect_request("INVITE").await;
    assert!(
        invite
            .header("Via")
            .unwrap()
            .starts_with(&format!("SIP/2.0/{transport} ")),
        "{:?}",
        invite.header("Via")
    );
    sip.respond(&invite, "486 Busy Here", "<sip:peer@127.0.0.1>", "")
        .await;
    sip.expect_request("ACK").await;
    assert_eq!(ws.expect("CALL_IGNORE:").await, format!("CALL_IGNORE:{id}"));
}

#[tokio::test]
async fn calls_in_and_out_over_tcp() {
    let daemon = start_with(config(None)).await;
    let tcp = daemon.sip.listening().tcp.expect("a TCP listener");
    let stream = TcpStream::connect(tcp).await.unwrap();
    let me = stream.local_addr().unwrap();
    call_in(&daemon, StreamSip::new(stream), me, "TCP", "sip", tcp).await;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    let target = format!("sip:1002@{at};transport=tcp");
    call_out(&daemon, &target, "TCP", async move {
        StreamSip::new(listener.accept().await.unwrap().0)
    })
    .await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn with_udp_off_calls_come_over_tcp() {
    let mut c = config(None);
    c.sip_udp = false;
    let daemon = start_with(c).await;
    let listening = daemon.sip.listening();
    assert!(listening.udp.is_none());
    let tcp = listening.tcp.unwrap();
    assert_eq!(daemon.sip_addr(), tcp);
    let stream = TcpStream::connect(tcp).await.unwrap();
    let me = stream.local_addr().unwrap();
    call_in(&daemon, StreamSip::new(stream), me, "TCP", "sip", tcp).await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn calls_in_and_out_over_tls() {
    let cert = certificate("calls");
    let daemon = start_with(config(Some(&cert))).await;
    let tls = daemon.sip.listening().tls.expect("a TLS listener");
    let tcp = TcpStream::connect(tls).await.unwrap();
    let me = tcp.local_addr().unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = tls_client(&cert)
        .connect(name, tcp)
        .await
        .expect("siprelay's certificate is accepted");
    call_in(&daemon, StreamSip::new(stream), me, "TLS", "sips", tls).await;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    let acceptor = tls_server(&cert);
    call_out(&daemon, &format!("sips:1002@{at}"), "TLS", async move {
        let (tcp, _) = listener.accept().await.unwrap();
        StreamSip::new(
            acceptor
                .accept(tcp)
                .await
                .expect("siprelay trusts the peer's certificate"),
        )
    })
    .await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_bad_certificate_or_key_stops_the_start() {
    let good = certificate("good");
    let other = certificate("other");
    let dir = good.cert.parent().unwrap().to_path_buf();
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file\n").unwrap();
    let mismatched_key = dir.join("other-key.pem");
    std::fs::write(&mismatched_key, &other.key_pem).unwrap();
    let _ = &good.cert_pem;
    for (cert, key, says) in [
        (garbage.clone(), good.key.clone(), "tls_cert"),
        (good.cert.clone(), garbage.clone(), "tls_key"),
        (
            good.cert.clone(),
            mismatched_key,
            "do not make a TLS server",
        ),
        (
            dir.join("missing.pem"),
            good.key.clone(),
            "cannot read tls_cert",
        ),
    ] {
        let mut c = config(None);
        c.sip_listen_tls = Some(TlsListen {
            addr: "127.0.0.1:0".parse().unwrap(),
            cert,
            key,
        });
        let e = Daemon::start(c)
            .await
            .err()
            .expect("the start fails")
            .to_string();
        assert!(e.contains(says), "{e}");
    }
    // The positive control: the good pair starts.
    let daemon = start_with(config(Some(&good))).await;
    daemon.shutdown().await;
}

/// An SDP offer on RTP/SAVP with the peer's key.
fn savp_offer(rtp: SocketAddr, key: &[u8; 30]) -> String {
    use base64::Engine;
    let inline = base64::engine::general_purpose::STANDARD.encode(key);
    format!(
        "v=0\r\no=peer 1 1 IN IP4 {ip}\r\ns=peer\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/SAVP 0\r\n\
         a=rtpmap:0 PCMU/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{inline}\r\na=sendrecv\r\n",
        ip = rtp.ip(),
        port = rtp.port()
    )
}

fn invite_with_body(me: SocketAddr, daemon: SocketAddr, call_id: &str, body: &str) -> String {
    format!(
        "INVITE sips:2000@{daemon};transport=tls SIP/2.0\r\n\
         Via: SIP/2.0/TLS {me};branch=z9hG4bK-{call_id};rport\r\nMax-Forwards: 70\r\n\
         From: <sips:1001@{me}>;tag=s1\r\nTo: <sips:2000@{daemon}>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\nContact: <sips:1001@{me};transport=tls>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn srtp_over_tls_encrypts_both_ways_and_refuses_plain_offers_when_required() {
    use base64::Engine;
    use siprelay::media::srtp::{SrtpContext, Suite, MAX_TAG};
    let cert = certificate("srtp");
    let mut c = config(Some(&cert));
    c.srtp = siprelay::config::SrtpMode::Required;
    let daemon = start_with(c).await;
    let tls = daemon.sip.listening().tls.unwrap();
    let connect = || async {
        let tcp = TcpStream::connect(tls).await.unwrap();
        let me = tcp.local_addr().unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        (
            StreamSip::new(tls_client(&cert).connect(name, tcp).await.unwrap()),
            me,
        )
    };
    let mut ws = WsClient::connect(&daemon).await;

    // Required, and offered plain: 488.
    let (mut sip, me) = connect().await;
    let media = SipPeer::new(daemon.sip_addr()).await;
    sip.send(&invite_with_body(
        me,
        tls,
        "srtp-plain",
        &sdp_offer(media.rtp_addr, "0"),
    ))
    .await;
    let refused = sip.expect_response("INVITE", 488).await;
    assert!(refused.header("Warning").unwrap().contains("SRTP"));

    // Offered with a key: answered with ours, and the media is SRTP.
    let ours: [u8; 30] = std::array::from_fn(|i| (i * 11 + 5) as u8);
    sip.send(&invite_with_body(
        me,
        tls,
        "srtp-call",
        &savp_offer(media.rtp_addr, &ours),
    ))
    .await;
    let id = call_id_of(&ws.expect("RING_ANS:").await);
    ws.send(&format!("CALL_ANS:{id}")).await;
    let ok = sip.expect_response("INVITE", 200).await;
    assert!(ok.body.contains("RTP/SAVP"), "{}", ok.body);
    let crypto = ok
        .body
        .lines()
        .find(|l| l.starts_with("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"))
        .expect("a key");
    let theirs: [u8; 30] = {
        use base64::Engine;
        let b64 = crypto.rsplit("inline:").next().unwrap().trim();
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
            .try_into()
            .unwrap()
    };
    let to_tag = ok.to_tag().unwrap();
    sip.send(
        &in_dialog("ACK", "TLS", "sips", me, tls, &to_tag, 1)
            .replace("stream-tls@test", "srtp-call"),
    )
    .await;
    ws.expect("CALL_ANS:").await;
    let (daemon_rtp, _) = sdp_media(&ok.body);

    // Our tone, protected with our key: the client hears it. A plain
    // packet sent first is not RTP to this call and is ignored.
    let mut tx = SrtpContext::new(Suite::AesCm128HmacSha1_80, &ours);
    let tone = audio::tone(440.0, 160 * 40, 8000.0);
    let sender = media.rtp.local_addr().unwrap();
    let rtp_sock = &media.rtp;
    let mut plain = vec![0x80, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4];
    plain.extend(std::iter::repeat_n(0x55u8, 160));
    rtp_sock.send_to(&plain, daemon_rtp).await.unwrap();
    let send = async {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for (i, frame) in tone.chunks(160).enumerate() {
            tick.tick().await;
            let mut pkt = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0x5E, 0xED, 0, 2];
            pkt[2..4].copy_from_slice(&(100 + i as u16).to_be_bytes());
            pkt[4..8].copy_from_slice(&((i * 160) as u32).to_be_bytes());
            pkt.extend(frame.iter().map(|&s| audio::ulaw_encode(s)));
            let len = pkt.len();
            pkt.resize(len + MAX_TAG, 0);
            let n = tx.protect(&mut pkt, len).unwrap();
            rtp_sock.send_to(&pkt[..n], daemon_rtp).await.unwrap();
        }
    };
    let (_, heard) = tokio::join!(send, ws.record(Duration::from_millis(800)));
    audio::assert_tone(&heard[1600..], 440.0, "SRTP from the far end, decrypted");
    let _ = sender;
    let view = common::http::get(daemon.http_addr, &format!("/calls/{id}"))
        .await
        .json();
    assert_eq!(
        view["rtp"]["packets_in"], 40,
        "the plain packet is not counted as the call's"
    );

    // What siprelay sends: client audio, encrypted with its key; the raw
    // payload is no tone, the decrypted one is.
    let reply = audio::tone(1000.0, 160 * 30, 8000.0);
    ws.send(&format!(
        "RTP:{id}##{}",
        common::B64.encode(audio::to_le_bytes(&reply))
    ))
    .await;
    let mut rx = SrtpContext::new(Suite::AesCm128HmacSha1_80, &theirs);
    let mut raw_pcm = Vec::new();
    let mut clear_pcm = Vec::new();
    let mut buf = [0u8; 2048];
    let deadline = tokio::time::Instant::now() + Duration::from_millis(800);
    while let Ok(Ok((n, _))) = tokio::time::timeout(
        deadline.saturating_duration_since(tokio::time::Instant::now()),
        rtp_sock.recv_from(&mut buf),
    )
    .await
    {
        assert_eq!(n, 12 + 160 + 10, "an SRTP packet with its 80-bit tag");
        raw_pcm.extend(buf[12..172].iter().map(|&b| audio::ulaw_decode(b)));
        let len = rx
            .unprotect(&mut buf[..n])
            .expect("authenticates with siprelay's key");
        clear_pcm.extend(buf[12..len].iter().map(|&b| audio::ulaw_decode(b)));
    }
    let loud = audio::loud_frames(&clear_pcm, 2000.0);
    audio::assert_tone(&loud, 1000.0, "siprelay's SRTP, decrypted");
    // The share of each signal's energy at 1000 Hz: about a half for a
    // pure tone, next to nothing for ciphertext.
    let tonality = |pcm: &[i16]| audio::power_at(pcm, 1000.0) / audio::rms(pcm).powi(2);
    assert!(tonality(&loud) > 0.2, "{}", tonality(&loud));
    assert!(
        tonality(&raw_pcm) < 0.01,
        "no tone on the wire: {}",
        tonality(&raw_pcm)
    );
    daemon.shutdown().await;
}
