//! The `siprelay` binary itself: configuration errors and SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_siprelay");

#[test]
fn a_bad_value_names_its_setting_and_exits_non_zero() {
    for (args, env, key) in [
        (vec!["--rtp-ports", "5-3"], vec![], "--rtp-ports"),
        (vec!["--http-listen", "0.0.0.0:0"], vec![], "api_token"),
        (
            vec![],
            vec![("SIP_LOCAL_PORT", "not-a-port")],
            "SIP_LOCAL_PORT",
        ),
        (vec!["--log-format", "yaml"], vec![], "--log-format"),
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(key), "{args:?}: {stderr}");
    }
    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/siprelay.toml"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/siprelay.toml"));
}

#[test]
fn a_start_error_shows_its_cause_once() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = Command::new(BIN)
        .args(["--sip-listen", &format!("127.0.0.1:{port}")])
        .args(["--http-listen", "127.0.0.1:0", "--no-record"])
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot bind SIP"), "{stderr}");
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );
}

#[test]
fn sigterm_stops_the_daemon_within_seconds() {
    let mut child = Command::new(BIN)
        .args([
            "--sip-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--rtp-ports",
            "30100-30199",
            "--no-record",
        ])
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The JSON log (on standard error) says when it is ready and where.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();

    let ready = lines
        .by_ref()
        .map(|l| l.unwrap())
        .find(|l| l.contains("siprelay ready"))
        .expect("a ready line");
    let json: serde_json::Value = serde_json::from_str(&ready).expect("log lines are JSON");
    let http = json["fields"]["http"].as_str().unwrap().to_string();
    // Keep draining the log so the daemon never blocks writing it.
    std::thread::spawn(move || lines.for_each(drop));
    let health = std::net::TcpStream::connect(&http);
    assert!(health.is_ok(), "HTTP is listening on {http}");

    let started = Instant::now();
    // The shell's built-in kill: no dependency on a procps binary.
    let status = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status()
        .unwrap();

    assert!(status.success());
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "clean exit: {status:?}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
