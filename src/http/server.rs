//! The HTTP/1 server loop: accepts connections, serves the router on each
//! with hyper, and shuts down gracefully. Written out (instead of
//! `axum::serve`) for the limits a daemon facing untrusted clients needs:
//! a request's headers must arrive within a time limit (10 s), and an
//! idle keep-alive connection is closed after as long (hyper runs the same
//! timer while it waits for the next request), so half-open and slowloris
//! connections cannot pile up.

use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Serves `app` on `listener` until `shutdown`, then waits up to `grace`
/// for the requests under way. A request's headers have `header_timeout`
/// to arrive, and so has an idle connection to send its next request.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let connections = TaskTracker::new();
    let mut accept_errors_logged: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
        };
        let (mut stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of open files, most likely: say so (once a minute)
                // and give the connections a moment to close.
                if accept_errors_logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                    accept_errors_logged = Some(Instant::now());
                    tracing::warn!(error = %e, "cannot accept HTTP connections (logged once a minute)");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        super::tune_socket(&mut stream);
        let app = app.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            // The peer's address, for the guard's per-address refusals.
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    app.clone().oneshot(request.map(axum::body::Body::new))
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "HTTP connection ended");
                    }
                }
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    connections.close();
    let _ = tokio::time::timeout(grace, connections.wait()).await;
}
