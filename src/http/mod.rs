//! The HTTP server (axum): `/ws` for WebSocket clients and `/healthz`.

mod auth;
pub mod connection;
pub mod ws;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::switchboard::{Dialer, Switchboard};

#[derive(Clone)]
pub struct AppState {
    pub board: Arc<Switchboard>,
    pub dialer: Arc<dyn Dialer>,
}

pub fn router(state: AppState) -> Router {
    let token = state.board.config.api_token.clone();
    Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(axum::middleware::from_fn_with_state(
            token,
            auth::require_token,
        ))
        .with_state(state)
}
