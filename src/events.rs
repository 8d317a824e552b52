//! `EventBus`: every call event the WebSocket protocol carries (audio
//! aside) and every account's registration change, published once for
//! watchers that are not call owners: the `GET /events` stream today.
//!
//! A bounded broadcast ring: publishing never waits, and a watcher that
//! falls more than [`BACKLOG`] events behind finds out (`Lagged`) and is cut
//! off by its stream instead of growing a queue. With nobody watching,
//! publishing costs one atomic load.

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::call::state::Notice;
use crate::call::Call;
use crate::clock_time::Utc;

/// Events a watcher may have unread before it is cut off.
pub const BACKLOG: usize = 1024;

/// One call event, as `GET /events` sends it (one JSON object).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct CallEvent {
    /// The WebSocket protocol's name for it: `RING_ANS`, `CALLING`,
    /// `RINGING`, `CALL_ANS`, `CALL_IGNORE`, `RING_IGNORE`, `CALL_FAILED`,
    /// `BYE`, `PLAYED`, `DTMF` or `ERROR`.
    pub event: &'static str,
    pub call_id: String,
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    pub from: String,
    pub to: String,
    /// `CALL_FAILED`: the SIP status; `ERROR`: the error code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `CALL_FAILED`: the SIP reason phrase; `ERROR`: the message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `PLAYED`: the file's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `DTMF`: the key the far end pressed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digit: Option<String>,
    /// When it happened (UTC, RFC 3339 with milliseconds).
    pub at: String,
}

impl CallEvent {
    pub fn new(event: &'static str, call: &Call) -> CallEvent {
        CallEvent {
            event,
            call_id: call.id.to_string(),
            direction: call.direction.as_str(),
            from: call.from.clone(),
            to: call.to.clone(),
            status: None,
            reason: None,
            name: None,
            digit: None,
            at: Utc::from_system(SystemTime::now()).rfc3339(),
        }
    }

    /// The event a call state notice stands for.
    pub fn from_notice(call: &Call, notice: &Notice) -> CallEvent {
        match notice {
            Notice::Ringing => CallEvent::new("RINGING", call),
            Notice::Connected => CallEvent::new("CALL_ANS", call),
            Notice::Declined => CallEvent::new("CALL_IGNORE", call),
            Notice::OfferWithdrawn => CallEvent::new("RING_IGNORE", call),
            Notice::Failed { status, reason } => CallEvent {
                status: Some(*status),
                reason: Some(reason.clone()),
                ..CallEvent::new("CALL_FAILED", call)
            },
            Notice::Bye => CallEvent::new("BYE", call),
            // Not published: told to the other offered clients only.
            Notice::Taken => CallEvent::new("RING_IGNORE", call),
        }
    }
}

/// A change of an account's registration (`REG` on the WebSocket).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct AccountEvent {
    /// Always `REG`.
    pub event: &'static str,
    pub account: String,
    /// `registering`, `registered`, `failed` or `unregistered`.
    pub state: &'static str,
    /// After a failure: the SIP status of the refusal, if there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// After a failure: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at: String,
}

/// What the bus carries: one JSON object per event on `GET /events`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(untagged)]
pub enum BusEvent {
    Call(CallEvent),
    Account(AccountEvent),
}

impl BusEvent {
    /// The call the event belongs to, if it is a call's.
    pub fn call_id(&self) -> Option<&str> {
        match self {
            BusEvent::Call(e) => Some(&e.call_id),
            BusEvent::Account(_) => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<BusEvent>>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            tx: broadcast::channel(BACKLOG).0,
        }
    }
}

impl EventBus {
    /// Publishes the event built by `make`, which runs only if someone
    /// watches.
    pub fn publish(&self, make: impl FnOnce() -> CallEvent) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Arc::new(BusEvent::Call(make())));
        }
    }

    pub fn publish_account(&self, event: AccountEvent) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Arc::new(BusEvent::Account(event)));
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<BusEvent>> {
        self.tx.subscribe()
    }

    /// How many watchers there are now.
    pub fn watchers(&self) -> usize {
        self.tx.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::state::Direction;
    use crate::call::CallId;

    fn call() -> Arc<Call> {
        Call::new(
            CallId::generate(),
            Direction::Inbound,
            "1001".into(),
            "2000".into(),
            None,
            None,
        )
        .0
    }

    #[test]
    fn nothing_is_built_without_watchers() {
        let bus = EventBus::default();
        bus.publish(|| unreachable!("built with nobody watching"));
        let mut rx = bus.subscribe();
        let c = call();
        bus.publish(|| CallEvent::new("RING_ANS", &c));
        let BusEvent::Call(got) = &*rx.try_recv().unwrap() else {
            panic!("a call event")
        };
        assert_eq!((got.event, got.from.as_str()), ("RING_ANS", "1001"));
    }

    #[test]
    fn a_watcher_that_falls_behind_learns_it_and_the_bus_stays_bounded() {
        let bus = EventBus::default();
        let mut rx = bus.subscribe();
        let c = call();
        for _ in 0..BACKLOG + 10 {
            bus.publish(|| CallEvent::new("RINGING", &c));
        }
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(10))
        ));
    }

    #[test]
    fn failures_carry_status_and_reason_and_the_json_omits_what_is_absent() {
        let c = call();
        let failed = CallEvent::from_notice(
            &c,
            &Notice::Failed {
                status: 404,
                reason: "Not Found".into(),
            },
        );
        let json = serde_json::to_value(&failed).unwrap();
        assert_eq!(json["event"], "CALL_FAILED");
        assert_eq!(json["status"], 404);
        assert_eq!(json["reason"], "Not Found");
        assert!(json.get("name").is_none());
        let bye = serde_json::to_value(CallEvent::from_notice(&c, &Notice::Bye)).unwrap();
        assert!(bye.get("status").is_none());
        assert_eq!(bye["call_id"], c.id.as_str());
    }
}
