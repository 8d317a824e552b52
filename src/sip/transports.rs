//! SIP's transports: the UDP socket, and the TCP and TLS listeners when
//! configured, added to rsipstack's transport layer; the TLS certificate
//! and key checked before anything listens, and the CA bundle that
//! outgoing TLS connections verify servers against.

use std::net::SocketAddr;
use std::path::Path;

use rsipstack::transport::tcp_listener::TcpListenerConnection;
use rsipstack::transport::tls::{TlsConfig, TlsListenerConnection};
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::TransportLayer;
use tokio_util::sync::CancellationToken;

use super::SipError;
use crate::config::{Config, TlsListen};

/// Where outgoing TLS finds CA certificates when `--tls-ca` is not given
/// (Debian's, and most distributions', system bundle).
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The addresses SIP listens on, as bound.
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
}

/// Binds every configured transport into `transport`.
pub async fn bind_all(
    config: &Config,
    transport: &TransportLayer,
    shutdown: &CancellationToken,
) -> Result<Listening, SipError> {
    let advertised = config.advertised_ip;
    let external = |bound: SocketAddr| {
        (advertised != bound.ip()).then(|| SocketAddr::new(advertised, bound.port()))
    };
    let udp_addr = match config.sip_udp {
        true => {
            let bind = config.sip_listen;
            let udp_external = (bind.port() != 0).then(|| external(bind)).flatten();
            let udp =
                UdpConnection::create_connection(bind, udp_external, Some(shutdown.child_token()))
                    .await
                    .map_err(|source| SipError::Bind {
                        addr: bind,
                        source: Box::new(source),
                    })?;
            let addr = udp.get_addr().get_socketaddr()?;
            transport.add_transport(udp.into());
            Some(addr)
        }
        false => None,
    };

    let tcp = match config.sip_listen_tcp {
        Some(addr) => {
            let bound = probe(addr)?;
            let listener = TcpListenerConnection::new(bound, external(bound)).await?;
            transport.add_transport(listener.into());
            Some(bound)
        }
        None => None,
    };
    let mut client = TlsConfig {
        ca_certs: ca_bundle(config.tls_ca.as_deref())?,
        ..TlsConfig::default()
    };
    let tls = match &config.sip_listen_tls {
        Some(listen) => {
            let (cert, key) = load_certificate(listen)?;
            let bound = probe(listen.addr)?;
            let server = TlsConfig {
                cert: Some(cert.clone()),
                key: Some(key.clone()),
                ..TlsConfig::default()
            };
            let listener = TlsListenerConnection::new(bound, external(bound), server).await?;
            transport.add_transport(listener.into());
            // The same certificate for client authentication where asked for.
            client.client_cert = Some(cert);
            client.client_key = Some(key);
            Some(bound)
        }
        None => None,
    };
    transport.set_tls_config(client);
    Ok(Listening {
        udp: udp_addr,
        tcp,
        tls,
    })
}

/// Binds `addr` once to learn whether it is free and, for port 0, which
/// port to use; rsipstack binds it again (with SO_REUSEADDR) when it serves.
fn probe(addr: SocketAddr) -> Result<SocketAddr, SipError> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| SipError::Listen {
        addr,
        why: e.to_string(),
    })?;
    listener.local_addr().map_err(|e| SipError::Listen {
        addr,
        why: e.to_string(),
    })
}

/// Waits until rsipstack's listener on `addr` is up: its serve task binds
/// it a moment after the endpoint starts, and a daemon that says it is
/// ready must take connections. Found by binding the address ourselves
/// (without SO_REUSEADDR), which fails once the listener holds it.
pub async fn wait_listening(addr: SocketAddr) -> Result<(), SipError> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match std::net::TcpListener::bind(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Ok(()),
            Err(e) => {
                return Err(SipError::Listen {
                    addr,
                    why: e.to_string(),
                })
            }
            Ok(probe) => drop(probe),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(SipError::Listen {
                addr,
                why: "the listener did not start".into(),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, SipError> {
    std::fs::read(path)
        .map_err(|e| SipError::Tls(format!("cannot read {what} {}: {e}", path.display())))
}

/// Reads the PEM certificate chain and key, and checks that they make a
/// usable TLS server (a key that does not match is found here, not at the
/// first handshake).
pub fn load_certificate(listen: &TlsListen) -> Result<(Vec<u8>, Vec<u8>), SipError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert = read("tls_cert", &listen.cert)?;
    let key = read("tls_key", &listen.key)?;
    let bad = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        SipError::Tls(format!("{what} {}: {e}", path.display()))
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<_, _>>()
        .map_err(|e| bad("tls_cert", &listen.cert, &e))?;
    if chain.is_empty() {
        return Err(bad("tls_cert", &listen.cert, &"no PEM certificate in it"));
    }
    let private =
        PrivateKeyDer::from_pem_slice(&key).map_err(|e| bad("tls_key", &listen.key, &e))?;
    rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            SipError::Tls(format!(
                "tls_cert and tls_key do not make a TLS server: {e}"
            ))
        })?;
    Ok((cert, key))
}

/// The CA certificates outgoing TLS trusts: `--tls-ca`, else the system bundle.
fn ca_bundle(configured: Option<&Path>) -> Result<Option<Vec<u8>>, SipError> {
    match configured {
        Some(path) => read("tls_ca", path).map(Some),
        None => Ok(std::fs::read(SYSTEM_CA_BUNDLE).ok()),
    }
}

/// rustls needs a process-wide crypto provider before any TLS transport
/// exists; installing it twice (a second daemon in one process) is fine.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
