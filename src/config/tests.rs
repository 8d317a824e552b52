//! The settings merged and validated as a user would give them.
use super::*;
use std::collections::HashMap;

/// Flags as clap parses them (bad values fail there), then the merge;
/// `env` stands in for the seed relay's variables.
fn resolve(args: &[&str], env: &[(&str, &str)]) -> Result<Config, String> {
    let settings =
        Settings::try_parse_from(std::iter::once("siprelay").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::resolve(&settings, |k| env.get(k).cloned()).map_err(|e| e.to_string())
}

fn file(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("siprelay-config-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn embedded_defaults() {
    let c = resolve(&[], &[]).unwrap();
    assert_eq!(c.sip_listen, "127.0.0.1:5060".parse().unwrap());
    assert_eq!(c.http_listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.advertised_ip, "127.0.0.1".parse::<IpAddr>().unwrap());
    let pairs = (c.rtp_ports.1 - c.rtp_ports.0) / 2;
    assert!(pairs >= 2000, "room for 2,000 calls");
    assert!(c.accounts.is_empty() && c.sip_listen_tcp.is_none() && c.sip_listen_tls.is_none());
    assert!(c.recordings_dir.is_some());
}

#[test]
fn flags_beat_the_file() {
    let f = file(
        "beat",
        "rtp_ports = \"40000-40100\"\nsip_server = \"10.0.0.5:5060\"\nring_timeout = 7\n\
         greeting_outbound = true\nrecord = false\n",
    );
    let c = resolve(&["--config", &f], &[]).unwrap();
    assert_eq!(c.rtp_ports, (40000, 40100));
    assert_eq!(c.sip_server.as_deref(), Some("10.0.0.5:5060"));
    assert_eq!(c.ring_timeout, Duration::from_secs(7));
    assert!(c.greeting_outbound);
    assert!(c.recordings_dir.is_none());
    let c = resolve(
        &[
            "--config",
            &f,
            "--rtp-ports",
            "42000-42100",
            "--record",
            "--greeting-outbound=false",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(c.rtp_ports, (42000, 42100));
    assert_eq!(
        c.ring_timeout,
        Duration::from_secs(7),
        "the file still counts"
    );
    assert!(c.recordings_dir.is_some());
    assert!(!c.greeting_outbound);
    let c = resolve(&["--no-record"], &[]).unwrap();
    assert!(c.recordings_dir.is_none());
}

#[test]
fn every_flag_has_an_environment_variable_and_a_file_key() {
    use clap::CommandFactory;
    let cmd = Settings::command();
    let file_keys = toml::Table::try_from(Settings {
        sip_listen: Some(ListenAddr::At("127.0.0.1:1".parse().unwrap())),
        ..Settings::default()
    })
    .unwrap();
    assert!(file_keys.contains_key("sip_listen"));
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if ["config", "check_config", "no_record", "help", "version"].contains(&id) {
            continue;
        }
        let env = arg
            .get_env()
            .unwrap_or_else(|| panic!("--{id} has no environment variable"));
        assert!(!env.is_empty());
    }
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
fn bad_values_name_their_setting() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 9] = [
        (&["--rtp-ports", "5-3"], &[], "--rtp-ports"),
        (&["--rtp-ports", "30000"], &[], "--rtp-ports"),
        (&["--sip-listen", "nonsense"], &[], "--sip-listen"),
        (&[], &[("SIP_LOCAL_PORT", "99999")], "SIP_LOCAL_PORT"),
        (&["--http-listen", "0.0.0.0:8080"], &[], "api_token"),
        (&["--sip-listen", "0.0.0.0:5060"], &[], "advertised_ip"),
        (&["--log-format", "xml"], &[], "--log-format"),
        (&["--sip-listen-tls", "127.0.0.1:5061"], &[], "tls_cert"),
        (&["--sip-user", "2000"], &[], "SIP_PASSWORD"),
    ];
    for (args, env, key) in cases {
        let e = resolve(args, env).unwrap_err();
        assert!(e.contains(key), "{args:?} {env:?}: {e}");
    }
    let f = file("badtype", "ring_timeout = \"soon\"\n");
    let e = resolve(&["--config", &f], &[]).unwrap_err();
    assert!(e.contains("ring_timeout") && e.contains(&f), "{e}");
}

#[test]
fn udp_can_be_off_when_another_transport_listens() {
    let e = resolve(&["--sip-listen", "none"], &[]).unwrap_err();
    assert!(e.contains("TCP or TLS"), "{e}");
    let c = resolve(
        &["--sip-listen", "none", "--sip-listen-tcp", "127.0.0.7:5070"],
        &[],
    )
    .unwrap();
    assert!(!c.sip_udp);
    assert_eq!(
        c.sip_listen.ip(),
        "127.0.0.7".parse::<IpAddr>().unwrap(),
        "RTP binds the TCP IP"
    );
    assert!(resolve(&[], &[]).unwrap().sip_udp);
}

#[test]
fn token_allows_binding_off_loopback() {
    let c = resolve(
        &[
            "--http-listen",
            "0.0.0.0:8080",
            "--api-token",
            "s3cret-0123456789ab",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(c.api_token.as_deref(), Some("s3cret-0123456789ab"));
    let e = resolve(&["--api-token", "short"], &[]).unwrap_err();
    assert!(e.contains("at least 16") && !e.contains("short"), "{e}");
}

#[test]
fn unknown_file_keys_are_errors() {
    let f = file("unknown", "rtp_port = \"1-2\"\n");
    let e = resolve(&["--config", &f], &[]).unwrap_err();
    assert!(e.contains("rtp_port"), "{e}");
}

#[test]
fn accounts_from_the_file_and_from_flags() {
    let f = file(
        "accounts",
        "[[accounts]]\nname = \"office\"\nusername = \"2000\"\npassword = \"pw-office\"\n\
         domain = \"pbx.example.net\"\nregistrar = \"127.0.0.1:5080\"\ntransport = \"tcp\"\n\
         expires = 120\n\n[[accounts]]\nname = \"trunk\"\nusername = \"acme\"\n\
         password = \"pw-trunk\"\ndomain = \"sip.provider.example\"\nregister = false\n\
         default = true\n",
    );
    let c = resolve(&["--config", &f], &[]).unwrap();
    assert_eq!(c.accounts.len(), 2);
    let office = &c.accounts[0];
    assert_eq!(office.transport, SipTransport::Tcp);
    assert_eq!(office.expires, 120);
    assert_eq!(office.next_hop(), "127.0.0.1:5080");
    assert!(!c.accounts[1].register);
    assert_eq!(
        crate::accounts::default_account(&c.accounts).unwrap().name,
        "trunk"
    );

    // One account from flags, the seed relay's server as its registrar.
    let c = resolve(
        &["--sip-user", "2001", "--sip-password", "pw-flag"],
        &[("SIP_SERVER_IP", "127.0.0.9"), ("SIP_SERVER_PORT", "5090")],
    )
    .unwrap();
    let a = &c.accounts[0];
    assert_eq!((a.name.as_str(), a.username.as_str()), ("2001", "2001"));
    assert_eq!(a.password.expose(), "pw-flag");
    assert_eq!(a.next_hop(), "127.0.0.9:5090");
    assert_eq!(a.aor(), "sip:2001@127.0.0.9");
    let e = resolve(&["--sip-user", "2001", "--sip-password", "pw"], &[]).unwrap_err();
    assert!(e.contains("--registrar"), "{e}");
}

#[test]
fn printed_config_hides_secrets() {
    let f = file(
        "secret",
        "api_token = \"tok-123-0123456789abc\"\n[[accounts]]\nname = \"office\"\nusername = \"2000\"\n\
         password = \"pw-hidden\"\ndomain = \"pbx.example.net\"\n",
    );
    let c = resolve(&["--config", &f], &[]).unwrap();
    let shown = c.redacted();
    assert!(
        shown.contains("office") && shown.contains("pbx.example.net"),
        "{shown}"
    );
    assert!(
        !shown.contains("pw-hidden") && !shown.contains("tok-123-0123456789abc"),
        "{shown}"
    );
    assert!(!format!("{c:?}").contains("pw-hidden"));
}

#[test]
fn sip_protection_from_the_file_and_flags() {
    let f = file(
        "protection",
        "sip_allow = [\"10.0.0.0/8\", \"2001:db8::/32\"]\nsip_flood_requests = 40\n\
         max_ringing_per_source = 2\n",
    );
    let c = resolve(&["--config", &f, "--sip-flood-ban", "60"], &[]).unwrap();
    let p = &c.sip_protection;
    assert!(p.allow[0].contains("10.200.0.1".parse().unwrap()));
    assert!(!p.allow[0].contains("11.0.0.1".parse().unwrap()));
    assert!(p.allow[1].contains("2001:db8::7".parse().unwrap()));
    assert_eq!(p.flood_requests, 40);
    assert_eq!(p.flood_ban, Duration::from_secs(60));
    assert_eq!(p.flood_window, Duration::from_secs(2));
    assert_eq!(p.max_ringing_per_source, 2);
    // Loopback is trusted unless the setting says otherwise.
    assert!(p
        .trusted
        .iter()
        .any(|n| n.contains("127.0.0.1".parse().unwrap())));
    let c = resolve(&["--sip-trusted", "192.0.2.0/24"], &[]).unwrap();
    assert!(!c.sip_protection.trusted[0].contains("127.0.0.1".parse().unwrap()));
}

#[test]
fn bad_sip_protection_values_name_their_setting() {
    for (args, key) in [
        (vec!["--sip-allow", "10.0.0.0/33"], "--sip-allow"),
        (vec!["--sip-allow", "not-a-net"], "--sip-allow"),
        (vec!["--sip-flood-window", "0"], "sip_flood_window"),
        (vec!["--max-ringing-calls", "0"], "max_ringing_calls"),
    ] {
        let e = resolve(&args, &[]).unwrap_err();
        assert!(e.contains(key), "{args:?}: {e}");
    }
    let f = file("bad-protection", "sip_trusted = [\"1.2.3.4/99\"]\n");
    let e = resolve(&["--config", &f], &[]).unwrap_err();
    assert!(e.contains("prefix"), "{e}");
}
