//! Configuration: command-line flags, environment variables and a TOML file,
//! merged (flag, then environment, then file, then default) and validated
//! once into one typed [`Config`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Parser, Default)]
#[command(
    name = "siprelay",
    version,
    about = "Bridges SIP calls and their G.711 audio to WebSocket clients"
)]
pub struct Cli {
    /// TOML file with any of the settings below (keys in snake_case).
    #[arg(long, env = "SIPRELAY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// SIP UDP listen address [env SIP_LISTEN, or SIP_LOCAL_IP + SIP_LOCAL_PORT; default 127.0.0.1:5060].
    #[arg(long, value_name = "IP:PORT")]
    pub sip_listen: Option<String>,
    /// Address written into SDP and Contact [env ADVERTISED_IP; default: the SIP listen IP].
    #[arg(long, value_name = "IP")]
    pub advertised_ip: Option<String>,
    /// HTTP and WebSocket listen address [env HTTP_LISTEN; default 127.0.0.1:8080].
    #[arg(long, value_name = "IP:PORT")]
    pub http_listen: Option<String>,
    /// RTP port range [env RTP_PORTS; default 20000-29999].
    #[arg(long, value_name = "LOW-HIGH")]
    pub rtp_ports: Option<String>,
    /// Where plain numbers are dialled [env SIP_SERVER, or SIP_SERVER_IP + SIP_SERVER_PORT].
    #[arg(long, value_name = "HOST:PORT")]
    pub sip_server: Option<String>,
    /// Seconds an incoming call may ring before it is rejected with 480 [env RING_TIMEOUT; default 30].
    #[arg(long, value_name = "SECONDS")]
    pub ring_timeout: Option<String>,
    /// Token required from HTTP and WebSocket clients; mandatory off loopback [env API_TOKEN].
    #[arg(long, value_name = "TOKEN")]
    pub api_token: Option<String>,
    /// Log format: text or json [env LOG_FORMAT; default text].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Greeting played when an incoming call is answered: a WAV file, or `none` [env GREETING; default: the built-in greeting].
    #[arg(long, value_name = "FILE|none")]
    pub greeting: Option<String>,
    /// Play the greeting on answered outgoing calls too [env GREETING_OUTBOUND=true].
    #[arg(long)]
    pub greeting_outbound: bool,
    /// Directory of the WAV files PLAY may name [env ASSETS_DIR; default assets].
    #[arg(long, value_name = "DIR")]
    pub assets_dir: Option<String>,
    /// Where call recordings go [env RECORDINGS_DIR; default recordings].
    #[arg(long, value_name = "DIR")]
    pub recordings_dir: Option<String>,
    /// Do not record calls [env RECORD=false].
    #[arg(long)]
    pub no_record: bool,
}

/// The same settings as they appear in the `--config` file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub sip_listen: Option<String>,
    pub advertised_ip: Option<String>,
    pub http_listen: Option<String>,
    pub rtp_ports: Option<String>,
    pub sip_server: Option<String>,
    pub ring_timeout: Option<u64>,
    pub api_token: Option<String>,
    pub log_format: Option<String>,
    pub greeting: Option<String>,
    pub greeting_outbound: Option<bool>,
    pub assets_dir: Option<String>,
    pub recordings_dir: Option<String>,
    pub record: Option<bool>,
    /// Seconds between WebSocket pings to devices.
    pub device_ping_interval: Option<u64>,
    /// Seconds a device that dropped in a call has to come back for it.
    pub device_reconnect_grace: Option<u64>,
    #[serde(default)]
    pub devices: Vec<crate::devices::DeviceConfig>,
}

/// What incoming calls hear first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Greeting {
    /// The greeting built into the binary (`assets/greeting.wav`).
    BuiltIn,
    File(PathBuf),
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything the daemon needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub sip_listen: SocketAddr,
    pub advertised_ip: IpAddr,
    pub http_listen: SocketAddr,
    pub rtp_ports: (u16, u16),
    /// `host:port` that plain numbers are sent to.
    pub sip_server: Option<String>,
    pub ring_timeout: Duration,
    pub api_token: Option<String>,
    pub log_format: LogFormat,
    pub greeting: Greeting,
    pub greeting_outbound: bool,
    pub assets_dir: PathBuf,
    /// None: calls are not recorded.
    pub recordings_dir: Option<PathBuf>,
    /// Boards that connect at `/device/{id}` (`[[devices]]` in the file).
    pub devices: Vec<crate::devices::DeviceConfig>,
    /// Devices are pinged this often; one silent for two intervals is offline.
    pub device_ping_interval: Duration,
    /// A device that drops in a call has this long to reconnect and resume it.
    pub device_reconnect_grace: Duration,
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
            advertised_ip: "127.0.0.1".parse().unwrap(),
            http_listen: "127.0.0.1:8080".parse().unwrap(),
            rtp_ports: (20000, 29999),
            sip_server: None,
            ring_timeout: Duration::from_secs(30),
            api_token: None,
            log_format: LogFormat::Text,
            greeting: Greeting::BuiltIn,
            greeting_outbound: false,
            assets_dir: PathBuf::from("assets"),
            recordings_dir: Some(PathBuf::from("recordings")),
            devices: Vec::new(),
            device_ping_interval: Duration::from_secs(15),
            device_reconnect_grace: Duration::from_secs(10),
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

    /// Merges flags, environment (`env` looks a variable up) and the file.
    pub fn resolve(cli: &Cli, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<FileSettings>(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
            None => FileSettings::default(),
        };
        let pick = |flag: &Option<String>, var: &str, from_file: &Option<String>| {
            flag.clone()
                .or_else(|| env(var))
                .or_else(|| from_file.clone())
        };
        let defaults = Config::default();

        let sip_listen = match pick(&cli.sip_listen, "SIP_LISTEN", &file.sip_listen) {
            Some(v) => parse_addr("sip_listen (--sip-listen, SIP_LISTEN)", &v)?,
            None => {
                let ip = match env("SIP_LOCAL_IP") {
                    Some(v) => parse_ip("SIP_LOCAL_IP", &v)?,
                    None => defaults.sip_listen.ip(),
                };
                let port = match env("SIP_LOCAL_PORT") {
                    Some(v) => parse_port("SIP_LOCAL_PORT", &v)?,
                    None => defaults.sip_listen.port(),
                };
                SocketAddr::new(ip, port)
            }
        };
        let advertised_ip = match pick(&cli.advertised_ip, "ADVERTISED_IP", &file.advertised_ip) {
            Some(v) => parse_ip("advertised_ip (--advertised-ip, ADVERTISED_IP)", &v)?,
            None if sip_listen.ip().is_unspecified() => {
                return Err(invalid(
                    "advertised_ip (--advertised-ip, ADVERTISED_IP)",
                    "",
                    "required when SIP listens on a wildcard address",
                ))
            }
            None => sip_listen.ip(),
        };
        let http_listen = match pick(&cli.http_listen, "HTTP_LISTEN", &file.http_listen) {
            Some(v) => parse_addr("http_listen (--http-listen, HTTP_LISTEN)", &v)?,
            None => defaults.http_listen,
        };
        let rtp_ports = match pick(&cli.rtp_ports, "RTP_PORTS", &file.rtp_ports) {
            Some(v) => parse_range("rtp_ports (--rtp-ports, RTP_PORTS)", &v)?,
            None => defaults.rtp_ports,
        };
        let sip_server = match pick(&cli.sip_server, "SIP_SERVER", &file.sip_server) {
            Some(v) => Some(parse_host_port(
                "sip_server (--sip-server, SIP_SERVER)",
                &v,
            )?),
            None => match env("SIP_SERVER_IP") {
                Some(ip) => {
                    let port = env("SIP_SERVER_PORT").unwrap_or_else(|| "5060".into());
                    parse_port("SIP_SERVER_PORT", &port)?;
                    Some(parse_host_port("SIP_SERVER_IP", &format!("{ip}:{port}"))?)
                }
                None => None,
            },
        };
        let ring_timeout = match cli.ring_timeout.clone().or_else(|| env("RING_TIMEOUT")) {
            Some(v) => parse_seconds("ring_timeout (--ring-timeout, RING_TIMEOUT)", &v)?,
            None => file
                .ring_timeout
                .map(Duration::from_secs)
                .unwrap_or(defaults.ring_timeout),
        };
        if ring_timeout.is_zero() {
            return Err(invalid("ring_timeout", "0", "must be at least 1 second"));
        }
        let api_token =
            pick(&cli.api_token, "API_TOKEN", &file.api_token).filter(|t| !t.is_empty());
        let log_format = match pick(&cli.log_format, "LOG_FORMAT", &file.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    "log_format (--log-format, LOG_FORMAT)",
                    other,
                    "expected text or json",
                ))
            }
        };
        let greeting = match pick(&cli.greeting, "GREETING", &file.greeting).as_deref() {
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
        let flag_or = |flag: bool, var: &'static str, from_file: Option<bool>, default: bool| {
            if flag {
                return Ok(true);
            }
            match env(var) {
                Some(v) => parse_bool(var, &v),
                None => Ok(from_file.unwrap_or(default)),
            }
        };
        let greeting_outbound = flag_or(
            cli.greeting_outbound,
            "GREETING_OUTBOUND",
            file.greeting_outbound,
            false,
        )?;
        let assets_dir = pick(&cli.assets_dir, "ASSETS_DIR", &file.assets_dir)
            .map(PathBuf::from)
            .unwrap_or(defaults.assets_dir);
        let record = !cli.no_record
            && match env("RECORD") {
                Some(v) => parse_bool("RECORD", &v)?,
                None => file.record.unwrap_or(true),
            };

        let recordings_dir = record.then(|| {
            pick(&cli.recordings_dir, "RECORDINGS_DIR", &file.recordings_dir)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("recordings"))
        });
        crate::devices::validate(&file.devices)
            .map_err(|e| invalid("devices", "", e.to_string()))?;
        let device_ping_interval = match file.device_ping_interval {
            Some(0) => {
                return Err(invalid(
                    "device_ping_interval",
                    "0",
                    "must be at least 1 second",
                ))
            }
            Some(s) => Duration::from_secs(s),
            None => defaults.device_ping_interval,
        };
        let device_reconnect_grace = file
            .device_reconnect_grace
            .map(Duration::from_secs)
            .unwrap_or(defaults.device_reconnect_grace);
        let config = Config {
            devices: file.devices.clone(),
            device_ping_interval,
            device_reconnect_grace,
            sip_listen,
            advertised_ip,
            http_listen,
            rtp_ports,
            sip_server,
            ring_timeout,
            api_token,
            log_format,
            greeting,
            greeting_outbound,
            assets_dir,
            recordings_dir,
        };
        config.check_access()?;
        Ok(config)
    }

    /// Off loopback, the HTTP/WebSocket API must be protected by a token.
    pub fn check_access(&self) -> Result<(), ConfigError> {
        if !self.http_listen.ip().is_loopback() && self.api_token.is_none() {
            return Err(invalid(
                "api_token (--api-token, API_TOKEN)",
                "",
                "required when HTTP listens on a non-loopback address",
            ));
        }
        Ok(())
    }
}

fn invalid(key: &'static str, value: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        why: why.into(),
    }
}

fn parse_bool(key: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(invalid(key, v, "expected true or false")),
    }
}

fn parse_addr(key: &'static str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.trim()
        .parse()
        .map_err(|_| invalid(key, v, "expected IP:PORT, e.g. 127.0.0.1:5060"))
}

fn parse_ip(key: &'static str, v: &str) -> Result<IpAddr, ConfigError> {
    v.trim()
        .parse()
        .map_err(|_| invalid(key, v, "expected an IP address"))
}

fn parse_port(key: &'static str, v: &str) -> Result<u16, ConfigError> {
    v.trim()
        .parse()
        .map_err(|_| invalid(key, v, "expected a port number 0-65535"))
}

fn parse_seconds(key: &'static str, v: &str) -> Result<Duration, ConfigError> {
    v.trim()
        .parse()
        .map(Duration::from_secs)
        .map_err(|_| invalid(key, v, "expected whole seconds"))
}

fn parse_range(key: &'static str, v: &str) -> Result<(u16, u16), ConfigError> {
    let (low, high) = v
        .split_once('-')
        .ok_or_else(|| invalid(key, v, "expected LOW-HIGH, e.g. 20000-29999"))?;
    let low: u16 = low
        .trim()
        .parse()
        .map_err(|_| invalid(key, v, "LOW is not a port number"))?;
    let high: u16 = high
        .trim()
        .parse()
        .map_err(|_| invalid(key, v, "HIGH is not a port number"))?;
    if low < 1024 {
        return Err(invalid(key, v, "ports below 1024 are reserved"));
    }
    if high <= low || (high - low) < 1 {
        return Err(invalid(
            key,
            v,
            "needs at least one even/odd pair, LOW below HIGH",
        ));
    }
    Ok((low, high))
}

fn parse_host_port(key: &'static str, v: &str) -> Result<String, ConfigError> {
    let v = v.trim();
    let (host, port) = v
        .rsplit_once(':')
        .ok_or_else(|| invalid(key, v, "expected HOST:PORT"))?;
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || "@;<>\"/".contains(c)) {
        return Err(invalid(key, v, "bad host"));
    }
    port.parse::<u16>()
        .map_err(|_| invalid(key, v, "bad port"))?;
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let cli =
            Cli::try_parse_from(std::iter::once("siprelay").chain(args.iter().copied())).unwrap();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::resolve(&cli, |k| env.get(k).cloned())
    }

    #[test]
    fn embedded_defaults() {
        let c = resolve(&[], &[]).unwrap();
        assert_eq!(c.sip_listen, "127.0.0.1:5060".parse().unwrap());
        assert_eq!(c.http_listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.advertised_ip, "127.0.0.1".parse::<IpAddr>().unwrap());
        let pairs = (c.rtp_ports.1 - c.rtp_ports.0) / 2;
        assert!(pairs >= 2000, "room for 2,000 calls");
    }

    #[test]
    fn flag_beats_env_beats_file() {
        let dir = std::env::temp_dir().join(format!("siprelay-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "rtp_ports = \"40000-40100\"\nsip_server = \"10.0.0.5:5060\"\nring_timeout = 7\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let c = resolve(&["--config", f], &[]).unwrap();
        assert_eq!(c.rtp_ports, (40000, 40100));
        assert_eq!(c.sip_server.as_deref(), Some("10.0.0.5:5060"));
        assert_eq!(c.ring_timeout, Duration::from_secs(7));
        let c = resolve(&["--config", f], &[("RTP_PORTS", "41000-41100")]).unwrap();
        assert_eq!(c.rtp_ports, (41000, 41100));
        let c = resolve(
            &["--config", f, "--rtp-ports", "42000-42100"],
            &[("RTP_PORTS", "41000-41100")],
        )
        .unwrap();
        assert_eq!(c.rtp_ports, (42000, 42100));
    }

    #[test]
    fn seed_relay_environment_names_work() {
        let c = resolve(
            &[],
            &[
                ("SIP_LOCAL_IP", "127.0.0.2"),
                ("SIP_LOCAL_PORT", "5070"),
                ("SIP_SERVER_IP", "127.0.0.3"),
                ("SIP_SERVER_PORT", "5080"),
            ],
        )
        .unwrap();
        assert_eq!(c.sip_listen, "127.0.0.2:5070".parse().unwrap());
        assert_eq!(c.advertised_ip, "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(c.sip_server.as_deref(), Some("127.0.0.3:5080"));
    }

    #[test]
    fn bad_values_name_their_key() {
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
        let cases: [Case; 7] = [
            (&["--rtp-ports", "5-3"], &[], "rtp_ports"),
            (&["--rtp-ports", "30000"], &[], "rtp_ports"),
            (&["--sip-listen", "nonsense"], &[], "sip_listen"),
            (&[], &[("SIP_LOCAL_PORT", "99999")], "SIP_LOCAL_PORT"),
            (&["--http-listen", "0.0.0.0:8080"], &[], "api_token"),
            (&["--sip-listen", "0.0.0.0:5060"], &[], "advertised_ip"),
            (&["--log-format", "xml"], &[], "log_format"),
        ];
        for (args, env, key) in cases {
            let e = resolve(args, env).unwrap_err().to_string();
            assert!(e.contains(key), "{args:?} {env:?}: {e}");
        }
    }

    #[test]
    fn token_allows_binding_off_loopback() {
        let c = resolve(
            &["--http-listen", "0.0.0.0:8080", "--api-token", "s3cret"],
            &[],
        )
        .unwrap();
        assert_eq!(c.api_token.as_deref(), Some("s3cret"));
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let dir = std::env::temp_dir().join(format!("siprelay-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "rtp_port = \"1-2\"\n").unwrap();
        let e = resolve(&["--config", file.to_str().unwrap()], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("rtp_port"), "{e}");
    }
}
