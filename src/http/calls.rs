//! `/calls`: the session manager over REST, for curl and scripts.
//!
//! # Routes
//! ```text
//! POST   /calls                  {"to", "play"?, "hangup_after_play"?, "record"?} → 201
//! GET    /calls                  every call now
//! GET    /calls/{id}             one call
//! POST   /calls/{id}/answer      an offered incoming call; body as for POST /calls, less "to"
//! POST   /calls/{id}/reject      {"status": 486}; 486 if no body
//! POST   /calls/{id}/hangup      (or DELETE /calls/{id}); an offered call is rejected with 486
//! POST   /calls/{id}/play        {"name", "hangup_after_play"?}
//! POST   /calls/{id}/dtmf        {"digits"}
//! ```
//!
//! A call placed or answered here has no WebSocket owner: it plays what it
//! was asked to, sends silence otherwise, is recorded like any call, and
//! its events go to `GET /events`. Calls owned by WebSocket clients can be
//! looked at, hung up and played to as well.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody, JsonBody};
use super::AppState;
use crate::call::state::{Direction, Phase};
use crate::call::{Call, Control, Script};
use crate::clock_time::Utc;
use crate::switchboard::{DialError, Switchboard, API_OWNER};

/// `POST /calls`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceCall {
    /// A number (dialled through the default SIP account, or sent to
    /// `--sip-server`) or a `sip:` URI.
    #[schema(min_length = 1, max_length = 256, example = "1002")]
    pub to: String,
    /// The SIP account to dial through, by name.
    #[schema(example = "office")]
    pub account: Option<String>,
    /// A WAV file in the assets directory, played once the call connects.
    #[schema(example = "greeting.wav")]
    pub play: Option<String>,
    /// Hang up once `play` has played to its end.
    #[serde(default)]
    pub hangup_after_play: bool,
    /// false: do not record this call. true: record it (an error if
    /// recording is off). Absent: as configured.
    pub record: Option<bool>,
}

/// `POST /calls/{id}/answer` (the body is optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerCall {
    pub play: Option<String>,
    #[serde(default)]
    pub hangup_after_play: bool,
    pub record: Option<bool>,
}

/// `POST /calls/{id}/reject` (the body is optional).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectCall {
    /// The SIP status sent to the caller: 4xx, 5xx or 6xx (not 401/407).
    #[schema(minimum = 400, maximum = 699, example = 603)]
    #[serde(default = "busy")]
    pub status: u16,
}

fn busy() -> u16 {
    486
}

/// `POST /calls/{id}/play`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlayFile {
    /// A WAV file in the assets directory.
    #[schema(example = "greeting.wav")]
    pub name: String,
    /// Hang up once it has played to its end.
    #[serde(default)]
    pub hangup_after_play: bool,
}

/// `POST /calls/{id}/dtmf`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendDtmf {
    /// 1 to 32 of 0-9, *, #, A-D.
    #[schema(example = "1234#")]
    pub digits: String,
}

/// A call as the session manager sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallView {
    pub id: String,
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    pub state: Phase,
    pub from: String,
    pub to: String,
    /// `PCMU` or `PCMA`, once connected.
    pub codec: Option<&'static str>,
    /// `api` (placed or answered over REST), `client-{n}` (a WebSocket
    /// client), or null while an incoming call is still offered.
    pub owner: Option<String>,
    pub started_at: String,
    pub answered_at: Option<String>,
    /// The INVITE's final SIP status, once there is one.
    pub sip_status: Option<u16>,
    /// The SIP account the call came in on or goes out through.
    pub account: Option<String>,
    pub rtp: RtpCounts,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RtpCounts {
    pub packets_in: u64,
    pub packets_out: u64,
    pub packets_lost: u64,
}

impl CallView {
    pub fn of(call: &Call) -> CallView {
        let rtp = call
            .media
            .get()
            .map(|m| m.stats.totals())
            .unwrap_or_default();
        CallView {
            id: call.id.to_string(),
            direction: call.direction.as_str(),
            state: call.phase(),
            from: call.from.clone(),
            to: call.to.clone(),
            codec: call.media.get().map(|m| m.codec.name()),
            owner: call.owner_id().map(|id| match id {
                API_OWNER => "api".to_string(),
                n => format!("client-{n}"),
            }),
            started_at: Utc::from_system(call.created).rfc3339(),
            answered_at: call.answered.get().map(|t| Utc::from_system(*t).rfc3339()),
            sip_status: call.sip_status(),
            account: call.account.clone(),
            rtp: RtpCounts {
                packets_in: rtp.packets_in,
                packets_out: rtp.packets_out,
                packets_lost: rtp.lost,
            },
        }
    }
}

/// The script a REST request asks for, with its file loaded and checked
/// before anything is dialled or answered.
async fn script(
    board: &Switchboard,
    play: Option<&str>,
    hangup_after_play: bool,
    record: Option<bool>,
) -> Result<Script, ApiError> {
    if record == Some(true) && board.recorder.is_none() {
        return Err(ApiError::wrong_state(
            "record: recording is off (--no-record)",
        ));
    }
    if hangup_after_play && play.is_none() {
        return Err(ApiError::bad_request(
            "hangup_after_play: there is nothing to play",
        ));
    }
    let play = match play {
        Some(name) => Some(
            board
                .load_prompt(name)
                .await
                .map_err(|(status, message)| ApiError::from_status(status, message))?,
        ),
        None => None,
    };
    Ok(Script {
        play,
        hangup_after_play,
        no_record: record == Some(false),
    })
}

fn find(board: &Switchboard, id: &str) -> Result<Arc<Call>, ApiError> {
    board.call(id).filter(|c| !c.is_ended()).ok_or_else(|| {
        ApiError::not_found(format!("no call {}", crate::wire::truncate_for_error(id)))
    })
}

fn control(call: &Call, request: Control) -> Result<(), ApiError> {
    call.control
        .try_send(request)
        .map_err(|_| ApiError::from_status(503, format!("call {} is busy or ended", call.id)))
}

fn connected(call: &Call) -> Result<&Arc<crate::media::session::MediaSession>, ApiError> {
    call.connected_media()
        .ok_or_else(|| ApiError::wrong_state(format!("call {} is not connected", call.id)))
}

/// An incoming call still waiting for an answer.
fn offered(board: &Switchboard, id: &str) -> Result<Arc<Call>, ApiError> {
    let call = find(board, id)?;
    if call.direction != Direction::Inbound || call.phase() != Phase::Offered {
        return Err(ApiError::wrong_state(format!(
            "call {id} is {}, not an offered incoming call",
            call.phase().as_str()
        )));
    }
    Ok(call)
}

/// Places a call.
#[utoipa::path(post, path = "/calls", tag = "calls",
    request_body = PlaceCall,
    responses(
        (status = 201, description = "The call is being placed", body = CallView,
            headers(("location" = String, description = "/calls/{id}"))),
        (status = 400, description = "Bad body or target", body = ErrorBody),
        (status = 404, description = "`play` names no file, or `account` no account", body = ErrorBody),
        (status = 409, description = "`record` asked while recording is off", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "`play` is not a WAV file, or the body is not `application/json`", body = ErrorBody),
        (status = 503, description = "No RTP port pair free", body = ErrorBody),
    ))]
pub async fn place(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<PlaceCall>,
) -> Result<Response, ApiError> {
    let to = req.to.trim();
    if to.is_empty() {
        return Err(ApiError::bad_request("to: expected a number or a sip: URI"));
    }
    let to = crate::wire::call::parse_target(to)
        .map_err(|e| ApiError::bad_request(format!("to: {}", e.message)))?;
    let account = match req.account.as_deref() {
        Some(name) => Some(
            crate::wire::call::parse_account(name)
                .map_err(|e| ApiError::bad_request(format!("account: {}", e.message)))?,
        ),
        None => None,
    };
    let board = &state.board;
    let script = script(
        board,
        req.play.as_deref(),
        req.hangup_after_play,
        req.record,
    )
    .await?;
    let call = match state.dialer.dial(board.api_owner(), to, account, script) {
        Ok(call) => call,
        Err(DialError::Refused(e)) => return Err(ApiError::from_status(e.code, e.message)),
        Err(DialError::NoPorts(_)) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_ports",
                "no RTP port pair free",
            ))
        }
    };
    let location = format!("/calls/{}", call.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(CallView::of(&call)),
    )
        .into_response())
}

/// Every call now, oldest first.
#[utoipa::path(get, path = "/calls", tag = "calls",
    responses((status = 200, body = [CallView])))]
pub async fn list(State(state): State<AppState>) -> Json<Vec<CallView>> {
    let mut calls: Vec<_> = state
        .board
        .calls()
        .into_iter()
        .filter(|c| !c.is_ended())
        .collect();
    calls.sort_by_key(|c| c.created);
    Json(calls.iter().map(|c| CallView::of(c)).collect())
}

/// One call.
#[utoipa::path(get, path = "/calls/{id}", tag = "calls",
    params(("id" = String, Path, description = "The call id")),
    responses(
        (status = 200, body = CallView),
        (status = 404, description = "No such call (or it has ended)", body = ErrorBody),
    ))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CallView>, ApiError> {
    let call = find(&state.board, &id)?;
    Ok(Json(CallView::of(&call)))
}

/// Answers an offered incoming call; it is owned by the API from then on.
#[utoipa::path(post, path = "/calls/{id}/answer", tag = "calls",
    params(("id" = String, Path, description = "The call id")),
    request_body(content = Option<AnswerCall>, description = "Optional"),
    responses(
        (status = 200, description = "Connected", body = CallView),
        (status = 400, description = "Bad body", body = ErrorBody),
        (status = 404, description = "No such call, or `play` names no file", body = ErrorBody),
        (status = 409, description = "The call is not an offered incoming call", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "`play` is not a WAV file, or the body is not `application/json`", body = ErrorBody),
        (status = 503, description = "The call is busy", body = ErrorBody),
    ))]
pub async fn answer(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<AnswerCall>,
) -> Result<Json<CallView>, ApiError> {
    let board = &state.board;
    let call = offered(board, &id)?;
    let script = script(
        board,
        req.play.as_deref(),
        req.hangup_after_play,
        req.record,
    )
    .await?;
    // Set before the answer: media starts inside the call's task.
    call.set_script(script);
    let (reply, answered) = oneshot::channel();
    control(
        &call,
        Control::Answer {
            client: board.api_owner(),
            reply,
        },
    )?;
    match tokio::time::timeout(Duration::from_secs(5), answered).await {
        Ok(Ok(Ok(()))) => Ok(Json(CallView::of(&call))),
        Ok(Ok(Err(e))) => Err(ApiError::from_status(e.code, e.message)),
        Ok(Err(_)) | Err(_) => Err(ApiError::wrong_state(format!(
            "call {id} ended before it was answered"
        ))),
    }
}

/// Rejects an offered incoming call with a SIP status.
#[utoipa::path(post, path = "/calls/{id}/reject", tag = "calls",
    params(("id" = String, Path, description = "The call id")),
    request_body(content = Option<RejectCall>, description = "Optional; status 486 without it"),
    responses(
        (status = 204, description = "Rejected"),
        (status = 400, description = "Bad body or status", body = ErrorBody),
        (status = 404, description = "No such call", body = ErrorBody),
        (status = 409, description = "The call is not an offered incoming call", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 503, description = "The call is busy", body = ErrorBody),
    ))]
pub async fn reject(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<RejectCall>,
) -> Result<StatusCode, ApiError> {
    if !(400..=699).contains(&req.status) || matches!(req.status, 401 | 407) {
        return Err(ApiError::bad_request(
            "status: expected a 4xx, 5xx or 6xx SIP status other than 401 and 407",
        ));
    }
    let call = offered(&state.board, &id)?;
    control(
        &call,
        Control::Reject {
            status: req.status,
            client: state.board.api_owner(),
        },
    )?;
    Ok(StatusCode::NO_CONTENT)
}

/// Hangs a call up (BYE, CANCEL, or 486 for an offered incoming call).
#[utoipa::path(post, path = "/calls/{id}/hangup", tag = "calls",
    params(("id" = String, Path, description = "The call id")),
    responses(
        (status = 204, description = "Hanging up"),
        (status = 404, description = "No such call", body = ErrorBody),
        (status = 503, description = "The call is busy", body = ErrorBody),
    ))]
pub async fn hangup(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let board = &state.board;
    let call = find(board, &id)?;
    let request = if call.direction == Direction::Inbound && call.phase() == Phase::Offered {
        Control::Reject {
            status: 486,
            client: board.api_owner(),
        }
    } else {
        Control::Hangup
    };
    control(&call, request)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The same as `POST /calls/{id}/hangup`.
#[utoipa::path(delete, path = "/calls/{id}", tag = "calls",
    params(("id" = String, Path, description = "The call id")),
    responses(
        (status = 204, description = "Hanging up"),
        (status = 404, description = "No such call", body = ErrorBody),
        (status = 503, description = "The call is busy", body = ErrorBody),
    ))]
pub async fn delete(state: State<AppState>, id: Path<String>) -> Result<StatusCode, ApiError> {
    hangup(state, id).await
}

/// Plays a WAV file from the assets directory into a connected call,
/// replacing whatever prompt plays; `PLAYED` follows on `GET /events`.
#[utoipa::path(post, path = "/calls/{id}/play", tag = "calls",
    params(("id" = String, Path, description = "The call id")),
    request_body = PlayFile,
    responses(
        (status = 204, description = "Playing"),
        (status = 400, description = "Bad body or file name", body = ErrorBody),
        (status = 404, description = "No such call or file", body = ErrorBody),
        (status = 409, description = "The call is not connected", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not a WAV file, or the body is not `application/json`", body = ErrorBody),
    ))]
pub async fn play(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<PlayFile>,
) -> Result<StatusCode, ApiError> {
    let board = &state.board;
    let call = find(board, &id)?;
    connected(&call)?;
    let prompt = board
        .load_prompt(&req.name)
        .await
        .map_err(|(status, message)| ApiError::from_status(status, message))?;
    // Loading took a while: the call may have ended meanwhile.
    let media = connected(&call)?;
    if req.hangup_after_play {
        call.set_hangup_after_play();
    }
    media.play(prompt, false);
    Ok(StatusCode::NO_CONTENT)
}

/// Sends DTMF digits into a connected call (RFC 4733 events, or in-band
/// tones when the far end did not negotiate them).
#[utoipa::path(post, path = "/calls/{id}/dtmf", tag = "calls",
    params(("id" = String, Path, description = "The call id")),
    request_body = SendDtmf,
    responses(
        (status = 204, description = "Queued"),
        (status = 400, description = "Bad body or digits", body = ErrorBody),
        (status = 404, description = "No such call", body = ErrorBody),
        (status = 409, description = "The call is not connected", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
    ))]
pub async fn dtmf(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<SendDtmf>,
) -> Result<StatusCode, ApiError> {
    let call = find(&state.board, &id)?;
    connected(&call)?
        .send_dtmf(&req.digits)
        .map_err(|e| ApiError::bad_request(format!("digits: {e}")))?;
    Ok(StatusCode::NO_CONTENT)
}
