//! SIP accounts: siprelay as a user of a PBX or a provider. Pure parts: the
//! configured accounts (this file) and the registration policy that decides
//! when to REGISTER again ([`policy`]). The SIP side that sends the
//! REGISTERs is `sip/register.rs`; what the daemon shows of each account
//! (`GET /accounts`, `REG` events) is [`status`].

pub mod policy;
pub mod status;

use serde::{Deserialize, Serialize};

use crate::config::values::{HostPort, Secret, SipTransport, SrtpMode};

/// One `[[accounts]]` entry.
///
/// ```toml
/// [[accounts]]
/// name = "office"                 # how commands, events and the API name it
/// username = "2000"
/// password = "secret"
/// domain = "pbx.example.net"      # the AOR's host and the default realm
/// registrar = "10.0.0.5:5060"     # default: the domain
/// transport = "udp"               # or "tcp", "tls"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub name: String,
    pub username: String,
    pub password: Secret,
    pub domain: String,
    /// Where REGISTERs go, `HOST[:PORT]`; the domain when absent.
    #[serde(default)]
    pub registrar: Option<HostPort>,
    /// The user name for digest authentication when it differs from `username`.
    #[serde(default)]
    pub auth_username: Option<String>,
    /// Every request of the account goes here instead (an SBC or edge proxy).
    #[serde(default)]
    pub outbound_proxy: Option<HostPort>,
    #[serde(default)]
    pub transport: SipTransport,
    /// Seconds of registration asked for; the registrar's grant is what counts.
    #[serde(default = "default_expires")]
    pub expires: u32,
    /// False for a trunk that sends calls by IP and only needs credentials
    /// for calls siprelay places.
    #[serde(default = "yes")]
    pub register: bool,
    /// `CALL:{number}` without `##{account}` goes through this one (else the first).
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub srtp: SrtpMode,
    /// Seconds between keep-alives to the registrar (CRLF on TCP/TLS,
    /// OPTIONS on UDP), so a NAT binding stays open; none when absent.
    #[serde(default)]
    pub keepalive_interval: Option<u64>,
}

fn default_expires() -> u32 {
    300
}

fn yes() -> bool {
    true
}

impl AccountConfig {
    /// The address of record, `sip:{username}@{domain}`.
    pub fn aor(&self) -> String {
        format!("{}:{}@{}", self.scheme(), self.username, self.domain)
    }

    /// `sips` for an account on TLS, `sip` otherwise.
    pub fn scheme(&self) -> &'static str {
        match self.transport {
            SipTransport::Tls => "sips",
            _ => "sip",
        }
    }

    /// Where the account's requests are sent: the outbound proxy, else the
    /// registrar, else the domain; with the transport's default port.
    pub fn next_hop(&self) -> String {
        let fallback = || HostPort {
            host: self.domain.clone(),
            port: None,
        };
        let hop = self
            .outbound_proxy
            .clone()
            .or_else(|| self.registrar.clone())
            .unwrap_or_else(fallback);
        hop.with_default_port(self.transport.default_port())
    }

    /// The user name the digest response is computed for.
    pub fn auth_user(&self) -> &str {
        self.auth_username.as_deref().unwrap_or(&self.username)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountConfigError {
    #[error("account {0:?}: name must be 1 to 32 letters, digits, '-', '_' or '.'")]
    BadName(String),
    #[error("account {0}: username must be 1 to 64 characters a SIP URI's user part may hold")]
    BadUsername(String),
    #[error("account {0}: domain must be a host name or an IP address")]
    BadDomain(String),
    #[error("account {0}: password is empty")]
    NoPassword(String),
    #[error("account {0}: expires must be 1 to 86400 seconds")]
    BadExpires(String),
    #[error("account {0}: keepalive_interval must be 1 to 3600 seconds")]
    BadKeepalive(String),
    #[error("account {0}: srtp needs transport = \"tls\", since its keys travel in the SDP")]
    SrtpWithoutTls(String),
    #[error("accounts {0} and {1} share the name")]
    Duplicate(String, String),
    #[error("accounts {0} and {1} are both marked default")]
    TwoDefaults(String, String),
}

/// Characters RFC 3261's `user` production allows without escaping.
fn user_ok(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,;?/".contains(c))
}

/// Checks every entry, that names are unique and that at most one is the default.
pub fn validate(accounts: &[AccountConfig]) -> Result<(), AccountConfigError> {
    let name_ok = |s: &str| {
        (1..=32).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    for (i, a) in accounts.iter().enumerate() {
        let name = || a.name.clone();
        if !name_ok(&a.name) {
            return Err(AccountConfigError::BadName(name()));
        }
        if !user_ok(&a.username) || a.auth_username.as_deref().is_some_and(|u| !user_ok(u)) {
            return Err(AccountConfigError::BadUsername(name()));
        }
        if a.domain.parse::<HostPort>().map(|h| h.port).ok() != Some(None) {
            return Err(AccountConfigError::BadDomain(name()));
        }
        if a.password.is_empty() {
            return Err(AccountConfigError::NoPassword(name()));
        }
        if !(1..=86_400).contains(&a.expires) {
            return Err(AccountConfigError::BadExpires(name()));
        }
        if a.keepalive_interval
            .is_some_and(|k| !(1..=3600).contains(&k))
        {
            return Err(AccountConfigError::BadKeepalive(name()));
        }
        if a.srtp != SrtpMode::Off && a.transport != SipTransport::Tls {
            return Err(AccountConfigError::SrtpWithoutTls(name()));
        }
        for other in &accounts[..i] {
            if other.name == a.name {
                return Err(AccountConfigError::Duplicate(other.name.clone(), name()));
            }
            if other.default && a.default {
                return Err(AccountConfigError::TwoDefaults(other.name.clone(), name()));
            }
        }
    }
    Ok(())
}

/// The account `CALL:{number}` uses: the one marked default, else the first.
pub fn default_account(accounts: &[AccountConfig]) -> Option<&AccountConfig> {
    accounts.iter().find(|a| a.default).or(accounts.first())
}

/// The account an incoming INVITE is for. A registrar routes calls for an
/// AOR to the Contact siprelay registered, whose user part is the account's
/// username, so the Request-URI's user names the account (the To host tells
/// apart accounts that share a user name). A trunk that sends calls by IP
/// (`register = false`) is known by the address they come from: its
/// registrar, proxy or domain written as an IP address.
pub fn for_incoming<'a>(
    accounts: &'a [AccountConfig],
    request_user: &str,
    to_host: &str,
    source: std::net::IpAddr,
) -> Option<&'a AccountConfig> {
    let by_user: Vec<_> = accounts
        .iter()
        .filter(|a| a.username == request_user)
        .collect();
    match by_user.as_slice() {
        [one] => return Some(one),
        [] => {}
        several => {
            return several
                .iter()
                .find(|a| a.domain.eq_ignore_ascii_case(to_host))
                .or(several.first())
                .copied()
        }
    }
    accounts.iter().filter(|a| !a.register).find(|a| {
        let hosts = [a.outbound_proxy.as_ref(), a.registrar.as_ref()];
        hosts
            .iter()
            .flatten()
            .map(|h| h.host.as_str())
            .chain([a.domain.as_str()])
            .any(|h| h.parse::<std::net::IpAddr>() == Ok(source))
    })
}

#[cfg(test)]
pub(crate) fn example(name: &str, username: &str) -> AccountConfig {
    AccountConfig {
        name: name.into(),
        username: username.into(),
        password: Secret::new("pw-of-".to_string() + name),
        domain: "pbx.example.net".into(),
        registrar: None,
        auth_username: None,
        outbound_proxy: None,
        transport: SipTransport::Udp,
        expires: 300,
        register: true,
        default: false,
        srtp: SrtpMode::Off,
        keepalive_interval: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aor_and_next_hop() {
        let mut a = example("office", "2000");
        assert_eq!(a.aor(), "sip:2000@pbx.example.net");
        assert_eq!(a.next_hop(), "pbx.example.net:5060");
        a.registrar = Some("10.0.0.5".parse().unwrap());
        assert_eq!(a.next_hop(), "10.0.0.5:5060");
        a.outbound_proxy = Some("10.0.0.9:5070".parse().unwrap());
        assert_eq!(a.next_hop(), "10.0.0.9:5070");
        a.outbound_proxy = None;
        a.transport = SipTransport::Tls;
        assert_eq!(a.aor(), "sips:2000@pbx.example.net");
        assert_eq!(a.next_hop(), "10.0.0.5:5061");
    }

    #[test]
    fn validation_names_the_account() {
        assert_eq!(validate(&[example("a", "1"), example("b", "2")]), Ok(()));
        let with = |f: &dyn Fn(&mut AccountConfig)| {
            let mut a = example("office", "2000");
            f(&mut a);
            validate(&[a]).unwrap_err().to_string()
        };
        assert!(with(&|a| a.name = "bad name".into()).contains("bad name"));
        assert!(with(&|a| a.username = "a@b".into()).contains("office"));
        assert!(with(&|a| a.domain = "pbx:5060".into()).contains("domain"));
        assert!(with(&|a| a.password = Secret::default()).contains("password"));
        assert!(with(&|a| a.expires = 0).contains("expires"));
        assert!(with(&|a| a.srtp = SrtpMode::Required).contains("tls"));
        let dup = validate(&[example("a", "1"), example("a", "2")]).unwrap_err();
        assert!(matches!(dup, AccountConfigError::Duplicate(..)));
        let mut a = example("a", "1");
        let mut b = example("b", "2");
        a.default = true;
        b.default = true;
        assert!(validate(&[a.clone(), b.clone()]).is_err());
        b.default = false;
        assert_eq!(default_account(&[b.clone(), a.clone()]).unwrap().name, "a");
        a.default = false;
        assert_eq!(default_account(&[b, a]).unwrap().name, "b");
    }

    #[test]
    fn incoming_calls_find_their_account() {
        let local: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let office = example("office", "2000");
        let mut other = example("other", "2000");
        other.domain = "other.example".into();
        let mut trunk = example("trunk", "acme");
        trunk.register = false;
        trunk.registrar = Some("192.0.2.7:5060".parse().unwrap());
        let accounts = [office, other, trunk];
        let name = |user, host, ip: &str| {
            for_incoming(&accounts, user, host, ip.parse().unwrap()).map(|a| a.name.as_str())
        };
        assert_eq!(name("2000", "pbx.example.net", "127.0.0.1"), Some("office"));
        assert_eq!(name("2000", "other.example", "127.0.0.1"), Some("other"));
        assert_eq!(
            name("5551234", "198.51.100.1", "192.0.2.7"),
            Some("trunk"),
            "by source"
        );
        assert_eq!(name("5551234", "198.51.100.1", "192.0.2.8"), None);
        assert_eq!(for_incoming(&accounts[..1], "2001", "x", local), None);
    }

    #[test]
    fn no_error_shows_the_password() {
        let mut a = example("office", "2000");
        a.expires = 0;
        let e = validate(std::slice::from_ref(&a)).unwrap_err();
        assert!(!e.to_string().contains("pw-of-office"));
        assert!(!format!("{a:?}").contains("pw-of-office"));
    }
}
