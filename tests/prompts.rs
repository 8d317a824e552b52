//! Greeting, barge-in and PLAY end to end: what the SIP peer hears,
//! measured by tone and energy.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use common::audio::{self, assert_tone, which_tone, write_tone_wav};
use common::sip::SipPeer;
use common::{connected_call, rtp_range, start_with, WsClient, B64};
use siprelay::config::{Config, Greeting};
use tokio::time::Instant;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("siprelay-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn the_built_in_greeting_is_heard_as_soon_as_an_incoming_call_is_answered() {
    let mut config = Config::loopback(rtp_range(4));
    config.greeting = Greeting::BuiltIn;
    let daemon = start_with(config).await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let (_id, mut d) = connected_call(&mut ws, &mut peer).await;

    let (heard, packets, _) = peer.record(Duration::from_millis(2000)).await;
    assert!(packets >= 90, "{packets} packets in 2 s");
    let level = audio::rms(&heard);
    assert!(
        level > 1000.0,
        "the greeting is speech, not silence (RMS {level:.0})"
    );
    // Speech starts within the first half second of the answer.
    let opening = audio::rms(&heard[..4000]);
    assert!(opening > 300.0, "silent start (RMS {opening:.0})");
    peer.bye(&mut d).await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn outgoing_calls_get_no_greeting_unless_configured() {
    let mut config = Config::loopback(rtp_range(4));
    config.greeting = Greeting::BuiltIn;
    let daemon = start_with(config).await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    ws.send(&format!("CALL:sip:2000@{}", peer.addr)).await;
    ws.expect("CALLING:").await;
    let (d, from) = peer.accept_invite().await;
    peer.answer(&d, from, 0).await;
    ws.expect("CALL_ANS:").await;
    let (heard, packets, _) = peer.record(Duration::from_millis(1000)).await;
    assert!(packets >= 40);
    assert!(audio::rms(&heard) < 50.0, "silence, not a greeting");
    daemon.shutdown().await;
}

#[tokio::test]
async fn client_audio_barges_in_on_the_greeting_within_two_frames() {
    let dir = temp_dir("barge");
    let greeting = dir.join("greeting.wav");
    // 44.1 kHz stereo: the daemon resamples it at start.
    write_tone_wav(&greeting, 44100, 2, 1000.0, 4.0);
    let mut config = Config::loopback(rtp_range(4));
    config.greeting = Greeting::File(greeting);
    let daemon = start_with(config).await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let (id, mut d) = connected_call(&mut ws, &mut peer).await;

    let listen = peer.record_packets(Duration::from_millis(1600));
    let talk = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let pcm = audio::tone(400.0, 8000, 8000.0);
        let message = format!("RTP:{id}##{}", B64.encode(audio::to_le_bytes(&pcm)));
        let sent = Instant::now();
        ws.send(&message).await;
        sent
    };
    let (packets, sent) = tokio::join!(listen, talk);

    let tones: Vec<(Instant, Option<f64>)> = packets
        .iter()
        .map(|(at, pcm)| (*at, which_tone(pcm, 1000.0, 400.0)))
        .collect();
    let greeting_packets = tones.iter().filter(|(_, t)| *t == Some(1000.0)).count();
    assert!(
        greeting_packets >= 25,
        "the greeting played first ({greeting_packets} packets)"
    );
    let first_client = tones
        .iter()
        .position(|(_, t)| *t == Some(400.0))
        .expect("the client's audio reached the caller");
    assert!(
        tones[first_client..]
            .iter()
            .all(|(_, t)| *t != Some(1000.0)),
        "the greeting stopped for good once the client spoke"
    );
    let last_greeting = tones[..first_client]
        .iter()
        .rev()
        .find(|(_, t)| *t == Some(1000.0))
        .map(|(at, _)| *at)
        .unwrap();
    let overlap = last_greeting.saturating_duration_since(sent);
    assert!(
        overlap <= Duration::from_millis(40),
        "greeting still heard {overlap:?} after the client's audio was sent"
    );
    peer.bye(&mut d).await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn play_sends_a_file_then_played_and_bad_names_are_errors_while_the_call_goes_on() {
    let assets = temp_dir("assets");
    write_tone_wav(&assets.join("beep.wav"), 48000, 1, 600.0, 0.6);
    write_tone_wav(&assets.join("long.wav"), 22050, 2, 600.0, 5.0);
    std::fs::write(assets.join("fake.wav"), b"RIFF....not really").unwrap();
    let mut config = Config::loopback(rtp_range(4));
    config.assets_dir = assets;
    let daemon = start_with(config).await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let (id, mut d) = connected_call(&mut ws, &mut peer).await;

    ws.send(&format!("PLAY:{id}##beep.wav")).await;
    let started = Instant::now();
    let (heard, _, _) = peer.record(Duration::from_millis(500)).await;
    assert_tone(&heard[800..3200], 600.0, "the caller hears the played file");
    let played = ws.expect("PLAYED:").await;
    assert_eq!(played, format!("PLAYED:{id}##beep.wav"));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500),
        "PLAYED came after the file had played ({took:?})"
    );

    for (name, code) in [
        ("../Cargo.toml.wav", 400),
        ("/etc/passwd", 400),
        ("absent.wav", 404),
        ("fake.wav", 415),
    ] {
        ws.send(&format!("PLAY:{id}##{name}")).await;
        let error = ws.expect("ERROR:").await;
        assert!(
            error.starts_with(&format!("ERROR:{code} ")),
            "{name}: {error}"
        );
    }

    // CLEAR cuts a long prompt off, and it is reported.
    ws.send(&format!("PLAY:{id}##long.wav")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.send(&format!("CLEAR:{id}")).await;
    assert_eq!(ws.expect("PLAYED:").await, format!("PLAYED:{id}##long.wav"));
    // What the peer has not read yet includes the prompt before CLEAR; the
    // newest 300 ms must be silence.
    let (after, _, _) = peer.record(Duration::from_millis(1000)).await;
    assert!(
        audio::rms(&after[after.len() - 2400..]) < 50.0,
        "silence after CLEAR"
    );

    // The call is still up: the caller's audio reaches the client.
    let (rtp, _) = d.media.unwrap();
    let tone = audio::tone(440.0, 4000, 8000.0);
    let send = peer.send_tone(rtp, 0, &tone);
    let (_, heard) = tokio::join!(send, ws.record(Duration::from_millis(600)));
    assert_tone(&heard[800..], 440.0, "audio still flows after the errors");
    peer.bye(&mut d).await;
    assert_eq!(ws.expect("BYE:").await, format!("BYE:{id}"));
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_bad_greeting_file_stops_the_daemon_at_start_with_a_clear_error() {
    let dir = temp_dir("badgreeting");
    std::fs::write(dir.join("g.wav"), b"no audio here").unwrap();
    let mut config = Config::loopback(rtp_range(2));
    config.greeting = Greeting::File(dir.join("g.wav"));
    let error = siprelay::daemon::Daemon::start(config)
        .await
        .err()
        .expect("refused");
    let text = error.to_string();
    assert!(
        text.contains("greeting") && text.contains("g.wav"),
        "{text}"
    );
}
