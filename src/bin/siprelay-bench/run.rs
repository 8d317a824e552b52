//! The run, phase by phase: clients connect, calls are placed, the steady
//! window is measured, everything is hung up, the parts report.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::daemon::Daemon;
use crate::marker::Tone;
use crate::media::{self, MediaReport, MediaThread};
use crate::procfs::{self, CpuSample};
use crate::shared::Shared;
use crate::sip::{Cmd, Progress, SipReport, SipUac};
use crate::ws::{self, ClientSetup, WsReport};

pub struct Plan {
    /// The daemon's RTP port range (to find its sockets in /proc/net/udp).
    pub daemon_rtp: (u16, u16),
    pub calls: usize,
    pub rate: f64,
    pub seconds: f64,
    pub warmup: f64,
    pub clients: usize,
    pub chunk: usize,
    /// Every client is offered every call (no `?offers=` routing).
    pub broadcast_offers: bool,
}

/// Everything measured, before it is turned into the report.
pub struct Measured {
    pub shared: Arc<Shared>,
    pub sip: SipReport,
    pub media: MediaReport,
    pub ws: WsReport,
    pub live_in_window: u64,
    pub daemon_cpu: (f64, f64),
    /// Busy CPU seconds of the whole machine over the window, and the window's
    /// wall seconds times the cores.
    pub machine_cpu: (f64, f64),
    pub bench_cpu: (f64, f64),
    pub media_cpu: (f64, f64),
    pub rss_idle: u64,
    pub rss_clients: u64,
    pub rss_steady: u64,
    pub rss_after: u64,
    pub fds_steady: u64,
    /// At the end of the window: the daemon's SIP socket, its RTP sockets,
    /// the bench's RTP sockets (cumulative drops since each was opened).
    pub daemon_sip_udp: procfs::UdpQueues,
    pub daemon_rtp_udp: procfs::UdpQueues,
    pub bench_rtp_udp: procfs::UdpQueues,
    pub threads: u64,
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

/// Polls `done` every 50 ms until it holds or `within` passes; logs `what`
/// every 2 s. Returns whether it held.
async fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> (bool, String)) -> bool {
    let start = Instant::now();
    let mut last_log = start;
    loop {
        let (ok, status) = done();
        if ok {
            return true;
        }
        if start.elapsed() > within {
            log(format!("{what}: gave up after {within:?} ({status})"));
            return false;
        }
        if last_log.elapsed() >= Duration::from_secs(2) {
            last_log = Instant::now();
            log(format!("{what}: {status}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(plan: &Plan, daemon: &mut Daemon) -> anyhow::Result<Measured> {
    daemon.wait_healthy(Duration::from_secs(15)).await?;
    let pid = daemon.pid;
    let daemon_stat = format!("/proc/{pid}/stat");
    let n = plan.calls;
    let shared = Arc::new(Shared::new(n));
    let rss_idle = procfs::rss_kib(pid);

    // Phase 1: the clients connect, like a pool of agents waiting for calls.
    let (sockets, ports) = media::bind_sockets(n).context("binding RTP sockets")?;
    let tone = Arc::new(Tone::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::channel(plan.clients.max(1));
    let connecting = Arc::new(Semaphore::new(64));
    let clients: Vec<_> = (0..plan.clients)
        .map(|index| {
            tokio::spawn(ws::run(ClientSetup {
                index,
                clients: plan.clients,
                offers: (!plan.broadcast_offers)
                    .then(|| crate::sip::callee(index, Some(plan.clients))),
                http: daemon.http,
                shared: shared.clone(),
                tone: tone.clone(),
                chunk: plan.chunk,
                connecting: connecting.clone(),
                ready: ready_tx.clone(),
                stop: stop_rx.clone(),
            }))
        })
        .collect();
    drop(ready_tx);
    let t = Instant::now();
    let (mut up, mut down) = (0, 0);
    while up + down < plan.clients {
        match tokio::time::timeout(Duration::from_secs(60), ready_rx.recv()).await {
            Ok(Some(true)) => up += 1,
            Ok(Some(false)) => down += 1,
            _ => break,
        }
    }
    log(format!(
        "{up} WebSocket clients connected ({down} failed) in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_clients = procfs::rss_kib(pid);

    // Phase 2: calls placed at the set rate; media starts as each is answered.
    let media = MediaThread::start(sockets, shared.clone());
    let progress = Arc::new(Progress::default());
    let routed = (!plan.broadcast_offers).then_some(plan.clients);
    let uac = SipUac::new(daemon.sip, &ports, routed, shared.clone(), progress.clone()).await?;
    let (commands, command_rx) = mpsc::channel(4);
    let sip_task = tokio::spawn(uac.run(command_rx));
    commands.send(Cmd::Place { rate: plan.rate }).await?;
    let placing = Duration::from_secs_f64(n as f64 / plan.rate) + Duration::from_secs(40);
    let p = progress.clone();
    wait_for("placing calls", placing, || {
        let (placed, answered, failed) = (
            p.placed.load(Relaxed),
            p.answered.load(Relaxed),
            p.failed.load(Relaxed),
        );
        (
            answered + failed >= n as u64,
            format!("{placed} placed, {answered} answered, {failed} failed"),
        )
    })
    .await;

    // Phase 3: the steady window.
    tokio::time::sleep(Duration::from_secs_f64(plan.warmup)).await;
    let live_in_window = progress.live.load(Relaxed);
    log(format!(
        "steady window: {live_in_window} calls for {} s",
        plan.seconds
    ));
    let media_stat = media.stat_path();
    let (d0, b0, m0, machine0) = (
        CpuSample::take(&daemon_stat),
        CpuSample::take("/proc/self/stat"),
        CpuSample::take(&media_stat),
        procfs::machine_cpu(),
    );
    shared.recording.store(true, Relaxed);
    let window_end = Instant::now() + Duration::from_secs_f64(plan.seconds);
    while Instant::now() < window_end {
        let left = window_end.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_secs(5))).await;
        if Instant::now() < window_end {
            log(format!(
                "  {} calls live, daemon RSS {} KiB, RTP→WS p99 so far {:.2} ms",
                progress.live.load(Relaxed),
                procfs::rss_kib(pid),
                shared.rtp_to_ws.summary().p99_ms
            ));
        }
    }
    shared.recording.store(false, Relaxed);
    let (d1, b1, m1, machine1) = (
        CpuSample::take(&daemon_stat),
        CpuSample::take("/proc/self/stat"),
        CpuSample::take(&media_stat),
        procfs::machine_cpu(),
    );
    let rss_steady = procfs::rss_kib(pid);
    let fds_steady = procfs::open_fds(pid);
    let threads = procfs::status_field(pid, "Threads").unwrap_or(0);
    let (lo, hi) = plan.daemon_rtp;
    let sip_port = daemon.sip.port();
    let daemon_sip_udp = procfs::udp_queues(|p| p == sip_port);
    let daemon_rtp_udp = procfs::udp_queues(|p| (lo..=hi).contains(&p));
    let ours: std::collections::HashSet<u16> = ports.iter().copied().collect();
    let bench_rtp_udp = procfs::udp_queues(|p| ours.contains(&p));

    // Phase 4: hang up. RTP stops first, and the BYEs wait until the clients'
    // audio queued in the daemon has played out (no echo for 200 ms), so
    // nothing is in flight or queued when they land.
    shared.sending.store(false, Relaxed);
    let quiet_since = Instant::now();
    wait_for("draining queued audio", Duration::from_secs(10), || {
        let silent_ms = shared
            .now_us()
            .saturating_sub(shared.last_echo_us.load(Relaxed))
            / 1000;
        (
            silent_ms >= 200 && quiet_since.elapsed() >= Duration::from_millis(200),
            format!("last client frame played {silent_ms} ms ago"),
        )
    })
    .await;
    commands.send(Cmd::HangUp { rate: plan.rate }).await?;
    let hanging = Duration::from_secs_f64(n as f64 / plan.rate) + Duration::from_secs(40);
    let answered = progress.answered.load(Relaxed);
    wait_for("hanging up", hanging, || {
        let live = progress.live.load(Relaxed);
        let sent = progress.byes_sent.load(Relaxed);
        let ws_byes = shared.ws_byes.load(Relaxed);
        (
            live == 0 && ws_byes >= sent.min(answered),
            format!("{sent} BYEs sent, {live} calls still up, {ws_byes} WS BYE events"),
        )
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    shared.quit.store(true, Relaxed);
    let media_report = tokio::task::spawn_blocking(move || media.join()).await?;
    let rss_after = procfs::rss_kib(pid);

    // Phase 5: the clients close; the parts report.
    let _ = stop_tx.send(true);
    let mut ws_report = WsReport::default();
    for c in clients {
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(10), c).await {
            ws_report.merge(r);
        }
    }
    drop(commands);
    let sip = sip_task.await?;
    Ok(Measured {
        shared,
        sip,
        media: media_report,
        ws: ws_report,
        live_in_window,
        daemon_cpu: d0.until(&d1),
        machine_cpu: (machine1.0 - machine0.0, machine1.1 - machine0.1),
        bench_cpu: b0.until(&b1),
        media_cpu: m0.until(&m1),
        rss_idle,
        rss_clients,
        rss_steady,
        rss_after,
        fds_steady,
        threads,
        daemon_sip_udp,
        daemon_rtp_udp,
        bench_rtp_udp,
    })
}
