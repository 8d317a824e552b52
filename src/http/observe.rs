//! `/metrics`, `/healthz` and `/readyz`: what monitoring systems scrape.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;

/// Prometheus metrics (OpenMetrics text). Every series is described in the README.
#[utoipa::path(get, path = "/metrics", tag = "observe",
    responses((status = 200, description = "OpenMetrics text",
        content_type = "application/openmetrics-text", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let board = &state.board;
    let text = crate::metrics::render(&board.metrics, &board.snapshot());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "observe",
    responses((status = 200, description = "`ok`", content_type = "text/plain", body = String)))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// True when every check below holds.
    pub ready: bool,
    /// The SIP transport is bound and siprelay is not shutting down.
    pub sip: bool,
    /// Always true when this answer arrives.
    pub http: bool,
    /// RTP port pairs free for new calls (none free: not ready).
    pub rtp_port_pairs_free: usize,
    /// WebSocket clients that may still connect (none: not ready).
    pub websocket_slots_free: usize,
    /// Files open now, and the process's limit (within 5 % of it: not ready).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_files: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_files_limit: Option<u64>,
    /// What is wrong, in words, when not ready.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// Ready to take calls: SIP bound, HTTP serving, RTP ports, WebSocket
/// slots and open files to spare. 503 otherwise, with the causes.
#[utoipa::path(get, path = "/readyz", tag = "observe",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready", body = Readiness),
    ))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let board = &state.board;
    let free = board.free_port_pairs();
    let sip = board.sip_ready();
    let slots = board.connection_slots.available_permits();
    let files = crate::resources::open_files();
    let mut problems = Vec::new();
    if !sip {
        problems.push("SIP is not listening (starting or shutting down)".to_string());
    }
    if free == 0 {
        problems.push("no RTP port pairs free".to_string());
    }
    if slots == 0 {
        problems.push(format!(
            "WebSocket clients at max_clients ({})",
            board.config.max_clients
        ));
    }
    if let Some((open, limit)) = files {
        if open as u64 >= limit - limit / 20 {
            problems.push(format!("{open} files open of the limit of {limit}"));
        }
    }
    let body = Readiness {
        ready: problems.is_empty(),
        sip,
        http: true,
        rtp_port_pairs_free: free,
        websocket_slots_free: slots,
        open_files: files.map(|(open, _)| open),
        open_files_limit: files.map(|(_, limit)| limit),
        problems,
    };
    let status = if body.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
