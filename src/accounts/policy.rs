//! When an account REGISTERs, pure: outcomes go in with the time, the next
//! REGISTER's time and expiry come out. Never touches a socket or the
//! clock, so an hour of refreshes, outages and wrong passwords is tested in
//! microseconds.
//!
//! - registered: refresh at 3/4 of the lifetime the registrar granted
//!   (not the one asked for);
//! - a failure or an unreachable registrar: retry after 1 s, doubling to 60 s;
//! - rejected although credentials were sent (401, 403, 407: a wrong
//!   password) or any other refusal: only the slow path, every 60 s, so a
//!   misconfigured account never hammers its registrar;
//! - 423 Interval Too Brief: at once, asking for the registrar's
//!   `Min-Expires` from then on.

use std::time::{Duration, Instant};

/// First retry after a failure; doubled per failure up to [`SLOW_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between attempts, and the only retry for a refusal.
pub const SLOW_RETRY: Duration = Duration::from_secs(60);
/// The longest lifetime siprelay asks for, whatever `Min-Expires` says.
const MAX_EXPIRES: u32 = 86_400;

/// What an account's registration looks like from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RegState {
    /// A REGISTER is under way and the account is not registered yet.
    Registering,
    Registered,
    /// The last attempt failed; another follows after the backoff.
    Failed,
    /// Not registered, and not trying: `register = false`, or unregistered at shutdown.
    Unregistered,
}

impl RegState {
    pub fn as_str(self) -> &'static str {
        match self {
            RegState::Registering => "registering",
            RegState::Registered => "registered",
            RegState::Failed => "failed",
            RegState::Unregistered => "unregistered",
        }
    }
}

/// How one REGISTER ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: the registrar granted this many seconds.
    Granted { expires: u32 },
    /// A final refusal. `challenged` when it came although credentials had
    /// been sent (or there were none to send): the password is wrong.
    Rejected {
        status: u16,
        reason: String,
        challenged: bool,
    },
    /// 423 with the shortest lifetime the registrar accepts.
    IntervalTooBrief { min_expires: u32 },
    /// No final response: timeout, refused connection, unresolvable host.
    Unreachable { error: String },
}

/// The decision to send a REGISTER now, asking for this lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Register {
    pub expires: u32,
}

#[derive(Debug)]
pub struct RegistrationPolicy {
    state: RegState,
    expires: u32,
    /// When the next REGISTER is due; None while one is in flight or when stopped.
    next: Option<Instant>,
    in_flight: bool,
    failures: u32,
    granted: Option<u32>,
    last_status: Option<u16>,
    last_error: Option<String>,
}

impl RegistrationPolicy {
    /// An account that registers at once, asking for `expires` seconds.
    pub fn new(now: Instant, expires: u32) -> Self {
        RegistrationPolicy {
            state: RegState::Registering,
            expires,
            next: Some(now),
            in_flight: false,
            failures: 0,
            granted: None,
            last_status: None,
            last_error: None,
        }
    }

    pub fn state(&self) -> RegState {
        self.state
    }

    /// The lifetime the registrar granted, while registered.
    pub fn granted(&self) -> Option<u32> {
        self.granted.filter(|_| self.state == RegState::Registered)
    }

    /// The status of the last final response, if there was one.
    pub fn last_status(&self) -> Option<u16> {
        self.last_status
    }

    /// Why the last attempt failed, while failed.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error
            .as_deref()
            .filter(|_| self.state == RegState::Failed)
    }

    /// When [`RegistrationPolicy::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next.filter(|_| !self.in_flight)
    }

    /// A REGISTER to send, once it is due.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Register> {
        match self.poll_timeout() {
            Some(due) if now >= due => {
                self.in_flight = true;
                self.next = None;
                if self.state == RegState::Unregistered {
                    self.state = RegState::Registering;
                }
                Some(Register {
                    expires: self.expires,
                })
            }
            _ => None,
        }
    }

    /// The REGISTER sent by `handle_timeout` ended so. True when what the
    /// account shows (state, or the failure's status) changed.
    pub fn handle_outcome(&mut self, now: Instant, outcome: Outcome) -> bool {
        let before = (self.state, self.last_status);
        self.in_flight = false;
        match outcome {
            Outcome::Granted { expires } => {
                self.failures = 0;
                self.state = RegState::Registered;
                self.last_status = Some(200);
                self.last_error = None;
                // A grant of 0 would be no registration at all: refresh soon.
                let granted = expires.max(1);
                self.granted = Some(granted);
                self.next = Some(
                    now + Duration::from_millis(u64::from(granted) * 750)
                        .max(Duration::from_millis(500)),
                );
            }
            Outcome::IntervalTooBrief { min_expires } if min_expires > self.expires => {
                self.expires = min_expires.min(MAX_EXPIRES);
                self.last_status = Some(423);
                self.next = Some(now);
            }
            Outcome::IntervalTooBrief { .. } => {
                self.fail(423, "Interval Too Brief".into());
                self.next = Some(now + SLOW_RETRY);
            }
            Outcome::Rejected {
                status,
                reason,
                challenged,
            } => {
                let why = match (challenged, status) {
                    (true, 401 | 407) | (_, 403) => format!("{reason} (wrong credentials?)"),
                    _ => reason,
                };
                self.fail(status, why);
                // Retrying sooner would get the same answer.
                let transient = matches!(status, 408 | 480 | 500 | 503 | 504) && !challenged;
                let wait = if transient {
                    self.backoff()
                } else {
                    SLOW_RETRY
                };
                self.next = Some(now + wait);
            }
            Outcome::Unreachable { error } => {
                self.last_status = None;
                self.fail(0, error);
                self.next = Some(now + self.backoff());
            }
        }
        (self.state, self.last_status) != before
    }

    fn fail(&mut self, status: u16, why: String) {
        self.state = RegState::Failed;
        if status != 0 {
            self.last_status = Some(status);
        }
        self.last_error = Some(why);
        self.granted = None;
        self.failures = self.failures.saturating_add(1);
    }

    /// 1 s after the first failure, doubling, at most [`SLOW_RETRY`].
    fn backoff(&self) -> Duration {
        let doublings = self.failures.saturating_sub(1).min(6);
        (FIRST_RETRY * (1 << doublings)).min(SLOW_RETRY)
    }

    /// Stops refreshing (shutdown, after the `Expires: 0`): nothing is due any more.
    pub fn stop(&mut self) {
        self.state = RegState::Unregistered;
        self.next = None;
        self.in_flight = false;
        self.granted = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// Runs the policy against a registrar that answers each REGISTER with
    /// `answer(attempt, now)`, for `span` of simulated time: the times of
    /// the REGISTERs sent.
    fn run(
        policy: &mut RegistrationPolicy,
        t0: Instant,
        span: Duration,
        mut answer: impl FnMut(usize, Instant) -> Outcome,
    ) -> Vec<Duration> {
        let mut sent = Vec::new();
        while let Some(due) = policy.poll_timeout() {
            if due > t0 + span {
                break;
            }
            let reg = policy.handle_timeout(due).expect("due");
            assert!(reg.expires > 0);
            sent.push(due - t0);
            let outcome = answer(sent.len() - 1, due);
            policy.handle_outcome(due, outcome);
        }
        sent
    }

    #[test]
    fn registers_at_once_and_refreshes_on_the_granted_lifetime() {
        let t0 = Instant::now();
        let mut p = RegistrationPolicy::new(t0, 300);
        assert_eq!(p.poll_timeout(), Some(t0));
        assert_eq!(p.state(), RegState::Registering);
        // The registrar grants 60 s, not the 300 asked for.
        let sent = run(&mut p, t0, Duration::from_secs(3600), |_, _| {
            Outcome::Granted { expires: 60 }
        });
        assert_eq!(sent[0], Duration::ZERO);
        assert_eq!(sent[1], 45 * S, "refreshed at 3/4 of the grant");
        assert_eq!(
            sent.len(),
            1 + 3600 / 45,
            "an hour of refreshes, none missed"
        );
        assert!(sent.windows(2).all(|w| w[1] - w[0] == 45 * S));
        assert_eq!(p.state(), RegState::Registered);
        assert_eq!(p.granted(), Some(60));
    }

    #[test]
    fn an_unreachable_registrar_is_retried_with_doubling_backoff_never_spinning() {
        let t0 = Instant::now();
        let mut p = RegistrationPolicy::new(t0, 300);
        let sent = run(&mut p, t0, Duration::from_secs(600), |_, _| {
            Outcome::Unreachable {
                error: "connection refused".into(),
            }
        });
        let gaps: Vec<u64> = sent.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
        assert_eq!(&gaps[..7], &[1, 2, 4, 8, 16, 32, 60]);
        assert!(gaps[7..].iter().all(|g| *g == 60), "{gaps:?}");
        assert_eq!(p.state(), RegState::Failed);
        assert_eq!(p.last_error(), Some("connection refused"));
    }

    #[test]
    fn the_registrar_coming_back_resets_the_backoff() {
        let t0 = Instant::now();
        let mut p = RegistrationPolicy::new(t0, 120);
        // Down for the first 20 s, then up.
        let sent = run(&mut p, t0, Duration::from_secs(200), |_, now| {
            if now < t0 + 20 * S {
                Outcome::Unreachable {
                    error: "timeout".into(),
                }
            } else {
                Outcome::Granted { expires: 120 }
            }
        });
        let secs: Vec<u64> = sent.iter().map(|d| d.as_secs()).collect();
        // 0, 1, 3, 7, 15 fail; 31 succeeds; refreshed every 90 s after.
        assert_eq!(secs, [0, 1, 3, 7, 15, 31, 121]);
        assert_eq!(p.state(), RegState::Registered);
    }

    #[test]
    fn a_wrong_password_is_retried_only_on_the_slow_path() {
        let t0 = Instant::now();
        let mut p = RegistrationPolicy::new(t0, 300);
        p.handle_timeout(t0).unwrap();
        let changed = p.handle_outcome(
            t0,
            Outcome::Rejected {
                status: 401,
                reason: "Unauthorized".into(),
                challenged: true,
            },
        );
        assert!(changed);
        assert_eq!(p.state(), RegState::Failed);
        assert_eq!(p.last_status(), Some(401));
        assert!(p.last_error().unwrap().contains("wrong credentials"));
        assert_eq!(p.poll_timeout(), Some(t0 + SLOW_RETRY));
        let sent = run(&mut p, t0, Duration::from_secs(600), |_, _| {
            Outcome::Rejected {
                status: 403,
                reason: "Forbidden".into(),
                challenged: true,
            }
        });
        assert_eq!(sent.len(), 10, "one attempt a minute: {sent:?}");
    }

    #[test]
    fn interval_too_brief_asks_again_at_once_with_min_expires() {
        let t0 = Instant::now();
        let mut p = RegistrationPolicy::new(t0, 30);
        assert_eq!(p.handle_timeout(t0), Some(Register { expires: 30 }));
        p.handle_outcome(t0, Outcome::IntervalTooBrief { min_expires: 600 });
        assert_eq!(p.handle_timeout(t0), Some(Register { expires: 600 }));
        // A registrar that keeps saying 423 to what it asked for is not looped on.
        p.handle_outcome(t0, Outcome::IntervalTooBrief { min_expires: 600 });
        assert_eq!(p.state(), RegState::Failed);
        assert_eq!(p.poll_timeout(), Some(t0 + SLOW_RETRY));
    }

    #[test]
    fn nothing_is_due_while_a_register_is_in_flight_or_after_stop() {
        let t0 = Instant::now();
        let mut p = RegistrationPolicy::new(t0, 300);
        assert!(p.handle_timeout(t0).is_some());
        assert_eq!(p.poll_timeout(), None);
        assert_eq!(p.handle_timeout(t0 + 10 * S), None);
        p.handle_outcome(t0 + S, Outcome::Granted { expires: 300 });
        assert!(p.poll_timeout().is_some());
        p.stop();
        assert_eq!(p.state(), RegState::Unregistered);
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn only_changes_are_reported() {
        let t0 = Instant::now();
        let mut p = RegistrationPolicy::new(t0, 300);
        p.handle_timeout(t0);
        assert!(p.handle_outcome(t0, Outcome::Granted { expires: 300 }));
        p.handle_timeout(t0 + 225 * S);
        assert!(
            !p.handle_outcome(t0 + 225 * S, Outcome::Granted { expires: 300 }),
            "a refresh is no news"
        );
        p.handle_timeout(t0 + 450 * S);
        assert!(p.handle_outcome(t0 + 450 * S, Outcome::Unreachable { error: "x".into() }));
        p.handle_timeout(t0 + 451 * S);
        assert!(!p.handle_outcome(t0 + 451 * S, Outcome::Unreachable { error: "x".into() }));
        p.handle_timeout(t0 + 453 * S);
        assert!(p.handle_outcome(
            t0 + 453 * S,
            Outcome::Rejected {
                status: 503,
                reason: "Service Unavailable".into(),
                challenged: false
            }
        ));
    }
}
