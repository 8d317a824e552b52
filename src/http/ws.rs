//! The WebSocket transport for `/ws`: upgrade, then a reader loop feeding
//! `Connection` and a writer task draining the client's queues. Both loops
//! are generic over `Stream`/`Sink`, so they run on channels in tests.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::connection::{Connection, MAX_COMMAND_BYTES};
use super::error::ApiError;
use super::AppState;
use crate::client::{ClientHandle, OfferFilter, Outgoing};
use crate::wire::{Dialect, Event, ProtocolError};

/// Frames above this are refused by the WebSocket layer itself, which ends
/// the connection; between `MAX_COMMAND_BYTES` and this, the client gets
/// `ERROR:413`.
const MAX_FRAME_BYTES: usize = 8 * MAX_COMMAND_BYTES;

/// Frames written per flush: one flush (one write system call) carries a
/// burst of frames when several calls' audio is ready at once.
const WRITE_BATCH: usize = 32;

/// Read buffer per connection. tungstenite zero-fills the whole read buffer
/// before every read, so its 128 KiB default costs a 128 KiB memset per
/// message (and 128 KiB of memory per client); audio messages are a few
/// hundred bytes.
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// Frames are written out once this much is buffered, or at each flush.
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// A client is pinged this often; one silent for three intervals is closed.
const PING_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
pub struct WsParams {
    dialect: Option<String>,
    offers: Option<String>,
}

pub async fn upgrade(
    State(state): State<AppState>,
    Query(params): Query<WsParams>,
    ws: WebSocketUpgrade,
) -> Response {
    let dialect = match params.dialect.as_deref() {
        Some("legacy") => Dialect::Legacy,
        _ => Dialect::V1,
    };
    let offers = OfferFilter::parse(params.offers.as_deref().unwrap_or_default());
    // The connection holds its slot until it closes.
    let Ok(slot) = state.board.connection_slots.clone().try_acquire_owned() else {
        return refuse_full(&state);
    };
    ws.max_message_size(MAX_FRAME_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket: WebSocket| async move {
            let (sink, stream) = socket.split();
            serve(state, dialect, offers, sink, stream).await;
            drop(slot);
        })
}

/// 503 for a client over `max_clients`; logged at most once a minute.
fn refuse_full(state: &AppState) -> Response {
    static LOGGED: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
    let max = state.board.config.max_clients;
    state.board.metrics.http_refused("clients_full");
    {
        let mut logged = LOGGED.lock().unwrap_or_else(|e| e.into_inner());
        if logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
            *logged = Some(Instant::now());
            tracing::warn!(
                max,
                "WebSocket clients at max_clients: refusing new ones (logged once a minute)"
            );
        }
    }
    let mut response = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_clients",
        format!("siprelay takes at most {max} WebSocket clients at once (max_clients)"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    response
}

/// Runs one client connection to its end.
pub async fn serve<S, R, E>(
    state: AppState,
    dialect: Dialect,
    offers: OfferFilter,
    sink: S,
    stream: R,
) where
    S: Sink<Message> + Unpin + Send + 'static,
    R: Stream<Item = Result<Message, E>> + Unpin,
{
    let (client, queue) = state.board.connect_client(dialect, offers);
    tracing::info!(client = client.id, ?dialect, "client connected");
    let writer = tokio::spawn(write_loop(sink, queue, client.clone()));
    let mut connection = Connection::new(state.board.clone(), state.dialer.clone(), client.clone());
    read_loop(&mut connection, stream).await;
    state.board.disconnect_client(client.id);
    client.closing.cancel();
    let _ = writer.await;
    tracing::info!(
        client = client.id,
        frames_dropped = client.frames_dropped(),
        "client disconnected"
    );
}

async fn read_loop<R, E>(connection: &mut Connection, mut stream: R)
where
    R: Stream<Item = Result<Message, E>> + Unpin,
{
    // One future for the whole loop: a new one per message would register
    // and unregister a waiter under the token's lock every time.
    let closing = connection.client().closing.clone().cancelled_owned();
    tokio::pin!(closing);
    let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let mut heard = tokio::time::Instant::now();
    loop {
        let message = tokio::select! {
            m = stream.next() => m,
            _ = &mut closing => return,
            _ = pings.tick() => {
                // A peer gone without a FIN (a half-open connection) would
                // otherwise hold its socket and its offers for ever.
                if heard.elapsed() >= PING_EVERY * 3 {
                    connection.client().close_with(1001, "no answer to pings");
                    return;
                }
                connection.client().send_ping();
                continue;
            }
        };
        heard = tokio::time::Instant::now();
        match message {
            Some(Ok(Message::Text(text))) => connection.handle_text(text.as_str()).await,
            Some(Ok(Message::Binary(_))) => {
                let e = ProtocolError::bad_request(
                    "binary frames are not part of protocol v1; send text",
                );
                connection.client().send_event(&Event::Error(&e));
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
        }
    }
}

pub(super) async fn write_loop<S>(
    mut sink: S,
    mut queue: mpsc::Receiver<Outgoing>,
    client: Arc<ClientHandle>,
) where
    S: Sink<Message> + Unpin,
{
    let closing = client.closing.clone().cancelled_owned();
    tokio::pin!(closing);
    loop {
        let first = tokio::select! {
            biased;
            _ = &mut closing => break,
            Some(m) = queue.recv() => m,
        };
        if sink.feed(text(&client, first)).await.is_err() {
            return;
        }
        for _ in 1..WRITE_BATCH {
            let Ok(next) = queue.try_recv() else { break };
            if sink.feed(text(&client, next)).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    // Control events already queued (a final BYE, say) still go out.
    while let Ok(m) = queue.try_recv() {
        if let Outgoing::Control(_) = m {
            if sink.feed(text(&client, m)).await.is_err() {
                return;
            }
        }
    }
    let (code, reason) = client.close_reason();
    let close = CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    };
    let _ = sink.send(Message::Close(Some(close))).await;
    let _ = sink.close().await;
}

fn text(client: &ClientHandle, message: Outgoing) -> Message {
    client.dequeued(&message);
    match message {
        Outgoing::Control(t) | Outgoing::Audio(t) => Message::Text(Utf8Bytes::from(t)),
        Outgoing::DeviceAudio(frame) => Message::Binary(frame.into()),
        Outgoing::Ping => Message::Ping(Default::default()),
    }
}
