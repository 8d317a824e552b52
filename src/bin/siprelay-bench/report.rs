//! The result: one serialisable report, printed as a table and written as JSON.

use serde::Serialize;

use crate::daemon::LogSummary;
use crate::media::MediaReport;
use crate::sip::SipReport;
use crate::stats::Summary;
use crate::ws::WsReport;

#[derive(Debug, Serialize)]
pub struct Report {
    pub config: RunConfig,
    pub calls: Calls,
    pub daemon: DaemonUsage,
    /// Daemon → bench RTP, by sequence number, as the bench received it.
    pub rtp_at_bench: RtpAtBench,
    /// Bench RTP → daemon → WebSocket: did every packet come out as a frame?
    pub rtp_to_ws: Path,
    /// WebSocket → daemon → RTP: did every client frame come out in RTP?
    pub ws_to_rtp: Path,
    /// |inter-arrival − 20 ms| of the daemon's packets (kernel timestamps).
    pub far_end_send_interval_deviation: Summary,
    pub bench: BenchUsage,
    /// Things that look wrong, in words.
    pub problems: Vec<String>,
    pub sip: SipReport,
    pub media: MediaReport,
    pub ws: WsReport,
    pub daemon_log: Option<LogSummary>,
}

#[derive(Debug, Serialize)]
pub struct RunConfig {
    pub calls: usize,
    pub rate_cps: f64,
    pub seconds: f64,
    pub warmup_s: f64,
    pub ws_clients: usize,
    pub ws_chunk_frames: usize,
    pub bench_threads: usize,
    pub cores: usize,
    /// Bench on CPU 0, daemon on the others (`--pin`).
    pub pinned: bool,
    pub daemon_pid: u32,
    pub daemon_started_by_bench: bool,
    pub nofile_limit: u64,
}

#[derive(Debug, Serialize)]
pub struct Calls {
    pub requested: usize,
    pub set_up: u64,
    pub failed: u64,
    /// Connected calls the daemon ended on its own before the hang-up.
    pub dropped_by_daemon: u64,
    /// INVITEs per second as sent, and 200 OKs per second as received.
    pub setup_rate_offered_cps: f64,
    pub setup_rate_achieved_cps: f64,
    /// INVITE sent → 200 OK received.
    pub setup_latency: Summary,
    /// Calls up during the steady window.
    pub live_in_window: u64,
    pub byes_ok: u64,
    pub byes_failed: u64,
    pub bye_latency: Summary,
    pub ws_bye_events: u64,
}

#[derive(Debug, Serialize)]
pub struct DaemonUsage {
    pub cpu_us_per_call_second: f64,
    pub cpu_percent_of_one_core: f64,
    pub rss_kib_idle: u64,
    pub rss_kib_with_clients: u64,
    pub rss_kib_steady: u64,
    pub rss_kib_after_hangup: u64,
    /// (steady − idle) / calls: a call and its WebSocket connection.
    pub rss_kib_per_call: f64,
    /// (steady − with clients) / calls: the call alone.
    pub rss_kib_per_call_excl_ws: f64,
    pub open_fds_steady: u64,
    /// The daemon's UDP sockets at the end of the window (/proc/net/udp).
    pub sip_socket: crate::procfs::UdpQueues,
    pub rtp_sockets: crate::procfs::UdpQueues,
    pub threads: u64,
}

#[derive(Debug, Serialize)]
pub struct RtpAtBench {
    pub received: u64,
    pub lost: u64,
    pub late: u64,
    pub duplicated: u64,
    /// Packets of silence: ticks where the daemon had none of the client's
    /// audio queued. Each one delays that call's later audio by 20 ms for
    /// good, since the client sends in real time and the queue never skips.
    pub silent: u64,
    pub silent_in_window: u64,
    pub foreign: u64,
    /// Datagrams the kernel dropped on the bench's RTP sockets (full queue).
    pub socket_drops: u64,
}

#[derive(Debug, Serialize)]
pub struct Path {
    pub sent: u64,
    pub arrived: u64,
    /// sent − arrived (never negative).
    pub missing: u64,
    pub late: u64,
    pub duplicated: u64,
    pub latency: Summary,
}

#[derive(Debug, Serialize)]
pub struct BenchUsage {
    pub cpu_percent_of_one_core: f64,
    pub cpu_us_per_call_second: f64,
    pub media_thread_percent: f64,
    /// Everything else: the tokio runtime (SIP and WebSocket clients).
    pub runtime_percent: f64,
    /// How late the media thread's 20 ms ticks fired.
    pub tick_lag: Summary,
    /// The machine during the window, in % of one core (2 cores: 200 %):
    /// all busy time, and what neither the daemon nor the bench used
    /// (other programs, or kernel work not charged to either).
    pub machine_busy_percent: f64,
    pub others_percent: f64,
}

fn ms(s: &Summary) -> String {
    format!(
        "p50 {:.2}  p99 {:.2}  max {:.2} ms  (n={})",
        s.p50_ms, s.p99_ms, s.max_ms, s.count
    )
}

impl Report {
    pub fn print_table(&self) {
        let c = &self.calls;
        let d = &self.daemon;
        let r = &self.rtp_at_bench;
        let b = &self.bench;
        let rows: Vec<(&str, String)> = vec![
            (
                "calls",
                format!(
                    "{} requested, {} set up, {} failed {:?}, {} dropped by daemon",
                    c.requested, c.set_up, c.failed, self.sip.failure_statuses, c.dropped_by_daemon
                ),
            ),
            (
                "setup rate",
                format!(
                    "{:.1} cps offered, {:.1} cps achieved",
                    c.setup_rate_offered_cps, c.setup_rate_achieved_cps
                ),
            ),
            ("setup latency", ms(&c.setup_latency)),
            (
                "steady window",
                format!(
                    "{} calls for {:.1} s",
                    c.live_in_window, self.config.seconds
                ),
            ),
            (
                "daemon CPU",
                format!(
                    "{:.1} µs per call-second ({:.1} % of one core)",
                    d.cpu_us_per_call_second, d.cpu_percent_of_one_core
                ),
            ),
            (
                "daemon RSS",
                format!(
                    "{:.1} KiB per call ({:.1} without its WebSocket); idle {} KiB, clients {} KiB, steady {} KiB, after hang-up {} KiB",
                    d.rss_kib_per_call, d.rss_kib_per_call_excl_ws, d.rss_kib_idle,
                    d.rss_kib_with_clients, d.rss_kib_steady, d.rss_kib_after_hangup
                ),
            ),
            (
                "daemon fds/threads",
                format!("{} fds, {} threads at steady", d.open_fds_steady, d.threads),
            ),
            (
                "daemon UDP drops",
                format!(
                    "RTP sockets {} dropped ({} B queued), SIP socket {} dropped ({} B queued)",
                    d.rtp_sockets.drops, d.rtp_sockets.rx_queue_bytes,
                    d.sip_socket.drops, d.sip_socket.rx_queue_bytes
                ),
            ),
            (
                "WS control events",
                format!(
                    "{} RING_ANS and {} RING_IGNORE read by all clients ({:.1} per call), {} answers refused (403), {} audio frames after BYE",
                    self.ws.ring_offers, self.ws.ring_ignores,
                    (self.ws.ring_offers + self.ws.ring_ignores) as f64 / self.config.calls as f64,
                    self.ws.answer_refusals, self.ws.frames_after_bye
                ),
            ),
            (
                "RTP at bench",
                format!(
                    "{} received, {} lost, {} late, {} duplicated, {} foreign, {} socket drops; silent (underruns) {} in all, {} in window",
                    r.received, r.lost, r.late, r.duplicated, r.foreign, r.socket_drops, r.silent, r.silent_in_window
                ),
            ),
            ("RTP→WS at daemon", path_counts(&self.rtp_to_ws)),
            ("WS→RTP at daemon", path_counts(&self.ws_to_rtp)),
            (
                "far-end interval dev",
                ms(&self.far_end_send_interval_deviation),
            ),
            ("RTP→WS latency", ms(&self.rtp_to_ws.latency)),
            ("WS→RTP latency", ms(&self.ws_to_rtp.latency)),
            (
                "hang-up",
                format!(
                    "{} BYE ok, {} failed, {} WS BYE events; BYE {}",
                    c.byes_ok,
                    c.byes_failed,
                    c.ws_bye_events,
                    ms(&c.bye_latency)
                ),
            ),
            (
                "bench CPU",
                format!(
                    "{:.1} % of one core ({:.1} µs per call-second): media thread {:.1} %, runtime {:.1} %",
                    b.cpu_percent_of_one_core, b.cpu_us_per_call_second,
                    b.media_thread_percent, b.runtime_percent
                ),
            ),
            (
                "bench tick lag",
                format!("{}; {} ticks skipped", ms(&b.tick_lag), self.media.ticks_skipped),
            ),
            (
                "machine",
                format!(
                    "{:.1} % busy of {:.0} % ({:.1} % neither daemon nor bench)",
                    b.machine_busy_percent,
                    100.0 * self.config.cores as f64,
                    b.others_percent
                ),
            ),
        ];
        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        println!(
            "siprelay-bench: {} calls at {} cps, {} s steady, {} WebSocket clients sending {} frame(s) per message{}",
            self.config.calls,
            self.config.rate_cps,
            self.config.seconds,
            self.config.ws_clients,
            self.config.ws_chunk_frames,
            if self.config.pinned {
                ", bench pinned to CPU 0 and daemon to the rest"
            } else {
                ""
            }
        );
        for (k, v) in rows {
            println!("  {k:<width$}  {v}");
        }
        if self.problems.is_empty() {
            println!("  no problems seen");
        }
        for p in &self.problems {
            println!("  PROBLEM: {p}");
        }
    }
}

fn path_counts(p: &Path) -> String {
    format!(
        "{} sent, {} arrived, {} missing, {} late, {} duplicated",
        p.sent, p.arrived, p.missing, p.late, p.duplicated
    )
}
