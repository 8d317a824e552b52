//! `siprelay-bench`: load benchmark for siprelay.
//!
//! Starts the daemon (or uses one given), connects one WebSocket client per
//! call, places N incoming calls at a set rate over SIP/UDP, runs G.711 RTP
//! both ways with latency markers inside the audio, measures a steady
//! window, hangs everything up and reports: a table on stdout, JSON with
//! `--json`. Loopback only.
//!
//! ```text
//! siprelay-bench --calls 100 --seconds 20           # quick look
//! siprelay-bench --calls 2000 --seconds 60 --json /tmp/bench-2000.json
//! ```
//!
//! The parts: `sip` (one UDP socket, all calls), `media` (one OS thread,
//! one 20 ms clock, one socket per call, kernel timestamps via `rtpsock`),
//! `ws` (one task per client connection), `marker` (timestamps inside the
//! µ-law audio), `daemon` and `procfs` (the process under test), `run`
//! (the phases) and `report`.

mod daemon;
mod floor;
mod marker;
mod media;
mod procfs;
mod report;
mod rtpsock;
mod run;
mod shared;
mod sip;
mod sipmsg;
mod stats;
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use daemon::{Daemon, SpawnOptions};
use report::{BenchUsage, Calls, DaemonUsage, Path, Report, RtpAtBench, RunConfig};
use run::{Measured, Plan};

#[derive(Debug, Parser)]
#[command(
    name = "siprelay-bench",
    about = "Load benchmark for siprelay: N calls over SIP/RTP and WebSocket"
)]
struct Args {
    /// Concurrent calls.
    #[arg(long, default_value_t = 100)]
    calls: usize,
    /// Calls placed (and hung up) per second.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Length of the steady window, in seconds.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Seconds between the last call set up and the steady window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// WebSocket connections (default: one per call). Client i takes calls
    /// to number `c{i}` (`/ws?offers=c{i}`): calls i, i+K, i+2K, ...
    #[arg(long)]
    clients: Option<usize>,
    /// Offer every call to every client instead (the default `/ws`), as a
    /// pool of agents would be: the offers then cost clients × calls.
    #[arg(long)]
    broadcast_offers: bool,
    /// Only measure the kernel's cost of the system calls a call needs
    /// (loopback UDP and TCP send + receive pairs) and exit.
    #[arg(long)]
    floor: bool,
    /// Frames per audio message the clients send (1: one 20 ms frame back
    /// for each frame received; F: F frames after every F-th frame).
    #[arg(long, default_value_t = 1)]
    ws_chunk: usize,
    /// Worker threads of the bench's tokio runtime (1: current-thread).
    /// The RTP media thread comes on top.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The siprelay binary to start (default: `siprelay` next to this program).
    #[arg(long, value_name = "PATH")]
    daemon_bin: Option<PathBuf>,
    /// RTP port range of the daemon the bench starts.
    #[arg(long, default_value = "20000-29999", value_name = "LOW-HIGH")]
    rtp_ports: String,
    /// Let the started daemon record every call into this directory
    /// (default: recording off, so the bridge alone is measured).
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
    /// Where the started daemon's log goes (JSON lines).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/tmp/siprelay-bench-daemon.log"
    )]
    daemon_log: PathBuf,
    /// RUST_LOG of the started daemon. Its `client disconnected` lines
    /// (siprelay::http::ws at info) carry the audio frames it dropped.
    #[arg(long, default_value = "warn,siprelay::http::ws=info")]
    daemon_log_filter: String,
    /// Use a running daemon: its SIP address (needs --daemon-http and --daemon-pid).
    #[arg(long, value_name = "ADDR", requires_all = ["daemon_http", "daemon_pid"])]
    daemon_sip: Option<SocketAddr>,
    /// The running daemon's HTTP address.
    #[arg(long, value_name = "ADDR", requires = "daemon_sip")]
    daemon_http: Option<SocketAddr>,
    /// The running daemon's process id (for CPU and memory).
    #[arg(long, value_name = "PID", requires = "daemon_sip")]
    daemon_pid: Option<u32>,
    /// Pin the bench to the first CPU and the started daemon to the others,
    /// so neither takes the other's CPU (the daemon then sizes its runtime
    /// to its CPUs: one worker on a 2-core machine).
    #[arg(long)]
    pin: bool,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match main_with(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("siprelay-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main_with(args: &Args) -> anyhow::Result<ExitCode> {
    if args.floor {
        floor::report()?;
        return Ok(ExitCode::SUCCESS);
    }
    anyhow::ensure!(args.calls > 0, "--calls must be at least 1");
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    for addr in [args.daemon_sip, args.daemon_http].into_iter().flatten() {
        anyhow::ensure!(addr.ip().is_loopback(), "only loopback daemons: {addr}");
    }
    // 2,000 calls take about 6,000 descriptors on each side; the daemon
    // started below inherits the raised limit.
    let (nofile_before, nofile) = procfs::raise_nofile();
    if nofile_before != nofile {
        eprintln!("[bench] RLIMIT_NOFILE raised from {nofile_before} to {nofile}");
    }
    let needed = args.calls as u64 * 3 + 64;
    if nofile < needed {
        eprintln!("[bench] warning: {nofile} descriptors may be too few for {needed}");
    }

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let daemon_cpus: Vec<usize> = if args.pin && cores > 1 {
        procfs::pin_to(&[0])?;
        (1..cores).collect()
    } else {
        Vec::new()
    };
    let mut daemon = match (args.daemon_sip, args.daemon_http, args.daemon_pid) {
        (Some(sip), Some(http), Some(pid)) => Daemon::attach(sip, http, pid),
        _ => {
            let bin = match &args.daemon_bin {
                Some(b) => b.clone(),
                None => std::env::current_exe()?
                    .parent()
                    .map(|d| d.join("siprelay"))
                    .unwrap_or_else(|| "siprelay".into()),
            };
            Daemon::spawn(&SpawnOptions {
                bin: &bin,
                rtp_ports: &args.rtp_ports,
                log: &args.daemon_log,
                log_filter: &args.daemon_log_filter,
                cpus: &daemon_cpus,
                record: args.record.as_deref(),
            })?
        }
    };
    let started = daemon.log.is_some();
    eprintln!(
        "[bench] daemon pid {} (SIP {}, HTTP {}){}",
        daemon.pid,
        daemon.sip,
        daemon.http,
        if started {
            ", started by the bench"
        } else {
            ""
        }
    );

    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    let plan = Plan {
        calls: args.calls,
        rate: args.rate,
        seconds: args.seconds,
        warmup: args.warmup,
        clients: args.clients.unwrap_or(args.calls).clamp(1, args.calls),
        chunk: args.ws_chunk.max(1),
        broadcast_offers: args.broadcast_offers,
        daemon_rtp: parse_range(&args.rtp_ports).unwrap_or((20000, 29999)),
    };
    let measured = runtime.block_on(run::run(&plan, &mut daemon));
    // Leftover tasks (a client stuck in a close) must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_secs(1));
    let stopped = daemon.stop(Duration::from_secs(8));
    let measured = measured?;
    if let Some(how) = stopped {
        eprintln!("[bench] daemon stopped: {how}");
    }
    let log = daemon.log.as_deref().map(daemon::summarize_log);
    let config = RunConfig {
        calls: plan.calls,
        rate_cps: plan.rate,
        seconds: plan.seconds,
        warmup_s: plan.warmup,
        ws_clients: plan.clients,
        ws_chunk_frames: plan.chunk,
        bench_threads: args.threads.max(1),
        cores,
        pinned: !daemon_cpus.is_empty(),
        daemon_pid: daemon.pid,
        daemon_started_by_bench: started,
        nofile_limit: nofile,
    };
    let report = assemble(config, measured, log);
    report.print_table();
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
        eprintln!("[bench] JSON written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_range(s: &str) -> Option<(u16, u16)> {
    let (lo, hi) = s.split_once('-')?;
    Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?))
}

fn percent((cpu, wall): (f64, f64)) -> f64 {
    if wall > 0.0 {
        100.0 * cpu / wall
    } else {
        0.0
    }
}

fn per_call_second((cpu, wall): (f64, f64), calls: u64) -> f64 {
    if wall > 0.0 && calls > 0 {
        cpu * 1e6 / (calls as f64 * wall)
    } else {
        0.0
    }
}

fn assemble(config: RunConfig, m: Measured, log: Option<daemon::LogSummary>) -> Report {
    let s = &m.shared;
    let rate = |count: u64, secs: f64| if secs > 0.0 { count as f64 / secs } else { 0.0 };
    let n = config.calls as f64;
    let media = &m.media;
    let ws = &m.ws;
    let ws_unique = ws.frames_marked - ws.frames_duplicated;
    let echoes_unique = media.echoes_received;
    let calls = Calls {
        requested: config.calls,
        set_up: m.sip.set_up,
        failed: m.sip.failed,
        dropped_by_daemon: m.sip.ended_by_daemon,
        setup_rate_offered_cps: rate(m.sip.placed.saturating_sub(1), m.sip.placing_s),
        setup_rate_achieved_cps: rate(m.sip.set_up.saturating_sub(1), m.sip.answering_s),
        setup_latency: s.setup_latency.summary(),
        live_in_window: m.live_in_window,
        byes_ok: m.sip.byes_ok,
        byes_failed: m.sip.byes_failed,
        bye_latency: s.bye_latency.summary(),
        ws_bye_events: ws.bye_events,
    };
    let daemon = DaemonUsage {
        cpu_us_per_call_second: per_call_second(m.daemon_cpu, m.live_in_window),
        cpu_percent_of_one_core: percent(m.daemon_cpu),
        rss_kib_idle: m.rss_idle,
        rss_kib_with_clients: m.rss_clients,
        rss_kib_steady: m.rss_steady,
        rss_kib_after_hangup: m.rss_after,
        rss_kib_per_call: (m.rss_steady as f64 - m.rss_idle as f64) / n,
        rss_kib_per_call_excl_ws: (m.rss_steady as f64 - m.rss_clients as f64) / n,
        open_fds_steady: m.fds_steady,
        sip_socket: m.daemon_sip_udp,
        rtp_sockets: m.daemon_rtp_udp,
        threads: m.threads,
    };
    let bench = BenchUsage {
        cpu_percent_of_one_core: percent(m.bench_cpu),
        cpu_us_per_call_second: per_call_second(m.bench_cpu, m.live_in_window),
        media_thread_percent: percent(m.media_cpu),
        runtime_percent: percent(m.bench_cpu) - percent(m.media_cpu),
        tick_lag: media.tick_lag,
        machine_busy_percent: percent((m.machine_cpu.0, m.bench_cpu.1)),
        others_percent: percent((m.machine_cpu.0, m.bench_cpu.1))
            - percent(m.daemon_cpu)
            - percent(m.bench_cpu),
    };
    let mut report = Report {
        calls,
        daemon,
        rtp_at_bench: RtpAtBench {
            received: media.received,
            lost: media.lost,
            late: media.late,
            duplicated: media.duplicated,
            silent: media.silent,
            silent_in_window: media.silent_steady,
            foreign: media.foreign,
            socket_drops: m.bench_rtp_udp.drops,
        },
        rtp_to_ws: Path {
            sent: media.sent,
            arrived: ws_unique,
            missing: media.sent.saturating_sub(ws_unique),
            late: ws.frames_late,
            duplicated: ws.frames_duplicated,
            latency: s.rtp_to_ws.summary(),
        },
        ws_to_rtp: Path {
            sent: ws.frames_sent,
            arrived: echoes_unique,
            missing: ws.frames_sent.saturating_sub(echoes_unique),
            late: media.echoes_late,
            duplicated: media.echoes_duplicated,
            latency: s.ws_to_rtp.summary(),
        },
        far_end_send_interval_deviation: s.interval_dev.summary(),
        bench,
        problems: Vec::new(),
        config,
        sip: m.sip,
        media: m.media,
        ws: m.ws,
        daemon_log: log,
    };
    report.problems = problems(&report);
    report
}

/// What in the numbers deserves a look, in words.
fn problems(r: &Report) -> Vec<String> {
    let mut p = Vec::new();
    let c = &r.calls;
    if c.set_up < c.requested as u64 {
        p.push(format!(
            "{} of {} calls not set up (statuses {:?})",
            c.requested as u64 - c.set_up,
            c.requested,
            r.sip.failure_statuses
        ));
    }
    if c.dropped_by_daemon > 0 {
        p.push(format!(
            "daemon hung up {} calls by itself",
            c.dropped_by_daemon
        ));
    }
    if r.ws.closed_early > 0 {
        p.push(format!(
            "{} WebSocket connections closed before the bench closed them: {:?}",
            r.ws.closed_early, r.ws.close_samples
        ));
    }
    if r.ws.unknown_call_errors > 0 {
        p.push(format!(
            "{} audio messages for calls the daemon had already ended (404: sent before its BYE was read)",
            r.ws.unknown_call_errors
        ));
    }
    if r.sip.late_answers > 0 {
        p.push(format!(
            "{} calls answered (200 OK) only after the bench gave them up at 32 s",
            r.sip.late_answers
        ));
    }
    if r.ws.answer_refusals > 0 {
        p.push(format!(
            "{} answers refused with 403 'not offered to this client' ({} retried): \
             the daemon sends RING_ANS before it records whom the call was offered to",
            r.ws.answer_refusals, r.ws.answer_retries
        ));
    }
    let other_errors = r.ws.errors - r.ws.answer_refusals - r.ws.unknown_call_errors;
    if other_errors > 0 {
        p.push(format!(
            "{other_errors} other ERROR events: {:?}",
            r.ws.error_samples
        ));
    }
    let lossy = |name: &str, path: &Path, p: &mut Vec<String>| {
        if path.missing > 0 || path.duplicated > 0 {
            p.push(format!(
                "{name}: {} of {} frames missing, {} duplicated",
                path.missing, path.sent, path.duplicated
            ));
        }
    };
    lossy("RTP→WS", &r.rtp_to_ws, &mut p);
    lossy("WS→RTP", &r.ws_to_rtp, &mut p);
    let rtp = &r.rtp_at_bench;
    if rtp.lost + rtp.duplicated + rtp.late > 0 {
        p.push(format!(
            "daemon RTP at bench: {} lost, {} late, {} duplicated",
            rtp.lost, rtp.late, rtp.duplicated
        ));
    }
    if let Some(log) = &r.daemon_log {
        if log.ws_frames_dropped > 0 {
            p.push(format!(
                "daemon dropped {} audio frames for lagging clients",
                log.ws_frames_dropped
            ));
        }
        if !log.errors.is_empty() || !log.warnings.is_empty() {
            p.push(format!(
                "daemon log: warnings {:?}, errors {:?}",
                log.warnings, log.errors
            ));
        }
    }
    if r.daemon.rtp_sockets.drops + r.daemon.sip_socket.drops > 0 {
        p.push(format!(
            "daemon's sockets dropped datagrams (receive queue full): RTP {}, SIP {}",
            r.daemon.rtp_sockets.drops, r.daemon.sip_socket.drops
        ));
    }
    if r.rtp_at_bench.socket_drops > 0 {
        p.push(format!(
            "bench's RTP sockets dropped {} datagrams (receive queue full)",
            r.rtp_at_bench.socket_drops
        ));
    }
    if r.media.ticks_skipped > 0 {
        p.push(format!(
            "bench media thread fell behind and skipped {} ticks: it sent less than 50 packets/s per call",
            r.media.ticks_skipped
        ));
    }
    if r.bench.tick_lag.p99_ms > 5.0 {
        p.push(format!(
            "bench media ticks late (p99 {:.1} ms): the bench may be a bottleneck",
            r.bench.tick_lag.p99_ms
        ));
    }
    let runtime_share = r.bench.runtime_percent / r.config.bench_threads as f64;
    if runtime_share > 85.0 {
        p.push(format!(
            "bench runtime at {:.0} % of its {} thread(s): the bench may be a bottleneck",
            r.bench.runtime_percent, r.config.bench_threads
        ));
    }
    if r.bench.others_percent > 20.0 {
        p.push(format!(
            "other programs used {:.0} % of one core during the window: numbers are disturbed",
            r.bench.others_percent
        ));
    }
    p
}
