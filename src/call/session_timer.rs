//! Session timers (RFC 4028), pure: what to answer to a `Session-Expires`,
//! and when to refresh the session or give it up. Time comes in as an
//! argument, so hours of refreshes are tested in microseconds.
//!
//! `refresher=uac|uas` names a side of the transaction that carried it
//! (the INVITE, UPDATE or re-INVITE), not of the dialog; [`SessionTimer`]
//! turns that into "we refresh" or "they refresh" once.

use std::time::{Duration, Instant};

/// What siprelay asks for on its own INVITEs (RFC 4028's recommendation).
pub const DEFAULT_SESSION_EXPIRES: u32 = 1800;
/// The shortest interval siprelay accepts (RFC 4028's floor).
pub const MIN_SE: u32 = 90;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    Uac,
    Uas,
}

/// A `Session-Expires` header: `1800;refresher=uac`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpires {
    pub seconds: u32,
    pub refresher: Option<Refresher>,
}

impl SessionExpires {
    pub fn parse(text: &str) -> Option<SessionExpires> {
        let mut parts = text.split(';');
        let seconds = parts.next()?.trim().parse().ok()?;
        let mut refresher = None;
        for p in parts {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            if name.trim().eq_ignore_ascii_case("refresher") {
                refresher = match value.trim().to_ascii_lowercase().as_str() {
                    "uac" => Some(Refresher::Uac),
                    "uas" => Some(Refresher::Uas),
                    _ => None,
                };
            }
        }
        Some(SessionExpires { seconds, refresher })
    }

    pub fn header_value(&self) -> String {
        match self.refresher {
            Some(Refresher::Uac) => format!("{};refresher=uac", self.seconds),
            Some(Refresher::Uas) => format!("{};refresher=uas", self.seconds),
            None => self.seconds.to_string(),
        }
    }
}

/// How siprelay answers a request that may carry `Session-Expires`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// No session timer for this dialog.
    None,
    /// Put this `Session-Expires` in the 2xx (with `Require: timer` when
    /// `require`), and run `timer`.
    Timer {
        header: SessionExpires,
        require: bool,
        timer: SessionTimer,
    },
    /// 422 Session Interval Too Small, with `Min-SE: {0}`.
    TooSmall(u32),
}

/// What is due now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Send a refresh (re-INVITE or UPDATE) with this `Session-Expires`.
    Refresh(SessionExpires),
    /// The far end stopped refreshing: end the call with BYE.
    Expired,
}

/// The session timer of one dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTimer {
    interval: u32,
    we_refresh: bool,
    /// When [`SessionTimer::handle_timeout`] acts next.
    next: Instant,
}

impl SessionTimer {
    fn new(now: Instant, interval: u32, we_refresh: bool) -> SessionTimer {
        let mut t = SessionTimer {
            interval,
            we_refresh,
            next: now,
        };
        t.restart(now);
        t
    }

    /// We refresh halfway through; they are given until 32 s (or a third
    /// of the interval, if shorter) before the end (RFC 4028 section 10).
    fn restart(&mut self, now: Instant) {
        let interval = Duration::from_secs(u64::from(self.interval));
        self.next = if self.we_refresh {
            now + interval / 2
        } else {
            now + interval - (interval / 3).min(Duration::from_secs(32))
        };
    }

    /// As the callee: the answer to an INVITE (or a refresh) from the far
    /// end, which sent `requested` and `Min-SE: min_se`, and supports
    /// timers when `supported`. `ours` is the smallest interval siprelay takes.
    pub fn answer(
        now: Instant,
        requested: Option<SessionExpires>,
        min_se: Option<u32>,
        supported: bool,
        ours: u32,
    ) -> Answer {
        let Some(requested) = requested else {
            return Answer::None;
        };
        if requested.seconds < ours {
            return Answer::TooSmall(ours.max(min_se.unwrap_or(0)));
        }
        // A far end that supports timers refreshes unless it asked us to;
        // one that does not (a proxy added the header) cannot, so we do.
        let refresher = match (requested.refresher, supported) {
            (Some(r), true) => r,
            (_, false) => Refresher::Uas,
            (None, true) => Refresher::Uac,
        };
        let header = SessionExpires {
            seconds: requested.seconds,
            refresher: Some(refresher),
        };
        Answer::Timer {
            header,
            require: supported,
            timer: SessionTimer::new(now, requested.seconds, refresher == Refresher::Uas),
        }
    }

    /// As the caller: the timer a 2xx to our INVITE (or refresh) set up;
    /// an interval below `floor` is raised to it. A 2xx without
    /// `Session-Expires` leaves the dialog without one.
    pub fn accepted(
        now: Instant,
        answered: Option<SessionExpires>,
        floor: u32,
    ) -> Option<SessionTimer> {
        let se = answered?;
        // A UAS that names no refresher leaves it to us (RFC 4028 section 7.2).
        let we_refresh = se.refresher != Some(Refresher::Uas);
        Some(SessionTimer::new(now, se.seconds.max(floor), we_refresh))
    }

    /// Whether siprelay is the refresher.
    pub fn we_refresh(&self) -> bool {
        self.we_refresh
    }

    pub fn interval(&self) -> u32 {
        self.interval
    }

    pub fn poll_timeout(&self) -> Instant {
        self.next
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Option<Due> {
        if now < self.next {
            return None;
        }
        if self.we_refresh {
            // Until the refresh is answered, ask again at the next half.
            self.restart(now);
            Some(Due::Refresh(SessionExpires {
                seconds: self.interval,
                refresher: Some(Refresher::Uac),
            }))
        } else {
            Some(Due::Expired)
        }
    }

    /// A refresh went through: the interval runs again from `now`, with
    /// the roles and interval this timer now has.
    pub fn refreshed(&mut self, now: Instant, timer: SessionTimer) {
        *self = SessionTimer { next: now, ..timer };
        self.restart(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn se(text: &str) -> Option<SessionExpires> {
        SessionExpires::parse(text)
    }

    #[test]
    fn parses_and_writes_the_header() {
        assert_eq!(
            se("1800;refresher=uac"),
            Some(SessionExpires {
                seconds: 1800,
                refresher: Some(Refresher::Uac)
            })
        );
        assert_eq!(
            se(" 90 ; REFRESHER = UAS").unwrap().refresher,
            Some(Refresher::Uas)
        );
        assert_eq!(se("600").unwrap().refresher, None);
        assert_eq!(se("soon"), None);
        assert_eq!(
            se("1800;refresher=uas").unwrap().header_value(),
            "1800;refresher=uas"
        );
    }

    #[test]
    fn the_callee_answers_with_the_interval_and_the_refresher() {
        let now = Instant::now();
        assert_eq!(
            SessionTimer::answer(now, None, None, true, MIN_SE),
            Answer::None
        );
        assert_eq!(
            SessionTimer::answer(now, se("60"), Some(60), true, MIN_SE),
            Answer::TooSmall(90)
        );
        match SessionTimer::answer(now, se("1800"), Some(90), true, MIN_SE) {
            Answer::Timer {
                header,
                require,
                timer,
            } => {
                assert_eq!(header.header_value(), "1800;refresher=uac");
                assert!(require);
                assert!(!timer.we_refresh());
                // They refresh: we wait until 32 s before the end.
                assert_eq!(timer.poll_timeout(), now + 1768 * S);
            }
            other => panic!("{other:?}"),
        }
        // A far end without timer support: we refresh, without Require.
        match SessionTimer::answer(now, se("600;refresher=uac"), None, false, MIN_SE) {
            Answer::Timer {
                header,
                require,
                timer,
            } => {
                assert_eq!(header.header_value(), "600;refresher=uas");
                assert!(!require);
                assert!(timer.we_refresh());
                assert_eq!(timer.poll_timeout(), now + 300 * S);
            }
            other => panic!("{other:?}"),
        }
        match SessionTimer::answer(now, se("120;refresher=uas"), None, true, MIN_SE) {
            Answer::Timer { timer, .. } => assert!(timer.we_refresh()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_hour_of_our_refreshes_then_theirs_stopping() {
        let t0 = Instant::now();
        let mut timer = SessionTimer::accepted(t0, se("120;refresher=uac"), MIN_SE).unwrap();
        assert!(timer.we_refresh());
        let mut now = t0;
        let mut refreshes = 0;
        while now < t0 + 3600 * S {
            now = timer.poll_timeout();
            match timer.handle_timeout(now) {
                Some(Due::Refresh(header)) => {
                    assert_eq!(header.header_value(), "120;refresher=uac");
                    refreshes += 1;
                    // The far end answers the refresh at once.
                    let renewed = SessionTimer::accepted(now, Some(header), MIN_SE).unwrap();
                    timer.refreshed(now, renewed);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(refreshes, 60, "every 60 s for an hour");

        // The far end refreshes; when it stops, the session expires.
        let mut theirs = SessionTimer::accepted(t0, se("120;refresher=uas"), MIN_SE).unwrap();
        assert_eq!(theirs.handle_timeout(t0 + 50 * S), None);
        let renewed = SessionTimer::accepted(t0 + 50 * S, se("120;refresher=uas"), MIN_SE).unwrap();
        theirs.refreshed(t0 + 50 * S, renewed);
        assert_eq!(theirs.poll_timeout(), t0 + 50 * S + 88 * S);
        assert_eq!(theirs.handle_timeout(t0 + 137 * S), None);
        assert_eq!(theirs.handle_timeout(t0 + 138 * S), Some(Due::Expired));
    }

    #[test]
    fn an_unanswered_refresh_is_tried_again_at_the_next_half() {
        let t0 = Instant::now();
        let mut timer = SessionTimer::accepted(t0, se("100"), MIN_SE).unwrap();
        assert!(
            timer.we_refresh(),
            "no refresher named: the caller refreshes"
        );
        assert!(matches!(
            timer.handle_timeout(t0 + 50 * S),
            Some(Due::Refresh(_))
        ));
        assert_eq!(timer.poll_timeout(), t0 + 100 * S);
    }

    #[test]
    fn a_short_interval_from_a_peer_is_raised_to_the_floor() {
        let t0 = Instant::now();
        let timer = SessionTimer::accepted(t0, se("30;refresher=uac"), MIN_SE).unwrap();
        assert_eq!(timer.interval(), MIN_SE);
    }
}
