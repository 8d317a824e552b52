//! The value types of settings that are more than a number or a path: each
//! parses the same way from a flag, an environment variable and the file
//! (`FromStr` for clap, `Deserialize` from a string for TOML), so a value is
//! checked by one piece of code wherever it comes from.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Implements `Deserialize` (from a TOML string) and `Serialize` (back to
/// that string) for a type with `FromStr` and `Display`.
macro_rules! string_serde {
    ($t:ty) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}

/// `LOW-HIGH`: the RTP ports; each call takes an even port and the odd one above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(v: &str) -> Result<Self, String> {
        let (low, high) = v
            .split_once('-')
            .ok_or("expected LOW-HIGH, e.g. 20000-29999")?;
        let low: u16 = low.trim().parse().map_err(|_| "LOW is not a port number")?;
        let high: u16 = high
            .trim()
            .parse()
            .map_err(|_| "HIGH is not a port number")?;
        if low < 1024 {
            return Err("ports below 1024 are reserved".into());
        }
        if high <= low {
            return Err("needs at least one even/odd pair, LOW below HIGH".into());
        }
        Ok(PortRange { low, high })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.low, self.high)
    }
}
string_serde!(PortRange);

/// `IP:PORT`, or `none` for a listener that is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenAddr {
    At(std::net::SocketAddr),
    Off,
}

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(v: &str) -> Result<Self, String> {
        match v.trim() {
            "none" | "off" => Ok(ListenAddr::Off),
            addr => addr
                .parse()
                .map(ListenAddr::At)
                .map_err(|_| "expected IP:PORT (e.g. 127.0.0.1:5060) or none".to_string()),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::At(addr) => write!(f, "{addr}"),
            ListenAddr::Off => f.write_str("none"),
        }
    }
}
string_serde!(ListenAddr);

/// `HOST` or `HOST:PORT` (`[v6]:PORT` for IPv6): a SIP server, registrar or proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: Option<u16>,
}

impl HostPort {
    /// `host:port`, with `default_port` when none was given.
    pub fn with_default_port(&self, default_port: u16) -> String {
        let port = self.port.unwrap_or(default_port);
        if self.host.contains(':') {
            format!("[{}]:{port}", self.host)
        } else {
            format!("{}:{port}", self.host)
        }
    }
}

impl FromStr for HostPort {
    type Err = String;
    fn from_str(v: &str) -> Result<Self, String> {
        let v = v.trim();
        let (host, port) = if let Some(rest) = v.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or("unclosed [ in an IPv6 host")?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(after.strip_prefix(':').ok_or("expected :PORT after ]")?),
                ),
            }
        } else {
            match v.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (v, None),
            }
        };
        let host_ok = |c: char| c.is_ascii_alphanumeric() || "-._:".contains(c);
        if host.is_empty() || !host.chars().all(host_ok) {
            return Err("expected HOST or HOST:PORT".into());
        }
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or("bad port")?,
            ),
        };
        Ok(HostPort {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.port, self.host.contains(':')) {
            (Some(p), true) => write!(f, "[{}]:{p}", self.host),
            (Some(p), false) => write!(f, "{}:{p}", self.host),
            (None, _) => f.write_str(&self.host),
        }
    }
}
string_serde!(HostPort);

/// A password or token: shown as `***` by `Debug`, so that no log line,
/// error or printed config can carry it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Serialized in full: only the config merge serializes settings, and
/// `--check-config` prints [`super::Config::redacted`], never a `Secret`.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The SIP transport an account uses for its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SipTransport {
    #[default]
    Udp,
    Tcp,
    Tls,
}

impl SipTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            SipTransport::Udp => "udp",
            SipTransport::Tcp => "tcp",
            SipTransport::Tls => "tls",
        }
    }

    /// The port a server listens on when its address names none.
    pub fn default_port(self) -> u16 {
        match self {
            SipTransport::Tls => 5061,
            _ => 5060,
        }
    }
}

/// Whether a call's media is encrypted (SRTP with SDES keys, RFC 4568).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SrtpMode {
    /// Plain RTP; offers with keys are answered without them.
    #[default]
    Off,
    /// SRTP when the far end offers or accepts it, plain RTP otherwise.
    Optional,
    /// SRTP or no call: an offer without keys is refused with 488.
    Required,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges() {
        assert_eq!(
            "20000-29999".parse::<PortRange>(),
            Ok(PortRange {
                low: 20000,
                high: 29999
            })
        );
        for bad in ["5-3", "30000", "100-2000", "3000-3000", "a-b"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn host_ports() {
        let hp: HostPort = "pbx.example.net:5080".parse().unwrap();
        assert_eq!((hp.host.as_str(), hp.port), ("pbx.example.net", Some(5080)));
        let hp: HostPort = "pbx.example.net".parse().unwrap();
        assert_eq!(hp.with_default_port(5061), "pbx.example.net:5061");
        let hp: HostPort = "[::1]:5060".parse().unwrap();
        assert_eq!((hp.host.as_str(), hp.port), ("::1", Some(5060)));
        assert_eq!(hp.to_string(), "[::1]:5060");
        for bad in ["", "a b:5060", "host:99999", "host:0", "user@host", "[::1"] {
            assert!(bad.parse::<HostPort>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(s.expose(), "hunter2");
    }
}

/// `ADDRESS/PREFIX` (or a bare address): a network SIP sources are matched
/// against, IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl Network {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        match (self.addr, ip) {
            (V4(net), V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (V6(net), V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            // An IPv4 source seen on a dual-stack socket.
            (V4(_), V6(ip)) => ip
                .to_ipv4_mapped()
                .is_some_and(|v4| self.contains(v4.into())),
            (V6(_), V4(_)) => false,
        }
    }

    /// The network holding just `ip`.
    pub fn host(ip: std::net::IpAddr) -> Network {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        Network { addr: ip, prefix }
    }
}

impl FromStr for Network {
    type Err = String;
    fn from_str(v: &str) -> Result<Self, String> {
        let v = v.trim();
        let (addr, prefix) = match v.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (v, None),
        };
        let addr: std::net::IpAddr = addr
            .parse()
            .map_err(|_| "expected ADDRESS/PREFIX, e.g. 10.0.0.0/8".to_string())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("the prefix must be a number from 0 to {max}"))?,
        };
        Ok(Network { addr, prefix })
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}
string_serde!(Network);
