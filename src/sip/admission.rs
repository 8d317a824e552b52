//! Who may reach SIP at all, decided before rsipstack parses a packet or
//! makes a transaction for it: an optional allow-list of source networks,
//! a per-source rate limit that ignores a flooding source for a while
//! (Kamailio's pike: 16 requests per 2 s, then 5 minutes of silence),
//! scanners' user agents, and a bound on live transactions.
//!
//! Sources in `trusted` (the accounts' registrars and proxies, loopback by
//! default) are never rate-limited: a PBX carrying a hundred calls sends
//! far more than 16 requests in 2 s.
//!
//! The decisions take the time as an argument and touch no socket, so the
//! tests walk through minutes of a flood in microseconds. What is refused
//! is counted by the caller and logged once per source per minute.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::config::values::Network;

/// Why a packet or request was dropped, as `siprelay_sip_refused_total`
/// labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The source is outside `sip_allow`.
    NotAllowed,
    /// The source sent too much and is being ignored.
    Flood,
    /// The User-Agent is a known scanner's.
    Scanner,
    /// Too many transactions are live, or too many sources are tracked.
    Busy,
    /// An INVITE over the cap on unconfirmed calls (see [`super::ringing`]).
    Ringing,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::NotAllowed => "not_allowed",
            Refusal::Flood => "flood",
            Refusal::Scanner => "scanner",
            Refusal::Busy => "busy",
            Refusal::Ringing => "ringing",
        }
    }
}

/// User agents of SIP scanners (SIPVicious's `svmap`/`svwar`, sipcli, and
/// their copies): dropped without an answer, so the scanner learns nothing.
const SCANNERS: [&str; 4] = ["friendly-scanner", "sipvicious", "sipcli", "sip-scan"];

#[derive(Debug, Clone)]
pub struct AdmissionPolicy {
    /// Empty: every source may send.
    pub allow: Vec<Network>,
    pub trusted: Vec<Network>,
    /// Requests a source may send per `window` before it is ignored.
    pub requests: u32,
    pub window: Duration,
    /// How long a flooding source is ignored.
    pub ban: Duration,
    /// Out-of-dialog requests are dropped while this many transactions live.
    pub max_transactions: usize,
}

/// A refusal to act on: `log` is set at most once per source per minute,
/// with the number of packets dropped since the last line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub refusal: Refusal,
    pub log: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Source {
    window_start: Instant,
    requests: u32,
    banned_until: Option<Instant>,
    logged_at: Option<Instant>,
    dropped_since_log: u64,
}

/// How often a source's refusals are logged.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Sources tracked at most: a flood from spoofed addresses cannot grow the
/// table past this; when it is full of live entries, new sources wait.
const MAX_SOURCES: usize = 65_536;

pub struct Admission {
    policy: AdmissionPolicy,
    sources: DashMap<IpAddr, Source>,
    last_sweep: Mutex<Option<Instant>>,
}

impl Admission {
    pub fn new(policy: AdmissionPolicy) -> Admission {
        Admission {
            policy,
            sources: DashMap::new(),
            last_sweep: Mutex::new(None),
        }
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.policy.trusted.iter().any(|n| n.contains(ip))
    }

    fn is_allowed(&self, ip: IpAddr) -> bool {
        self.policy.allow.is_empty() || self.policy.allow.iter().any(|n| n.contains(ip))
    }

    /// A packet or connection from `ip`, before it is parsed: refused when
    /// the source is not allowed or is being ignored. With `counted`, it
    /// also counts against the source's rate: each UDP packet and each new
    /// TCP or TLS connection does (stream transports count their messages
    /// in [`Self::on_request`]).
    pub fn on_packet(&self, ip: IpAddr, counted: bool, now: Instant) -> Result<(), Refused> {
        if !self.is_allowed(ip) {
            return Err(self.refuse(ip, Refusal::NotAllowed, now));
        }
        if self.is_trusted(ip) {
            return Ok(());
        }
        if counted {
            self.count(ip, now)
        } else if self.banned(ip, now) {
            Err(self.refuse(ip, Refusal::Flood, now))
        } else {
            Ok(())
        }
    }

    /// A parsed request from `ip`, before its transaction is made.
    /// `counted`: it has yet to count against the source's rate (it came
    /// over TCP or TLS). `out_of_dialog` requests (no To tag) are dropped
    /// while `transactions` are at the bound; in-dialog ones, a live call's
    /// BYE among them, are not.
    pub fn on_request(
        &self,
        ip: IpAddr,
        user_agent: Option<&str>,
        out_of_dialog: bool,
        transactions: usize,
        counted: bool,
        now: Instant,
    ) -> Result<(), Refused> {
        let trusted = self.is_trusted(ip);
        if !trusted {
            if user_agent.is_some_and(is_scanner) {
                self.ban(ip, now);
                return Err(self.refuse(ip, Refusal::Scanner, now));
            }
            if counted {
                self.count(ip, now)?;
            }
        }
        if out_of_dialog && transactions >= self.policy.max_transactions {
            return Err(self.refuse(ip, Refusal::Busy, now));
        }
        Ok(())
    }

    fn banned(&self, ip: IpAddr, now: Instant) -> bool {
        self.sources
            .get(&ip)
            .and_then(|s| s.banned_until)
            .is_some_and(|until| now < until)
    }

    fn ban(&self, ip: IpAddr, now: Instant) {
        if !self.sources.contains_key(&ip) && !self.room_for_one_more(now) {
            return;
        }
        self.sources
            .entry(ip)
            .or_insert_with(|| new_source(now))
            .banned_until = Some(now + self.policy.ban);
    }

    /// One more request from `ip`: refused when it is the one too many in
    /// its window (the source is then ignored for the ban) or the source
    /// is still being ignored.
    fn count(&self, ip: IpAddr, now: Instant) -> Result<(), Refused> {
        if !self.sources.contains_key(&ip) && !self.room_for_one_more(now) {
            return Err(Refused {
                refusal: Refusal::Busy,
                log: None,
            });
        }
        let policy = &self.policy;
        let mut entry = self.sources.entry(ip).or_insert_with(|| new_source(now));
        let s = entry.value_mut();
        match s.banned_until {
            Some(until) if now < until => {
                drop(entry);
                return Err(self.refuse(ip, Refusal::Flood, now));
            }
            Some(_) => {
                s.banned_until = None;
                s.window_start = now;
                s.requests = 0;
            }
            None => {}
        }
        if now.duration_since(s.window_start) >= policy.window {
            s.window_start = now;
            s.requests = 0;
        }
        s.requests += 1;
        if s.requests > policy.requests {
            s.banned_until = Some(now + policy.ban);
            drop(entry);
            return Err(self.refuse(ip, Refusal::Flood, now));
        }
        Ok(())
    }

    /// Whether a new source can be tracked: a full table is swept of the
    /// sources neither ignored nor inside their window, at most once a window.
    fn room_for_one_more(&self, now: Instant) -> bool {
        if self.sources.len() < MAX_SOURCES {
            return true;
        }
        let mut last = self.last_sweep.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| now.duration_since(at) < self.policy.window) {
            return false;
        }
        *last = Some(now);
        self.sources.retain(|_, s| self.is_live(s, now));
        self.sources.shrink_to_fit();
        self.sources.len() < MAX_SOURCES
    }

    fn is_live(&self, s: &Source, now: Instant) -> bool {
        s.banned_until.is_some_and(|until| now < until)
            || now.duration_since(s.window_start) < self.policy.window
            || s.logged_at
                .is_some_and(|at| now.duration_since(at) < LOG_EVERY)
    }

    /// Forgets the sources that are quiet and no longer ignored, giving
    /// back the memory a flood took. Called now and then.
    pub fn sweep(&self, now: Instant) {
        self.sources.retain(|_, s| self.is_live(s, now));
        self.sources.shrink_to_fit();
    }

    /// Sources tracked now.
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }

    /// Records a refusal of `ip` and decides whether to log it.
    pub fn refuse(&self, ip: IpAddr, refusal: Refusal, now: Instant) -> Refused {
        let Some(mut s) = self.sources.get_mut(&ip) else {
            // An untracked source (not allowed, or trusted but busy):
            // tracked for its log line only while there is room.
            if self.sources.len() >= MAX_SOURCES {
                return Refused { refusal, log: None };
            }
            self.sources.insert(
                ip,
                Source {
                    logged_at: Some(now),
                    ..new_source(now)
                },
            );
            return Refused {
                refusal,
                log: Some(1),
            };
        };
        s.dropped_since_log += 1;
        let due = s
            .logged_at
            .is_none_or(|at| now.duration_since(at) >= LOG_EVERY);
        let log = due.then(|| {
            s.logged_at = Some(now);
            std::mem::take(&mut s.dropped_since_log)
        });
        Refused { refusal, log }
    }
}

fn new_source(now: Instant) -> Source {
    Source {
        window_start: now,
        requests: 0,
        banned_until: None,
        logged_at: None,
        dropped_since_log: 0,
    }
}

fn is_scanner(user_agent: &str) -> bool {
    let ua = user_agent.to_ascii_lowercase();
    SCANNERS.iter().any(|s| ua.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AdmissionPolicy {
        AdmissionPolicy {
            allow: Vec::new(),
            trusted: vec!["127.0.0.1/32".parse().unwrap()],
            requests: 16,
            window: Duration::from_secs(2),
            ban: Duration::from_secs(300),
            max_transactions: 100,
        }
    }

    const STRANGER: &str = "192.0.2.7";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_over_its_rate_is_ignored_for_the_ban_then_heard_again() {
        let a = Admission::new(policy());
        let t0 = Instant::now();
        for i in 0..16 {
            let at = t0 + Duration::from_millis(i * 100);
            assert_eq!(a.on_packet(ip(STRANGER), true, at), Ok(()), "request {i}");
        }
        let over = a.on_packet(ip(STRANGER), true, t0 + Duration::from_millis(1700));
        assert_eq!(over.unwrap_err().refusal, Refusal::Flood);
        // Ignored for five minutes, even at a trickle and over any transport.
        for at in [10, 100, 299] {
            let at = t0 + Duration::from_secs(at);
            assert!(a.on_packet(ip(STRANGER), true, at).is_err());
            assert!(a.on_packet(ip(STRANGER), false, at).is_err());
        }
        let later = t0 + Duration::from_secs(302);
        assert_eq!(a.on_packet(ip(STRANGER), true, later), Ok(()));
    }

    #[test]
    fn requests_spread_over_windows_are_not_a_flood() {
        let a = Admission::new(policy());
        let t0 = Instant::now();
        // 8 a second for a minute: 16 per 2 s window, never more.
        for i in 0..480u64 {
            let at = t0 + Duration::from_millis(i * 125);
            assert_eq!(a.on_packet(ip(STRANGER), true, at), Ok(()), "request {i}");
        }
    }

    #[test]
    fn trusted_sources_are_never_rate_limited() {
        let a = Admission::new(policy());
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(a.on_packet(ip("127.0.0.1"), true, t0), Ok(()));
        }
        // The positive control: the same burst from loopback's next address.
        let refused = (0..10_000)
            .filter(|_| a.on_packet(ip("127.0.0.2"), true, t0).is_err())
            .count();
        assert_eq!(refused, 10_000 - 16);
    }

    #[test]
    fn only_allowed_networks_get_in() {
        let a = Admission::new(AdmissionPolicy {
            allow: vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            ..policy()
        });
        let now = Instant::now();
        assert_eq!(a.on_packet(ip("10.1.2.3"), true, now), Ok(()));
        assert_eq!(a.on_packet(ip("::1"), true, now), Ok(()));
        let refused = a.on_packet(ip("11.0.0.1"), true, now).unwrap_err();
        assert_eq!(refused.refusal, Refusal::NotAllowed);
        // Trust does not open the allow-list.
        assert!(a.on_packet(ip("127.0.0.1"), true, now).is_err());
    }

    #[test]
    fn scanners_are_dropped_and_then_ignored() {
        let a = Admission::new(policy());
        let now = Instant::now();
        let scan = a.on_request(ip(STRANGER), Some("friendly-scanner"), true, 0, true, now);
        assert_eq!(scan.unwrap_err().refusal, Refusal::Scanner);
        let sipvicious = a.on_request(ip("192.0.2.8"), Some("SIPVicious 0.3"), true, 0, true, now);
        assert!(sipvicious.is_err());
        // Whatever the scanner says next, it is not heard for the ban.
        let next = a.on_packet(ip(STRANGER), true, now + Duration::from_secs(1));
        assert_eq!(next.unwrap_err().refusal, Refusal::Flood);
        // A softphone is heard.
        let phone = a.on_request(ip("192.0.2.9"), Some("baresip v1.0"), true, 0, true, now);
        assert_eq!(phone, Ok(()));
    }

    #[test]
    fn new_transactions_wait_while_the_table_is_full_but_dialogs_go_on() {
        let a = Admission::new(policy());
        let now = Instant::now();
        let full = a.on_request(ip("127.0.0.1"), None, true, 100, false, now);
        assert_eq!(full.unwrap_err().refusal, Refusal::Busy);
        let bye = a.on_request(ip("127.0.0.1"), None, false, 100, false, now);
        assert_eq!(bye, Ok(()));
        let room = a.on_request(ip("127.0.0.1"), None, true, 99, false, now);
        assert_eq!(room, Ok(()));
    }

    #[test]
    fn a_flood_is_logged_once_a_minute_with_what_it_lost() {
        let a = Admission::new(policy());
        let t0 = Instant::now();
        let logs: Vec<(u64, u64)> = (0..1_500u64)
            .filter_map(|i| {
                let at = t0 + Duration::from_millis(i * 100);
                let refused = a.on_packet(ip(STRANGER), true, at).err()?;
                refused.log.map(|n| (i, n))
            })
            .collect();
        // 150 s of requests: the first refusal, then one line a minute
        // with the count since the last.
        assert_eq!(logs, vec![(16, 1), (616, 600), (1216, 600)]);
    }

    #[test]
    fn a_spoofed_flood_cannot_grow_the_table_past_its_bound_and_it_empties() {
        let a = Admission::new(policy());
        let t0 = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 1000) {
            let source = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = a.on_packet(source, true, t0);
        }
        assert_eq!(a.tracked(), MAX_SOURCES);
        a.sweep(t0 + Duration::from_secs(61));
        assert_eq!(a.tracked(), 0);
        // And the table takes sources again.
        let next = a.on_packet(ip(STRANGER), true, t0 + Duration::from_secs(62));
        assert_eq!(next, Ok(()));
    }
}
