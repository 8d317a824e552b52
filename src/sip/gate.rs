//! [`Admission`] plugged into rsipstack: its transport whitelist sees each
//! UDP packet (and each TCP/TLS connection) before it is parsed, its
//! transport inspector each parsed message before a transaction is made.
//! Refusals are counted in `siprelay_sip_refused_total` and logged once
//! per source per minute.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, SipMessage};
use rsipstack::transaction::endpoint::{EndpointInner, TransportEventInspector};
use rsipstack::transport::{SipAddr, TransportEvent, TransportLayer};

use super::admission::{Admission, AdmissionPolicy, Refused};
use crate::config::{Network, SipProtection};
use crate::switchboard::Switchboard;

/// The admission policy of `protection`, trusting the accounts' servers
/// (and the `sip_server`) too, by their addresses now.
pub async fn policy(board: &Switchboard) -> AdmissionPolicy {
    let config = &board.config;
    let p: &SipProtection = &config.sip_protection;
    let mut trusted = p.trusted.clone();
    let mut servers: Vec<String> = Vec::new();
    for account in &config.accounts {
        let port = if account.transport == crate::config::SipTransport::Tls {
            5061
        } else {
            5060
        };
        for server in [&account.registrar, &account.outbound_proxy]
            .into_iter()
            .flatten()
        {
            servers.push(server.with_default_port(port));
        }
        if account.registrar.is_none() {
            servers.push(format!("{}:{port}", account.domain));
        }
    }
    servers.extend(config.sip_server.clone());
    for server in servers {
        let found = tokio::time::timeout(Duration::from_secs(2), tokio::net::lookup_host(&server));
        match found.await {
            Ok(Ok(addrs)) => trusted.extend(addrs.map(|a| Network::host(a.ip()))),
            _ => {
                tracing::warn!(%server, "cannot resolve a SIP server to trust it; its requests are rate-limited like anyone's")
            }
        }
    }
    AdmissionPolicy {
        allow: p.allow.clone(),
        trusted,
        requests: p.flood_requests,
        window: p.flood_window,
        ban: p.flood_ban,
        max_transactions: p.max_transactions,
    }
}

/// Logs and counts one refusal.
pub fn report(board: &Switchboard, source: IpAddr, refused: Refused) {
    board.metrics.sip_refused(refused.refusal.label());
    if let Some(dropped) = refused.log {
        tracing::warn!(
            %source,
            reason = refused.refusal.label(),
            dropped,
            "SIP from this source refused (logged once a minute per source)"
        );
    }
}

/// Installs the packet check on `transport`.
pub fn install_whitelist(
    transport: &TransportLayer,
    admission: Arc<Admission>,
    board: Arc<Switchboard>,
) {
    transport.set_whitelist(move |ip: IpAddr| {
        let admission = admission.clone();
        let board = board.clone();
        async move {
            // Only UDP packets and new connections come here; UDP's count
            // against the rate now, before they are parsed.
            match admission.on_packet(ip, true, Instant::now()) {
                Ok(()) => true,
                Err(refused) => {
                    report(&board, ip, refused);
                    false
                }
            }
        }
    });
}

/// The inspector that checks each parsed message before rsipstack makes a
/// transaction for it.
pub struct Gate {
    pub admission: Arc<Admission>,
    pub board: Arc<Switchboard>,
    /// Set once the endpoint is built: its live transactions are counted.
    pub endpoint: Arc<OnceLock<Weak<EndpointInner>>>,
}

#[async_trait::async_trait]
impl TransportEventInspector for Gate {
    async fn handle(&self, event: TransportEvent) -> Option<TransportEvent> {
        let TransportEvent::Incoming(SipMessage::Request(req), _, from) = &event else {
            return Some(event);
        };
        let ip = ip_of(from)?;
        let user_agent = req.headers.iter().find_map(|h| match h {
            Header::UserAgent(ua) => Some(ua.value().to_string()),
            _ => None,
        });
        let out_of_dialog = req
            .to_header()
            .ok()
            .and_then(|t| t.tag().ok().flatten())
            .is_none();
        let transactions = self
            .endpoint
            .get()
            .and_then(Weak::upgrade)
            .map_or(0, |e| e.transactions.len());
        // UDP packets were counted by the whitelist already.
        let stream = from
            .r#type
            .is_some_and(|t| t != rsipstack::sip::Transport::Udp);
        let verdict = self.admission.on_request(
            ip,
            user_agent.as_deref(),
            out_of_dialog,
            transactions,
            stream,
            Instant::now(),
        );
        match verdict {
            Ok(()) => Some(event),
            Err(refused) => {
                report(&self.board, ip, refused);
                None
            }
        }
    }
}

fn ip_of(addr: &SipAddr) -> Option<IpAddr> {
    match &addr.addr.host {
        rsipstack::sip::Host::IpAddr(ip) => Some(*ip),
        rsipstack::sip::Host::Domain(d) => d.to_string().parse().ok(),
    }
}

/// Now and then, forgets the quiet sources and gives the memory a flood
/// took back to the system.
pub async fn sweep(admission: Arc<Admission>, shutdown: tokio_util::sync::CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(30));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let before = admission.tracked();
        admission.sweep(Instant::now());
        if before > 0 {
            crate::resources::give_back();
        }
    }
}
