//! Outgoing calls: INVITE with our offer → 100/180/183 → 200 (ACK) or a
//! failure, then media until either side hangs up.

use std::sync::Arc;

use rsipstack::dialog::dialog::{DialogStateReceiver, TerminatedReason};
use rsipstack::dialog::invitation::{InviteAsyncResult, InviteOption};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Transport, Uri};
use rsipstack::transport::SipAddr;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::requests::{self, DialogNews};
use super::session::{self, SessionRefresh};
use super::SipEndpoint;
use crate::accounts::AccountConfig;
use crate::call::session_timer::SessionTimer;
use crate::call::state::{Action, CallState, Direction, Input};
use crate::call::{Call, CallId, Control, Script};
use crate::client::ClientHandle;
use crate::config::SipTransport;
use crate::media::sdp;
use crate::media::sdp::RemoteMedia;
use crate::media::session::RtpBinding;
use crate::switchboard::{DialError, Dialer};
use crate::wire::ProtocolError;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::Header;
use std::time::Instant;

impl Dialer for SipEndpoint {
    fn dial(
        &self,
        owner: Arc<ClientHandle>,
        target: &str,
        account: Option<&str>,
        script: Script,
    ) -> Result<Arc<Call>, DialError> {
        let plan = self.plan(target, account).map_err(DialError::Refused)?;
        let board = &self.board;
        let id = CallId::generate();
        let Ok(rtp) = board.bind_rtp() else {
            tracing::warn!(call = %id, %target, "outgoing call failed: no RTP ports free");
            board
                .metrics
                .call_ended(Direction::Outbound.as_str(), Some(503), Default::default());
            return Err(DialError::NoPorts(id));
        };
        let (call, control) = Call::new(
            id,
            Direction::Outbound,
            plan.caller.to_string(),
            target.to_string(),
            Some(owner.clone()),
            plan.account.as_ref().map(|a| a.name.clone()),
        );
        call.set_script(script);
        board.insert_call(call.clone());
        board.calling(&call);
        let port = rtp.lease.rtp_port();
        let sdes = super::sdes::offer(plan.srtp_mode, plan.over_tls());
        let our_sdp = sdp::offer(port as u64, board.advertised_ip(), port, sdes.as_ref());
        tracing::info!(call = %call.id, %target, account = ?call.account, "outgoing call started");
        let task = OutboundCall {
            board: self.board.clone(),
            dialogs: self.dialogs.clone(),
            byes: self.byes.clone(),
            call: call.clone(),
            dialog: None,
            state: CallState::outbound(),
            session: SessionRefresh::new(board.config.min_se),
            sdes,
            srtp: None,
            session_expires: board.config.session_expires,
            retried: false,
            rtp: Some(rtp),
            our_sdp,
        };
        tokio::spawn(task.run(control, plan));
        Ok(call)
    }
}

/// How one outgoing call is placed: to whom, as whom, through where.
#[derive(Clone)]
struct Plan {
    callee: Uri,
    caller: Uri,
    contact: Uri,
    /// Set when the call goes through an account: its credentials and next hop.
    account: Option<AccountConfig>,
    /// SRTP for this call: the account's mode, or that of direct calls.
    srtp_mode: crate::config::SrtpMode,
}

impl Plan {
    /// Whether the INVITE goes over TLS: the account's transport, or a
    /// `sips:` or `;transport=tls` URI dialled directly.
    fn over_tls(&self) -> bool {
        use rsipstack::sip::uri::ParamsExt;
        match &self.account {
            Some(a) => a.transport == SipTransport::Tls,
            None => {
                self.callee.scheme == Some(rsipstack::sip::Scheme::Sips)
                    || self.callee.transport() == Some(&Transport::Tls)
            }
        }
    }
}

impl SipEndpoint {
    /// The account a dial goes through: the one named, else the default
    /// account for a plain number; none for a `sip:` URI dialled directly.
    fn pick_account(
        &self,
        target: &str,
        named: Option<&str>,
    ) -> Result<Option<AccountConfig>, ProtocolError> {
        let accounts = &self.board.config.accounts;
        match named {
            Some(name) => accounts
                .iter()
                .find(|a| a.name == name)
                .cloned()
                .map(Some)
                .ok_or_else(|| ProtocolError::new(404, format!("no account named {name}"))),
            None if is_uri(target) => Ok(None),
            None => Ok(crate::accounts::default_account(accounts).cloned()),
        }
    }

    fn plan(&self, target: &str, account: Option<&str>) -> Result<Plan, ProtocolError> {
        let account = self.pick_account(target, account)?;
        let callee = self.target_uri(target, account.as_ref())?;
        let (caller, contact) = match &account {
            Some(a) => (
                parse_uri(&a.aor())?,
                parse_uri(&format!(
                    "sip:{}@{}",
                    a.username, self.contact.host_with_port
                ))?,
            ),
            None => (self.contact.clone(), self.contact.clone()),
        };
        let srtp_mode = account.as_ref().map_or(self.board.config.srtp, |a| a.srtp);
        Ok(Plan {
            callee,
            caller,
            contact,
            account,
            srtp_mode,
        })
    }

    /// A `sip:` URI as given; a plain number at the account's domain, or
    /// else at the configured SIP server.
    fn target_uri(
        &self,
        target: &str,
        account: Option<&AccountConfig>,
    ) -> Result<Uri, ProtocolError> {
        if is_uri(target) {
            return parse_uri(target);
        }
        // It becomes the user part of a URI: nothing that could end the
        // user part or the URI (`@`, `:`, `;`, `>`, spaces) may pass.
        let allowed = |c: char| c.is_ascii_alphanumeric() || "+*#._-".contains(c);
        if target.is_empty() || !target.chars().all(allowed) {
            return Err(ProtocolError::bad_request(
                "a number may hold only letters, digits and + * # . _ -; use a sip: URI for anything else",
            ));
        }
        let text = match account {
            Some(a) => format!("{}:{target}@{}", a.scheme(), a.domain),
            None => {
                let server = self.board.config.sip_server.as_deref().ok_or_else(|| {
                    ProtocolError::bad_request(
                        "no account and no SIP server configured (--sip-server) to dial plain numbers; use a sip: URI",
                    )
                })?;
                format!("sip:{target}@{server}")
            }
        };
        parse_uri(&text)
    }
}

fn is_uri(target: &str) -> bool {
    target.to_ascii_lowercase().starts_with("sip")
}

fn parse_uri(text: &str) -> Result<Uri, ProtocolError> {
    Uri::try_from(text).map_err(|e| ProtocolError::bad_request(format!("bad SIP URI: {e}")))
}

/// Where a URI dialled directly goes, when rsipstack would not know: a
/// `sips:` URI without `;transport=` means TLS, by default on port 5061.
fn direct_destination(callee: &Uri) -> Option<SipAddr> {
    use rsipstack::sip::uri::ParamsExt;
    let sips = callee.scheme == Some(rsipstack::sip::Scheme::Sips);
    if !sips || callee.transport().is_some() {
        return None;
    }
    let mut addr = callee.host_with_port.clone();
    if addr.port.is_none() {
        addr.port = Some(5061.into());
    }
    Some(SipAddr {
        r#type: Some(Transport::Tls),
        addr,
    })
}

/// Where an account's requests go, as rsipstack addresses them.
async fn destination(account: &AccountConfig) -> Result<SipAddr, String> {
    let hop = super::register::next_hop(account).await?;
    let mut addr = SipAddr::from(hop);
    addr.r#type = Some(match account.transport {
        SipTransport::Udp => Transport::Udp,
        SipTransport::Tcp => Transport::Tcp,
        SipTransport::Tls => Transport::Tls,
    });
    Ok(addr)
}

struct OutboundCall {
    board: Arc<crate::switchboard::Switchboard>,
    dialogs: Arc<rsipstack::dialog::dialog_layer::DialogLayer>,
    byes: tokio_util::task::TaskTracker,
    call: Arc<Call>,
    /// Once the INVITE is sent.
    dialog: Option<InviteDialog>,
    state: CallState,
    session: SessionRefresh,
    /// The session interval our INVITE asks for.
    session_expires: u32,
    /// Whether the INVITE was already sent again after a 422.
    retried: bool,
    /// Our SDES offer, when the call offers SRTP.
    sdes: Option<crate::media::sdp::Sdes>,
    /// The keys agreed, once the far end answered with its own.
    srtp: Option<crate::media::srtp::SrtpKeys>,
    rtp: Option<RtpBinding>,
    our_sdp: String,
}

impl OutboundCall {
    /// Sends the INVITE; the dialog and the INVITE's outcome to follow, or
    /// why it could not be sent.
    async fn invite(
        &mut self,
        plan: Plan,
    ) -> Result<
        (
            DialogStateReceiver,
            tokio::task::JoinHandle<InviteAsyncResult>,
        ),
        (u16, String),
    > {
        let destination = match &plan.account {
            Some(account) => Some(
                destination(account)
                    .await
                    .map_err(|e| (503, format!("Service Unavailable ({e})")))?,
            ),
            None => direct_destination(&plan.callee),
        };
        let option = InviteOption {
            caller: plan.caller,
            callee: plan.callee,
            contact: plan.contact,
            destination,
            credential: plan.account.as_ref().map(super::register::credential),
            content_type: Some("application/sdp".into()),
            offer: Some(self.our_sdp.clone().into_bytes()),
            // Our own id, so SIP traces and logs name the call the same way.
            call_id: Some(format!("{}@{}", self.call.id, self.board.advertised_ip())),
            // Supported: 100rel (rsipstack PRACKs reliable 18x) and timer.
            headers: Some(self.invite_headers()),
            ..Default::default()
        };
        let (state_tx, dialog_news) = self.dialogs.new_dialog_state_channel();
        let (dialog, invite) = self
            .dialogs
            .do_invite_async(option, state_tx)
            .map_err(|e| {
                tracing::warn!(error = %e, "INVITE could not be sent");
                (500, "Server Internal Error".to_string())
            })?;
        self.dialog = Some(dialog);
        Ok((dialog_news, invite))
    }

    /// What our INVITE says of the extensions: what we support, and the
    /// session interval we ask for.
    fn invite_headers(&self) -> Vec<Header> {
        let mut headers = session::capability_headers();
        headers.push(Header::SessionExpires(
            self.session_expires.to_string().into(),
        ));
        headers.push(Header::MinSE(self.board.config.min_se.to_string().into()));
        headers
    }

    async fn run(mut self, mut control: mpsc::Receiver<Control>, plan: Plan) {
        let span = tracing::info_span!("call", id = %self.call.id);
        let (mut dialog_news, invite) =
            match self.invite(plan.clone()).instrument(span.clone()).await {
                Ok(started) => started,
                Err((status, reason)) => {
                    let actions = self.input(Input::Failed { status, reason });
                    self.carry_out(actions, &span, None).await;
                    return;
                }
            };
        let mut invite = Some(invite);
        let mut remote = None;
        // Set by a 422: the INVITE is sent again once, asking for this interval.
        let mut retry_with: Option<u32> = None;
        loop {
            if let Some(interval) = retry_with.take() {
                tracing::info!(
                    interval,
                    "422: sending the INVITE again with the interval asked for"
                );
                self.retried = true;
                self.session_expires = interval;
                match self.invite(plan.clone()).await {
                    Ok((news, started)) => {
                        dialog_news = news;
                        invite = Some(started);
                    }
                    Err((status, reason)) => {
                        let actions = self.input(Input::Failed { status, reason });
                        if self.carry_out(actions, &span, remote.as_ref()).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            let deadline = self.session.deadline().map(tokio::time::Instant::from_std);
            let actions = tokio::select! {
                request = control.recv() => match request {
                    Some(Control::Answer { reply, .. }) => {
                        let _ = reply.send(Err(ProtocolError::new(409, "an outgoing call cannot be answered")));
                        continue;
                    }
                    Some(Control::Reject { .. }) => continue,
                    Some(Control::Hangup) => self.input(Input::Hangup),
                    Some(Control::OwnerGone) => self.input(Input::OwnerGone),
                    Some(Control::Shutdown) | None => self.input(Input::Shutdown),
                },
                result = async { invite.as_mut().unwrap().await }, if invite.is_some() => {
                    invite = None;
                    let input = match result {
                        Ok(Ok((_, Some(resp)))) if resp.status_code.code() / 100 == 2 => {
                            let agreed = sdp::parse(&resp.body).map_err(|e| e.to_string()).and_then(|r| {
                                super::sdes::accepted(self.sdes.as_ref(), plan.srtp_mode, &r)
                                    .map(|keys| (r, keys))
                                    .map_err(|e| e.to_string())
                            });
                            match agreed {
                                Ok((r, keys)) => {
                                    // A later re-INVITE gets the codec agreed, not our first offer.
                                    if let Some(rtp) = &self.rtp {
                                        let port = rtp.lease.rtp_port();
                                        let sdes = self.sdes.as_ref().filter(|_| keys.is_some());
                                        self.our_sdp = sdp::answer(port as u64, self.board.advertised_ip(), port, &r, sdes);
                                    }
                                    self.srtp = keys;
                                    remote = Some(r);
                                    let answered = session::response_session_expires(&resp);
                                    self.session.set(SessionTimer::accepted(Instant::now(), answered, self.board.config.min_se));
                                    Input::Accepted
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "200 OK without a usable SDP answer");
                                    if let Some(dialog) = &self.dialog {
                                        super::send_bye(&self.byes, dialog);
                                    }
                                    Input::Failed { status: 488, reason: "Not Acceptable Here".into() }
                                }
                            }
                        }
                        Ok(Ok((_, Some(resp)))) if resp.status_code.code() == 422 && !self.retried => {
                            let floor = self.board.config.min_se;
                            let min = resp.header_value("Min-SE").and_then(|v| v.parse().ok()).unwrap_or(floor);
                            retry_with = Some(min.max(floor).max(self.session_expires));
                            continue;
                        }
                        Ok(Ok((_, Some(resp)))) => Input::Failed {
                            status: resp.status_code.code(),
                            reason: resp.wire_reason.clone().unwrap_or_else(|| resp.status_code.text().to_string()),
                        },
                        Ok(Ok((_, None))) => Input::Failed { status: 408, reason: "Request Timeout".into() },
                        Ok(Err(e)) => {
                            tracing::info!(error = %e, "INVITE failed");
                            Input::Failed { status: 408, reason: "Request Timeout".into() }
                        }
                        Err(_) => Input::Failed { status: 500, reason: "Server Internal Error".into() },
                    };
                    self.input(input)
                },
                news = dialog_news.recv() => match news {
                    Some(state) => match requests::handle(state, &self.our_sdp, self.board.config.min_se).await {
                        DialogNews::Provisional(code) => self.input(Input::Provisional(code)),
                        DialogNews::Terminated(TerminatedReason::UasBye) => self.input(Input::RemoteBye),
                        // Other endings are reported by the INVITE's result.
                        DialogNews::Terminated(_) if invite.is_some() => continue,
                        DialogNews::Terminated(_) => self.input(Input::RemoteBye),
                        DialogNews::Refreshed(answer) => {
                            self.session.on_remote_refresh(Instant::now(), &answer);
                            continue;
                        }
                        DialogNews::Confirmed | DialogNews::Nothing => continue,
                    },
                    None if invite.is_some() => continue,
                    None => self.input(Input::RemoteBye),
                },
                result = self.session.refreshed(), if self.session.is_pending() => {
                    match self.session.on_refreshed(Instant::now(), result) {
                        Some(input) => self.input(input),
                        None => continue,
                    }
                }
                _ = crate::call::handle::sleep_until(deadline) => {
                    let due = match &self.dialog {
                        Some(dialog) => self.session.on_due(Instant::now(), dialog, &self.our_sdp),
                        None => None,
                    };
                    match due {
                        Some(input) => self.input(input),
                        None => continue,
                    }
                }
            };
            if self.carry_out(actions, &span, remote.as_ref()).await {
                return;
            }
        }
    }

    /// Carries out the state machine's actions; true when the call is finished.
    async fn carry_out(
        &mut self,
        actions: Vec<Action>,
        span: &tracing::Span,
        remote: Option<&RemoteMedia>,
    ) -> bool {
        self.call.set_phase(self.state.phase());
        self.call.set_sip_status(self.state.sip_status());
        let _enter = span.enter();
        for action in actions {
            match action {
                Action::SendCancel => {
                    if let Some(dialog) = &self.dialog {
                        if let Err(e) = dialog.cancel().await {
                            tracing::debug!(error = %e, "CANCEL failed");
                        }
                    }
                }
                Action::SendBye => {
                    if let Some(dialog) = &self.dialog {
                        super::send_bye(&self.byes, dialog);
                    }
                }
                Action::StartMedia => {
                    if let (Some(rtp), Some(owner), Some(remote)) =
                        (self.rtp.take(), self.call.owner(), remote)
                    {
                        self.board
                            .start_media(&self.call, rtp, remote, owner, self.srtp.clone());
                    }
                }
                Action::Notify(notice) => {
                    tracing::info!(?notice, "call event");
                    self.board.notify(&self.call, &notice);
                }
                Action::Finish(cause) => {
                    tracing::info!(?cause, "call ended");
                    self.board.finish(&self.call, &cause);
                    if let Some(dialog) = &self.dialog {
                        self.dialogs.remove_dialog(&dialog.id());
                    }
                    return true;
                }
                Action::SendOk | Action::SendReject(_) => {}
            }
        }
        false
    }

    fn input(&mut self, input: Input) -> Vec<Action> {
        self.state.handle_input(input).unwrap_or_default()
    }
}
