//! `Daemon`: starts the shells around one switchboard and stops them in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::{self, AppState};
use crate::media::clock::MediaClock;
use crate::media::tap::RecordingSink;
use crate::prompts::{PromptError, PromptLibrary};
use crate::record::Recorder;
use crate::sip::{SipEndpoint, SipError};
use crate::switchboard::Switchboard;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Sip(#[from] SipError),
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("greeting: {0}")]
    Greeting(#[from] PromptError),
    #[error("cannot start the recorder: {0}")]
    Recorder(std::io::Error),
    #[error("cannot start the media clock (epoll): {0}")]
    Media(std::io::Error),
}

/// A running daemon. Dropping it does not stop it; call [`Daemon::shutdown`].
pub struct Daemon {
    pub board: Arc<Switchboard>,
    pub sip: Arc<SipEndpoint>,
    pub http_addr: SocketAddr,
    stop_http: CancellationToken,
    stop_media: CancellationToken,
    stop_sip: CancellationToken,
    stop_registrations: CancellationToken,
    registrations: Vec<JoinHandle<()>>,
    http_task: JoinHandle<()>,
}

impl Daemon {
    pub async fn start(config: Config) -> Result<Daemon, StartError> {
        let stop_media = CancellationToken::new();
        let stop_sip = CancellationToken::new();
        let stop_http = CancellationToken::new();
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        raise_open_files(&config);
        let prompts = Arc::new(PromptLibrary::new(
            config.assets_dir.clone(),
            &config.greeting,
        )?);
        let recorder = match &config.recordings_dir {
            Some(dir) => Some(Arc::new(
                Recorder::start(dir.clone()).map_err(StartError::Recorder)?,
            )),
            None => None,
        };
        let sink = recorder.clone().map(|r| r as Arc<dyn RecordingSink>);
        let clock =
            MediaClock::start(workers, sink, stop_media.clone()).map_err(StartError::Media)?;
        let board = Switchboard::new(config, clock, prompts, recorder);
        let sip = SipEndpoint::start(board.clone(), stop_sip.clone()).await?;
        board.set_sip_ready(true);
        let stop_registrations = CancellationToken::new();
        let registrations = crate::sip::register::spawn_all(&sip, &stop_registrations);

        let addr = board.config.http_listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Http { addr, source })?;
        let http_addr = listener
            .local_addr()
            .map_err(|source| StartError::Http { addr, source })?;
        let app = http::router(
            AppState {
                board: board.clone(),
                dialer: Arc::new(crate::local::Dialing {
                    board: board.clone(),
                    sip: sip.clone(),
                }),
            },
            http_addr,
        );
        let http_task = tokio::spawn(http::server::serve(
            listener,
            app,
            board.config.http_header_timeout,
            stop_http.clone(),
            Duration::from_secs(2),
        ));
        tracing::info!(sip = %sip.local_addr(), http = %http_addr, "siprelay ready");
        Ok(Daemon {
            board,
            sip,
            http_addr,
            stop_http,
            stop_media,
            stop_sip,
            stop_registrations,
            registrations,
            http_task,
        })
    }

    pub fn sip_addr(&self) -> SocketAddr {
        self.sip.local_addr()
    }

    /// Hangs every call up properly (BYE, CANCEL or a final response),
    /// unregisters every account, closes every client with a close frame,
    /// then stops.
    pub async fn shutdown(self) {
        tracing::info!(calls = self.board.call_count(), "shutting down");
        self.board.set_sip_ready(false);
        self.board.hang_up_all(Duration::from_secs(3)).await;
        self.sip.finish_byes(Duration::from_secs(2)).await;
        // Unregistered before the clients go, so they hear it too.
        self.stop_registrations.cancel();
        let unregistered = futures_util::future::join_all(self.registrations);
        let limit = crate::sip::register::UNREGISTER_LIMIT + Duration::from_millis(500);
        let _ = tokio::time::timeout(limit, unregistered).await;
        self.board.close_clients();
        self.stop_http.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.http_task).await;
        self.stop_media.cancel();
        self.stop_sip.cancel();
        if let Some(recorder) = self.board.recorder.clone() {
            // Joins the writer thread: off the async workers.
            let _ = tokio::task::spawn_blocking(move || recorder.stop()).await;
        }
    }
}

/// Raises the open-file limit to what the RTP range and the clients need,
/// and says so: running out shows as calls refused, not as a clear error.
fn raise_open_files(config: &Config) {
    let pairs = u64::from(config.rtp_ports.1.saturating_sub(config.rtp_ports.0)) / 2;
    // Two sockets per call, one per client, and room for SIP, HTTP and files.
    let needed = pairs * 2 + config.max_clients as u64 + 512;
    match crate::resources::raise_open_files(needed) {
        Ok(l) if l.now < needed => tracing::warn!(
            limit = l.now,
            needed,
            "the open-file limit (hard limit {}) is below what the RTP range and max_clients need; \
             raise it (ulimit -Hn, LimitNOFILE=) or narrow --rtp-ports",
            l.hard
        ),
        Ok(l) if l.now > l.before => {
            tracing::info!(from = l.before, to = l.now, "open-file limit raised")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-file limit"),
    }
}
