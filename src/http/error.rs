//! `ApiError`: every HTTP error siprelay's REST routes return, as a status
//! and a JSON body `{"error": {"code": "...", "message": "..."}}`.

use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code: `bad_request`, `not_found`,
    /// `wrong_state`, `no_ports`, `payload_too_large`, `io`, ...
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn wrong_state(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "wrong_state", message)
    }

    pub fn internal(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, code, message)
    }

    /// A status from the prompt library or the text protocol (400, 404,
    /// 409, 415, 503, ...) with its message.
    pub fn from_status(status: u16, message: impl Into<String>) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code = match status.as_u16() {
            400 => "bad_request",
            403 => "forbidden",
            404 => "not_found",
            409 => "wrong_state",
            413 => "payload_too_large",
            415 => "unsupported_media_type",
            503 => "unavailable",
            _ => "internal",
        };
        Self::new(status, code, message)
    }
}

/// A request body that could not be read (too large, cut short).
impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        Self::from_status(r.status().as_u16(), r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// A JSON request body: `Content-Type: application/json` (so that no web
/// page can post one with a form or `text/plain` from another origin), at
/// most the router's body limit. An empty body is `{}`, whatever its type.
pub struct JsonBody<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim())
            .is_some_and(|v| v.eq_ignore_ascii_case("application/json"));
        let bytes = axum::body::Bytes::from_request(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return serde_json::from_slice(b"{}")
                .map(JsonBody)
                .map_err(|e| ApiError::bad_request(format!("body: {e}")));
        }
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "a body must be JSON with Content-Type: application/json",
            ));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("body: {e}")))
    }
}
