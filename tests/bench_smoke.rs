//! The load benchmark runs end to end on a handful of calls: it starts the
//! daemon, sets every call up, hangs up, and writes its JSON report. No
//! timing is asserted; that is what the benchmark itself is for.

use std::process::Command;

#[test]
fn bench_runs_five_calls_and_reports() {
    let dir = std::env::temp_dir().join(format!("siprelay-bench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_siprelay-bench"))
        .args(["--calls", "5", "--seconds", "2", "--warmup", "0.5"])
        .args(["--rtp-ports", "29100-29199"])
        .arg("--daemon-bin")
        .arg(env!("CARGO_BIN_EXE_siprelay"))
        .arg("--daemon-log")
        .arg(dir.join("daemon.log"))
        .arg("--json")
        .arg(&json)
        .output()
        .expect("bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("5 requested, 5 set up, 0 failed"),
        "{stdout}\n{stderr}"
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).expect("valid JSON");
    assert_eq!(report["calls"]["set_up"], 5, "{report:#}");
    assert_eq!(report["calls"]["failed"], 0, "{report:#}");
    for path in [
        "/calls/setup_rate_achieved_cps",
        "/calls/setup_latency/p50_ms",
        "/calls/setup_latency/p99_ms",
        "/daemon/cpu_us_per_call_second",
        "/daemon/rss_kib_per_call",
        "/daemon/rss_kib_steady",
        "/rtp_at_bench/received",
        "/rtp_at_bench/lost",
        "/rtp_at_bench/late",
        "/rtp_at_bench/duplicated",
        "/rtp_to_ws/sent",
        "/rtp_to_ws/arrived",
        "/rtp_to_ws/latency/p99_ms",
        "/ws_to_rtp/latency/max_ms",
        "/far_end_send_interval_deviation/p50_ms",
        "/bench/cpu_percent_of_one_core",
    ] {
        assert!(
            report.pointer(path).is_some_and(|v| v.is_number()),
            "{path} missing in {report:#}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
