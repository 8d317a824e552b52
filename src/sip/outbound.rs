//! Outgoing calls: INVITE with our offer → 100/180/183 → 200 (ACK) or a
//! failure, then media until either side hangs up.

use std::sync::Arc;

use rsipstack::dialog::dialog::{DialogStateReceiver, TerminatedReason};
use rsipstack::dialog::invitation::{InviteAsyncResult, InviteOption};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::Uri;
use tokio::sync::mpsc;

use super::requests::{self, DialogNews};
use super::SipEndpoint;
use crate::call::state::{Action, CallState, Direction, Input};
use crate::call::{Call, CallId, Control, Script};
use crate::client::ClientHandle;
use crate::media::sdp;
use crate::media::session::RtpBinding;
use crate::switchboard::{DialError, Dialer};
use crate::wire::ProtocolError;

impl Dialer for SipEndpoint {
    fn dial(
        &self,
        owner: Arc<ClientHandle>,
        target: &str,
        script: Script,
    ) -> Result<Arc<Call>, DialError> {
        let uri = self.target_uri(target).map_err(DialError::Refused)?;
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
            self.contact.to_string(),
            target.to_string(),
            Some(owner.clone()),
        );
        call.set_script(script);
        board.insert_call(call.clone());
        board.calling(&call);
        let port = rtp.lease.rtp_port();
        let our_sdp = sdp::offer(port as u64, board.advertised_ip(), port);
        let option = InviteOption {
            caller: self.contact.clone(),
            callee: uri,
            contact: self.contact.clone(),
            content_type: Some("application/sdp".into()),
            offer: Some(our_sdp.clone().into_bytes()),
            // Our own id, so SIP traces and logs name the call the same way.
            call_id: Some(format!("{}@{}", call.id, board.advertised_ip())),
            ..Default::default()
        };
        let (state_tx, dialog_news) = self.dialogs.new_dialog_state_channel();
        let (dialog, invite) = match self.dialogs.do_invite_async(option, state_tx) {
            Ok(started) => started,
            Err(e) => {
                tracing::warn!(call = %call.id, error = %e, "INVITE could not be sent");
                call.set_sip_status(Some(500));
                board.notify(
                    &call,
                    &crate::call::state::Notice::Failed {
                        status: 500,
                        reason: "Server Internal Error".into(),
                    },
                );
                board.finish(&call, &crate::call::state::EndCause::Local);
                return Ok(call);
            }
        };
        tracing::info!(call = %call.id, %target, "outgoing call started");
        let task = OutboundCall {
            board: self.board.clone(),
            dialogs: self.dialogs.clone(),
            call: call.clone(),
            dialog,
            state: CallState::outbound(),
            rtp: Some(rtp),
            our_sdp,
        };
        tokio::spawn(task.run(control, dialog_news, invite));
        Ok(call)
    }
}

impl SipEndpoint {
    /// A `sip:` URI as given, or a plain number at the configured SIP server.
    fn target_uri(&self, target: &str) -> Result<Uri, ProtocolError> {
        let text = if target.to_ascii_lowercase().starts_with("sip") {
            target.to_string()
        } else {
            // It becomes the user part of a URI: nothing that could end the
            // user part or the URI (`@`, `:`, `;`, `>`, spaces) may pass.
            let allowed = |c: char| c.is_ascii_alphanumeric() || "+*#._-".contains(c);
            if target.is_empty() || !target.chars().all(allowed) {
                return Err(ProtocolError::bad_request(
                    "a number may hold only letters, digits and + * # . _ -; use a sip: URI for anything else",
                ));
            }
            let server = self.board.config.sip_server.as_deref().ok_or_else(|| {
                ProtocolError::bad_request(
                    "no SIP server configured (--sip-server) to dial plain numbers; use a sip: URI",
                )
            })?;
            format!("sip:{target}@{server}")
        };
        Uri::try_from(text.as_str())
            .map_err(|e| ProtocolError::bad_request(format!("bad SIP URI: {e}")))
    }
}

struct OutboundCall {
    board: Arc<crate::switchboard::Switchboard>,
    dialogs: Arc<rsipstack::dialog::dialog_layer::DialogLayer>,
    call: Arc<Call>,
    dialog: InviteDialog,
    state: CallState,
    rtp: Option<RtpBinding>,
    our_sdp: String,
}

impl OutboundCall {
    async fn run(
        mut self,
        mut control: mpsc::Receiver<Control>,
        mut dialog_news: DialogStateReceiver,
        invite: tokio::task::JoinHandle<InviteAsyncResult>,
    ) {
        let span = tracing::info_span!("call", id = %self.call.id);
        let mut invite = Some(invite);
        let mut remote = None;
        loop {
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
                            match sdp::parse(&resp.body) {
                                Ok(r) => {
                                    // A later re-INVITE gets the codec agreed, not our first offer.
                                    if let Some(rtp) = &self.rtp {
                                        let port = rtp.lease.rtp_port();
                                        self.our_sdp = sdp::answer(port as u64, self.board.advertised_ip(), port, &r);
                                    }
                                    remote = Some(r);
                                    Input::Accepted
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "200 OK without a usable SDP answer");
                                    let _ = self.dialog.bye().await;
                                    Input::Failed { status: 488, reason: "Not Acceptable Here".into() }
                                }
                            }
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
                    Some(state) => match requests::handle(state, &self.our_sdp).await {
                        DialogNews::Provisional(code) => self.input(Input::Provisional(code)),
                        DialogNews::Terminated(TerminatedReason::UasBye) => self.input(Input::RemoteBye),
                        // Other endings are reported by the INVITE's result.
                        DialogNews::Terminated(_) if invite.is_some() => continue,
                        DialogNews::Terminated(_) => self.input(Input::RemoteBye),
                        DialogNews::Nothing => continue,
                    },
                    None if invite.is_some() => continue,
                    None => self.input(Input::RemoteBye),
                },
            };
            self.call.set_phase(self.state.phase());
            self.call.set_sip_status(self.state.sip_status());
            let _enter = span.enter();
            for action in actions {
                match action {
                    Action::SendCancel => {
                        if let Err(e) = self.dialog.cancel().await {
                            tracing::debug!(error = %e, "CANCEL failed");
                        }
                    }
                    Action::SendBye => {
                        if let Err(e) = self.dialog.bye().await {
                            tracing::debug!(error = %e, "BYE failed");
                        }
                    }
                    Action::StartMedia => {
                        if let (Some(rtp), Some(owner), Some(remote)) =
                            (self.rtp.take(), self.call.owner(), remote.as_ref())
                        {
                            self.board.start_media(&self.call, rtp, remote, owner);
                        }
                    }
                    Action::Notify(notice) => {
                        tracing::info!(?notice, "call event");
                        self.board.notify(&self.call, &notice);
                    }
                    Action::Finish(cause) => {
                        tracing::info!(?cause, "call ended");
                        self.board.finish(&self.call, &cause);
                        self.dialogs.remove_dialog(&self.dialog.id());
                        return;
                    }
                    Action::SendOk | Action::SendReject(_) => {}
                }
            }
        }
    }

    fn input(&mut self, input: Input) -> Vec<Action> {
        self.state.handle_input(input).unwrap_or_default()
    }
}
