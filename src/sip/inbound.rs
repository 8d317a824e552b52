//! Incoming calls: INVITE → 100 → 180 → offered to clients → 200 or a
//! rejection, then media until either side hangs up.

use std::sync::Arc;
use std::time::Instant;

use rsipstack::dialog::dialog::TerminatedReason;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::{Header, StatusCode};
use rsipstack::transaction::transaction::Transaction;
use tokio::sync::mpsc;

use super::requests::{self, DialogNews};
use super::session::{self, SessionRefresh};
use super::{caller_of, user_of, SipEndpoint};
use crate::call::session_timer::Answer;
use crate::call::state::{Action, CallState, Direction, Input, Phase};
use crate::call::{Call, CallId, Control};
use crate::media::sdp::{self, RemoteMedia};
use crate::media::session::RtpBinding;
use crate::wire::ProtocolError;

pub fn spawn(sip: Arc<SipEndpoint>, tx: Transaction) {
    tokio::spawn(async move { handle_invite(sip, tx).await });
}

async fn handle_invite(sip: Arc<SipEndpoint>, mut tx: Transaction) {
    let board = sip.board.clone();
    let from = caller_of(&tx.original);
    let to = user_of(&tx.original.uri);
    let source = super::source_ip(&tx.original);
    let account = {
        let to_host = tx
            .original
            .to_header()
            .ok()
            .and_then(|h| h.typed().ok())
            .map(|t| t.uri.host_with_port.host.to_string())
            .unwrap_or_default();
        let source = source.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        crate::accounts::for_incoming(&board.config.accounts, &to, &to_host, source).cloned()
    };
    // Unconfirmed calls from untrusted sources are capped before they get
    // a port pair; the slot is given back on the ACK or the call's end.
    let unconfirmed = match source.filter(|ip| !sip.admission.is_trusted(*ip)) {
        Some(ip) => match sip.ringing.take(ip) {
            Ok(slot) => Some(slot),
            Err(too_many) => {
                let refused =
                    sip.admission
                        .refuse(ip, super::admission::Refusal::Ringing, Instant::now());
                super::gate::report(&board, ip, refused);
                tracing::debug!(%from, %to, ?too_many, "incoming call rejected: too many ringing (503)");
                board.refused_invite(503);
                let retry = Header::RetryAfter("30".into());
                let _ = tx
                    .reply_with(StatusCode::ServiceUnavailable, vec![retry], None)
                    .await;
                return;
            }
        },
        None => None,
    };
    let remote = match sdp::parse(&tx.original.body) {
        Ok(remote) => remote,
        Err(e) => {
            tracing::info!(%from, %to, error = %e, "incoming call rejected: 488");
            board.refused_invite(488);
            let _ = tx.reply(StatusCode::NotAcceptableHere).await;
            return;
        }
    };
    let Ok(rtp) = board.bind_rtp() else {
        tracing::warn!(%from, %to, "incoming call rejected: no RTP ports free (503)");
        board.refused_invite(503);
        let _ = tx.reply(StatusCode::ServiceUnavailable).await;
        return;
    };
    let transport = tx
        .connection
        .as_ref()
        .and_then(|c| c.get_addr().r#type)
        .unwrap_or(rsipstack::sip::Transport::Udp);
    let srtp_mode = account.as_ref().map_or(board.config.srtp, |a| a.srtp);
    let over_tls = transport == rsipstack::sip::Transport::Tls;
    let srtp = match super::sdes::answer(srtp_mode, over_tls, &remote) {
        Ok(srtp) => srtp,
        Err(e) => {
            tracing::info!(%from, %to, why = %e, "incoming call rejected: 488");
            board.refused_invite(488);
            let warning = Header::Other("Warning".into(), format!("399 siprelay \"{e}\""));
            let _ = tx
                .reply_with(StatusCode::NotAcceptableHere, vec![warning], None)
                .await;
            return;
        }
    };
    let floor = board.config.min_se;
    if let Answer::TooSmall(min) =
        session::answer_request(Instant::now(), &tx.original.headers, floor)
    {
        tracing::info!(%from, %to, min, "incoming call rejected: session interval too small (422)");
        board.refused_invite(422);
        let min_se = Header::MinSE(min.to_string().into());
        let _ = tx
            .reply_with(StatusCode::SessionIntervalTooSmall, vec![min_se], None)
            .await;
        return;
    }
    let account_name = account.as_ref().map(|a| a.name.clone());
    if let Err(status) = board.route_incoming(&to, account_name.as_deref()) {
        tracing::info!(%from, %to, status, "incoming call rejected: nobody to take it, or busy");
        board.refused_invite(status);
        let _ = tx.reply(StatusCode::from(status)).await;
        return;
    }

    let (state_tx, mut dialog_news) = sip.dialogs.new_dialog_state_channel();
    // On the transport the INVITE came over; on an account, with its
    // user, as the Contact registered.
    let user = account.as_ref().map_or("siprelay", |a| a.username.as_str());
    let connection = tx.connection.as_ref().map(|c| c.get_addr().clone());
    let contact = sip.contact_for(transport, user, connection.as_ref());
    let dialog = match sip
        .dialogs
        .get_or_create_server_invite(&tx, state_tx, None, Some(contact))
    {
        Ok(d) => d,
        Err(e) => {
            tracing::info!(%from, error = %e, "cannot create dialog: 400");
            board.refused_invite(400);
            let _ = tx.reply(StatusCode::BadRequest).await;
            return;
        }
    };
    let _ = tx.send_trying().await;
    let tx_headers = tx.original.headers.clone();
    let call_id = tx
        .original
        .call_id_header()
        .map(|h| h.value().to_string())
        .unwrap_or_default();
    let mut server_tx = dialog.clone();
    tokio::spawn(async move {
        let _ = server_tx.handle(&mut tx).await;
    });
    // A caller that requires 100rel gets its 180 reliably (RFC 3262).
    let reliable = session::lists(&tx_headers, "Require", "100rel");
    let prack = reliable.then(|| sip.expect_prack(&call_id));
    let ringing_headers = reliable.then(session::ReliableRinging::headers);
    if dialog.ringing(ringing_headers, None).is_err() {
        sip.dialogs.remove_dialog(&dialog.id());
        return;
    }

    let (call, control) = Call::new(
        CallId::generate(),
        Direction::Inbound,
        from,
        to,
        None,
        account_name,
    );
    let span = tracing::info_span!("call", id = %call.id);
    let _enter = span.enter();
    board.insert_call(call.clone());
    if !board.offer(&call) {
        // The last client left between the check above and now.
        let _ = dialog.reject(Some(StatusCode::TemporarilyUnavailable), None);
        call.set_sip_status(Some(480));
        board.finish(&call, &crate::call::state::EndCause::Remote);
        sip.dialogs.remove_dialog(&dialog.id());
        return;
    }
    tracing::info!(from = %call.from, to = %call.to, codec = remote.codec.name(), "incoming call offered");
    drop(_enter);

    let mut task = InboundCall {
        sip: sip.clone(),
        call,
        dialog,
        state: CallState::inbound(Instant::now(), board.ring_timeout()),
        remote,
        rtp: Some(rtp),
        our_sdp: String::new(),
        invite_headers: tx_headers,
        session: SessionRefresh::new(floor),
        srtp,
        ringing: reliable.then(|| session::ReliableRinging::start(Instant::now())),
        prack,
        unconfirmed,
    };
    task.run(control, &mut dialog_news).await;
    sip.forget_prack(&call_id);
}

struct InboundCall {
    sip: Arc<SipEndpoint>,
    call: Arc<Call>,
    dialog: InviteDialog,
    state: CallState,
    remote: RemoteMedia,
    /// Taken when media starts.
    rtp: Option<RtpBinding>,
    our_sdp: String,
    /// The INVITE's headers: what the caller supports and asks of timers.
    invite_headers: rsipstack::sip::Headers,
    session: SessionRefresh,
    /// Retransmissions of a reliable 180, until its PRACK.
    ringing: Option<session::ReliableRinging>,
    /// Signalled when that PRACK arrives.
    prack: Option<Arc<tokio::sync::Notify>>,
    /// The call's place under the cap on unconfirmed calls, until its ACK.
    unconfirmed: Option<super::ringing::RingingSlot>,
    /// Our SDES answer and the keys, when the media is SRTP.
    srtp: Option<(crate::media::sdp::Sdes, crate::media::srtp::SrtpKeys)>,
}

impl InboundCall {
    async fn run(
        &mut self,
        mut control: mpsc::Receiver<Control>,
        dialog_news: &mut rsipstack::dialog::dialog::DialogStateReceiver,
    ) {
        let span = tracing::info_span!("call", id = %self.call.id);
        loop {
            let deadline = [
                self.state.poll_timeout(),
                self.session.deadline(),
                self.ringing.as_ref().and_then(|r| r.deadline()),
            ]
            .into_iter()
            .flatten()
            .min()
            .map(tokio::time::Instant::from_std);
            let prack = self.prack.clone();
            let actions = tokio::select! {
                request = control.recv() => match request {
                    Some(Control::Answer { client, reply }) => {
                        // Ownership must be set before the actions notify anyone.
                        match self.state.handle_input(Input::Answer) {
                            Ok(actions) => {
                                self.call.set_owner(client);
                                let _ = reply.send(Ok(()));
                                actions
                            }
                            Err(e) => {
                                let _ = reply.send(Err(ProtocolError::new(409, e.to_string())));
                                continue;
                            }
                        }
                    }
                    Some(Control::Reject { status, client }) => {
                        // The client that decided is the one that need not hear the offer withdrawn.
                        if self.state.phase() == crate::call::state::Phase::Offered {
                            self.call.set_owner(client);
                        }
                        self.input(Input::Reject(status))
                    }
                    Some(Control::Hangup) => self.input(Input::Hangup),
                    Some(Control::OwnerGone) => self.input(Input::OwnerGone),
                    Some(Control::Shutdown) | None => self.input(Input::Shutdown),
                },
                news = dialog_news.recv() => match news {
                    Some(state) => match requests::handle(state, &self.our_sdp, self.sip.board.config.min_se).await {
                        DialogNews::Terminated(TerminatedReason::UacCancel) => self.input(Input::RemoteCancel),
                        DialogNews::Terminated(TerminatedReason::Timeout)
                            if self.state.phase() == crate::call::state::Phase::Answering =>
                        {
                            tracing::info!("no ACK for our 200 OK: ending the call");
                            self.input(Input::AckTimeout)
                        }
                        DialogNews::Terminated(reason) => {
                            tracing::debug!(?reason, "dialog terminated");
                            self.input(Input::RemoteBye)
                        }
                        DialogNews::Confirmed => self.input(Input::Acked),
                        DialogNews::Refreshed(answer) => {
                            self.session.on_remote_refresh(Instant::now(), &answer);
                            continue;
                        }
                        DialogNews::Provisional(_) | DialogNews::Nothing => continue,
                    },
                    None => self.input(Input::RemoteBye),
                },
                _ = async { prack.as_ref().unwrap().notified().await }, if prack.is_some() => {
                    tracing::debug!("PRACK received");
                    self.prack = None;
                    if let Some(r) = self.ringing.as_mut() {
                        r.stop();
                    }
                    continue;
                }
                result = self.session.refreshed(), if self.session.is_pending() => {
                    match self.session.on_refreshed(Instant::now(), result) {
                        Some(input) => self.input(input),
                        None => continue,
                    }
                }
                _ = crate::call::handle::sleep_until(deadline) => self.on_timers(Instant::now()),
            };
            self.call.set_phase(self.state.phase());
            if !matches!(self.state.phase(), Phase::Offered | Phase::Answering) {
                self.unconfirmed = None;
            }
            self.call.set_sip_status(self.state.sip_status());
            let _enter = span.enter();
            for action in actions {
                if self.act(action).await {
                    return;
                }
            }
        }
    }

    fn input(&mut self, input: Input) -> Vec<Action> {
        self.state.handle_input(input).unwrap_or_default()
    }

    /// Whatever of the ring timeout, the session timer and the reliable
    /// 180's retransmission is due.
    fn on_timers(&mut self, now: Instant) -> Vec<Action> {
        if let Some(r) = self.ringing.as_mut() {
            if r.on_due(now) && self.state.phase() == crate::call::state::Phase::Offered {
                let _ = self
                    .dialog
                    .ringing(Some(session::ReliableRinging::headers()), None);
            }
        }
        let mut actions = self.state.handle_timeout(now);
        if let Some(input) = self.session.on_due(now, &self.dialog, &self.our_sdp) {
            actions.extend(self.input(input));
        }
        actions
    }

    /// Carries out one action; true when the call is finished.
    async fn act(&mut self, action: Action) -> bool {
        let board = &self.sip.board;
        match action {
            Action::SendOk => {
                let rtp_port = self
                    .rtp
                    .as_ref()
                    .map(|r| r.lease.rtp_port())
                    .unwrap_or_default();
                let session_id = rtp_port as u64;
                self.our_sdp = sdp::answer(
                    session_id,
                    board.advertised_ip(),
                    rtp_port,
                    &self.remote,
                    self.srtp.as_ref().map(|(s, _)| s),
                );
                let answer = session::answer_request(
                    Instant::now(),
                    &self.invite_headers,
                    board.config.min_se,
                );
                let mut headers = vec![Header::ContentType("application/sdp".into())];
                headers.extend(session::capability_headers());
                headers.extend(session::answer_headers(&answer));
                if let Answer::Timer { timer, .. } = answer {
                    self.session.set(Some(timer));
                }
                if let Some(r) = self.ringing.as_mut() {
                    r.stop();
                }
                if let Some(rtp) = self.rtp.as_mut() {
                    rtp.discard_before_answer();
                }
                if let Err(e) = self
                    .dialog
                    .accept(Some(headers), Some(self.our_sdp.clone().into_bytes()))
                {
                    tracing::warn!(error = %e, "could not send 200 OK");
                }
            }
            Action::SendReject(status) => {
                if let Some(r) = self.ringing.as_mut() {
                    r.stop();
                }
                let _ = self.dialog.reject(Some(StatusCode::from(status)), None);
            }
            Action::SendBye => self.sip.send_bye(&self.dialog),
            Action::SendCancel => {}
            Action::StartMedia => {
                if let (Some(rtp), Some(owner)) = (self.rtp.take(), self.call.owner()) {
                    let keys = self.srtp.as_ref().map(|(_, k)| k.clone());
                    board.start_media(&self.call, rtp, &self.remote, owner, keys);
                }
            }
            Action::Notify(notice) => {
                tracing::info!(?notice, "call event");
                board.notify(&self.call, &notice);
            }
            Action::Finish(cause) => {
                tracing::info!(?cause, "call ended");
                board.finish(&self.call, &cause);
                self.sip.dialogs.remove_dialog(&self.dialog.id());
                return true;
            }
        }
        false
    }
}
