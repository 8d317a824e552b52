//! Prometheus metrics (`GET /metrics`).
//!
//! Counters that move at call boundaries (calls ended, setup time) live in
//! [`Metrics`] and are bumped where the event happens. Everything per packet
//! is already counted per call by the media path (`MediaStats`); those are
//! summed only when scraped (the live calls' counts plus the totals of
//! calls already ended), so the media path pays nothing for metrics.
//! The switchboard gathers that into a [`Snapshot`]; [`render`] formats
//! both with the Prometheus project's client library.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Setup time buckets, in seconds: from a LAN 200 OK to a person who lets
/// it ring for a minute.
const SETUP_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallOutcome {
    pub direction: &'static str,
    /// The INVITE's final SIP status, or `none` when there was none.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistrationOutcome {
    pub account: String,
    /// `registered`, `rejected` (a final refusal, the status in `status`),
    /// `unreachable` (no final response) or `unregistered`.
    pub outcome: &'static str,
    /// The SIP status of the final response, or `none`.
    pub status: String,
}

type HistogramFamily = Family<DirectionLabel, Histogram, fn() -> Histogram>;

/// RTP counts of one call, or of many summed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RtpTotals {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub lost: u64,
    pub late: u64,
    pub out_of_order: u64,
    pub duplicated: u64,
    pub send_errors: u64,
    /// Packets dropped unread: before the answer, from a stranger, of a
    /// payload type not negotiated, or failing SRTP authentication.
    pub ignored: u64,
}

impl std::ops::AddAssign for RtpTotals {
    fn add_assign(&mut self, o: RtpTotals) {
        self.packets_in += o.packets_in;
        self.bytes_in += o.bytes_in;
        self.packets_out += o.packets_out;
        self.bytes_out += o.bytes_out;
        self.lost += o.lost;
        self.late += o.late;
        self.out_of_order += o.out_of_order;
        self.duplicated += o.duplicated;
        self.send_errors += o.send_errors;
        self.ignored += o.ignored;
    }
}

/// The counters bumped as things happen.
#[derive(Debug)]
pub struct Metrics {
    calls_ended: Family<CallOutcome, Counter>,
    setup_seconds: HistogramFamily,
    /// RTP of calls that have ended.
    ended_rtp: std::sync::Mutex<RtpTotals>,
    /// Audio frames dropped for clients that have disconnected since.
    frames_dropped_gone: AtomicU64,
    pub prompt_errors: Counter,
    pub event_watchers_cut: Counter,
    registrations: Family<RegistrationOutcome, Counter>,
    http_refused: Family<RefusalReason, Counter>,
    sip_refused: Family<RefusalReason, Counter>,
    call_ends: Family<CauseLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabel {
    /// `local`, `remote`, `timeout`, `shutdown`, `session-expired` or `no-ack`.
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalReason {
    /// HTTP: `token`, `device_token`, `origin`, `host` or `clients_full`; SIP: `not_allowed`, `flood`,
    /// `scanner`, `busy` or `ringing`.
    pub reason: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Metrics {
            calls_ended: Family::default(),
            setup_seconds: Family::new_with_constructor(|| Histogram::new(SETUP_BUCKETS)),
            ended_rtp: Default::default(),
            frames_dropped_gone: AtomicU64::new(0),
            prompt_errors: Counter::default(),
            event_watchers_cut: Counter::default(),
            registrations: Family::default(),
            http_refused: Family::default(),
            sip_refused: Family::default(),
            call_ends: Family::default(),
        };
        // The series every deployment has, at 0 from the start: a rate over
        // a series that appears only with its first call reads as absent,
        // not as zero, in Prometheus.
        for direction in ["inbound", "outbound"] {
            let _ = metrics.calls_ended.get_or_create(&CallOutcome {
                direction,
                status: "200".to_string(),
            });
            let _ = metrics
                .setup_seconds
                .get_or_create(&DirectionLabel { direction });
        }
        metrics
    }
}

impl Metrics {
    /// A call (or an INVITE turned away before it became one) ended.
    pub fn call_ended(&self, direction: &'static str, status: Option<u16>, rtp: RtpTotals) {
        let status = status.map_or_else(|| "none".to_string(), |s| s.to_string());
        self.calls_ended
            .get_or_create(&CallOutcome { direction, status })
            .inc();
        *self.ended_rtp.lock().unwrap_or_else(|e| e.into_inner()) += rtp;
    }

    /// A call connected this long after its INVITE.
    pub fn call_connected(&self, direction: &'static str, setup: std::time::Duration) {
        self.setup_seconds
            .get_or_create(&DirectionLabel { direction })
            .observe(setup.as_secs_f64());
    }

    /// A REGISTER of `account` ended so (`status` None: no final response).
    pub fn registration(&self, account: &str, outcome: &'static str, status: Option<u16>) {
        let status = status.map_or_else(|| "none".to_string(), |s| s.to_string());
        self.registrations
            .get_or_create(&RegistrationOutcome {
                account: account.to_string(),
                outcome,
                status,
            })
            .inc();
    }

    /// An HTTP or WebSocket request was refused before its handler.
    pub fn http_refused(&self, reason: &'static str) {
        self.http_refused
            .get_or_create(&RefusalReason { reason })
            .inc();
    }

    /// A call that had started (offered or dialled) ended so.
    pub fn call_end(&self, cause: &'static str) {
        self.call_ends.get_or_create(&CauseLabel { cause }).inc();
    }

    /// A SIP packet or request was dropped or turned away before a call.
    pub fn sip_refused(&self, reason: &'static str) {
        self.sip_refused
            .get_or_create(&RefusalReason { reason })
            .inc();
    }

    pub fn client_gone(&self, frames_dropped: u64) {
        self.frames_dropped_gone
            .fetch_add(frames_dropped, Ordering::Relaxed);
    }

    fn ended_rtp(&self) -> RtpTotals {
        *self.ended_rtp.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What is true now, gathered by the switchboard at scrape time.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub calls_inbound: u64,
    pub calls_outbound: u64,
    /// Summed over live calls.
    pub rtp: RtpTotals,
    pub clients: u64,
    /// Dropped for the clients connected now.
    pub frames_dropped: u64,
    pub port_pairs_free: u64,
    pub port_pairs: u64,
    pub event_watchers: u64,
    pub recording: Option<RecordingSnapshot>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct RecordingSnapshot {
    pub recordings: u64,
    pub errors: u64,
    pub frames_dropped: u64,
}

/// The OpenMetrics text of `GET /metrics`.
pub fn render(metrics: &Metrics, now: &Snapshot) -> String {
    let mut r = Registry::with_prefix("siprelay");
    let active = Family::<DirectionLabel, prometheus_client::metrics::gauge::Gauge>::default();
    for (direction, n) in [
        ("inbound", now.calls_inbound),
        ("outbound", now.calls_outbound),
    ] {
        active
            .get_or_create(&DirectionLabel { direction })
            .set(n as i64);
    }
    r.register(
        "calls_active",
        "Calls not yet ended (ringing, dialling or connected)",
        active,
    );
    r.register(
        "calls",
        "Calls ended, by direction and the INVITE's final SIP status (none: no final response)",
        metrics.calls_ended.clone(),
    );
    r.register(
        "call_setup_seconds",
        "Time from the INVITE to the call connecting",
        metrics.setup_seconds.clone(),
    );

    let mut rtp = metrics.ended_rtp();
    rtp += now.rtp;
    let by_direction = |input: u64, output: u64| {
        let f = Family::<DirectionLabel, Counter>::default();
        f.get_or_create(&DirectionLabel { direction: "in" })
            .inc_by(input);
        f.get_or_create(&DirectionLabel { direction: "out" })
            .inc_by(output);
        f
    };
    r.register(
        "rtp_packets",
        "RTP packets received from (in) and sent to (out) far ends",
        by_direction(rtp.packets_in, rtp.packets_out),
    );
    r.register(
        "rtp_bytes",
        "RTP bytes (header and payload) received (in) and sent (out)",
        by_direction(rtp.bytes_in, rtp.bytes_out),
    );
    for (name, help, value) in [
        (
            "rtp_packets_lost",
            "RTP packets the far ends' sequence numbers say were sent but never arrived",
            rtp.lost,
        ),
        (
            "rtp_packets_late",
            "RTP packets that arrived more than 40 ms of audio behind newer ones",
            rtp.late,
        ),
        (
            "rtp_packets_out_of_order",
            "RTP packets that arrived after one with a higher sequence number",
            rtp.out_of_order,
        ),
        (
            "rtp_packets_duplicated",
            "RTP packets received twice (the copy is dropped)",
            rtp.duplicated,
        ),
        (
            "rtp_packets_ignored",
            "RTP packets dropped unread: before the answer, from a stranger, of a \
             payload type not negotiated, or failing SRTP authentication",
            rtp.ignored,
        ),
        (
            "rtp_send_errors",
            "RTP packets the kernel refused to send",
            rtp.send_errors,
        ),
        (
            "client_frames_dropped",
            "Audio frames dropped because a WebSocket client read too slowly",
            now.frames_dropped + metrics.frames_dropped_gone.load(Ordering::Relaxed),
        ),
    ] {
        r.register(name, help, ConstCounter::new(value));
    }
    r.register(
        "registrations",
        "REGISTER requests answered, by account, outcome and final SIP status",
        metrics.registrations.clone(),
    );
    r.register(
        "http_refused",
        "HTTP and WebSocket requests refused: a wrong token (the API's or a device's), a foreign Origin or Host, or max_clients reached",
        metrics.http_refused.clone(),
    );
    r.register(
        "call_ends",
        "Calls ended, by who or what ended them (no-ack: our 200 OK was never ACKed)",
        metrics.call_ends.clone(),
    );
    r.register(
        "sip_refused",
        "SIP packets and requests dropped or refused before a call: a source outside \
         sip_allow, flooding or a scanner, too many live transactions or ringing calls",
        metrics.sip_refused.clone(),
    );
    r.register(
        "prompt_errors",
        "Greeting or PLAY files that could not be loaded",
        metrics.prompt_errors.clone(),
    );
    r.register(
        "event_watchers_cut",
        "GET /events streams closed because their reader fell behind",
        metrics.event_watchers_cut.clone(),
    );
    for (name, help, value) in [
        (
            "websocket_clients",
            "WebSocket clients connected",
            now.clients,
        ),
        (
            "rtp_port_pairs_free",
            "RTP port pairs free for new calls",
            now.port_pairs_free,
        ),
        (
            "rtp_port_pairs",
            "RTP port pairs in the configured range",
            now.port_pairs,
        ),
        (
            "event_watchers",
            "GET /events streams open",
            now.event_watchers,
        ),
    ] {
        r.register(name, help, ConstGauge::new(value as i64));
    }
    if let Some(rec) = now.recording {
        r.register(
            "recordings",
            "Recordings started",
            ConstCounter::new(rec.recordings),
        );
        r.register(
            "recording_errors",
            "Recordings stopped by an error (full disk, unwritable directory)",
            ConstCounter::new(rec.errors),
        );
        r.register(
            "recording_frames_dropped",
            "Recorded frames the writer could not keep up with (written as silence)",
            ConstCounter::new(rec.frames_dropped),
        );
    }
    let mut out = String::with_capacity(8192);
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{series} not in:\n{text}"))
    }

    #[test]
    fn answered_calls_and_setup_times_have_series_before_any_call() {
        let text = render(&Metrics::default(), &Snapshot::default());
        for direction in ["inbound", "outbound"] {
            let calls = format!(r#"siprelay_calls_total{{direction="{direction}",status="200"}}"#);
            assert_eq!(value(&text, &calls), 0.0);
            let setups = format!(r#"siprelay_call_setup_seconds_count{{direction="{direction}"}}"#);
            assert_eq!(value(&text, &setups), 0.0);
        }
    }

    #[test]
    fn ended_and_live_counts_add_up_and_every_series_is_named() {
        let m = Metrics::default();
        let call = RtpTotals {
            packets_in: 100,
            bytes_in: 17_200,
            lost: 2,
            ..Default::default()
        };
        m.call_ended("inbound", Some(200), call);
        m.call_ended("inbound", Some(486), RtpTotals::default());
        m.call_ended("outbound", None, RtpTotals::default());
        m.call_connected("inbound", std::time::Duration::from_millis(30));
        m.client_gone(5);
        let now = Snapshot {
            calls_inbound: 3,
            rtp: RtpTotals {
                packets_in: 50,
                ..Default::default()
            },
            frames_dropped: 1,
            port_pairs_free: 9,
            port_pairs: 10,
            ..Default::default()
        };
        let text = render(&m, &now);
        assert_eq!(
            value(
                &text,
                r#"siprelay_calls_total{direction="inbound",status="200"}"#
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                r#"siprelay_calls_total{direction="outbound",status="none"}"#
            ),
            1.0
        );
        assert_eq!(
            value(&text, r#"siprelay_calls_active{direction="inbound"}"#),
            3.0
        );
        assert_eq!(
            value(&text, r#"siprelay_rtp_packets_total{direction="in"}"#),
            150.0
        );
        assert_eq!(value(&text, "siprelay_rtp_packets_lost_total"), 2.0);
        assert_eq!(value(&text, "siprelay_client_frames_dropped_total"), 6.0);
        assert_eq!(value(&text, "siprelay_rtp_port_pairs_free"), 9.0);
        assert_eq!(
            value(
                &text,
                r#"siprelay_call_setup_seconds_bucket{le="0.05",direction="inbound"}"#
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                r#"siprelay_call_setup_seconds_bucket{le="0.025",direction="inbound"}"#
            ),
            0.0
        );
        assert!(text.ends_with("# EOF\n"));
        assert!(!text.contains("siprelay_recording_errors"));
    }
}
