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

use super::AppState;
use crate::record::clock_time::compact_from_text;
use crate::record::store::{ListFilter, Listed};
use crate::record::{RecordingId, Sidecar, Store};

const REVIEW_PAGE: &str = include_str!("review.html");
/// Most recordings one list returns.
const MAX_LIMIT: usize = 1000;

pub async fn review_page() -> Html<&'static str> {
    Html(REVIEW_PAGE)
}

/// An HTTP error with a JSON body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn io(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::NotFound {
            Self::not_found("no such recording")
        } else {
            tracing::warn!(error = %e, "recordings request failed");
            Self::new(StatusCode::INTERNAL_SERVER_ERROR, "io", e.to_string())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    from: Option<String>,
    to: Option<String>,
    number: Option<String>,
    limit: Option<String>,
}

/// A recording as listed: its sidecar plus the WAV's size now.
#[derive(Debug, Serialize)]
struct Entry {
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

pub async fn list(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
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
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "io", "listing failed"))?
        .map_err(ApiError::io)?;
    Ok(Json(
        listed
            .into_iter()
            .map(|l| serde_json::to_value(Entry::from(l)).unwrap_or_default())
            .collect(),
    ))
}

fn parse_id(text: &str) -> Result<RecordingId, ApiError> {
    RecordingId::parse(text).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// `GET /recordings/{id}` or `/recordings/{id}.wav`.
pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    if let Some(id) = name.strip_suffix(".wav") {
        let id = parse_id(id)?;
        return serve_wav(store.wav_path(&id), &headers).await;
    }
    let id = parse_id(&name)?;
    let listed = tokio::task::spawn_blocking(move || store.get(&id))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "io", "read failed"))?
        .map_err(ApiError::io)?;
    Ok(Json(Entry::from(listed)).into_response())
}

pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let store = store(&state)?;
    let id = parse_id(&name)?;
    let sidecar_path = store.sidecar_path(&id);
    let sidecar = tokio::task::spawn_blocking(move || Sidecar::read(&sidecar_path))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "io", "read failed"))?;
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
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "io", "delete failed"))?
        .map_err(ApiError::io)?;
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
    let mut file = tokio::fs::File::open(&path).await.map_err(ApiError::io)?;
    let len = file.metadata().await.map_err(ApiError::io)?.len();
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
    file.seek(SeekFrom::Start(start))
        .await
        .map_err(ApiError::io)?;
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
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "io", e.to_string()))
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
