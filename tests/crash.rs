//! A recording survives `kill -9`: the file is a valid WAV missing at most
//! its last second, and the next start repairs it whole.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use common::audio::{self, assert_tone};
use common::sip::SipPeer;
use common::{connected_call, WsClient};

const BIN: &str = env!("CARGO_BIN_EXE_siprelay");

struct Running {
    child: Child,
    sip: SocketAddr,
    http: SocketAddr,
    /// The log up to and including the ready line.
    startup: Vec<String>,
}

/// Starts the binary on `dir` and waits for its ready line.
fn start(dir: &Path, rtp_ports: &str) -> Running {
    let mut child = Command::new(BIN)
        .args([
            "--sip-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(["--rtp-ports", rtp_ports, "--greeting", "none"])
        .args(["--log-format", "json", "--recordings-dir"])
        .arg(dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, log) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut startup = Vec::new();
    for line in log.iter() {
        startup.push(line);
        if startup.last().unwrap().contains("siprelay ready") {
            break;
        }
    }
    let ready = startup.last().expect("a ready line").clone();
    // Keep draining the log so the daemon never blocks writing it.
    std::thread::spawn(move || log.iter().for_each(drop));
    let json: serde_json::Value = serde_json::from_str(&ready).unwrap();
    let addr = |k: &str| json["fields"][k].as_str().unwrap().parse().unwrap();
    Running {
        sip: addr("sip"),
        http: addr("http"),
        child,
        startup,
    }
}

fn the_wav(dir: &Path) -> PathBuf {
    for day in std::fs::read_dir(dir).unwrap().flatten() {
        for f in std::fs::read_dir(day.path()).unwrap().flatten() {
            if f.path().extension().is_some_and(|e| e == "wav") {
                return f.path();
            }
        }
    }
    panic!("no recording in {dir:?}");
}

#[tokio::test]
async fn a_recording_cut_short_by_kill_9_is_repaired_at_the_next_start() {
    let dir = std::env::temp_dir().join(format!("siprelay-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut first = start(&dir, "30200-30219");
    let mut ws = WsClient::connect_path(first.http, "/ws").await;
    let mut peer = SipPeer::new(first.sip).await;
    let (_id, d) = connected_call(&mut ws, &mut peer).await;
    let (rtp, _) = d.media.unwrap();
    peer.send_tone(rtp, 0, &audio::tone(440.0, 2 * 8000 + 4000, 9000.0))
        .await;

    // No shutdown, no final header: the process is simply gone.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let wav = the_wav(&dir);
    let file_seconds = (std::fs::metadata(&wav).unwrap().len() - 44) as f64 / 4.0 / 8000.0;
    let before = hound::WavReader::open(&wav).expect("valid WAV right after kill -9");
    let header_seconds = before.duration() as f64 / 8000.0;
    assert!(
        header_seconds >= 1.0 && file_seconds - header_seconds <= 1.05,
        "header says {header_seconds:.2} s of the {file_seconds:.2} s written"
    );
    drop(before);

    // Some time passes before siprelay is back.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let restarted = std::time::SystemTime::now();
    let mut second = start(&dir, "30220-30239");
    let repaired = second
        .startup
        .iter()
        .any(|l| l.contains("repaired unfinished recording"));
    assert!(repaired, "the start-up log reports the repair");
    second.child.kill().unwrap();
    second.child.wait().unwrap();

    let mut after = hound::WavReader::open(&wav).expect("readable after repair");
    let seconds = after.duration() as f64 / 8000.0;
    assert!(
        (seconds - file_seconds).abs() < 0.001,
        "{seconds} s of {file_seconds} s"
    );
    let left: Vec<i16> = after
        .samples::<i16>()
        .map(Result::unwrap)
        .step_by(2)
        .collect();
    let last_second = &left[left.len() - 8000..left.len() - 800];
    assert_tone(
        last_second,
        440.0,
        "the audio after the last header update is kept",
    );
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(wav.with_extension("json")).unwrap()).unwrap();
    assert_eq!(sidecar["repaired"], true);
    // The call ended where its audio does, not at the restart.
    let at =
        |key: &str| siprelay::clock_time::parse_rfc3339(sidecar[key].as_str().unwrap()).unwrap();
    let (answered, ended) = (at("answered_at"), at("ended_at"));
    let audio = ended.duration_since(answered).unwrap().as_secs_f64();
    let duration = sidecar["duration_s"].as_f64().unwrap();
    assert!((audio - duration).abs() < 0.02, "{audio} s of {duration} s");
    let gap = restarted.duration_since(ended).unwrap();
    assert!(gap.as_secs_f64() > 1.0, "ended {gap:?} before the restart");
    let _ = std::fs::remove_dir_all(&dir);
}
