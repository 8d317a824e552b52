//! What every HTTP and WebSocket request passes before anything else: the
//! cross-site check (a web page in the user's browser must not drive the
//! API, and a rebinding DNS name must not read it) and the token check,
//! with failures counted, logged once a minute per address and slowed down
//! per address.
//!
//! The decisions are pure ([`SiteGuard::check`], [`Failures`]); the
//! middleware around them is [`guard`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;

use super::auth::{token_matches, unauthorized};
use super::error::ApiError;
use crate::switchboard::Switchboard;

/// The names and addresses the daemon answers to, and the web origins
/// allowed to call it.
#[derive(Debug, Clone)]
pub struct SiteGuard {
    /// `host:port`, lower case.
    hosts: Vec<String>,
    /// Extra names, any port (`allowed_hosts`).
    names: Vec<String>,
    /// `scheme://host[:port]`, lower case (`allowed_origins`).
    origins: Vec<String>,
}

/// Why a request was refused before it reached a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Host,
    Origin,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Host => "host",
            Refusal::Origin => "origin",
        }
    }
}

/// `host` of `host:port` or `[v6]:port`, and the port (80 when absent).
fn split_authority(authority: &str) -> (String, u16) {
    let a = authority.trim().to_ascii_lowercase();
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, tail)) => (format!("[{h}]"), tail.strip_prefix(':').map(str::to_string)),
            None => (a.clone(), None),
        }
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p.to_string())),
            None => (a.clone(), None),
        }
    };
    let port = port.and_then(|p| p.parse().ok()).unwrap_or(80);
    (host, port)
}

impl SiteGuard {
    /// The daemon at `listen`, written into SDP as `advertised`, also named
    /// `hostname` (the machine's), plus the configured extras.
    pub fn new(
        listen: SocketAddr,
        advertised: IpAddr,
        hostname: Option<&str>,
        allowed_hosts: &[String],
        allowed_origins: &[String],
    ) -> SiteGuard {
        let port = listen.port();
        let mut names: Vec<String> = Vec::new();
        let ip_name = |ip: IpAddr| match ip {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        };
        if !listen.ip().is_unspecified() {
            names.push(ip_name(listen.ip()));
        }
        names.push(ip_name(advertised));
        if listen.ip().is_loopback() || listen.ip().is_unspecified() {
            names.extend(["127.0.0.1", "localhost", "[::1]"].map(String::from));
        }
        names.extend(hostname.map(str::to_ascii_lowercase));
        SiteGuard {
            hosts: names.iter().map(|n| format!("{n}:{port}")).collect(),
            names: allowed_hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect(),
            origins: allowed_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    fn host_ok(&self, authority: &str) -> bool {
        let (host, port) = split_authority(authority);
        self.hosts.contains(&format!("{host}:{port}")) || self.names.contains(&host)
    }

    /// Whether a request with these `Host` and `Origin` headers may pass.
    /// Either may be absent (a client that is not a browser); a browser
    /// always sends Host, and Origin on every cross-site request that
    /// could change something or open a WebSocket.
    pub fn check(&self, host: Option<&str>, origin: Option<&str>) -> Result<(), Refusal> {
        if let Some(host) = host {
            if !self.host_ok(host) {
                return Err(Refusal::Host);
            }
        }
        if let Some(origin) = origin {
            let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
            if self.origins.contains(&origin) {
                return Ok(());
            }
            let same_site = ["http://", "https://"]
                .iter()
                .find_map(|scheme| origin.strip_prefix(scheme))
                .is_some_and(|authority| self.host_ok(authority));
            if !same_site {
                return Err(Refusal::Origin);
            }
        }
        Ok(())
    }
}

/// Requests refused per source address: each refusal in a row waits
/// longer before it is answered (100 ms doubling to 3.2 s), so guessing a
/// token is slow; and each address is logged once a minute at most.
#[derive(Debug, Default)]
pub struct Failures {
    by_source: DashMap<IpAddr, Strikes>,
}

#[derive(Debug, Clone, Copy)]
struct Strikes {
    count: u32,
    last: Instant,
    logged: Option<Instant>,
}

/// Refusals older than this are forgotten.
const MEMORY: Duration = Duration::from_secs(60);
/// Addresses remembered at most; older ones are dropped first.
const MAX_SOURCES: usize = 4096;

impl Failures {
    /// A refusal from `source` at `now`: how long to wait before answering
    /// it, and whether to log it.
    pub fn strike(&self, source: IpAddr, now: Instant) -> (Duration, bool) {
        if self.by_source.len() >= MAX_SOURCES {
            self.by_source
                .retain(|_, s| now.duration_since(s.last) < MEMORY);
            if self.by_source.len() >= MAX_SOURCES {
                self.by_source.clear();
            }
        }
        let mut entry = self.by_source.entry(source).or_insert(Strikes {
            count: 0,
            last: now,
            logged: None,
        });
        let s = entry.value_mut();
        if now.duration_since(s.last) >= MEMORY {
            s.count = 0;
        }
        s.count = s.count.saturating_add(1);
        s.last = now;
        let log = s.logged.is_none_or(|at| now.duration_since(at) >= MEMORY);
        if log {
            s.logged = Some(now);
        }
        let delay = Duration::from_millis(100) * (1u32 << (s.count - 1).min(5));
        (delay, log)
    }

    /// A request from `source` passed: its refusals are forgotten.
    pub fn forgive(&self, source: IpAddr) {
        if !self.by_source.is_empty() {
            self.by_source.remove(&source);
        }
    }
}

/// The guard's state, shared by every request.
#[derive(Clone)]
pub struct Guard {
    pub site: Arc<SiteGuard>,
    pub token: Option<String>,
    pub failures: Arc<Failures>,
    pub board: Arc<Switchboard>,
}

impl Guard {
    /// For a daemon whose HTTP listener is bound at `bound`.
    pub fn new(board: Arc<Switchboard>, bound: SocketAddr) -> Guard {
        let c = &board.config;
        let site = SiteGuard::new(
            bound,
            c.advertised_ip,
            hostname().as_deref(),
            &c.allowed_hosts,
            &c.allowed_origins,
        );
        Guard {
            site: Arc::new(site),
            token: c.api_token.clone(),
            failures: Arc::default(),
            board,
        }
    }
}

/// The middleware: the site check on every route, the token check unless
/// `token_exempt` (devices present their own tokens).
pub async fn guard(
    State((guard, token_exempt)): State<(Guard, bool)>,
    request: Request,
    next: Next,
) -> Response {
    let source = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let headers: &HeaderMap = request.headers();
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
    };
    let refused = match guard
        .site
        .check(header(header::HOST), header(header::ORIGIN))
    {
        Err(why) => Some((why.as_str(), forbidden(why))),
        Ok(()) => match &guard.token {
            Some(token) if !token_exempt && !token_matches(headers, request.uri(), token) => {
                Some(("token", unauthorized("missing or wrong token")))
            }
            _ => None,
        },
    };
    let path = request.uri().path().to_string();
    let (why, response) = match refused {
        Some(refusal) => refusal,
        // Devices check their own tokens: a 401 from the handler is a
        // wrong token as much as one refused here.
        None if token_exempt => {
            let response = next.run(request).await;
            if response.status() != StatusCode::UNAUTHORIZED {
                if let Some(source) = source {
                    guard.failures.forgive(source);
                }
                return response;
            }
            ("device_token", response)
        }
        None => {
            if let Some(source) = source {
                guard.failures.forgive(source);
            }
            return next.run(request).await;
        }
    };
    guard.board.metrics.http_refused(why);
    if let Some(source) = source {
        let (delay, log) = guard.failures.strike(source, Instant::now());
        if log {
            tracing::warn!(%source, why, %path, "HTTP request refused (logged once a minute per address)");
        }
        tokio::time::sleep(delay).await;
    }
    response
}

fn forbidden(why: Refusal) -> Response {
    let message = match why {
        Refusal::Host => "Host is not this daemon's name or address (see allowed_hosts)",
        Refusal::Origin => "Origin is not allowed (see allowed_origins)",
    };
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message).into_response()
}

/// The machine's host name, for the names the daemon answers to.
pub fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    std::str::from_utf8(&buf[..end])
        .ok()
        .map(str::to_string)
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> SiteGuard {
        SiteGuard::new(
            "127.0.0.1:8080".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
            Some("relay-box"),
            &["siprelay.example.net".into()],
            &["https://app.example.com".into()],
        )
    }

    #[test]
    fn the_daemons_own_names_pass_and_rebound_names_do_not() {
        let g = guard();
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST:8080",
            "[::1]:8080",
            "relay-box:8080",
            "siprelay.example.net",
            "siprelay.example.net:443",
        ] {
            assert_eq!(g.check(Some(host), None), Ok(()), "{host}");
        }
        for host in [
            "evil.example:8080",
            "evil.example",
            "127.0.0.1:9999",
            "localhost",
        ] {
            assert_eq!(g.check(Some(host), None), Err(Refusal::Host), "{host}");
        }
        assert_eq!(g.check(None, None), Ok(()), "no Host: not a browser");
    }

    #[test]
    fn cross_site_origins_are_refused() {
        let g = guard();
        let host = Some("127.0.0.1:8080");
        for origin in [
            "http://127.0.0.1:8080",
            "http://localhost:8080/",
            "https://app.example.com",
        ] {
            assert_eq!(g.check(host, Some(origin)), Ok(()), "{origin}");
        }
        for origin in [
            "http://evil.example",
            "null",
            "http://127.0.0.1:3000",
            "https://app.example.com.evil",
            "file://",
        ] {
            assert_eq!(
                g.check(host, Some(origin)),
                Err(Refusal::Origin),
                "{origin}"
            );
        }
    }

    #[test]
    fn a_wildcard_listener_answers_to_its_advertised_address() {
        let g = SiteGuard::new(
            "0.0.0.0:8080".parse().unwrap(),
            "192.0.2.10".parse().unwrap(),
            None,
            &[],
            &[],
        );
        assert_eq!(
            g.check(Some("192.0.2.10:8080"), Some("http://192.0.2.10:8080")),
            Ok(())
        );
        assert_eq!(g.check(Some("0.0.0.0:8080"), None), Err(Refusal::Host));
    }

    #[test]
    fn repeated_refusals_wait_longer_and_log_once_a_minute() {
        let f = Failures::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        let delays: Vec<(u128, bool)> = (0..8)
            .map(|i| {
                let (d, log) = f.strike(ip, t0 + Duration::from_millis(i));
                (d.as_millis(), log)
            })
            .collect();
        assert_eq!(
            delays,
            [
                (100, true),
                (200, false),
                (400, false),
                (800, false),
                (1600, false),
                (3200, false),
                (3200, false),
                (3200, false)
            ]
        );
        // Another address is its own; a minute later the count starts over.
        assert_eq!(
            f.strike("192.0.2.2".parse().unwrap(), t0),
            (Duration::from_millis(100), true)
        );
        assert_eq!(
            f.strike(ip, t0 + MEMORY + Duration::from_secs(1)),
            (Duration::from_millis(100), true)
        );
        f.forgive(ip);
        assert_eq!(f.strike(ip, t0 + MEMORY * 2).0, Duration::from_millis(100));
    }

    #[test]
    fn the_table_of_sources_stays_bounded() {
        let f = Failures::default();
        let t0 = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 100) {
            f.strike(IpAddr::V4(i.into()), t0);
        }
        assert!(f.by_source.len() <= MAX_SOURCES);
    }
}
