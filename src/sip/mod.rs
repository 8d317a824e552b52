//! The SIP shell: rsipstack wiring. One UDP endpoint; a router task hands
//! new INVITEs to [`inbound`], answers what siprelay does not support, and
//! passes in-dialog requests to their dialogs. Each call runs in its own
//! task ([`inbound`], [`outbound`]) that feeds the pure call state machine
//! and carries out its actions.

pub mod admission;
mod gate;
pub mod inbound;
pub mod outbound;
pub mod register;
mod requests;
pub mod ringing;
mod sdes;
pub mod session;
pub mod transports;
pub mod validate;

use std::net::SocketAddr;
use std::sync::Arc;

use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::{Header, Method, StatusCode, Uri};
use rsipstack::transaction::TransactionReceiver;
use rsipstack::transport::TransportLayer;
use rsipstack::EndpointBuilder;
use tokio_util::sync::CancellationToken;

use crate::switchboard::Switchboard;

#[derive(Debug, thiserror::Error)]
pub enum SipError {
    #[error("cannot bind SIP on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: Box<rsipstack::Error>,
    },
    #[error("cannot listen for SIP on {addr}: {why}")]
    Listen { addr: SocketAddr, why: String },
    #[error("SIP over TLS: {0}")]
    Tls(String),
    #[error("cannot build the Contact URI: {0}")]
    Contact(String),
    #[error("SIP endpoint: {0}")]
    Stack(Box<rsipstack::Error>),
}

impl From<rsipstack::Error> for SipError {
    fn from(e: rsipstack::Error) -> Self {
        SipError::Stack(Box::new(e))
    }
}

pub struct SipEndpoint {
    pub(crate) board: Arc<Switchboard>,
    pub(crate) dialogs: Arc<DialogLayer>,
    /// Incoming calls waiting for the PRACK of a reliable 180, by Call-ID.
    pracks: dashmap::DashMap<String, Arc<tokio::sync::Notify>>,
    /// BYE transactions under way: a call is over for everyone as soon as
    /// its BYE is sent, and shutdown waits for these before SIP stops.
    byes: tokio_util::task::TaskTracker,
    listening: transports::Listening,
    /// Who may reach SIP, checked before rsipstack makes transactions.
    pub(crate) admission: Arc<admission::Admission>,
    /// Unconfirmed incoming calls from untrusted sources.
    pub(crate) ringing: Arc<ringing::RingingLimit>,
    /// Our Contact: the advertised address and the bound UDP port.
    pub(crate) contact: Uri,
}

impl SipEndpoint {
    /// Binds the configured transports and starts serving until `shutdown`.
    pub async fn start(
        board: Arc<Switchboard>,
        shutdown: CancellationToken,
    ) -> Result<Arc<SipEndpoint>, SipError> {
        transports::install_crypto_provider();
        let advertised = board.advertised_ip();
        let transport = TransportLayer::new(shutdown.child_token());
        let admission = Arc::new(admission::Admission::new(gate::policy(&board).await));
        gate::install_whitelist(&transport, admission.clone(), board.clone());
        let endpoint_ref = Arc::new(std::sync::OnceLock::new());
        let listening = transports::bind_all(&board.config, &transport, &shutdown).await?;

        let mut builder = EndpointBuilder::new();
        // Call-IDs rsipstack makes (REGISTER, OPTIONS) end in our own
        // address, not the library's default domain.
        let t1 = board.config.sip_t1;
        let option = rsipstack::transaction::endpoint::EndpointOption {
            t1,
            t1x64: t1 * 64,
            callid_suffix: Some(advertised.to_string()),
            ..Default::default()
        };
        builder
            .with_option(option)
            .with_user_agent(concat!("siprelay/", env!("CARGO_PKG_VERSION")))
            .with_cancel_token(shutdown.child_token())
            .with_transport_layer(transport)
            .with_transport_inspector(Box::new(gate::Gate {
                admission: admission.clone(),
                board: board.clone(),
                endpoint: endpoint_ref.clone(),
            }));
        let endpoint = builder.build();
        let _ = endpoint_ref.set(Arc::downgrade(&endpoint.inner));
        tokio::spawn(gate::sweep(admission.clone(), shutdown.clone()));
        let incoming = endpoint.incoming_transactions()?;
        let inner = endpoint.inner.clone();
        tokio::spawn(async move {
            if let Err(e) = inner.serve().await {
                tracing::error!(error = %e, "SIP endpoint stopped");
            }
        });
        for addr in [listening.tcp, listening.tls].into_iter().flatten() {
            transports::wait_listening(addr).await?;
        }
        let contact = match (listening.udp, listening.tcp, listening.tls) {
            (Some(udp), _, _) => {
                format!("sip:siprelay@{}", SocketAddr::new(advertised, udp.port()))
            }
            (None, Some(tcp), _) => format!(
                "sip:siprelay@{};transport=tcp",
                SocketAddr::new(advertised, tcp.port())
            ),
            (None, None, Some(tls)) => format!(
                "sips:siprelay@{};transport=tls",
                SocketAddr::new(advertised, tls.port())
            ),
            (None, None, None) => return Err(SipError::Contact("no SIP listener".into())),
        };
        let contact =
            Uri::try_from(contact.as_str()).map_err(|e| SipError::Contact(e.to_string()))?;
        let board_protection = board.config.sip_protection.clone();
        let sip = Arc::new(SipEndpoint {
            board,
            dialogs: Arc::new(DialogLayer::new(endpoint.inner.clone())),
            pracks: Default::default(),
            byes: tokio_util::task::TaskTracker::new(),
            listening,
            admission,
            ringing: ringing::RingingLimit::new(
                board_protection.max_ringing,
                board_protection.max_ringing_per_source,
            ),
            contact,
        });
        tokio::spawn(route(sip.clone(), incoming));
        tracing::info!(udp = ?listening.udp, tcp = ?listening.tcp, tls = ?listening.tls, "SIP listening");
        Ok(sip)
    }

    /// The address SIP listens on: UDP's, or else TCP's or TLS's.
    pub fn local_addr(&self) -> SocketAddr {
        let l = self.listening;
        l.udp
            .or(l.tcp)
            .or(l.tls)
            .expect("bind_all binds at least one")
    }

    /// Every address SIP listens on.
    pub fn listening(&self) -> transports::Listening {
        self.listening
    }

    /// Our Contact for a dialog carried by `transport`, with `user`: our
    /// listener for that transport, or else `connection`, the address of
    /// the connection the dialog came over (a TCP or TLS connection
    /// siprelay opened to a proxy, which sends in-dialog requests back on it).
    pub(crate) fn contact_for(
        &self,
        transport: rsipstack::sip::Transport,
        user: &str,
        connection: Option<&rsipstack::transport::SipAddr>,
    ) -> Uri {
        use rsipstack::sip::Transport;
        let ip = self.board.advertised_ip();
        let listener = |port: u16| SocketAddr::new(ip, port).to_string();
        let (scheme, addr, param) = match (
            transport,
            self.listening.tcp,
            self.listening.tls,
            connection,
        ) {
            (Transport::Tcp, Some(tcp), _, _) => ("sip", listener(tcp.port()), ";transport=tcp"),
            (Transport::Tls, _, Some(tls), _) => ("sips", listener(tls.port()), ";transport=tls"),
            (Transport::Tcp, None, _, Some(c)) => ("sip", c.addr.to_string(), ";transport=tcp"),
            (Transport::Tls, _, None, Some(c)) => ("sips", c.addr.to_string(), ";transport=tls"),
            _ => match self.listening.udp {
                Some(udp) => ("sip", listener(udp.port()), ""),
                None => return self.contact.clone(),
            },
        };
        let text = format!("{scheme}:{user}@{addr}{param}");
        Uri::try_from(text.as_str()).unwrap_or_else(|_| self.contact.clone())
    }

    /// Sends BYE in `dialog` without waiting for its answer: a far end or
    /// proxy that is slow to answer must not hold up the call's end.
    pub(crate) fn send_bye(&self, dialog: &rsipstack::dialog::invite_dialog::InviteDialog) {
        send_bye(&self.byes, dialog);
    }

    /// Waits (up to `limit`) for the BYEs still under way.
    pub async fn finish_byes(&self, limit: std::time::Duration) {
        self.byes.close();
        let _ = tokio::time::timeout(limit, self.byes.wait()).await;
    }

    /// A notification for the PRACK of call `call_id`'s reliable 180.
    pub(crate) fn expect_prack(&self, call_id: &str) -> Arc<tokio::sync::Notify> {
        let notify = Arc::new(tokio::sync::Notify::new());
        self.pracks.insert(call_id.to_string(), notify.clone());
        notify
    }

    pub(crate) fn forget_prack(&self, call_id: &str) {
        self.pracks.remove(call_id);
    }
}

/// Sends BYE in `dialog` in a task `byes` tracks.
pub(crate) fn send_bye(
    byes: &tokio_util::task::TaskTracker,
    dialog: &rsipstack::dialog::invite_dialog::InviteDialog,
) {
    let dialog = dialog.clone();
    byes.spawn(async move {
        if let Err(e) = dialog.bye().await {
            tracing::debug!(error = %e, "BYE failed");
        }
    });
}

/// Sends each incoming transaction where it belongs.
async fn route(sip: Arc<SipEndpoint>, mut incoming: TransactionReceiver) {
    while let Some(mut tx) = incoming.recv().await {
        if let Err(invalid) = validate_request(&tx.original) {
            tracing::info!(status = invalid.status, why = %invalid.why, "refusing a malformed request");
            let warning = Header::Other(
                "Warning".into(),
                format!("399 siprelay \"{}\"", invalid.why),
            );
            let _ = tx
                .reply_with(StatusCode::from(invalid.status), vec![warning], None)
                .await;
            continue;
        }
        let method = tx.original.method;
        if !matches!(method, Method::Ack | Method::Cancel) {
            let unknown = session::unsupported(&tx.original);
            if !unknown.is_empty() {
                tracing::info!(%method, unsupported = ?unknown, "refusing a request that requires unknown extensions (420)");
                let unsupported = Header::Unsupported(unknown.join(", ").into());
                let _ = tx
                    .reply_with(StatusCode::BadExtension, vec![unsupported], None)
                    .await;
                continue;
            }
        }
        if method == Method::PRack {
            let call_id = tx
                .original
                .call_id_header()
                .ok()
                .map(|h| h.value().to_string());
            if let Some(notify) = call_id.and_then(|id| sip.pracks.get(&id).map(|n| n.clone())) {
                notify.notify_one();
            }
        }
        if let Some(mut dialog) = sip.dialogs.match_dialog(&tx) {
            tokio::spawn(async move {
                if let Err(e) = dialog.handle(&mut tx).await {
                    tracing::debug!(error = %e, "in-dialog request failed");
                }
            });
            continue;
        }
        let has_to_tag = tx
            .original
            .to_header()
            .ok()
            .and_then(|t| t.tag().ok().flatten())
            .is_some();
        match tx.original.method {
            Method::Invite if !has_to_tag => inbound::spawn(sip.clone(), tx),
            Method::Options => {
                // PBXs qualify a peer with these.
                let mut headers = session::capability_headers();
                headers.push(Header::Accept(session::ACCEPT.into()));
                let _ = tx.reply_with(StatusCode::OK, headers, None).await;
            }
            Method::Invite | Method::Bye => {
                let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
            }
            Method::Ack => {}
            _ => {
                let _ = tx.reply(StatusCode::MethodNotAllowed).await;
            }
        }
    }
}

pub fn validate_request(req: &rsipstack::sip::Request) -> Result<(), validate::Invalid> {
    let method = req.method.to_string();
    let uri = req.uri.to_string();
    let rendered: Vec<String> = req.headers.iter().map(|h| h.to_string()).collect();
    let headers = rendered
        .iter()
        .filter_map(|h| h.split_once(':'))
        .map(|(n, v)| (n.trim(), v.trim()))
        .collect();
    validate::check(&validate::RequestText {
        method: &method,
        uri: &uri,
        version_2_0: req.version == rsipstack::sip::Version::V2,
        headers,
        body_len: req.body.len(),
    })
}

/// The user part of a URI, or its host when it has none.
pub(crate) fn user_of(uri: &Uri) -> String {
    uri.user()
        .map(str::to_string)
        .unwrap_or_else(|| uri.host_with_port.to_string())
}

/// The address a request came from: its top Via's `received`, or the
/// Via's own host when that is what the transport saw.
pub(crate) fn source_ip(req: &rsipstack::sip::Request) -> Option<std::net::IpAddr> {
    let via = req.via_header().ok()?;
    let (_, host) = rsipstack::transport::SipConnection::parse_target_from_via(via).ok()?;
    host.host.to_string().parse().ok()
}

/// The From user of a request.
pub(crate) fn caller_of(req: &rsipstack::sip::Request) -> String {
    req.from_header()
        .ok()
        .and_then(|h| h.typed().ok())
        .map(|from| user_of(&from.uri))
        .unwrap_or_else(|| "anonymous".into())
}
