//! `Call`: what the rest of the daemon holds of one call. The call's own task
//! (in `sip/`) owns its state machine; everyone else talks to it through
//! `control` and reads the published phase.

use std::sync::atomic::{AtomicU16, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};

use super::state::{Direction, Phase};
use super::CallId;
use crate::client::{ClientHandle, ClientId};
use crate::media::prompt::Prompt;
use crate::media::session::MediaSession;
use crate::wire::ProtocolError;

/// Requests to a call's task.
#[derive(Debug)]
pub enum Control {
    /// Answer an offered call for `client`; the reply says whether it worked.
    Answer {
        client: Arc<ClientHandle>,
        reply: oneshot::Sender<Result<(), ProtocolError>>,
    },
    /// Reject an offered call for `client` with this status.
    Reject {
        status: u16,
        client: Arc<ClientHandle>,
    },
    Hangup,
    OwnerGone,
    Shutdown,
}

/// Control requests a call may have queued; a client flooding one call
/// with commands gets `ERROR:503` instead of growing this.
pub const CONTROL_QUEUE: usize = 16;

/// What siprelay does on its own in a call that has no client to drive it
/// (placed or answered over REST).
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Played as soon as the call connects.
    pub play: Option<Prompt>,
    /// Hang up once a played file (this one, or a later `PLAY`) has played
    /// to its end.
    pub hangup_after_play: bool,
    /// Not recorded, although recording is on.
    pub no_record: bool,
}

#[derive(Debug)]
pub struct Call {
    pub id: CallId,
    pub direction: Direction,
    /// The caller (inbound: From user; outbound: us).
    pub from: String,
    /// The callee (inbound: Request-URI user; outbound: the dialled target).
    pub to: String,
    /// The SIP account the call came in on or goes out through.
    pub account: Option<String>,
    pub created: SystemTime,
    pub control: mpsc::Sender<Control>,
    owner: Mutex<Option<Arc<ClientHandle>>>,
    /// Inbound: the clients the offer went to, who hear it withdrawn.
    offered_to: Mutex<Vec<Arc<ClientHandle>>>,
    phase: AtomicU8,
    /// The INVITE's final status, 0 until there is one.
    sip_status: AtomicU16,
    /// When the call connected.
    pub answered: OnceLock<SystemTime>,
    script: Mutex<Script>,
    pub media: OnceLock<Arc<MediaSession>>,
}

impl Call {
    pub fn new(
        id: CallId,
        direction: Direction,
        from: String,
        to: String,
        owner: Option<Arc<ClientHandle>>,
        account: Option<String>,
    ) -> (Arc<Call>, mpsc::Receiver<Control>) {
        let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
        let phase = match direction {
            Direction::Inbound => Phase::Offered,
            Direction::Outbound => Phase::Dialing,
        };
        let call = Arc::new(Call {
            id,
            direction,
            from,
            to,
            account,
            created: SystemTime::now(),
            control: tx,
            owner: Mutex::new(owner),
            offered_to: Mutex::new(Vec::new()),
            phase: AtomicU8::new(phase as u8),
            sip_status: AtomicU16::new(0),
            answered: OnceLock::new(),
            script: Mutex::new(Script::default()),
            media: OnceLock::new(),
        });
        (call, rx)
    }

    pub fn phase(&self) -> Phase {
        PHASES[self.phase.load(Ordering::Acquire) as usize]
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    pub fn sip_status(&self) -> Option<u16> {
        Some(self.sip_status.load(Ordering::Acquire)).filter(|s| *s != 0)
    }

    pub fn set_sip_status(&self, status: Option<u16>) {
        if let Some(status) = status {
            self.sip_status.store(status, Ordering::Release);
        }
    }

    pub fn script(&self) -> Script {
        self.script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_script(&self, script: Script) {
        *self.script.lock().unwrap_or_else(|e| e.into_inner()) = script;
    }

    /// Hang up when a played file ends (`POST /calls/{id}/play`).
    pub fn set_hangup_after_play(&self) {
        self.script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .hangup_after_play = true;
    }

    /// The media of a connected call: none before it connects or once it ended.
    pub fn connected_media(&self) -> Option<&Arc<MediaSession>> {
        self.media.get().filter(|_| !self.is_ended())
    }

    pub fn is_ended(&self) -> bool {
        self.phase() == Phase::Ended
    }

    pub fn owner(&self) -> Option<Arc<ClientHandle>> {
        self.owner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn owner_id(&self) -> Option<ClientId> {
        self.owner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|c| c.id)
    }

    pub fn set_owner(&self, client: Arc<ClientHandle>) {
        *self.owner.lock().unwrap_or_else(|e| e.into_inner()) = Some(client);
    }

    pub fn set_offered_to(&self, clients: Vec<Arc<ClientHandle>>) {
        *self.offered_to.lock().unwrap_or_else(|e| e.into_inner()) = clients;
    }

    pub fn offered_to(&self) -> Vec<Arc<ClientHandle>> {
        self.offered_to
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Waits until `deadline`, or forever without one (a call's ring timer).
pub async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

const PHASES: [Phase; 7] = [
    Phase::Offered,
    Phase::Dialing,
    Phase::Ringing,
    Phase::Cancelling,
    Phase::Answering,
    Phase::Connected,
    Phase::Ended,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_round_trips_through_the_atomic() {
        let (call, _rx) = Call::new(
            CallId::generate(),
            Direction::Outbound,
            "a".into(),
            "b".into(),
            None,
            None,
        );
        for p in PHASES {
            call.set_phase(p);
            assert_eq!(call.phase(), p);
        }
    }
}
