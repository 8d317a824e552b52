//! Calls that never leave siprelay: an application or a device dialling a
//! device's extension, or a number an application takes by name
//! (`/ws?offers=...`). No SIP: two call legs, each driven by the same call
//! state machine as a SIP call (the caller's leg outbound, the callee's
//! inbound), wired to each other. What one leg would send over SIP becomes
//! the other leg's input; each leg has its own RTP port pair on the
//! listening address and their media sessions send each other RTP, so
//! greeting, recording, barge-in and the media clock work as for any call.
//!
//! [`Dialing`] is the daemon's dialer: local numbers here, the rest to SIP.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::call::state::{Action, CallState, Direction, Input};
use crate::call::{Call, CallId, Control, Script};
use crate::client::ClientHandle;
use crate::media::sdp::{Codec, RemoteMedia};
use crate::media::session::RtpBinding;
use crate::switchboard::{DialError, Dialer, Switchboard};
use crate::wire::ProtocolError;

/// Routes a dial to a local callee, or to the SIP dialer.
pub struct Dialing {
    pub board: Arc<Switchboard>,
    pub sip: Arc<dyn Dialer>,
}

impl Dialer for Dialing {
    fn dial(
        &self,
        owner: Arc<ClientHandle>,
        target: &str,
        account: Option<&str>,
        script: Script,
    ) -> Result<Arc<Call>, DialError> {
        let board = &self.board;
        // Naming an account asks for the PBX, even for a local number.
        let local = account.is_none()
            && (board.devices.by_extension(target).is_some() || board.takes_by_name(target));
        if local {
            return dial(board, owner, target, script);
        }
        let account = account
            .map(str::to_string)
            .or_else(|| owner.account.clone());
        self.sip.dial(owner, target, account.as_deref(), script)
    }
}

/// One side of a local call.
struct Leg {
    call: Arc<Call>,
    state: CallState,
    control: mpsc::Receiver<Control>,
    rtp: Option<RtpBinding>,
    /// Where its RTP goes: the other leg's socket.
    peer: SocketAddr,
    done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Caller,
    Callee,
}

fn dial(
    board: &Arc<Switchboard>,
    owner: Arc<ClientHandle>,
    target: &str,
    script: Script,
) -> Result<Arc<Call>, DialError> {
    let id = CallId::generate();
    let (Ok(caller_rtp), Ok(callee_rtp)) = (board.bind_rtp(), board.bind_rtp()) else {
        return Err(DialError::NoPorts(id));
    };
    let ip = match board.config.sip_listen.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let caller_addr = SocketAddr::new(ip, caller_rtp.lease.rtp_port());
    let callee_addr = SocketAddr::new(ip, callee_rtp.lease.rtp_port());
    let caller_id = owner.caller_id();
    let (a, a_control) = Call::new(
        id,
        Direction::Outbound,
        caller_id.clone(),
        target.to_string(),
        Some(owner),
        None,
    );
    a.set_script(script);
    board.insert_call(a.clone());
    board.calling(&a);
    tracing::info!(call = %a.id, %target, "local call started");

    let mut caller = Leg {
        call: a.clone(),
        state: CallState::outbound(),
        control: a_control,
        rtp: Some(caller_rtp),
        peer: callee_addr,
        done: false,
    };
    // Turned away as an INVITE would be: offline device, busy, nobody.
    let refuse = |caller: Leg, status: u16| {
        Bridge::new(board.clone(), caller, None).feed(Side::Caller, failed(status));
        Ok(a.clone())
    };
    if let Err(status) = board.route_incoming(target, None) {
        return refuse(caller, status);
    }
    let (b, b_control) = Call::new(
        CallId::generate(),
        Direction::Inbound,
        caller_id,
        target.to_string(),
        None,
        None,
    );
    board.insert_call(b.clone());
    if !board.offer(&b) {
        // The callee went away between the check and the offer.
        board.finish(&b, &crate::call::state::EndCause::Remote);
        return refuse(caller, 480);
    }
    let callee = Leg {
        call: b,
        state: CallState::inbound(Instant::now(), board.ring_timeout()),
        control: b_control,
        rtp: Some(callee_rtp),
        peer: caller_addr,
        done: false,
    };
    caller.state.handle_input(Input::Provisional(180)).ok();
    board.notify(&a, &crate::call::state::Notice::Ringing);
    a.set_phase(caller.state.phase());
    let bridge = Bridge::new(board.clone(), caller, Some(callee));
    tokio::spawn(bridge.run());
    Ok(a)
}

fn failed(status: u16) -> Input {
    let reason = match status {
        480 => "Temporarily Unavailable",
        486 => "Busy Here",
        487 => "Request Terminated",
        503 => "Service Unavailable",
        603 => "Decline",
        _ => "Call Failed",
    };
    Input::Failed {
        status,
        reason: reason.into(),
    }
}

/// The two legs and the task that carries each one's actions over to the other.
struct Bridge {
    board: Arc<Switchboard>,
    caller: Leg,
    callee: Option<Leg>,
}

impl Bridge {
    fn new(board: Arc<Switchboard>, caller: Leg, callee: Option<Leg>) -> Bridge {
        Bridge {
            board,
            caller,
            callee,
        }
    }

    fn leg(&mut self, side: Side) -> Option<&mut Leg> {
        match side {
            Side::Caller => Some(&mut self.caller),
            Side::Callee => self.callee.as_mut(),
        }
    }

    async fn run(mut self) {
        let span = tracing::info_span!("local call", id = %self.caller.call.id);
        loop {
            if self.caller.done && self.callee.as_ref().is_none_or(|l| l.done) {
                return;
            }
            let Some(callee) = self.callee.as_mut() else {
                return;
            };
            let deadline = callee
                .state
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            let (side, request) = tokio::select! {
                r = self.caller.control.recv(), if !self.caller.done => (Side::Caller, r),
                r = callee.control.recv(), if !callee.done => (Side::Callee, r),
                _ = crate::call::handle::sleep_until(deadline) => {
                    let actions = callee.state.handle_timeout(Instant::now());
                    let _enter = span.enter();
                    self.carry_out(Side::Callee, actions);
                    continue;
                }
            };
            let _enter = span.enter();
            let input = match request {
                Some(Control::Answer { client, reply }) if side == Side::Callee => {
                    let leg = self.leg(side).expect("the callee leg");
                    match leg.state.handle_input(Input::Answer) {
                        Ok(actions) => {
                            leg.call.set_owner(client);
                            let _ = reply.send(Ok(()));
                            self.carry_out(side, actions);
                        }
                        Err(e) => {
                            let _ = reply.send(Err(ProtocolError::new(409, e.to_string())));
                        }
                    }
                    continue;
                }
                Some(Control::Answer { reply, .. }) => {
                    let _ = reply.send(Err(ProtocolError::new(
                        409,
                        "an outgoing call cannot be answered",
                    )));
                    continue;
                }
                Some(Control::Reject { status, client }) if side == Side::Callee => {
                    let leg = self.leg(side).expect("the callee leg");
                    if leg.state.phase() == crate::call::state::Phase::Offered {
                        leg.call.set_owner(client);
                    }
                    Input::Reject(status)
                }
                Some(Control::Reject { .. }) => continue,
                Some(Control::Hangup) => Input::Hangup,
                Some(Control::OwnerGone) => Input::OwnerGone,
                Some(Control::Shutdown) | None => Input::Shutdown,
            };
            self.feed(side, input);
        }
    }

    fn feed(&mut self, side: Side, input: Input) {
        let Some(leg) = self.leg(side) else { return };
        let actions = leg.state.handle_input(input).unwrap_or_default();
        self.carry_out(side, actions);
    }

    /// Carries out one leg's actions, and those they cause on the other leg.
    fn carry_out(&mut self, side: Side, actions: Vec<Action>) {
        let mut work: VecDeque<(Side, Action)> = actions.into_iter().map(|a| (side, a)).collect();
        while let Some((side, action)) = work.pop_front() {
            let other = match side {
                Side::Caller => Side::Callee,
                Side::Callee => Side::Caller,
            };
            // What this leg would have sent over SIP, as the other leg's input.
            let input = match &action {
                Action::SendOk => Some(Input::Accepted),
                Action::SendReject(status) => Some(failed(*status)),
                Action::SendCancel => {
                    // The callee's side answers a CANCEL with 487 to the INVITE.
                    work.push_back((other, Action::SendReject(487)));
                    Some(Input::RemoteCancel)
                }
                Action::SendBye => Some(Input::RemoteBye),
                _ => None,
            };
            if let Some(input) = input {
                if let Some(leg) = self.leg(other).filter(|l| !l.done) {
                    let caused = leg.state.handle_input(input).unwrap_or_default();
                    work.extend(caused.into_iter().map(|a| (other, a)));
                }
                // The caller's side ACKs the 200 at once.
                if action == Action::SendOk {
                    if let Some(leg) = self.leg(side).filter(|l| !l.done) {
                        let caused = leg.state.handle_input(Input::Acked).unwrap_or_default();
                        work.extend(caused.into_iter().map(|a| (side, a)));
                    }
                }
                continue;
            }
            let board = self.board.clone();
            let Some(leg) = self.leg(side) else { continue };
            match action {
                Action::StartMedia => {
                    let remote = RemoteMedia {
                        rtp: leg.peer,
                        codec: Codec::PCMU,
                        telephone_event: None,
                        telephone_events: None,
                        savp: false,
                        crypto: Vec::new(),
                    };
                    if let (Some(rtp), Some(owner)) = (leg.rtp.take(), leg.call.owner()) {
                        board.start_media(&leg.call, rtp, &remote, owner, None);
                    }
                }
                Action::Notify(notice) => {
                    tracing::info!(?notice, leg = ?side, "call event");
                    board.notify(&leg.call, &notice);
                }
                Action::Finish(cause) => {
                    tracing::info!(?cause, leg = ?side, "call ended");
                    leg.call.set_phase(leg.state.phase());
                    leg.call.set_sip_status(leg.state.sip_status());
                    board.finish(&leg.call, &cause);
                    leg.done = true;
                }
                _ => {}
            }
            if let Some(leg) = self.leg(side) {
                leg.call.set_phase(leg.state.phase());
                leg.call.set_sip_status(leg.state.sip_status());
            }
        }
    }
}
