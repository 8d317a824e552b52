//! What the daemon shows of its accounts: one [`AccountStatus`] per account
//! for `GET /accounts`, and the `REG` event sent when it changes. The
//! registration tasks write it; readers get copies. A password is never
//! part of it.

use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

use super::policy::{RegState, RegistrationPolicy};
use super::AccountConfig;
use crate::clock_time::Utc;

/// One account as `GET /accounts` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AccountStatus {
    pub name: String,
    /// The address of record, `sip:{username}@{domain}`.
    pub aor: String,
    pub state: RegState,
    /// Seconds of registration the registrar granted, while registered.
    pub expires: Option<u32>,
    /// The status of the last final response to a REGISTER.
    pub last_status: Option<u16>,
    /// Why the last attempt failed, while failed.
    pub last_error: Option<String>,
    /// When the current registration was first granted (UTC, RFC 3339).
    pub registered_at: Option<String>,
}

/// Every account's status, in config order.
#[derive(Debug, Default)]
pub struct AccountBook {
    accounts: Mutex<Vec<AccountStatus>>,
}

impl AccountBook {
    pub fn new(accounts: &[AccountConfig]) -> AccountBook {
        let statuses = accounts
            .iter()
            .map(|a| AccountStatus {
                name: a.name.clone(),
                aor: a.aor(),
                state: if a.register {
                    RegState::Registering
                } else {
                    RegState::Unregistered
                },
                expires: None,
                last_status: None,
                last_error: None,
                registered_at: None,
            })
            .collect();
        AccountBook {
            accounts: Mutex::new(statuses),
        }
    }

    pub fn all(&self) -> Vec<AccountStatus> {
        self.lock().clone()
    }

    pub fn get(&self, name: &str) -> Option<AccountStatus> {
        self.lock().iter().find(|a| a.name == name).cloned()
    }

    /// Copies what `policy` says of account `name` in; the new status.
    pub fn update(
        &self,
        name: &str,
        policy: &RegistrationPolicy,
        now: SystemTime,
    ) -> Option<AccountStatus> {
        let mut accounts = self.lock();
        let status = accounts.iter_mut().find(|a| a.name == name)?;
        let was_registered = status.state == RegState::Registered;
        status.state = policy.state();
        status.expires = policy.granted();
        status.last_status = policy.last_status();
        status.last_error = policy.last_error().map(str::to_string);
        status.registered_at = match (policy.state(), was_registered) {
            (RegState::Registered, true) => status.registered_at.take(),
            (RegState::Registered, false) => Some(Utc::from_system(now).rfc3339()),
            _ => None,
        };
        Some(status.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<AccountStatus>> {
        self.accounts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::accounts::policy::Outcome;

    #[test]
    fn status_follows_the_policy_and_keeps_the_first_grant_time() {
        let mut trunk = crate::accounts::example("trunk", "acme");
        trunk.register = false;
        let book = AccountBook::new(&[crate::accounts::example("office", "2000"), trunk]);
        assert_eq!(book.get("office").unwrap().state, RegState::Registering);
        assert_eq!(book.get("trunk").unwrap().state, RegState::Unregistered);

        let t0 = Instant::now();
        let w0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut p = RegistrationPolicy::new(t0, 300);
        p.handle_timeout(t0);
        p.handle_outcome(t0, Outcome::Granted { expires: 120 });
        let s = book.update("office", &p, w0).unwrap();
        assert_eq!(
            (s.state, s.expires, s.last_status),
            (RegState::Registered, Some(120), Some(200))
        );
        let first = s.registered_at.clone().unwrap();
        assert!(first.starts_with("2027-01-15T08:00:00"), "{first}");
        // A refresh keeps the time of the first grant.
        p.handle_timeout(t0 + Duration::from_secs(90));
        p.handle_outcome(
            t0 + Duration::from_secs(90),
            Outcome::Granted { expires: 120 },
        );
        let s = book
            .update("office", &p, w0 + Duration::from_secs(90))
            .unwrap();
        assert_eq!(s.registered_at.as_deref(), Some(first.as_str()));

        p.handle_timeout(t0 + Duration::from_secs(180));
        p.handle_outcome(
            t0 + Duration::from_secs(180),
            Outcome::Rejected {
                status: 403,
                reason: "Forbidden".into(),
                challenged: true,
            },
        );
        let s = book.update("office", &p, w0).unwrap();
        assert_eq!(
            (s.state, s.last_status, s.expires),
            (RegState::Failed, Some(403), None)
        );
        assert_eq!(
            s.last_error.as_deref(),
            Some("Forbidden (wrong credentials?)")
        );
        assert_eq!(s.registered_at, None);
        let json = serde_json::to_value(book.get("office").unwrap()).unwrap();
        assert_eq!(json["state"], "failed");
        assert_eq!(json["aor"], "sip:2000@pbx.example.net");
        assert!(!json.to_string().contains("pw-of-office"));
    }
}
