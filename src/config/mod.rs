//! Configuration. Every setting is defined once, in [`Settings`]: its flag,
//! environment variable, help text and file key (clap derive with `env`
//! attributes, serde for the `--config` TOML file). Flags and environment
//! (clap) are laid over the file (serde), and the result is validated once
//! into the typed [`Config`] the daemon runs on.

mod protection;
pub mod values;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::Parser;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::accounts::AccountConfig;
use crate::devices::DeviceConfig;
pub use protection::SipProtection;
pub use values::{
    HostPort, ListenAddr, LogFormat, Network, PortRange, Secret, SipTransport, SrtpMode,
};

/// Every setting: a flag, an environment variable and a key of the file
/// (the field's name). `None` means "not given here".
#[derive(Debug, Default, Clone, Parser, Serialize, Deserialize)]
#[command(
    name = "siprelay",
    version,
    about = "Bridges SIP calls and their G.711 audio to WebSocket clients",
    after_help = "A flag beats its environment variable, which beats the --config file, \
                  which beats the default. The seed relay's SIP_LOCAL_IP + SIP_LOCAL_PORT \
                  and SIP_SERVER_IP + SIP_SERVER_PORT are read too."
)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// TOML file with any of these settings (keys in snake_case), plus
    /// [[accounts]] and [[devices]].
    #[arg(long, env = "SIPRELAY_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Print the settings as resolved (passwords hidden) and exit.
    #[arg(long)]
    #[serde(skip)]
    pub check_config: bool,

    /// SIP UDP listen address, or none for no UDP; RTP binds the same IP [default 127.0.0.1:5060].
    #[arg(long, env = "SIP_LISTEN", value_name = "IP:PORT|none")]
    pub sip_listen: Option<ListenAddr>,
    /// SIP TCP listen address [default: no TCP listener].
    #[arg(long, env = "SIP_LISTEN_TCP", value_name = "IP:PORT")]
    pub sip_listen_tcp: Option<SocketAddr>,
    /// SIP TLS listen address; needs --tls-cert and --tls-key [default: no TLS listener].
    #[arg(long, env = "SIP_LISTEN_TLS", value_name = "IP:PORT")]
    pub sip_listen_tls: Option<SocketAddr>,
    /// PEM certificate chain for SIP over TLS.
    #[arg(long, env = "TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for SIP over TLS.
    #[arg(long, env = "TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates outgoing SIP over TLS trusts [default: the system's bundle].
    #[arg(long, env = "TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Address written into SDP and Contact [default: the SIP listen IP; required on 0.0.0.0].
    #[arg(long, env = "ADVERTISED_IP", value_name = "IP")]
    pub advertised_ip: Option<IpAddr>,
    /// HTTP and WebSocket listen address [default 127.0.0.1:8080].
    #[arg(long, env = "HTTP_LISTEN", value_name = "IP:PORT")]
    pub http_listen: Option<SocketAddr>,
    /// RTP port range [default 20000-29999].
    #[arg(long, env = "RTP_PORTS", value_name = "LOW-HIGH")]
    pub rtp_ports: Option<PortRange>,
    /// Where plain numbers are dialled when no account is configured.
    #[arg(long, env = "SIP_SERVER", value_name = "HOST:PORT")]
    pub sip_server: Option<HostPort>,
    /// Seconds an incoming call may ring before it is rejected with 480 [default 30].
    #[arg(long, env = "RING_TIMEOUT", value_name = "SECONDS")]
    pub ring_timeout: Option<u64>,
    /// Token required from HTTP and WebSocket clients; mandatory off loopback.
    #[arg(long, env = "API_TOKEN", value_name = "TOKEN")]
    pub api_token: Option<Secret>,
    /// Web origins besides siprelay's own that may call the API, comma-separated
    /// (e.g. https://app.example.com) [default: none].
    #[arg(
        long,
        env = "ALLOWED_ORIGINS",
        value_name = "ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Option<Vec<String>>,
    /// Names besides its own addresses the daemon is reached by (a reverse
    /// proxy's), comma-separated, checked against Host [default: none].
    #[arg(
        long,
        env = "ALLOWED_HOSTS",
        value_name = "NAMES",
        value_delimiter = ','
    )]
    pub allowed_hosts: Option<Vec<String>>,
    /// WebSocket connections (clients and devices) taken at once; more are refused with 503 [default 1000].
    #[arg(long, env = "MAX_CLIENTS", value_name = "COUNT")]
    pub max_clients: Option<usize>,
    /// Log format [default text].
    #[arg(long, env = "LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Greeting played when an incoming call is answered: a WAV file, or `none` [default: built in].
    #[arg(long, env = "GREETING", value_name = "FILE|none")]
    pub greeting: Option<String>,
    /// Play the greeting on answered outgoing calls too [default false].
    #[arg(long, env = "GREETING_OUTBOUND", value_name = "BOOL", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub greeting_outbound: Option<bool>,
    /// Directory of the WAV files PLAY may name [default assets].
    #[arg(long, env = "ASSETS_DIR", value_name = "DIR")]
    pub assets_dir: Option<PathBuf>,
    /// Where call recordings go [default recordings].
    #[arg(long, env = "RECORDINGS_DIR", value_name = "DIR")]
    pub recordings_dir: Option<PathBuf>,
    /// Record calls [default true].
    #[arg(long, env = "RECORD", value_name = "BOOL", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub record: Option<bool>,
    /// Do not record calls (the same as --record=false).
    #[arg(long, conflicts_with = "record")]
    #[serde(skip)]
    pub no_record: bool,
    /// Seconds between WebSocket pings to devices [default 15].
    #[arg(long, env = "DEVICE_PING_INTERVAL", value_name = "SECONDS")]
    pub device_ping_interval: Option<u64>,
    /// Seconds a device that dropped in a call has to come back for it [default 10].
    #[arg(long, env = "DEVICE_RECONNECT_GRACE", value_name = "SECONDS")]
    pub device_reconnect_grace: Option<u64>,
    /// Session interval asked for on outgoing calls, in seconds, at least 90 (RFC 4028) [default 1800].
    #[arg(long, env = "SESSION_EXPIRES", value_name = "SECONDS")]
    pub session_expires: Option<u32>,
    /// SRTP for direct calls signalled over TLS: off, optional or required [default off].
    #[arg(long, env = "SRTP", value_name = "MODE")]
    pub srtp: Option<SrtpMode>,

    /// Source networks SIP is taken from at all, comma-separated (e.g.
    /// 10.0.0.0/8,192.0.2.10) [default: any].
    #[arg(
        long,
        env = "SIP_ALLOW",
        value_name = "NETWORKS",
        value_delimiter = ','
    )]
    pub sip_allow: Option<Vec<Network>>,
    /// Sources never rate-limited, comma-separated; the accounts' registrars
    /// and proxies are added [default 127.0.0.1,::1].
    #[arg(
        long,
        env = "SIP_TRUSTED",
        value_name = "NETWORKS",
        value_delimiter = ','
    )]
    pub sip_trusted: Option<Vec<Network>>,
    /// SIP requests a source may send per flood window before it is ignored [default 16].
    #[arg(long, env = "SIP_FLOOD_REQUESTS", value_name = "COUNT")]
    pub sip_flood_requests: Option<u32>,
    /// Seconds of the flood window [default 2].
    #[arg(long, env = "SIP_FLOOD_WINDOW", value_name = "SECONDS")]
    pub sip_flood_window: Option<u64>,
    /// Seconds a flooding source is ignored [default 300].
    #[arg(long, env = "SIP_FLOOD_BAN", value_name = "SECONDS")]
    pub sip_flood_ban: Option<u64>,
    /// Live SIP transactions beyond which new requests are dropped [default 10000].
    #[arg(long, env = "SIP_MAX_TRANSACTIONS", value_name = "COUNT")]
    pub sip_max_transactions: Option<usize>,
    /// Incoming calls from untrusted sources ringing or awaiting their ACK at once [default 100].
    #[arg(long, env = "MAX_RINGING_CALLS", value_name = "COUNT")]
    pub max_ringing_calls: Option<usize>,
    /// Of those, from any one source [default 8].
    #[arg(long, env = "MAX_RINGING_PER_SOURCE", value_name = "COUNT")]
    pub max_ringing_per_source: Option<usize>,

    /// One account from flags alone: its user name (and the account's name).
    #[arg(long, env = "SIP_USER", value_name = "USER")]
    pub sip_user: Option<String>,
    /// The password of the --sip-user account.
    #[arg(
        long,
        env = "SIP_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub sip_password: Option<Secret>,
    /// Where the --sip-user account registers [default: SIP_SERVER_IP:SIP_SERVER_PORT, or --sip-server].
    #[arg(long, env = "SIP_REGISTRAR", value_name = "HOST:PORT")]
    pub registrar: Option<HostPort>,
    /// The --sip-user account's domain [default: the registrar's host].
    #[arg(long, env = "SIP_DOMAIN", value_name = "DOMAIN")]
    pub sip_domain: Option<String>,
    /// The --sip-user account's transport: udp, tcp or tls [default udp].
    #[arg(long, env = "SIP_TRANSPORT", value_name = "TRANSPORT")]
    pub sip_transport: Option<SipTransport>,

    /// `[[accounts]]`: registrations with PBXs and providers (file only).
    #[arg(skip)]
    #[serde(default, skip_serializing)]
    pub accounts: Vec<AccountConfig>,
    /// `[[devices]]`: boards that connect at /device/{id} (file only).
    #[arg(skip)]
    #[serde(default, skip_serializing)]
    pub devices: Vec<DeviceConfig>,
}

/// What incoming calls hear first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Greeting {
    /// The greeting built into the binary (`assets/greeting.wav`).
    BuiltIn,
    File(PathBuf),
    None,
}

impl Serialize for Greeting {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Greeting::BuiltIn => s.serialize_str("built-in"),
            Greeting::File(path) => path.serialize(s),
            Greeting::None => s.serialize_str("none"),
        }
    }
}

/// SIP over TLS: where to listen and the certificate to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsListen {
    pub addr: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Everything the daemon needs, validated.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The UDP listen address, and the IP RTP binds (also when UDP is off).
    pub sip_listen: SocketAddr,
    /// Whether SIP listens on UDP at `sip_listen`.
    pub sip_udp: bool,
    pub sip_listen_tcp: Option<SocketAddr>,
    pub sip_listen_tls: Option<TlsListen>,
    /// CA certificates for outgoing TLS; None: the system's bundle.
    pub tls_ca: Option<PathBuf>,
    pub advertised_ip: IpAddr,
    pub http_listen: SocketAddr,
    pub rtp_ports: (u16, u16),
    /// `host:port` that plain numbers are sent to when no account is configured.
    pub sip_server: Option<String>,
    #[serde(serialize_with = "seconds")]
    pub ring_timeout: Duration,
    pub api_token: Option<String>,
    /// Web origins besides siprelay's own allowed to call the API.
    pub allowed_origins: Vec<String>,
    /// Names besides its own addresses the daemon answers to (Host).
    pub allowed_hosts: Vec<String>,
    /// WebSocket connections taken at once.
    pub max_clients: usize,
    pub log_format: LogFormat,
    pub greeting: Greeting,
    pub greeting_outbound: bool,
    pub assets_dir: PathBuf,
    /// None: calls are not recorded.
    pub recordings_dir: Option<PathBuf>,
    /// SRTP on direct calls signalled over TLS.
    pub srtp: SrtpMode,
    /// The session interval (RFC 4028) asked for on outgoing calls.
    pub session_expires: u32,
    /// The shortest session interval accepted, and the `Min-SE` sent:
    /// RFC 4028's 90 s. Not a setting; embedders' tests may lower it to
    /// see refreshes in seconds.
    pub min_se: u32,
    /// RFC 3261's T1, the round-trip estimate SIP's timers scale with
    /// (500 ms). Not a setting; embedders' tests may lower it to see a
    /// missing ACK time out (64×T1) in seconds.
    #[serde(skip)]
    pub sip_t1: Duration,
    /// Time for an HTTP request's headers to arrive, and for an idle
    /// keep-alive connection to send its next request (10 s). Not a
    /// setting; embedders' tests may lower it.
    #[serde(skip)]
    pub http_header_timeout: Duration,
    /// Registrations with PBXs and providers.
    pub accounts: Vec<AccountConfig>,
    /// Boards that connect at `/device/{id}` (`[[devices]]` in the file).
    pub devices: Vec<DeviceConfig>,
    /// Devices are pinged this often; one silent for two intervals is offline.
    #[serde(serialize_with = "seconds")]
    pub device_ping_interval: Duration,
    /// A device that drops in a call has this long to reconnect and resume it.
    #[serde(serialize_with = "seconds")]
    pub device_reconnect_grace: Duration,
    /// Who may reach SIP, and how much.
    pub sip_protection: SipProtection,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("invalid {key}: {value:?}: {why}")]
    Invalid {
        key: &'static str,
        value: String,
        why: String,
    },
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

impl Default for Config {
    /// The embedded defaults `cargo run --release` starts with.
    fn default() -> Self {
        Config {
            sip_listen: "127.0.0.1:5060".parse().unwrap(),
            sip_udp: true,
            sip_listen_tcp: None,
            sip_listen_tls: None,
            tls_ca: None,
            advertised_ip: "127.0.0.1".parse().unwrap(),
            http_listen: "127.0.0.1:8080".parse().unwrap(),
            rtp_ports: (20000, 29999),
            sip_server: None,
            ring_timeout: Duration::from_secs(30),
            api_token: None,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            max_clients: 1000,
            log_format: LogFormat::Text,
            greeting: Greeting::BuiltIn,
            greeting_outbound: false,
            assets_dir: PathBuf::from("assets"),
            recordings_dir: Some(PathBuf::from("recordings")),
            srtp: SrtpMode::Off,
            session_expires: crate::call::session_timer::DEFAULT_SESSION_EXPIRES,
            min_se: crate::call::session_timer::MIN_SE,
            sip_t1: Duration::from_millis(500),
            http_header_timeout: Duration::from_secs(10),
            accounts: Vec::new(),
            devices: Vec::new(),
            device_ping_interval: Duration::from_secs(15),
            device_reconnect_grace: Duration::from_secs(10),
            sip_protection: SipProtection::default(),
        }
    }
}

impl Config {
    /// A config for tests and embedding: everything on loopback, ephemeral
    /// SIP and HTTP ports, the given RTP range, no greeting, no recording.
    pub fn loopback(rtp_ports: (u16, u16)) -> Self {
        Config {
            sip_listen: "127.0.0.1:0".parse().unwrap(),
            http_listen: "127.0.0.1:0".parse().unwrap(),
            rtp_ports,
            greeting: Greeting::None,
            recordings_dir: None,
            ..Config::default()
        }
    }

    /// Reads the file `settings` names, lays `settings` (flags and
    /// environment) over it, and validates the result. `env` looks up the
    /// seed relay's variables that clap does not know.
    pub fn resolve(
        settings: &Settings,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let file = match &settings.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<Settings>(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
            None => Settings::default(),
        };
        Config::from_settings(overlay(file, settings), env)
    }

    fn from_settings(
        s: Settings,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let defaults = Config::default();
        let (sip_listen, sip_udp) = match s.sip_listen {
            Some(ListenAddr::At(addr)) => (addr, true),
            // No UDP: RTP binds the IP of the stream listener there is.
            Some(ListenAddr::Off) => {
                let ip = s
                    .sip_listen_tcp
                    .or(s.sip_listen_tls)
                    .map(|a| a.ip())
                    .ok_or_else(|| {
                        invalid(
                            "sip_listen (--sip-listen, SIP_LISTEN)",
                            "none",
                            "needs a TCP or TLS listener when UDP is off",
                        )
                    })?;
                (SocketAddr::new(ip, 0), false)
            }
            None => {
                let ip = match env("SIP_LOCAL_IP") {
                    Some(v) => v
                        .trim()
                        .parse()
                        .map_err(|_| invalid("SIP_LOCAL_IP", &v, "expected an IP address"))?,
                    None => defaults.sip_listen.ip(),
                };
                let port = match env("SIP_LOCAL_PORT") {
                    Some(v) => parse_port("SIP_LOCAL_PORT", &v)?,
                    None => defaults.sip_listen.port(),
                };
                (SocketAddr::new(ip, port), true)
            }
        };
        let advertised_ip = match s.advertised_ip {
            Some(ip) => ip,
            None if sip_listen.ip().is_unspecified() => {
                return Err(invalid(
                    "advertised_ip (--advertised-ip, ADVERTISED_IP)",
                    "",
                    "required when SIP listens on a wildcard address",
                ))
            }
            None => sip_listen.ip(),
        };
        let sip_protection = SipProtection::from_settings(&s)?;
        let max_clients = match s.max_clients {
            Some(0) => return Err(invalid("max_clients", "0", "must be at least 1")),
            Some(n) => n,
            None => defaults.max_clients,
        };
        let sip_listen_tls = match (s.sip_listen_tls, s.tls_cert, s.tls_key) {
            (None, _, _) => None,
            (Some(addr), Some(cert), Some(key)) => Some(TlsListen { addr, cert, key }),
            (Some(addr), _, _) => {
                return Err(invalid(
                    "sip_listen_tls (--sip-listen-tls, SIP_LISTEN_TLS)",
                    &addr.to_string(),
                    "needs tls_cert and tls_key (--tls-cert, --tls-key)",
                ))
            }
        };
        let sip_server = match s.sip_server {
            Some(server) => Some(server),
            None => match env("SIP_SERVER_IP") {
                Some(ip) => {
                    let port = env("SIP_SERVER_PORT").unwrap_or_else(|| "5060".into());
                    parse_port("SIP_SERVER_PORT", &port)?;
                    let text = format!("{}:{}", ip.trim(), port.trim());
                    Some(
                        text.parse::<HostPort>()
                            .map_err(|why| invalid("SIP_SERVER_IP", &ip, why))?,
                    )
                }
                None => None,
            },
        };
        let ring_timeout = s
            .ring_timeout
            .map(Duration::from_secs)
            .unwrap_or(defaults.ring_timeout);
        if ring_timeout.is_zero() {
            return Err(invalid("ring_timeout", "0", "must be at least 1 second"));
        }
        let greeting = match s.greeting.as_deref() {
            None => Greeting::BuiltIn,
            Some("none") => Greeting::None,
            Some("") => {
                return Err(invalid(
                    "greeting (--greeting, GREETING)",
                    "",
                    "expected a WAV file or none",
                ))
            }
            Some(path) => Greeting::File(PathBuf::from(path)),
        };
        let record = !s.no_record && s.record.unwrap_or(true);
        let recordings_dir = record.then(|| {
            s.recordings_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("recordings"))
        });
        let device_ping_interval = match s.device_ping_interval {
            Some(0) => {
                return Err(invalid(
                    "device_ping_interval",
                    "0",
                    "must be at least 1 second",
                ))
            }
            Some(secs) => Duration::from_secs(secs),
            None => defaults.device_ping_interval,
        };
        let session_expires = s.session_expires.unwrap_or(defaults.session_expires);
        if session_expires < defaults.min_se {
            return Err(invalid(
                "session_expires (--session-expires, SESSION_EXPIRES)",
                &session_expires.to_string(),
                "must be at least 90 seconds (RFC 4028)",
            ));
        }
        let mut accounts = s.accounts;
        if let Some(user) = s.sip_user {
            accounts.push(flag_account(
                user,
                s.sip_password,
                s.registrar.or(sip_server.clone()),
                s.sip_domain,
                s.sip_transport.unwrap_or_default(),
            )?);
        }
        crate::accounts::validate(&accounts).map_err(|e| invalid("accounts", "", e.to_string()))?;
        crate::devices::validate(&s.devices, &accounts)
            .map_err(|e| invalid("devices", "", e.to_string()))?;
        let config = Config {
            sip_listen,
            sip_udp,
            sip_listen_tcp: s.sip_listen_tcp,
            sip_listen_tls,
            tls_ca: s.tls_ca,
            advertised_ip,
            http_listen: s.http_listen.unwrap_or(defaults.http_listen),
            rtp_ports: s
                .rtp_ports
                .map(|r| (r.low, r.high))
                .unwrap_or(defaults.rtp_ports),
            sip_server: sip_server.map(|s| s.with_default_port(5060)),
            ring_timeout,
            api_token: s
                .api_token
                .map(|t| t.expose().to_string())
                .filter(|t| !t.is_empty()),
            allowed_origins: s.allowed_origins.unwrap_or_default(),
            allowed_hosts: s.allowed_hosts.unwrap_or_default(),
            max_clients,
            log_format: s.log_format.unwrap_or_default(),
            greeting,
            greeting_outbound: s.greeting_outbound.unwrap_or(false),
            assets_dir: s.assets_dir.unwrap_or(defaults.assets_dir),
            recordings_dir,
            srtp: s.srtp.unwrap_or_default(),
            session_expires,
            min_se: defaults.min_se,
            sip_t1: defaults.sip_t1,
            http_header_timeout: defaults.http_header_timeout,
            accounts,
            devices: s.devices,
            device_ping_interval,
            device_reconnect_grace: s
                .device_reconnect_grace
                .map(Duration::from_secs)
                .unwrap_or(defaults.device_reconnect_grace),
            sip_protection,
        };
        config.check_access()?;
        Ok(config)
    }

    /// Off loopback, the HTTP/WebSocket API must be protected by a token,
    /// and a token must be long enough not to be guessed.
    pub fn check_access(&self) -> Result<(), ConfigError> {
        if self
            .api_token
            .as_ref()
            .is_some_and(|t| t.chars().count() < 16)
        {
            return Err(invalid(
                "api_token (--api-token, API_TOKEN)",
                "",
                "must be at least 16 characters",
            ));
        }
        if !self.http_listen.ip().is_loopback() && self.api_token.is_none() {
            return Err(invalid(
                "api_token (--api-token, API_TOKEN)",
                "",
                "required when HTTP listens on a non-loopback address",
            ));
        }
        Ok(())
    }

    /// The config as `--check-config` prints it: TOML, secrets hidden.
    pub fn redacted(&self) -> String {
        let mut shown = self.clone();
        let hide = "***".to_string();
        if shown.api_token.is_some() {
            shown.api_token = Some(hide.clone());
        }
        for a in &mut shown.accounts {
            a.password = Secret::new(hide.clone());
        }
        for d in &mut shown.devices {
            d.token = hide.clone();
        }
        toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot show the config: {e}\n"))
    }
}

/// The file's settings with every setting the flags or environment gave
/// laid over them. Generic over the fields: both sides become TOML tables
/// (a `None` is left out), and the flags' table is merged into the file's.
fn overlay(file: Settings, flags: &Settings) -> Settings {
    let table = |s: &Settings| toml::Table::try_from(s).unwrap_or_default();
    let mut merged = table(&file);
    merged.extend(table(flags));
    // Both sides were valid settings, so their union is one too.
    let mut settings: Settings = merged.try_into().unwrap_or_default();
    settings.accounts = file.accounts;
    settings.devices = file.devices;
    settings.config = flags.config.clone();
    settings.check_config = flags.check_config;
    settings.no_record = flags.no_record;
    settings
}

/// The account given by `--sip-user` and its companions.
fn flag_account(
    username: String,
    password: Option<Secret>,
    registrar: Option<HostPort>,
    domain: Option<String>,
    transport: SipTransport,
) -> Result<AccountConfig, ConfigError> {
    let key = "sip_user (--sip-user, SIP_USER)";
    let password =
        password.ok_or_else(|| invalid(key, &username, "needs --sip-password (SIP_PASSWORD)"))?;
    let registrar = registrar.ok_or_else(|| {
        invalid(
            key,
            &username,
            "needs --registrar (SIP_REGISTRAR), or SIP_SERVER_IP to register with",
        )
    })?;
    Ok(AccountConfig {
        name: username.clone(),
        domain: domain.unwrap_or_else(|| registrar.host.clone()),
        username,
        password,
        registrar: Some(registrar),
        auth_username: None,
        outbound_proxy: None,
        transport,
        expires: 300,
        register: true,
        default: false,
        srtp: SrtpMode::Off,
        keepalive_interval: None,
    })
}

fn invalid(key: &'static str, value: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        why: why.into(),
    }
}

fn parse_port(key: &'static str, v: &str) -> Result<u16, ConfigError> {
    v.trim()
        .parse()
        .map_err(|_| invalid(key, v, "expected a port number 0-65535"))
}
#[cfg(test)]
mod tests;
