//! The settings that decide who may reach SIP and how much: resolved from
//! [`Settings`] into [`SipProtection`], which the SIP shell turns into its
//! admission policy.

use std::time::Duration;

use serde::Serialize;

use super::{invalid, seconds, ConfigError, Network, Settings};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SipProtection {
    /// Empty: any source.
    pub allow: Vec<Network>,
    /// Never rate-limited (the accounts' servers are added at start).
    pub trusted: Vec<Network>,
    pub flood_requests: u32,
    #[serde(serialize_with = "seconds")]
    pub flood_window: Duration,
    #[serde(serialize_with = "seconds")]
    pub flood_ban: Duration,
    pub max_transactions: usize,
    /// Incoming calls from untrusted sources not yet confirmed by an ACK.
    pub max_ringing: usize,
    pub max_ringing_per_source: usize,
}

impl Default for SipProtection {
    fn default() -> Self {
        SipProtection {
            allow: Vec::new(),
            trusted: vec![
                "127.0.0.1/32".parse().expect("a network"),
                "::1/128".parse().expect("a network"),
            ],
            // Kamailio's pike defaults.
            flood_requests: 16,
            flood_window: Duration::from_secs(2),
            flood_ban: Duration::from_secs(300),
            max_transactions: 10_000,
            max_ringing: 100,
            max_ringing_per_source: 8,
        }
    }
}

impl SipProtection {
    pub(super) fn from_settings(s: &Settings) -> Result<SipProtection, ConfigError> {
        let d = SipProtection::default();
        let at_least_one = |key: &'static str, v: Option<u64>| match v {
            Some(0) => Err(invalid(key, "0", "must be at least 1")),
            _ => Ok(v),
        };
        let flood_requests =
            at_least_one("sip_flood_requests", s.sip_flood_requests.map(u64::from))?;
        let window = at_least_one("sip_flood_window", s.sip_flood_window)?;
        let ban = at_least_one("sip_flood_ban", s.sip_flood_ban)?;
        let transactions = at_least_one(
            "sip_max_transactions",
            s.sip_max_transactions.map(|v| v as u64),
        )?;
        let ringing = at_least_one("max_ringing_calls", s.max_ringing_calls.map(|v| v as u64))?;
        let per_source = at_least_one(
            "max_ringing_per_source",
            s.max_ringing_per_source.map(|v| v as u64),
        )?;
        Ok(SipProtection {
            allow: s.sip_allow.clone().unwrap_or(d.allow),
            trusted: s.sip_trusted.clone().unwrap_or(d.trusted),
            flood_requests: flood_requests.map_or(d.flood_requests, |v| v as u32),
            flood_window: window.map_or(d.flood_window, Duration::from_secs),
            flood_ban: ban.map_or(d.flood_ban, Duration::from_secs),
            max_transactions: transactions.map_or(d.max_transactions, |v| v as usize),
            max_ringing: ringing.map_or(d.max_ringing, |v| v as usize),
            max_ringing_per_source: per_source.map_or(d.max_ringing_per_source, |v| v as usize),
        })
    }
}
