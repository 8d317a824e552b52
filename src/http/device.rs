//! `/device/{id}`: the WebSocket of a hardware endpoint, and `GET /devices`.
//!
//! A device authenticates with its own token (`Authorization: Bearer` or
//! `?token=`), checked before the upgrade: a wrong token or an unknown id
//! is 401. A second connection with the same id replaces the first, which
//! is closed with code 4000. Text frames carry the same verbs as `/ws`
//! (plus `HELLO:{json}`); binary frames are the device's audio, 20 ms each
//! in its configured format. siprelay pings every `device_ping_interval`;
//! a device silent for two intervals is closed (4001) and offline.
//! See `protocol/DEVICE.md`.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::{token_matches, unauthorized};
use super::connection::Connection;
use super::error::ErrorBody;
use super::ws::write_loop;
use super::AppState;
use crate::client::ClientId;
use crate::clock_time::Utc;
use crate::devices::registry::DeviceSlot;
use crate::wire::{Event, ProtocolError};

/// Largest frame a device may send: a `HELLO` or one command.
const MAX_DEVICE_FRAME: usize = 16 * 1024;
/// Largest `HELLO` document kept.
const MAX_HELLO: usize = 4 * 1024;

/// Close codes a device may see.
pub const CLOSE_REPLACED: u16 = 4000;
pub const CLOSE_SILENT: u16 = 4001;

pub async fn upgrade(
    State(state): State<AppState>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    const REFUSED: &str = "unknown device or wrong token";
    let Some(slot) = state.board.devices.get(&id) else {
        return unauthorized(REFUSED);
    };
    if !token_matches(&headers, &uri, &slot.config.token) {
        return unauthorized(REFUSED);
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => return e.into_response(),
    };
    ws.max_message_size(MAX_DEVICE_FRAME)
        .on_upgrade(move |socket: WebSocket| async move {
            let (sink, stream) = socket.split();
            serve(state, slot, sink, stream).await
        })
}

/// Runs one device connection to its end.
pub async fn serve<S, R, E>(state: AppState, slot: Arc<DeviceSlot>, sink: S, mut stream: R)
where
    S: futures_util::Sink<Message> + Unpin + Send + 'static,
    R: Stream<Item = Result<Message, E>> + Unpin,
{
    let board = state.board.clone();
    let id = slot.config.id.clone();
    let (client, queue) = board.connect_device(&slot.config);
    // The call of an earlier connection, replaced now or dropped within the
    // grace window, goes on on this one.
    let earlier = match slot.connect(client.clone()) {
        Some(old) => {
            tracing::info!(device = %id, "device reconnected; the older connection is closed");
            old.close_with(
                CLOSE_REPLACED,
                "replaced by a newer connection of this device",
            );
            Some(old.id)
        }
        None => {
            tracing::info!(device = %id, client = client.id, "device online");
            board.device_presence(&id, true);
            slot.take_orphan()
        }
    };
    let writer = tokio::spawn(write_loop(sink, queue, client.clone()));
    let mut connection = Connection::new(board.clone(), state.dialer.clone(), client.clone());
    for call in earlier
        .map(|old| board.adopt_calls(old, &client))
        .unwrap_or_default()
    {
        tracing::info!(device = %id, call = %call.id, "device resumed its call");
        connection.own(&call);
        if call.phase() == crate::call::state::Phase::Connected {
            client.send_event(&Event::CallAns {
                call: call.id.as_str(),
            });
        }
    }

    let interval = board.config.device_ping_interval;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let mut last_heard = tokio::time::Instant::now();
    let closing = client.closing.clone().cancelled_owned();
    tokio::pin!(closing);
    loop {
        let message = tokio::select! {
            m = stream.next() => m,
            _ = &mut closing => break,
            _ = ping.tick() => {
                if last_heard.elapsed() >= interval * 2 {
                    tracing::info!(device = %id, "device silent for two ping intervals; closing");
                    client.close_with(CLOSE_SILENT, "no answer to pings");
                    break;
                }
                client.send_ping();
                continue;
            }
        };
        last_heard = tokio::time::Instant::now();
        match message {
            Some(Ok(Message::Binary(frame))) => connection.handle_device_audio(&frame),
            Some(Ok(Message::Text(text))) => match text.as_str().strip_prefix("HELLO:") {
                Some(json) => hello(&slot, &client, json),
                None => connection.handle_text(text.as_str()).await,
            },
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
        }
    }
    board.release_client(client.id);
    if slot.disconnect(client.id) {
        tracing::info!(device = %id, "device offline");
        board.device_presence(&id, false);
        if board.call_of(&client).is_some() {
            wait_for_return(board.clone(), slot.clone(), client.id);
        }
    }
    client.closing.cancel();
    let _ = writer.await;
}

/// A device dropped in a call (a Wi-Fi blip): its call goes on, unheard,
/// for the grace window, and is hung up if no new connection took it over.
fn wait_for_return(
    board: Arc<crate::switchboard::Switchboard>,
    slot: Arc<DeviceSlot>,
    client: ClientId,
) {
    slot.set_orphan(client);
    let grace = board.config.device_reconnect_grace;
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        if slot.take_orphan_if(client) {
            tracing::info!(device = %slot.config.id, ?grace, "device did not come back for its call; hanging up");
            board.hang_up_calls_of(client);
            board.refuse_offers_to(client);
        }
    });
}

/// `HELLO:{json}`: what the firmware tells of itself (version, RSSI, ...),
/// shown by `GET /devices`.
fn hello(slot: &DeviceSlot, client: &crate::client::ClientHandle, json: &str) {
    let parsed = if json.len() > MAX_HELLO {
        Err(ProtocolError::new(
            413,
            format!("HELLO of {} bytes exceeds {MAX_HELLO}", json.len()),
        ))
    } else {
        serde_json::from_str::<serde_json::Value>(json)
            .ok()
            .filter(serde_json::Value::is_object)
            .ok_or_else(|| ProtocolError::bad_request("HELLO: expected a JSON object"))
    };
    match parsed {
        Ok(info) => slot.set_info(info),
        Err(e) => client.send_event(&Event::Error(&e)),
    }
}

/// A device as `GET /devices` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceView {
    pub id: String,
    pub extension: String,
    /// `pcmu`, `pcma` or `l16`.
    pub format: &'static str,
    pub online: bool,
    /// When it came online (or went offline); null if never seen.
    pub since: Option<String>,
    /// The call it is in, or is offered, if any.
    pub call: Option<String>,
    /// What the device said in its last `HELLO`.
    #[schema(value_type = Option<Object>)]
    pub info: Option<serde_json::Value>,
}

/// Every configured device and its presence.
#[utoipa::path(get, path = "/devices", tag = "devices",
    responses(
        (status = 200, body = [DeviceView]),
        (status = 401, description = "Token", body = ErrorBody),
    ))]
pub async fn list(State(state): State<AppState>) -> Json<Vec<DeviceView>> {
    let board = &state.board;
    let views = board
        .devices
        .all()
        .iter()
        .map(|slot| {
            let client = slot.client();
            let call = client.as_ref().and_then(|c| board.call_of(c));
            DeviceView {
                id: slot.config.id.clone(),
                extension: slot.config.extension.clone(),
                format: slot.config.format.name(),
                online: client.is_some(),
                since: slot
                    .since()
                    .map(|t: SystemTime| Utc::from_system(t).rfc3339()),
                call,
                info: slot.info(),
            }
        })
        .collect();
    Json(views)
}
