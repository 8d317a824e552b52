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
}

/// Ready to take calls: SIP bound, HTTP serving, RTP ports free. 503 otherwise.
#[utoipa::path(get, path = "/readyz", tag = "observe",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready", body = Readiness),
    ))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let board = &state.board;
    let free = board.free_port_pairs();
    let sip = board.sip_ready();
    let body = Readiness {
        ready: sip && free > 0,
        sip,
        http: true,
        rtp_port_pairs_free: free,
    };
    let status = if body.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
