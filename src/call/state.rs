//! The call state machine: pure. Inputs (client commands, SIP events, time)
//! go in; the actions the shell must carry out come out. It never touches a
//! socket or the clock, so every path is tested in microseconds.

use std::time::{Duration, Instant};

/// Which side placed the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Inbound: 180 sent, offered to clients, waiting for one to answer.
    Offered,
    /// Outbound: INVITE sent, no ringing yet.
    Dialing,
    /// Outbound: the far end rings (180/183).
    Ringing,
    /// Outbound: CANCEL sent, waiting for the INVITE's final response.
    Cancelling,
    /// Inbound: 200 OK sent, waiting for the caller's ACK.
    Answering,
    Connected,
    Ended,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Offered => "offered",
            Phase::Dialing => "dialing",
            Phase::Ringing => "ringing",
            Phase::Cancelling => "cancelling",
            Phase::Answering => "answering",
            Phase::Connected => "connected",
            Phase::Ended => "ended",
        }
    }
}

/// Who ended the call, and how: kept for logs, events and recordings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndCause {
    /// Our client (or the daemon on its behalf) hung up or rejected.
    Local,
    /// The far end hung up, cancelled or declined.
    Remote,
    /// Nobody answered in time.
    Timeout,
    /// The daemon is shutting down.
    Shutdown,
    /// The session timer ran out: the far end stopped refreshing, or a
    /// refresh of ours found the dialog gone (RFC 4028).
    SessionExpired,
    /// Inbound: our 200 OK was never ACKed (RFC 3261 13.3.1.4); the source
    /// may have been spoofed, so no media was ever sent.
    NoAck,
}

impl EndCause {
    /// Who hung up, as recordings' sidecars and `siprelay_call_ends_total` name it.
    pub fn label(&self) -> &'static str {
        match self {
            EndCause::Local => "local",
            EndCause::Remote => "remote",
            EndCause::Timeout => "timeout",
            EndCause::Shutdown => "shutdown",
            EndCause::SessionExpired => "session-expired",
            EndCause::NoAck => "no-ack",
        }
    }

    /// Why the call ended, in words.
    pub fn description(&self) -> &'static str {
        match self {
            EndCause::Local => "siprelay's side hung up",
            EndCause::Remote => "the far end hung up",
            EndCause::Timeout => "no answer in time",
            EndCause::Shutdown => "siprelay shut down",
            EndCause::SessionExpired => "the session timer ran out: refreshes stopped",
            EndCause::NoAck => "the caller never confirmed the answer (no ACK)",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A client answers an offered call.
    Answer,
    /// A client rejects an offered call with this status.
    Reject(u16),
    /// The owner hangs up (or rejects, if the call is still offered).
    Hangup,
    /// The owner's connection closed.
    OwnerGone,
    Shutdown,
    /// Outbound: a 180 or 183 arrived.
    Provisional(u16),
    /// Outbound: 200 OK arrived (the SIP layer ACKs it).
    Accepted,
    /// Outbound: a final failure response, or no response at all (408).
    Failed {
        status: u16,
        reason: String,
    },
    /// Inbound: the caller ACKed our 200 OK.
    Acked,
    /// Inbound: our 200 OK went unACKed for 64×T1 (the SIP layer sent BYE).
    AckTimeout,
    /// Inbound: the caller sent CANCEL.
    RemoteCancel,
    /// The far end sent BYE.
    RemoteBye,
    /// The session timer ran out (RFC 4028).
    SessionExpired,
}

/// What the shell must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Inbound: answer the INVITE with 200 OK and our SDP.
    SendOk,
    /// Inbound: answer the INVITE with this failure status.
    SendReject(u16),
    SendCancel,
    SendBye,
    StartMedia,
    /// Tell clients. Before an inbound call is answered, every client it was
    /// offered to hears it; after, its owner.
    Notify(Notice),
    /// The call is over: stop media, release ports, forget it.
    Finish(EndCause),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Ringing,
    Connected,
    /// The far end declined our call (486/600/603).
    Declined,
    /// The offer is gone: the caller cancelled, time ran out, or someone else took it.
    OfferWithdrawn,
    /// Inbound: a client answered; the offer is closed to the others.
    Taken,
    Failed {
        status: u16,
        reason: String,
    },
    Bye,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("call is {phase:?}, cannot {what}")]
pub struct WrongState {
    pub phase: Phase,
    pub what: &'static str,
}

#[derive(Debug)]
pub struct CallState {
    direction: Direction,
    phase: Phase,
    ring_deadline: Option<Instant>,
    cause: Option<EndCause>,
    /// The INVITE's final response, once there is one (sent or received).
    sip_status: Option<u16>,
}

impl CallState {
    /// An inbound call just offered; it is rejected with 480 if nobody
    /// answers within `ring_timeout`.
    pub fn inbound(now: Instant, ring_timeout: Duration) -> Self {
        CallState {
            direction: Direction::Inbound,
            phase: Phase::Offered,
            ring_deadline: Some(now + ring_timeout),
            cause: None,
            sip_status: None,
        }
    }

    pub fn outbound() -> Self {
        CallState {
            direction: Direction::Outbound,
            phase: Phase::Dialing,
            ring_deadline: None,
            cause: None,
            sip_status: None,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn direction(&self) -> Direction {
        self.direction
    }

    pub fn cause(&self) -> Option<&EndCause> {
        self.cause.as_ref()
    }

    /// The final response to the INVITE: the one we sent (inbound) or got
    /// (outbound), 487 for a cancelled offer; None while there is none.
    pub fn sip_status(&self) -> Option<u16> {
        self.sip_status
    }

    /// When [`CallState::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.ring_deadline.filter(|_| self.phase == Phase::Offered)
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Action> {
        match self.poll_timeout() {
            Some(deadline) if now >= deadline => {
                self.sip_status = Some(480);
                self.end(
                    EndCause::Timeout,
                    [
                        Action::SendReject(480),
                        Action::Notify(Notice::OfferWithdrawn),
                    ],
                )
            }
            _ => Vec::new(),
        }
    }

    pub fn handle_input(&mut self, input: Input) -> Result<Vec<Action>, WrongState> {
        let received = match &input {
            Input::Accepted => Some(200),
            Input::Failed { status, .. } => Some(*status),
            Input::RemoteCancel => Some(487),
            _ => None,
        };
        let actions = self.transition(input)?;
        if self.sip_status.is_none() && !actions.is_empty() {
            let sent = actions.iter().find_map(|a| match a {
                Action::SendOk => Some(200),
                Action::SendReject(status) => Some(*status),
                _ => None,
            });
            self.sip_status = sent.or(received);
        }
        Ok(actions)
    }

    fn transition(&mut self, input: Input) -> Result<Vec<Action>, WrongState> {
        use Phase::*;
        let wrong = |what| {
            Err(WrongState {
                phase: self.phase,
                what,
            })
        };
        let actions = match (self.phase, input) {
            (
                Ended,
                Input::OwnerGone | Input::Shutdown | Input::RemoteBye | Input::RemoteCancel,
            ) => Vec::new(),
            (Ended, _) => return wrong("act on an ended call"),

            // Connected only once the caller has ACKed: a caller that
            // gives up between our 200 and its ACK never hears audio.
            (Offered, Input::Answer) => {
                self.phase = Answering;
                vec![Action::SendOk, Action::Notify(Notice::Taken)]
            }
            (Answering, Input::Acked) => {
                self.phase = Connected;
                vec![Action::StartMedia, Action::Notify(Notice::Connected)]
            }
            (Answering, Input::AckTimeout) => {
                self.end(EndCause::NoAck, [Action::Notify(Notice::Bye)])
            }
            (_, Input::AckTimeout) => return wrong("time out an ACK"),
            // Later ACK-like news (a re-INVITE's ACK) changes nothing.
            (_, Input::Acked) => Vec::new(),
            (_, Input::Answer) => return wrong("answer"),
            (Offered, Input::Reject(status)) => self.end(
                EndCause::Local,
                [
                    Action::SendReject(status),
                    Action::Notify(Notice::OfferWithdrawn),
                ],
            ),
            (_, Input::Reject(_)) => return wrong("reject"),
            (Offered, Input::Hangup) => self.end(
                EndCause::Local,
                [
                    Action::SendReject(486),
                    Action::Notify(Notice::OfferWithdrawn),
                ],
            ),
            // An offered call has no owner yet, so it cannot lose one.
            (Offered, Input::OwnerGone) => Vec::new(),
            (Offered, Input::Shutdown) => self.end(
                EndCause::Shutdown,
                [
                    Action::SendReject(503),
                    Action::Notify(Notice::OfferWithdrawn),
                ],
            ),
            (Offered, Input::RemoteCancel) => {
                self.end(EndCause::Remote, [Action::Notify(Notice::OfferWithdrawn)])
            }

            (Dialing | Ringing, Input::Hangup | Input::OwnerGone | Input::Shutdown) => {
                self.cause = Some(EndCause::Local);
                self.phase = Cancelling;
                vec![Action::SendCancel]
            }
            (Dialing, Input::Provisional(_)) => {
                self.phase = Ringing;
                vec![Action::Notify(Notice::Ringing)]
            }
            (Ringing | Cancelling, Input::Provisional(_)) => Vec::new(),
            (Dialing | Ringing, Input::Accepted) => {
                self.phase = Connected;
                vec![Action::StartMedia, Action::Notify(Notice::Connected)]
            }
            // 200 OK crossed our CANCEL: the call exists now, so end it properly.
            (Cancelling, Input::Accepted) => self.end(
                EndCause::Local,
                [Action::SendBye, Action::Notify(Notice::Bye)],
            ),
            (Cancelling, Input::Failed { .. }) => {
                self.end(EndCause::Local, [Action::Notify(Notice::Bye)])
            }
            (Dialing | Ringing, Input::Failed { status, reason }) => {
                let notice = match status {
                    486 | 600 | 603 => Notice::Declined,
                    _ => Notice::Failed { status, reason },
                };
                self.end(EndCause::Remote, [Action::Notify(notice)])
            }
            (Cancelling, Input::Hangup | Input::OwnerGone | Input::Shutdown) => Vec::new(),

            (Connected | Answering, Input::Hangup | Input::OwnerGone) => self.end(
                EndCause::Local,
                [Action::SendBye, Action::Notify(Notice::Bye)],
            ),
            // A CANCEL that crossed our 200 OK: the call goes on (RFC 3261 9.2).
            (Answering, Input::RemoteCancel) => Vec::new(),
            (Connected | Answering, Input::Shutdown) => self.end(
                EndCause::Shutdown,
                [Action::SendBye, Action::Notify(Notice::Bye)],
            ),
            (Connected | Answering, Input::SessionExpired) => self.end(
                EndCause::SessionExpired,
                [Action::SendBye, Action::Notify(Notice::Bye)],
            ),
            (_, Input::SessionExpired) => Vec::new(),
            (Connected | Answering | Cancelling | Dialing | Ringing, Input::RemoteBye) => {
                self.end(EndCause::Remote, [Action::Notify(Notice::Bye)])
            }
            (Connected, Input::Provisional(_) | Input::Accepted | Input::Failed { .. }) => {
                Vec::new()
            }
            (
                _,
                Input::RemoteCancel
                | Input::RemoteBye
                | Input::Provisional(_)
                | Input::Accepted
                | Input::Failed { .. },
            ) => return wrong("take this SIP event"),
        };
        Ok(actions)
    }

    fn end<const N: usize>(&mut self, cause: EndCause, actions: [Action; N]) -> Vec<Action> {
        let cause = self.cause.take().unwrap_or(cause);
        self.phase = Phase::Ended;
        self.cause = Some(cause.clone());
        let mut v = actions.to_vec();
        v.push(Action::Finish(cause));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered() -> (CallState, Instant) {
        let now = Instant::now();
        (CallState::inbound(now, Duration::from_secs(30)), now)
    }

    #[test]
    fn an_answer_never_acked_ends_as_no_ack_without_media() {
        let (mut c, _) = offered();
        c.handle_input(Input::Answer).unwrap();
        let actions = c.handle_input(Input::AckTimeout).unwrap();
        assert_eq!(
            actions,
            [Action::Notify(Notice::Bye), Action::Finish(EndCause::NoAck)]
        );
        assert!(!actions.contains(&Action::StartMedia));
        // Once connected, an ACK time-out is not a thing that can happen.
        let (mut c, _) = offered();
        c.handle_input(Input::Answer).unwrap();
        c.handle_input(Input::Acked).unwrap();
        assert!(c.handle_input(Input::AckTimeout).is_err());
    }

    #[test]
    fn inbound_answer_then_remote_bye() {
        let (mut c, _) = offered();
        assert_eq!(
            c.handle_input(Input::Answer).unwrap(),
            [Action::SendOk, Action::Notify(Notice::Taken)]
        );
        assert_eq!(c.phase(), Phase::Answering);
        assert_eq!(
            c.handle_input(Input::Answer),
            Err(WrongState {
                phase: Phase::Answering,
                what: "answer"
            })
        );
        assert!(
            c.handle_input(Input::RemoteCancel).unwrap().is_empty(),
            "a CANCEL after our 200"
        );
        assert_eq!(
            c.handle_input(Input::Acked).unwrap(),
            [Action::StartMedia, Action::Notify(Notice::Connected)]
        );
        assert!(
            c.handle_input(Input::Acked).unwrap().is_empty(),
            "once only"
        );
        assert_eq!(
            c.handle_input(Input::RemoteBye).unwrap(),
            [
                Action::Notify(Notice::Bye),
                Action::Finish(EndCause::Remote)
            ]
        );
        assert_eq!(c.phase(), Phase::Ended);
        assert_eq!(
            c.handle_input(Input::Hangup).unwrap_err().phase,
            Phase::Ended
        );
    }

    #[test]
    fn inbound_ring_timeout_rejects_with_480_exactly_at_the_deadline() {
        let (mut c, t0) = offered();
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(30)));
        assert!(c
            .handle_timeout(t0 + Duration::from_millis(29_999))
            .is_empty());
        assert_eq!(
            c.handle_timeout(t0 + Duration::from_secs(30)),
            [
                Action::SendReject(480),
                Action::Notify(Notice::OfferWithdrawn),
                Action::Finish(EndCause::Timeout)
            ]
        );
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn a_caller_that_hangs_up_before_its_ack_never_connects() {
        let (mut c, _) = offered();
        c.handle_input(Input::Answer).unwrap();
        assert_eq!(
            c.handle_input(Input::RemoteBye).unwrap(),
            [
                Action::Notify(Notice::Bye),
                Action::Finish(EndCause::Remote)
            ]
        );
        let (mut c, _) = offered();
        c.handle_input(Input::Answer).unwrap();
        assert_eq!(
            c.handle_input(Input::Hangup).unwrap(),
            [
                Action::SendBye,
                Action::Notify(Notice::Bye),
                Action::Finish(EndCause::Local)
            ]
        );
    }

    #[test]
    fn an_expired_session_is_ended_with_bye() {
        let mut c = CallState::outbound();
        assert!(
            c.handle_input(Input::SessionExpired).unwrap().is_empty(),
            "not before it connects"
        );
        c.handle_input(Input::Accepted).unwrap();
        assert_eq!(
            c.handle_input(Input::SessionExpired).unwrap(),
            [
                Action::SendBye,
                Action::Notify(Notice::Bye),
                Action::Finish(EndCause::SessionExpired)
            ]
        );
    }

    #[test]
    fn answered_call_has_no_ring_timeout() {
        let (mut c, t0) = offered();
        c.handle_input(Input::Answer).unwrap();
        assert_eq!(c.poll_timeout(), None);
        assert!(c.handle_timeout(t0 + Duration::from_secs(3600)).is_empty());
    }

    #[test]
    fn inbound_reject_cancel_and_shutdown() {
        let (mut c, _) = offered();
        assert_eq!(
            c.handle_input(Input::Reject(603)).unwrap()[0],
            Action::SendReject(603)
        );
        let (mut c, _) = offered();
        assert_eq!(
            c.handle_input(Input::RemoteCancel).unwrap(),
            [
                Action::Notify(Notice::OfferWithdrawn),
                Action::Finish(EndCause::Remote)
            ]
        );
        let (mut c, _) = offered();
        assert_eq!(
            c.handle_input(Input::Shutdown).unwrap()[0],
            Action::SendReject(503)
        );
        let (mut c, _) = offered();
        assert!(c.handle_input(Input::OwnerGone).unwrap().is_empty());
        assert_eq!(c.phase(), Phase::Offered);
    }

    #[test]
    fn outbound_ringing_answered_and_local_hangup() {
        let mut c = CallState::outbound();
        assert_eq!(
            c.handle_input(Input::Provisional(180)).unwrap(),
            [Action::Notify(Notice::Ringing)]
        );
        assert!(
            c.handle_input(Input::Provisional(183)).unwrap().is_empty(),
            "RINGING only once"
        );
        assert_eq!(
            c.handle_input(Input::Accepted).unwrap(),
            [Action::StartMedia, Action::Notify(Notice::Connected)]
        );
        assert_eq!(
            c.handle_input(Input::Hangup).unwrap(),
            [
                Action::SendBye,
                Action::Notify(Notice::Bye),
                Action::Finish(EndCause::Local)
            ]
        );
    }

    #[test]
    fn outbound_declines_and_failures_are_told_apart() {
        for (status, notice) in [
            (486, Notice::Declined),
            (603, Notice::Declined),
            (
                404,
                Notice::Failed {
                    status: 404,
                    reason: "Not Found".into(),
                },
            ),
        ] {
            let mut c = CallState::outbound();
            let actions = c
                .handle_input(Input::Failed {
                    status,
                    reason: "Not Found".into(),
                })
                .unwrap();
            assert_eq!(
                actions,
                [Action::Notify(notice), Action::Finish(EndCause::Remote)]
            );
        }
    }

    #[test]
    fn outbound_cancel_and_the_200_that_crosses_it() {
        let mut c = CallState::outbound();
        assert_eq!(c.handle_input(Input::Hangup).unwrap(), [Action::SendCancel]);
        assert_eq!(c.phase(), Phase::Cancelling);
        assert_eq!(
            c.handle_input(Input::Failed {
                status: 487,
                reason: "Request Terminated".into()
            })
            .unwrap(),
            [Action::Notify(Notice::Bye), Action::Finish(EndCause::Local)]
        );

        let mut c = CallState::outbound();
        c.handle_input(Input::OwnerGone).unwrap();
        assert_eq!(
            c.handle_input(Input::Accepted).unwrap(),
            [
                Action::SendBye,
                Action::Notify(Notice::Bye),
                Action::Finish(EndCause::Local)
            ]
        );
    }

    #[test]
    fn the_final_sip_status_is_the_first_final_response() {
        let (mut c, _) = offered();
        assert_eq!(c.sip_status(), None);
        c.handle_input(Input::Answer).unwrap();
        c.handle_input(Input::RemoteBye).unwrap();
        assert_eq!(c.sip_status(), Some(200));

        let (mut c, _) = offered();
        c.handle_input(Input::Reject(603)).unwrap();
        assert_eq!(c.sip_status(), Some(603));

        let (mut c, _) = offered();
        c.handle_input(Input::RemoteCancel).unwrap();
        assert_eq!(c.sip_status(), Some(487));

        let (mut c, now) = offered();
        c.handle_timeout(now + Duration::from_secs(30));
        assert_eq!(c.sip_status(), Some(480));

        let mut c = CallState::outbound();
        c.handle_input(Input::Provisional(180)).unwrap();
        assert_eq!(c.sip_status(), None);
        c.handle_input(Input::Failed {
            status: 486,
            reason: "Busy Here".into(),
        })
        .unwrap();
        assert_eq!(c.sip_status(), Some(486));

        // Our CANCEL, then the INVITE's 487: the call's status is 487.
        let mut c = CallState::outbound();
        c.handle_input(Input::Hangup).unwrap();
        assert_eq!(c.sip_status(), None);
        c.handle_input(Input::Failed {
            status: 487,
            reason: "Request Terminated".into(),
        })
        .unwrap();
        assert_eq!(c.sip_status(), Some(487));

        // A retransmitted 200 on a connected call changes nothing.
        let mut c = CallState::outbound();
        c.handle_input(Input::Accepted).unwrap();
        c.handle_input(Input::Failed {
            status: 500,
            reason: "late".into(),
        })
        .unwrap();
        assert_eq!(c.sip_status(), Some(200));
    }

    #[test]
    fn sip_events_that_make_no_sense_are_refused() {
        let (mut c, _) = offered();
        assert!(c.handle_input(Input::Accepted).is_err());
        let mut c = CallState::outbound();
        assert!(c.handle_input(Input::RemoteCancel).is_err());
    }
}
