//! Call recording end to end: the stereo WAV's two channels hold the two
//! directions at the right times, the sidecar tells the call's story, and
//! the REST routes serve, seek in and delete recordings safely.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use common::audio::{self, assert_tone};
use common::http;
use common::sip::SipPeer;
use common::{connected_call, rtp_range, start_with, WsClient, B64};
use siprelay::config::Config;
use tokio::time::Instant;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("siprelay-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The one recording under `dir` (WAV path, sidecar), once its sidecar says it ended.
async fn finished_recording(dir: &Path) -> (PathBuf, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for day in std::fs::read_dir(dir).unwrap().flatten() {
            for f in std::fs::read_dir(day.path()).unwrap().flatten() {
                let p = f.path();
                if p.extension().is_some_and(|e| e == "json") {
                    let json: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                    if !json["ended_at"].is_null() {
                        return (p.with_extension("wav"), json);
                    }
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no finished recording in {dir:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Index of the first 20 ms window louder than a tone's floor.
fn onset(pcm: &[i16]) -> usize {
    pcm.chunks(160)
        .position(|w| audio::rms(w) > 1000.0)
        .expect("a tone in the channel")
        * 160
}

fn window(pcm: &[i16], from_s: f64, to_s: f64) -> &[i16] {
    &pcm[(from_s * 8000.0) as usize..(to_s * 8000.0) as usize]
}

#[tokio::test]
async fn a_call_is_recorded_in_stereo_with_a_sidecar_and_served_over_rest() {
    let dir = temp_dir("rec");
    let mut config = Config::loopback(rtp_range(4));
    config.recordings_dir = Some(dir.clone());
    let daemon = start_with(config).await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let (id, mut d) = connected_call(&mut ws, &mut peer).await;
    let answered = Instant::now();
    let (rtp, _) = d.media.unwrap();

    // The caller speaks (440 Hz) for 1 s at once; the client answers
    // (1000 Hz, 0.8 s) 1.2 s later.
    let caller = async {
        let started = Instant::now();
        peer.send_tone(rtp, 0, &audio::tone(440.0, 8000, 9000.0))
            .await;
        started
    };
    let client = async {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let pcm = audio::tone(1000.0, 6400, 9000.0);
        let sent = Instant::now();
        ws.send(&format!(
            "RTP:{id}##{}",
            B64.encode(audio::to_le_bytes(&pcm))
        ))
        .await;
        sent
    };
    let (caller_started, client_sent) = tokio::join!(caller, client);
    tokio::time::sleep_until(answered + Duration::from_millis(2600)).await;
    peer.bye(&mut d).await;
    let call_length = answered.elapsed();
    ws.expect("BYE:").await;

    let (wav, sidecar) = finished_recording(&dir).await;
    let mut reader = hound::WavReader::open(&wav).unwrap();
    let spec = reader.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 8000, 16)
    );
    let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
    let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
    let seconds = left.len() as f64 / 8000.0;
    assert!(
        (seconds - call_length.as_secs_f64()).abs() < 0.25,
        "{seconds:.2} s recorded of a {call_length:?} call"
    );

    // Left: the caller's tone, then silence. Right: silence, then the client.
    assert_tone(window(&left, 0.3, 0.9), 440.0, "left channel: the far end");
    assert!(
        audio::rms(window(&left, 1.5, 2.0)) < 100.0,
        "left: silent after the caller stops"
    );
    assert!(
        audio::rms(window(&right, 0.2, 0.9)) < 100.0,
        "right: silent before the client speaks"
    );
    assert_tone(
        window(&right, 1.5, 1.9),
        1000.0,
        "right channel: what siprelay sent",
    );
    // Sample-aligned: the gap between the two onsets in the file is the gap in real time.
    let file_gap = (onset(&right) as f64 - onset(&left) as f64) / 8000.0;
    let real_gap = client_sent.duration_since(caller_started).as_secs_f64();
    assert!(
        (file_gap - real_gap).abs() < 0.06,
        "onsets {file_gap:.3} s apart in the file, {real_gap:.3} s in real time"
    );

    // The sidecar.
    let rec_id = sidecar["id"].as_str().unwrap().to_string();
    assert!(rec_id.ends_with(&format!("_{id}")), "{rec_id}");
    assert_eq!(sidecar["call_id"], id.as_str());
    assert_eq!(sidecar["direction"], "inbound");
    assert_eq!(sidecar["from"], "1001");
    assert_eq!(sidecar["to"], "2000");
    assert_eq!(sidecar["codec"], "PCMU");
    assert_eq!(sidecar["hangup_by"], "remote");
    assert_eq!(sidecar["sip_status"], 200);
    assert!(sidecar["answered_at"].as_str().unwrap().ends_with('Z'));
    let duration = sidecar["duration_s"].as_f64().unwrap();
    assert!(
        (duration - seconds).abs() < 0.021,
        "sidecar {duration} s, file {seconds} s"
    );
    let wav_name = sidecar["wav"].as_str().unwrap();
    assert_eq!(dir.join(wav_name), wav);
    assert!(wav_name.starts_with(&format!(
        "{}-{}-{}/",
        &rec_id[0..4],
        &rec_id[4..6],
        &rec_id[6..8]
    )));

    // REST: listed, filtered, fetched, sought in, deleted.
    let http_addr = daemon.http_addr;
    let list = http::get(http_addr, "/recordings").await;
    assert_eq!(list.status, 200);
    let listed = list.json();
    assert_eq!(listed[0]["id"], rec_id.as_str());
    assert_eq!(
        listed[0]["wav_bytes"],
        std::fs::metadata(&wav).unwrap().len()
    );
    assert_eq!(
        http::get(http_addr, "/recordings?number=1001")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        http::get(http_addr, "/recordings?number=5555")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let today = &sidecar["answered_at"].as_str().unwrap()[..10];
    let on_day = format!("/recordings?from={today}&to={today}");
    assert_eq!(
        http::get(http_addr, &on_day)
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let later = http::get(http_addr, "/recordings?from=2999-01-01")
        .await
        .json();
    assert_eq!(later.as_array().unwrap().len(), 0);
    for bad in [
        "/recordings?limit=0",
        "/recordings?limit=x",
        "/recordings?from=yesterday",
        "/recordings?to=2026-13",
    ] {
        let r = http::get(http_addr, bad).await;
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.json()["error"]["message"].is_string());
    }

    let one = http::get(http_addr, &format!("/recordings/{rec_id}")).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["call_id"], id.as_str());

    let bytes = std::fs::read(&wav).unwrap();
    let whole = http::get(http_addr, &format!("/recordings/{rec_id}.wav")).await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("content-type"), Some("audio/wav"));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert_eq!(whole.body, bytes);
    let path = format!("/recordings/{rec_id}.wav");
    let head = http::request(http_addr, "GET", &path, &[("Range", "bytes=0-43")]).await;
    assert_eq!(head.status, 206);
    assert_eq!(head.body, &bytes[..44]);
    assert_eq!(
        head.header("content-range").unwrap(),
        format!("bytes 0-43/{}", bytes.len())
    );
    let tail = http::request(http_addr, "GET", &path, &[("Range", "bytes=-1000")]).await;
    assert_eq!(tail.status, 206);
    assert_eq!(tail.body, &bytes[bytes.len() - 1000..]);
    let middle = http::request(http_addr, "GET", &path, &[("Range", "bytes=1000-")]).await;
    assert_eq!(middle.body, &bytes[1000..]);
    let beyond = format!("bytes={}-", bytes.len());
    let out = http::request(http_addr, "GET", &path, &[("Range", beyond.as_str())]).await;
    assert_eq!(out.status, 416);
    assert_eq!(
        out.header("content-range").unwrap(),
        format!("bytes */{}", bytes.len())
    );

    let deleted = http::request(http_addr, "DELETE", &format!("/recordings/{rec_id}"), &[]).await;
    assert_eq!(deleted.status, 204);
    assert!(!wav.exists());
    assert_eq!(
        http::get(http_addr, &format!("/recordings/{rec_id}"))
            .await
            .status,
        404
    );
    assert_eq!(http::get(http_addr, &path).await.status, 404);
    daemon.shutdown().await;
}

#[tokio::test]
async fn no_recordings_route_reaches_outside_the_directory() {
    let dir = temp_dir("traversal");
    // A file the attacks aim at, just outside the recordings directory.
    std::fs::write(dir.join("secret.json"), br#"{"secret": true}"#).unwrap();
    std::fs::write(dir.join("secret.wav"), b"RIFFsecret").unwrap();
    let recordings = dir.join("recordings");
    let mut config = Config::loopback(rtp_range(2));
    config.recordings_dir = Some(recordings.clone());
    let daemon = start_with(config).await;
    let addr = daemon.http_addr;
    let attacks = [
        "..%2Fsecret",
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "%2E%2E%2Fsecret",
        "..",
        "20261122T151500Z_0123456789abcdef%2F..%2F..%2Fsecret",
        "2026-11-22%2F..%2F..%2Fsecret",
        "%2Fetc%2Fpasswd",
        "20261122T151500Z_..%2F..%2Fsecret",
        "secret",
        "20261122T151500Z_0123456789abcdef%00",
    ];
    for attack in attacks {
        for (method, path) in [
            ("GET", format!("/recordings/{attack}")),
            ("GET", format!("/recordings/{attack}.wav")),
            ("DELETE", format!("/recordings/{attack}")),
        ] {
            let r = http::request(addr, method, &path, &[]).await;
            assert!(
                r.status == 400 || r.status == 404,
                "{method} {path}: {}",
                r.status
            );
            let body = String::from_utf8_lossy(&r.body);
            assert!(
                !body.contains("secret") && !body.contains("root:"),
                "{method} {path}: {body}"
            );
        }
    }
    // Plain `..` segments never reach a handler that opens files.
    let r = http::get(addr, "/recordings/../secret.json").await;
    assert!(r.status == 400 || r.status == 404, "{}", r.status);
    assert!(dir.join("secret.json").exists() && dir.join("secret.wav").exists());
    daemon.shutdown().await;
}

#[tokio::test]
async fn an_unwritable_recordings_directory_is_an_error_event_and_the_call_goes_on() {
    let dir = temp_dir("unwritable");
    // A regular file where the directory should be: nothing can be created under it.
    let blocker = dir.join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let mut config = Config::loopback(rtp_range(4));
    config.recordings_dir = Some(blocker.join("recordings"));
    let daemon = start_with(config).await;
    let mut ws = WsClient::connect(&daemon).await;
    let mut peer = SipPeer::new(daemon.sip_addr()).await;
    let (id, mut d) = connected_call(&mut ws, &mut peer).await;
    let error = ws.expect("ERROR:").await;
    assert!(
        error.starts_with("ERROR:500 recording") && error.contains(&id),
        "{error}"
    );

    let (rtp, _) = d.media.unwrap();
    let tone = audio::tone(440.0, 4000, 8000.0);
    let (_, heard) = tokio::join!(
        peer.send_tone(rtp, 0, &tone),
        ws.record(Duration::from_millis(600))
    );
    assert_tone(
        &heard[800..],
        440.0,
        "the call goes on without its recording",
    );
    peer.bye(&mut d).await;
    assert_eq!(ws.expect("BYE:").await, format!("BYE:{id}"));
    daemon.shutdown().await;
}
