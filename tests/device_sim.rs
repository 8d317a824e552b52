//! `siprelay-device`, the simulator, against the real daemon: a SIP call to
//! its extension is auto-answered, the WAV it plays reaches the caller, and
//! what the caller says ends up in the WAV it records. Its clock runs 100
//! ppm fast and it sends in bursts, as a board on Wi-Fi would.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::audio::{self, assert_tone, write_tone_wav};
use common::sip::SipPeer;
use common::{rtp_range, start_with};
use siprelay::config::Config;
use siprelay::devices::{AudioFormat, DeviceConfig};

const SIM: &str = env!("CARGO_BIN_EXE_siprelay-device");

#[tokio::test]
async fn the_simulator_answers_plays_its_file_and_records_the_caller() {
    let dir = std::env::temp_dir().join(format!("siprelay-sim-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let play = dir.join("say.wav");
    write_tone_wav(&play, 16000, 1, 1000.0, 3.0);
    let heard = dir.join("heard.wav");

    let mut config = Config::loopback(rtp_range(2));
    config.devices = vec![DeviceConfig {
        id: "door".into(),
        token: "door-token-0123456789".into(),
        extension: "2001".into(),
        format: AudioFormat::Pcma,
        account: None,
    }];
    let daemon = start_with(config).await;
    let mut sim = tokio::process::Command::new(SIM)
        .args(["--url", &format!("ws://{}", daemon.http_addr)])
        .args([
            "--id",
            "door",
            "--token",
            "door-token-0123456789",
            "--format",
            "pcma",
        ])
        .args(["--answer", "auto", "--calls", "1", "--hangup-after", "2"])
        .args(["--drift-ppm", "100", "--burst", "3"])
        .arg("--play")
        .arg(&play)
        .arg("--record")
        .arg(&heard)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the simulator starts");

    // Online once GET /devices says so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while common::http::get(daemon.http_addr, "/devices").await.json()[0]["online"] != true {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the simulator never came online"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let mut d = peer.invite("1001", "2001", Some("0")).await;
    let ok = peer.expect_response("INVITE", 200).await;
    peer.ack(&mut d, &ok).await;
    let (rtp, _) = d.media.unwrap();
    let tone = audio::tone(440.0, 8000, 8000.0);
    let ((), (caller_heard, _, _)) = tokio::join!(
        peer.send_tone(rtp, 0, &tone),
        peer.record(Duration::from_millis(1000))
    );
    let end = caller_heard.len();
    assert_tone(
        &caller_heard[end - 5600..end - 800],
        1000.0,
        "the caller hears the simulator's file",
    );

    // The simulator hangs up after 2 s.
    let (bye, from) = peer.expect_request("BYE").await;
    peer.respond(&bye, from, 200, "OK", None, None).await;
    let status = tokio::time::timeout(Duration::from_secs(10), sim.wait())
        .await
        .expect("the simulator exits after its call")
        .unwrap();
    assert!(status.success(), "{status:?}");

    let mut wav = hound::WavReader::open(&heard).expect("the simulator wrote its recording");
    assert_eq!(wav.spec().sample_rate, 8000);
    let pcm: Vec<i16> = wav.samples::<i16>().map(Result::unwrap).collect();
    let loud = audio::loud_frames(&pcm, 1000.0);
    assert!(
        loud.len() >= 160 * 40,
        "{} loud samples of {}",
        loud.len(),
        pcm.len()
    );
    assert_tone(&loud, 440.0, "the simulator recorded the caller");
    daemon.shutdown().await;
}
