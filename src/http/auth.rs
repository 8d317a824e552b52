//! The token check: `Authorization: Bearer TOKEN` or `?token=TOKEN`, a 401
//! (a JSON error) otherwise, before any WebSocket upgrade. With no token
//! configured (allowed only on a loopback listener, see
//! `Config::check_access`) everything passes. `guard.rs` applies it to the
//! API; devices present their own tokens the same way (`device.rs`).

use axum::extract::Query;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ApiError;

#[derive(Deserialize)]
struct TokenParam {
    token: Option<String>,
}

/// Whether the request presents `expected`: as `Authorization: Bearer`, or
/// else as `?token=` (percent-decoded like any query value).
pub(super) fn token_matches(headers: &HeaderMap, uri: &Uri, expected: &str) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let presented = bearer.or_else(|| {
        Query::<TokenParam>::try_from_uri(uri)
            .ok()
            .and_then(|Query(p)| p.token)
    });
    presented.is_some_and(|p| constant_time_eq(p.as_bytes(), expected.as_bytes()))
}

/// 401 with a JSON error body and the `WWW-Authenticate` challenge.
pub(super) fn unauthorized(message: &'static str) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, "Bearer".parse().unwrap());
    r
}

/// Compares without an early exit, so response timing does not reveal how
/// much of a guessed token was right.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }

    #[test]
    fn the_token_comes_from_the_header_or_the_decoded_query() {
        let mut headers = HeaderMap::new();
        let uri: Uri = "/calls?x=1&token=a%2Bb".parse().unwrap();
        assert!(token_matches(&headers, &uri, "a+b"));
        assert!(!token_matches(&headers, &uri, "a%2Bb"));
        headers.insert(header::AUTHORIZATION, "Bearer other".parse().unwrap());
        assert!(!token_matches(&headers, &uri, "a+b"), "the header wins");
        assert!(token_matches(&headers, &"/calls".parse().unwrap(), "other"));
        assert!(!token_matches(
            &HeaderMap::new(),
            &"/calls".parse().unwrap(),
            "a+b"
        ));
    }
}
