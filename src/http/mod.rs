//! The HTTP server (axum): `/ws` for WebSocket clients, the REST API
//! (`/calls`, `/events`, `/recordings`, `/accounts`), the review page, `/metrics`,
//! `/healthz`, `/readyz` and `/openapi.json`.

pub mod accounts;
mod auth;
pub mod calls;
pub mod connection;
pub mod device;
pub mod error;
pub mod events;
pub mod guard;
pub mod observe;
pub mod openapi;
pub mod recordings;
pub mod server;
pub mod ws;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;

use crate::switchboard::{Dialer, Switchboard};

#[derive(Clone)]
pub struct AppState {
    pub board: Arc<Switchboard>,
    pub dialer: Arc<dyn Dialer>,
}

/// Most bytes a client connection may hold unsent in the kernel. Without a
/// bound, a client that stops reading would soak up megabytes of stale
/// audio there; with it, the writer stalls after a fraction of a second and
/// the client's bounded audio queue starts dropping frames instead. Bytes
/// already in flight do not count, so a fast client on a long link keeps
/// its full TCP window.
const UNSENT_LIMIT: u32 = 16 * 1024;

/// Per-connection socket options: no Nagle delay for small audio frames,
/// and the unsent-bytes bound above.
pub fn tune_socket(stream: &mut tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
    let _ = socket2::SockRef::from(&*stream).set_tcp_notsent_lowat(UNSENT_LIMIT);
}

/// Largest REST request body: a few hundred bytes of JSON are plenty.
const MAX_BODY: usize = 64 * 1024;

/// The routes of a daemon whose HTTP listener is bound at `bound`.
pub fn router(state: AppState, bound: std::net::SocketAddr) -> Router {
    let guard = guard::Guard::new(state.board.clone(), bound);
    let devices = Router::new()
        .route("/device/{id}", get(device::upgrade))
        // Devices authenticate with their own tokens, not the API's.
        .layer(axum::middleware::from_fn_with_state(
            (guard.clone(), true),
            guard::guard,
        ));
    Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/calls", post(calls::place).get(calls::list))
        .route("/calls/{id}", get(calls::get_one).delete(calls::delete))
        .route("/calls/{id}/answer", post(calls::answer))
        .route("/calls/{id}/reject", post(calls::reject))
        .route("/calls/{id}/hangup", post(calls::hangup))
        .route("/calls/{id}/play", post(calls::play))
        .route("/calls/{id}/dtmf", post(calls::dtmf))
        .route("/events", get(events::stream))
        .route("/metrics", get(observe::metrics))
        .route("/healthz", get(observe::healthz))
        .route("/readyz", get(observe::readyz))
        .route("/devices", get(device::list))
        .route("/accounts", get(accounts::list))
        .route("/accounts/{name}", get(accounts::get_one))
        .route("/openapi.json", get(openapi::document))
        .route("/", get(recordings::review_page))
        .route("/recordings/ui", get(recordings::review_page))
        .route("/recordings", get(recordings::list))
        .route(
            "/recordings/{id}",
            get(recordings::get).merge(delete(recordings::delete)),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            (guard, false),
            guard::guard,
        ))
        .merge(devices)
        .with_state(state)
}
