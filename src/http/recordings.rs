//! `/recordings`: list, fetch (with HTTP Range, so browsers can seek),
//! and delete call recordings, plus the review page.
//!
//! # Routes
//! ```text
//! GET    /recordings?from=&to=&number=&limit=   JSON list, newest first
//! GET    /recordings/{id}                       the sidecar (JSON)
//! GET    /recordings/{id}.wav                   the audio; Range: bytes=...
//! DELETE /recordings/{id}                       204; 409 while recording
//! GET    /  and  /recordings/ui                 the review page
//! ```
//! Errors are JSON: `{"error": {"code": "...", "message": "..."}}`.

use std::io::SeekFrom;
use std::path::PathBuf;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::clock_time::compact_from_text;
use crate::record::store::{ListFilter, Listed};
use crate::record::{RecordingId, Sidecar, Store};

const REVIEW_PAGE: &str = include_str!("review.html");
/// Most recordings one list returns.
const MAX_LIMIT: usize = 1000;

pub async fn review_page() -> Html<&'static str> {
    Html(REVIEW_PAGE)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListParams {
    /// Calls that started at or after this: `2026-11-23` or `2026-11-23T10:15:00Z`.
    from: Option<String>,
    /// Calls that started at or before this (a date includes the whole day).
    to: Option<String>,
    /// Part of the caller's or callee's number.
    number: Option<String>,
    /// At most this many (1 to 1000; 100 if absent).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// The shape of a recording id: `YYYYMMDDTHHMMSSZ_` and the call id.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RecordingPath {
    /// A recording id, as listed.
    #[param(
        pattern = "^[0-9]{8}T[0-9]{6}Z_[0-9a-f]{16}$",
        example = "20261123T101500Z_5f3a9c0d12e40001"
    )]
    #[allow(dead_code)]
    id: String,
}

/// A recording as listed: its sidecar plus the WAV's size now.
#[derive(Debug, Serialize, ToSchema)]
pub struct Entry {
    #[serde(flatten)]
    sidecar: Sidecar,
    wav_bytes: u64,
}

impl From<Listed> for Entry {
    fn from(l: Listed) -> Self {
        Entry {
            sidecar: l.sidecar,
            wav_bytes: l.wav_bytes,
        }
    }
}

fn store(state: &AppState) -> Result<Store, ApiError> {
    state
        .board
        .recorder
        .as_ref()
        .map(|r| r.store.clone())
        .ok_or_else(|| ApiError::not_found("recording is off (--no-record)"))
}

/// Recordings, newest first, with their sidecars.
#[utoipa::path(get, path = "/recordings", tag = "recordings",
    params(ListParams),
    responses(
        (status = 200, body = [Entry]),
        (status = 400, description = "Bad filter", body = ErrorBody),
        (status = 404, description = "Recording is off", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<Entry>>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let store = store(&state)?;
    let time = |key: &str, v: &Option<String>| -> Result<Option<String>, ApiError> {
        match v.as_deref().filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(text) => compact_from_text(text).map(Some).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{key}: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ"
                ))
            }),
        }
    };
    let mut to = time("to", &params.to)?;
    if let (Some(t), Some(raw)) = (&mut to, &params.to) {
        if raw.len() == 10 {
            // A date as the upper bound includes that whole day.
            t.replace_range(9.., "235959");
        }
    }
    let limit = match params.limit.as_deref().filter(|s| !s.is_empty()) {
        None => 100,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit: expected 1 to {MAX_LIMIT}"
                )))
            }
        },
    };
    let filter = ListFilter {
        from: time("from", &params.from)?,
        to,
        number: params.number.filter(|n| !n.is_empty()),
        limit,
    };
    let listed = tokio::task::spawn_blocking(move || store.list(&filter))
        .await
        .map_err(|_| ApiError::internal("io", "listing failed"))?
        .map_err(io_error)?;
    Ok(Json(listed.into_iter().map(Entry::from).collect()))
}

fn io_error(e: std::io::Error) -> ApiError {
    if e.kind() == std::io::ErrorKind::NotFound {
        ApiError::not_found("no such recording")
    } else {
        tracing::warn!(error = %e, "recordings request failed");
        ApiError::internal("io", e.to_string())
    }
}

fn parse_id(text: &str) -> Result<RecordingId, ApiError> {
    RecordingId::parse(text).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// `GET /recordings/{id}` or `/recordings/{id}.wav`: one route, as the
/// router sees `{id}.wav` as one path segment.
pub async fn get(
    state: State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    match name.strip_suffix(".wav") {
        Some(id) => wav(state, id, &headers).await,
        None => sidecar(state, &name).await,
    }
}

/// The audio: stereo 16-bit 8 kHz WAV, far end left. One `Range` is honoured.
#[utoipa::path(get, path = "/recordings/{id}.wav", tag = "recordings",
    params(RecordingPath,
        ("range" = Option<String>, Header, description = "`bytes=START-END`, `bytes=START-` or `bytes=-SUFFIX`")),
    responses(
        (status = 200, description = "The whole file", content_type = "audio/wav", body = Vec<u8>),
        (status = 206, description = "The range asked for", content_type = "audio/wav", body = Vec<u8>),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No such recording, or recording is off", body = ErrorBody),
        (status = 416, description = "The range lies beyond the file"),
    ))]
async fn wav(
    State(state): State<AppState>,
    id: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let id = parse_id(id)?;
    serve_wav(store.wav_path(&id), headers).await
}

/// The sidecar: who called whom, when, how it ended.
#[utoipa::path(get, path = "/recordings/{id}", tag = "recordings",
    params(RecordingPath),
    responses(
        (status = 200, body = Entry),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No such recording, or recording is off", body = ErrorBody),
    ))]
async fn sidecar(State(state): State<AppState>, name: &str) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let id = parse_id(name)?;
    let listed = tokio::task::spawn_blocking(move || store.get(&id))
        .await
        .map_err(|_| ApiError::internal("io", "read failed"))?
        .map_err(io_error)?;
    Ok(Json(Entry::from(listed)).into_response())
}

/// Deletes a recording and its sidecar.
#[utoipa::path(delete, path = "/recordings/{id}", tag = "recordings",
    params(RecordingPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No such recording, or recording is off", body = ErrorBody),
        (status = 409, description = "The call is still being recorded", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let store = store(&state)?;
    let id = parse_id(&name)?;
    let sidecar_path = store.sidecar_path(&id);
    let sidecar = tokio::task::spawn_blocking(move || Sidecar::read(&sidecar_path))
        .await
        .map_err(|_| ApiError::internal("io", "read failed"))?;
    if let Ok(s) = &sidecar {
        if s.ended_at.is_none() && state.board.call(&s.call_id).is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "in_progress",
                "the call is still being recorded",
            ));
        }
    }
    tokio::task::spawn_blocking(move || store.delete(&id))
        .await
        .map_err(|_| ApiError::internal("io", "delete failed"))?
        .map_err(io_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum ByteRange {
    Whole,
    /// Inclusive bounds.
    Part(u64, u64),
    Unsatisfiable,
}

/// One `bytes=` range (RFC 9110 14.1.2). Several ranges, or a header this
/// does not understand, get the whole file, as the RFC allows.
pub fn parse_range(header: Option<&str>, len: u64) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return ByteRange::Whole;
    };
    if spec.contains(',') {
        return ByteRange::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Whole;
    };
    let number = |s: &str| s.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), number(first), number(last)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(n)) if n > 0 && len > 0 => ByteRange::Part(len.saturating_sub(n), len - 1),
        (true, _, _) => ByteRange::Unsatisfiable,
        (false, Some(start), _) if start >= len => ByteRange::Unsatisfiable,
        (false, Some(start), None) if last.trim().is_empty() => ByteRange::Part(start, len - 1),
        (false, Some(start), Some(end)) if end >= start => ByteRange::Part(start, end.min(len - 1)),
        _ => ByteRange::Whole,
    }
}

async fn serve_wav(path: PathBuf, headers: &HeaderMap) -> Result<Response, ApiError> {
    let mut file = tokio::fs::File::open(&path).await.map_err(io_error)?;
    let len = file.metadata().await.map_err(io_error)?.len();
    let range = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        len,
    );
    let (status, start, count) = match range {
        ByteRange::Whole => (StatusCode::OK, 0, len),
        ByteRange::Part(start, end) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        ByteRange::Unsatisfiable => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            )
                .into_response())
        }
    };
    file.seek(SeekFrom::Start(start)).await.map_err(io_error)?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file.take(count)));
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "audio/wav")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, count);
    if status == StatusCode::PARTIAL_CONTENT {
        response = response.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{len}", start + count - 1),
        );
    }
    response
        .body(body)
        .map_err(|e| ApiError::internal("io", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use ByteRange::*;
        assert_eq!(parse_range(None, 100), Whole);
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Part(0, 9));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Part(90, 99));
        assert_eq!(parse_range(Some("bytes=90-500"), 100), Part(90, 99));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Part(90, 99));
        assert_eq!(parse_range(Some("bytes=-500"), 100), Part(0, 99));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Whole);
        assert_eq!(parse_range(Some("bytes=9-3"), 100), Whole);
        assert_eq!(parse_range(Some("lines=1-2"), 100), Whole);
        assert_eq!(parse_range(Some("bytes=x-y"), 100), Whole);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
    }
}
