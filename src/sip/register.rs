//! The registration shell: one task per account with `register = true`,
//! sending the REGISTERs [`RegistrationPolicy`] asks for through rsipstack's
//! `Registration` (which answers 401/407 digest challenges and learns the
//! address the registrar saw from `received`/`rport`), and publishing every
//! change to `GET /accounts`, `REG` events and the metrics. On shutdown it
//! unregisters (`Expires: 0`) before it ends.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::registration::Registration;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Response, Uri};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::SipEndpoint;
use crate::accounts::policy::{Outcome, RegState, RegistrationPolicy};
use crate::accounts::AccountConfig;
use crate::config::SipTransport;

/// The longest a REGISTER may take before the attempt counts as unreachable
/// (RFC 3261 timer F is 32 s; a registrar that slow is as good as down).
const REGISTER_LIMIT: std::time::Duration = std::time::Duration::from_secs(32);
/// The longest the unregister at shutdown may take.
pub const UNREGISTER_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Starts a registration task for every account that registers.
pub fn spawn_all(sip: &Arc<SipEndpoint>, stop: &CancellationToken) -> Vec<JoinHandle<()>> {
    sip.board
        .config
        .accounts
        .iter()
        .filter(|a| a.register)
        .map(|a| {
            let span = tracing::info_span!("account", name = %a.name);
            tokio::spawn(run(sip.clone(), a.clone(), stop.child_token()).instrument(span))
        })
        .collect()
}

/// The digest credentials rsipstack answers challenges with.
pub fn credential(account: &AccountConfig) -> Credential {
    Credential {
        username: account.username.clone(),
        password: account.password.expose().to_string(),
        // Taken from each challenge: the domain is only the AOR's host.
        realm: None,
        auth_username: account.auth_username.clone(),
    }
}

/// `sip:{domain}` (REGISTER's Request-URI), with the account's transport.
pub fn registrar_uri(account: &AccountConfig) -> Result<Uri, String> {
    let transport = match account.transport {
        SipTransport::Udp => "",
        SipTransport::Tcp => ";transport=tcp",
        SipTransport::Tls => ";transport=tls",
    };
    let text = format!("{}:{}{transport}", account.scheme(), account.domain);
    Uri::try_from(text.as_str()).map_err(|e| format!("bad registrar URI {text}: {e}"))
}

/// Resolves where the account's requests go.
pub async fn next_hop(account: &AccountConfig) -> Result<std::net::SocketAddr, String> {
    let hop = account.next_hop();
    let resolved = tokio::net::lookup_host(hop.as_str()).await;
    match resolved {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{hop} resolves to no address")),
        Err(e) => Err(format!("cannot resolve {hop}: {e}")),
    }
}

async fn run(sip: Arc<SipEndpoint>, account: AccountConfig, stop: CancellationToken) {
    let uri = match registrar_uri(&account) {
        Ok(uri) => uri,
        Err(e) => {
            tracing::error!(error = %e, "account cannot register");
            return;
        }
    };
    let mut registration =
        Registration::new(sip.dialogs.endpoint.clone(), Some(credential(&account)));
    let mut policy = RegistrationPolicy::new(Instant::now(), account.expires);
    let mut keepalive = account.keepalive_interval.map(|secs| {
        let every = std::time::Duration::from_secs(secs);
        tokio::time::interval_at(tokio::time::Instant::now() + every, every)
    });
    loop {
        let due = policy.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = crate::call::handle::sleep_until(due) => {}
            _ = async { keepalive.as_mut().unwrap().tick().await }, if keepalive.is_some() => {
                if policy.state() == RegState::Registered {
                    if let Err(e) = send_keepalive(&sip, &account).await {
                        tracing::debug!(error = %e, "keep-alive not sent");
                    }
                }
                continue;
            }
        }
        let Some(attempt) = policy.handle_timeout(Instant::now()) else {
            continue;
        };
        let outcome = tokio::select! {
            _ = stop.cancelled() => break,
            outcome = register(&mut registration, &account, &uri, attempt.expires) => outcome,
        };
        sip.board.metrics.registration(
            &account.name,
            metric_outcome(&outcome),
            status_of(&outcome),
        );
        match &outcome {
            Outcome::Granted { expires } => {
                tracing::debug!(granted = expires, "registered")
            }
            other => tracing::debug!(outcome = ?other, "REGISTER failed"),
        }
        let changed = policy.handle_outcome(Instant::now(), outcome);
        publish(&sip, &account, &policy, changed);
    }
    if policy.state() == RegState::Registered {
        let unregister = register(&mut registration, &account, &uri, 0);
        match tokio::time::timeout(UNREGISTER_LIMIT, unregister).await {
            Ok(Outcome::Granted { .. }) => tracing::info!("unregistered"),
            Ok(other) => tracing::info!(outcome = ?other, "unregister refused"),
            Err(_) => tracing::info!("unregister timed out"),
        }
        sip.board
            .metrics
            .registration(&account.name, "unregistered", None);
    }
    policy.stop();
    publish(&sip, &account, &policy, true);
}

/// Keeps the path to the registrar open (a NAT binding, a proxy's idle
/// timer): a double CRLF on the account's TCP or TLS connection (RFC
/// 5626 section 3.5.1), an OPTIONS over UDP.
async fn send_keepalive(sip: &SipEndpoint, account: &AccountConfig) -> Result<(), String> {
    use rsipstack::transport::stream::StreamConnection;
    use rsipstack::transport::{SipAddr, SipConnection};
    let endpoint = &sip.dialogs.endpoint;
    let hop = next_hop(account).await?;
    let transport = match account.transport {
        SipTransport::Udp => rsipstack::sip::Transport::Udp,
        SipTransport::Tcp => rsipstack::sip::Transport::Tcp,
        SipTransport::Tls => rsipstack::sip::Transport::Tls,
    };
    let target = SipAddr {
        r#type: Some(transport),
        addr: hop.into(),
    };
    let (connection, _) = endpoint
        .transport_layer
        .lookup(&target, None)
        .await
        .map_err(|e| e.to_string())?;
    let crlf = rsipstack::transport::connection::KEEPALIVE_REQUEST;
    match connection {
        SipConnection::Tcp(c) => c.send_raw(crlf).await.map_err(|e| e.to_string()),
        SipConnection::Tls(c) => c.send_raw(crlf).await.map_err(|e| e.to_string()),
        _ => options(sip, account, target).await,
    }
}

/// An out-of-dialog OPTIONS to the registrar; its answer does not matter,
/// only that the path stays open.
async fn options(
    sip: &SipEndpoint,
    account: &AccountConfig,
    target: rsipstack::transport::SipAddr,
) -> Result<(), String> {
    use rsipstack::transaction::key::{TransactionKey, TransactionRole};
    use rsipstack::transaction::transaction::Transaction;
    let endpoint = &sip.dialogs.endpoint;
    let aor = Uri::try_from(account.aor().as_str()).map_err(|e| e.to_string())?;
    let via = endpoint.get_via(None, None).map_err(|e| e.to_string())?;
    let from = rsipstack::sip::typed::From {
        display_name: None,
        uri: aor.clone(),
        params: vec![],
    }
    .with_tag(rsipstack::transaction::make_tag());
    let to = rsipstack::sip::typed::To {
        display_name: None,
        uri: aor,
        params: vec![],
    };
    let uri = registrar_uri(account)?;
    let request =
        endpoint.make_request(rsipstack::sip::Method::Options, uri, via, from, to, 1, None);
    let key = TransactionKey::from_request(&request, TransactionRole::Client)
        .map_err(|e| e.to_string())?;
    let mut tx = Transaction::new_client(key, request, endpoint.clone(), None);
    tx.destination = Some(target);
    tx.send().await.map_err(|e| e.to_string())?;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tx.receive()).await;
    Ok(())
}

/// One REGISTER (challenges answered inside), as the policy sees it.
async fn register(
    registration: &mut Registration,
    account: &AccountConfig,
    uri: &Uri,
    expires: u32,
) -> Outcome {
    let hop = match next_hop(account).await {
        Ok(hop) => hop,
        Err(error) => return Outcome::Unreachable { error },
    };
    registration.outbound_proxy = Some(hop);
    let sent = registration.register(uri.clone(), Some(expires));
    match tokio::time::timeout(REGISTER_LIMIT, sent).await {
        Err(_) => Outcome::Unreachable {
            error: format!("no answer from {hop}"),
        },
        Ok(Err(e)) => Outcome::Unreachable {
            error: format!("no answer from {hop}: {e}"),
        },
        Ok(Ok(resp)) => outcome_of(&resp, registration.expires()),
    }
}

fn outcome_of(resp: &Response, granted: u32) -> Outcome {
    let status = resp.status_code.code();
    let reason = resp
        .wire_reason
        .clone()
        .unwrap_or_else(|| resp.status_code.text().to_string());
    match status {
        200..=299 => Outcome::Granted { expires: granted },
        423 => Outcome::IntervalTooBrief {
            min_expires: resp
                .header_value("Min-Expires")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        },
        // rsipstack answers a challenge once; a second one is final.
        401 | 407 => Outcome::Rejected {
            status,
            reason,
            challenged: true,
        },
        _ => Outcome::Rejected {
            status,
            reason,
            challenged: false,
        },
    }
}

fn metric_outcome(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Granted { .. } => "registered",
        Outcome::Rejected { .. } | Outcome::IntervalTooBrief { .. } => "rejected",
        Outcome::Unreachable { .. } => "unreachable",
    }
}

fn status_of(outcome: &Outcome) -> Option<u16> {
    match outcome {
        Outcome::Granted { .. } => Some(200),
        Outcome::Rejected { status, .. } => Some(*status),
        Outcome::IntervalTooBrief { .. } => Some(423),
        Outcome::Unreachable { .. } => None,
    }
}

/// Copies the policy's view into the account book; tells clients and
/// watchers when it `changed`.
fn publish(sip: &SipEndpoint, account: &AccountConfig, policy: &RegistrationPolicy, changed: bool) {
    let Some(status) = sip
        .board
        .accounts
        .update(&account.name, policy, SystemTime::now())
    else {
        return;
    };
    if changed {
        match &status.last_error {
            Some(error) => {
                tracing::warn!(state = status.state.as_str(), status = ?status.last_status, %error, "registration")
            }
            None => {
                tracing::info!(state = status.state.as_str(), expires = ?status.expires, "registration")
            }
        }
        sip.board.registration_changed(&status);
    }
}
