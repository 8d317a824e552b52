//! `Switchboard`: the session manager. It knows every call and every
//! connected client, hands out RTP port pairs, starts and stops media, and
//! routes call events to the clients that should hear them.
//!
//! The SIP shell drives calls through it; the WebSocket shell looks calls
//! and clients up in it. It holds no SIP or HTTP types.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::mpsc;

use crate::call::ports::PortPairAllocator;
use crate::call::state::EndCause;
use crate::call::state::{Direction, Notice};
use crate::call::{Call, CallId, Control, Script};
use crate::client::{ClientHandle, ClientId, OfferFilter, Outgoing};
use crate::config::Config;
use crate::events::{CallEvent, EventBus};
use crate::media::clock::MediaClock;
use crate::metrics::{Metrics, RecordingSnapshot, Snapshot};
use crate::prompts::PromptLibrary;
use crate::record::Recorder;
use crate::wire::{Dialect, Event, ProtocolError};

mod media;

#[derive(Debug, thiserror::Error)]
#[error("no RTP port pair free")]
pub struct NoPorts;

pub struct Switchboard {
    pub config: Config,
    calls: DashMap<CallId, Arc<Call>>,
    clients: DashMap<ClientId, Arc<ClientHandle>>,
    next_client: AtomicU64,
    ports: Arc<Mutex<PortPairAllocator>>,
    clock: Arc<MediaClock>,
    pub prompts: Arc<PromptLibrary>,
    /// None when recording is off.
    pub recorder: Option<Arc<Recorder>>,
    /// Every call event, for `GET /events`.
    pub events: EventBus,
    pub metrics: Metrics,
    /// The owner of calls placed or answered over REST.
    api_owner: Arc<ClientHandle>,
    /// The SIP transport is bound and the daemon is not shutting down.
    sip_ready: std::sync::atomic::AtomicBool,
    pub devices: crate::devices::registry::DeviceRegistry,
    /// What `GET /accounts` shows; written by the registration tasks.
    pub accounts: crate::accounts::status::AccountBook,
    /// One permit per WebSocket connection (clients and devices).
    pub connection_slots: Arc<tokio::sync::Semaphore>,
}

/// The client id of [`Switchboard::api_owner`]; WebSocket clients count from 1.
pub const API_OWNER: ClientId = 0;

impl Switchboard {
    pub fn new(
        config: Config,
        clock: Arc<MediaClock>,
        prompts: Arc<PromptLibrary>,
        recorder: Option<Arc<Recorder>>,
    ) -> Arc<Switchboard> {
        let (low, high) = config.rtp_ports;
        Arc::new(Switchboard {
            calls: DashMap::new(),
            clients: DashMap::new(),
            next_client: AtomicU64::new(1),
            ports: Arc::new(Mutex::new(PortPairAllocator::new(low, high))),
            clock,
            prompts,
            recorder,
            events: EventBus::default(),
            metrics: Metrics::default(),
            api_owner: Arc::new(ClientHandle::detached(API_OWNER)),
            connection_slots: Arc::new(tokio::sync::Semaphore::new(config.max_clients)),
            sip_ready: Default::default(),
            devices: crate::devices::registry::DeviceRegistry::new(&config.devices),
            accounts: crate::accounts::status::AccountBook::new(&config.accounts),
            config,
        })
    }

    pub fn sip_ready(&self) -> bool {
        self.sip_ready.load(Ordering::Acquire)
    }

    pub fn set_sip_ready(&self, ready: bool) {
        self.sip_ready.store(ready, Ordering::Release);
    }

    /// The owner of calls placed or answered over REST: no audio, no queue.
    pub fn api_owner(&self) -> Arc<ClientHandle> {
        self.api_owner.clone()
    }

    pub fn advertised_ip(&self) -> IpAddr {
        self.config.advertised_ip
    }

    pub fn ring_timeout(&self) -> Duration {
        self.config.ring_timeout
    }

    // ----- clients -----

    pub fn connect_client(
        &self,
        dialect: Dialect,
        offers: OfferFilter,
    ) -> (Arc<ClientHandle>, mpsc::Receiver<Outgoing>) {
        let id = self.next_client.fetch_add(1, Ordering::Relaxed);
        let (handle, queue) = ClientHandle::new(id, dialect, offers);
        let handle = Arc::new(handle);
        self.clients.insert(id, handle.clone());
        (handle, queue)
    }

    /// A device's connection, registered like a client's.
    pub fn connect_device(
        &self,
        device: &crate::devices::DeviceConfig,
    ) -> (Arc<ClientHandle>, mpsc::Receiver<Outgoing>) {
        let id = self.next_client.fetch_add(1, Ordering::Relaxed);
        let (handle, queue) = ClientHandle::device(id, device);
        let handle = Arc::new(handle);
        self.clients.insert(id, handle.clone());
        (handle, queue)
    }

    /// Forgets a client and hangs up every call it owns.
    pub fn disconnect_client(&self, id: ClientId) {
        self.release_client(id);
        self.hang_up_calls_of(id);
    }

    /// Forgets a client, leaving its calls up (a device may come back for them).
    pub fn release_client(&self, id: ClientId) {
        if let Some((_, client)) = self.clients.remove(&id) {
            self.metrics.client_gone(client.frames_dropped());
        }
    }

    /// Hangs up every call `id` still owns.
    pub fn hang_up_calls_of(&self, id: ClientId) {
        for call in self.calls_owned_by(id) {
            let _ = call.control.try_send(Control::OwnerGone);
        }
    }

    /// Turns down (480) the calls still ringing `id` alone: it is gone.
    pub fn refuse_offers_to(&self, id: ClientId) {
        for call in self.calls() {
            let offered = call.offered_to();
            if call.phase() == crate::call::state::Phase::Offered
                && offered.len() == 1
                && offered[0].id == id
            {
                let _ = call.control.try_send(Control::Reject {
                    status: 480,
                    client: offered[0].clone(),
                });
            }
        }
    }

    /// Moves what `from` had to `to`: the calls it owns, their audio
    /// included (returned), and the offers still ringing it, which `to` is
    /// told of again.
    pub fn adopt_calls(&self, from: ClientId, to: &Arc<ClientHandle>) -> Vec<Arc<Call>> {
        let calls = self.calls_owned_by(from);
        for call in &calls {
            call.set_owner(to.clone());
            if let Some(media) = call.media.get() {
                media.switch_owner(to.clone());
            }
        }
        for call in self.calls() {
            let offered = call.offered_to();
            if call.phase() != crate::call::state::Phase::Offered
                || !offered.iter().any(|c| c.id == from)
            {
                continue;
            }
            call.set_offered_to(
                offered
                    .into_iter()
                    .map(|c| if c.id == from { to.clone() } else { c })
                    .collect(),
            );
            to.send_event(&Event::RingAns {
                caller: &call.from,
                call: call.id.as_str(),
            });
        }
        calls
    }

    pub fn clients(&self) -> Vec<Arc<ClientHandle>> {
        self.clients.iter().map(|c| c.value().clone()).collect()
    }

    /// Whether an incoming call to `called` (on SIP account `account`, if
    /// any) can be offered, or the SIP status to refuse it with. A device's
    /// extension, or the account a device is, rings that device alone: 480
    /// while it is offline, 486 while it is in a call. Any other call goes
    /// to the connected clients that take its number or account and to
    /// watchers of `GET /events`, who can answer over REST: 480 if there
    /// are none.
    pub fn route_incoming(&self, called: &str, account: Option<&str>) -> Result<(), u16> {
        if let Some(device) = self.devices.for_call(called, account) {
            return match device.client() {
                None => Err(480),
                Some(client) if self.in_a_call(&client) => Err(486),
                Some(_) => Ok(()),
            };
        }
        if self.events.watchers() > 0
            || self.clients.iter().any(|c| c.offers.wants(called, account))
        {
            Ok(())
        } else {
            Err(480)
        }
    }

    /// Whether a client owns a call that has not ended, or has one offered.
    pub fn in_a_call(&self, client: &ClientHandle) -> bool {
        self.call_of(client).is_some()
    }

    /// Whether a connected client takes calls to `number` by name
    /// (`/ws?offers=...`): such numbers are answered inside siprelay.
    pub fn takes_by_name(&self, number: &str) -> bool {
        self.clients
            .iter()
            .any(|c| matches!(&c.offers, crate::client::OfferFilter::Numbers(n) if n.iter().any(|n| n == number)))
    }

    /// The id of the call a client owns or is offered, if it has one.
    pub fn call_of(&self, client: &ClientHandle) -> Option<String> {
        self.calls
            .iter()
            .find(|c| {
                !c.is_ended()
                    && (c.owner_id() == Some(client.id)
                        || (c.phase() == crate::call::state::Phase::Offered
                            && c.offered_to().iter().any(|o| o.id == client.id)))
            })
            .map(|c| c.id.to_string())
    }

    /// An account's registration changed: applications and `/events` hear it.
    pub fn registration_changed(&self, status: &crate::accounts::status::AccountStatus) {
        use crate::accounts::policy::RegState;
        let reason = status.last_error.as_deref().unwrap_or_default();
        let failure =
            (status.state == RegState::Failed).then(|| (status.last_status.unwrap_or(408), reason));
        let text = Event::Reg {
            account: &status.name,
            state: status.state.as_str(),
            failure,
        }
        .format(Dialect::V1);
        for c in self.clients.iter().filter(|c| c.device_format.is_none()) {
            c.send_text(text.clone());
        }
        self.events.publish_account(crate::events::AccountEvent {
            event: "REG",
            account: status.name.clone(),
            state: status.state.as_str(),
            status: failure.map(|(s, _)| s),
            reason: failure.map(|(_, r)| r.to_string()),
            at: crate::clock_time::Utc::from_system(std::time::SystemTime::now()).rfc3339(),
        });
    }

    /// A device came online or went offline: applications hear it.
    pub fn device_presence(&self, id: &str, online: bool) {
        let event = Event::Device { id, online };
        for c in self.clients.iter().filter(|c| c.device_format.is_none()) {
            c.send_event(&event);
        }
    }

    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    // ----- calls -----

    pub fn insert_call(&self, call: Arc<Call>) {
        self.calls.insert(call.id.clone(), call);
    }

    pub fn call(&self, id: &str) -> Option<Arc<Call>> {
        self.calls.get(id).map(|c| c.value().clone())
    }

    pub fn calls(&self) -> Vec<Arc<Call>> {
        self.calls.iter().map(|c| c.value().clone()).collect()
    }

    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    pub fn calls_owned_by(&self, client: ClientId) -> Vec<Arc<Call>> {
        self.calls
            .iter()
            .filter(|c| c.owner_id() == Some(client))
            .map(|c| c.value().clone())
            .collect()
    }

    /// Offers an inbound call to every connected client that takes calls
    /// to its number, and to watchers of `GET /events`. False if there is
    /// nobody to offer it to.
    pub fn offer(&self, call: &Arc<Call>) -> bool {
        let account = call.account.as_deref();
        let clients: Vec<_> = match self.devices.for_call(&call.to, account) {
            Some(device) => match device.client() {
                Some(client) => vec![client],
                None => return false,
            },
            None => self
                .clients
                .iter()
                .filter(|c| c.offers.wants(&call.to, account))
                .map(|c| c.value().clone())
                .collect(),
        };
        if clients.is_empty() && self.events.watchers() == 0 {
            return false;
        }
        self.events.publish(|| CallEvent::new("RING_ANS", call));
        // Recorded before anyone hears of it, so that an answer racing the
        // offer finds itself among the offered.
        call.set_offered_to(clients.clone());
        // The same text in both dialects: formatted once for everyone.
        let text = Event::RingAns {
            caller: &call.from,
            call: call.id.as_str(),
        }
        .format(Dialect::V1);
        for c in &clients {
            c.send_text(text.clone());
        }
        true
    }

    /// Tells the right clients about a call event: the owner, or, before an
    /// inbound call has one, everyone it was offered to (less the client that
    /// just acted, which learns the outcome from its own command).
    pub fn notify(&self, call: &Arc<Call>, notice: &Notice) {
        if let Notice::Taken = notice {
            // Only the other clients it was offered to need to know now;
            // everyone hears CALL_ANS once the caller has ACKed.
            let withdrawn = Event::RingIgnore {
                call: call.id.as_str(),
            };
            let owner = call.owner_id();
            for c in call.offered_to().iter().filter(|c| Some(c.id) != owner) {
                c.send_event(&withdrawn);
            }
            return;
        }
        self.events.publish(|| CallEvent::from_notice(call, notice));
        if *notice == Notice::Connected {
            let setup = call.created.elapsed().unwrap_or_default();
            self.metrics.call_connected(call.direction.as_str(), setup);
        }
        self.route(call, notice);
        if *notice == Notice::Connected {
            if let (Some(media), Some(tap)) = (call.media.get(), self.start_recording(call)) {
                media.start_recording(tap);
            }
        }
    }

    fn route(&self, call: &Call, notice: &Notice) {
        let id = call.id.as_str();
        let event = match notice {
            Notice::Ringing => Event::Ringing { call: id },
            Notice::Connected => Event::CallAns { call: id },
            Notice::Declined => Event::CallIgnore { call: id },
            Notice::OfferWithdrawn => Event::RingIgnore { call: id },
            Notice::Failed { status, reason } => Event::CallFailed {
                status: *status,
                reason,
                call: id,
            },
            Notice::Bye => Event::Bye { call: id },
            Notice::Taken => return,
        };
        match (call.direction, notice, call.owner()) {
            (Direction::Inbound, Notice::OfferWithdrawn, owner) => {
                for c in call.offered_to() {
                    if owner.as_ref().is_none_or(|o| o.id != c.id) {
                        c.send_event(&event);
                    }
                }
            }
            (_, _, Some(owner)) => owner.send_event(&event),
            (_, _, None) => {}
        }
    }

    /// Tells the owner of an outgoing call, and watchers, that it is being placed.
    pub fn calling(&self, call: &Call) {
        if let Some(owner) = call.owner() {
            owner.send_event(&Event::Calling {
                number: &call.to,
                call: call.id.as_str(),
            });
        }
        self.events.publish(|| CallEvent::new("CALLING", call));
    }

    /// An INVITE turned away before it became a call (bad SDP, no ports,
    /// nobody to offer it to): counted like a call that ended so.
    pub fn refused_invite(&self, status: u16) {
        self.metrics.call_ended(
            Direction::Inbound.as_str(),
            Some(status),
            Default::default(),
        );
    }

    /// The call is over: stop its media and recording, forget it.
    pub fn finish(&self, call: &Call, cause: &EndCause) {
        call.set_phase(crate::call::state::Phase::Ended);
        let rtp = call
            .media
            .get()
            .map(|m| m.stats.totals())
            .unwrap_or_default();
        self.metrics
            .call_ended(call.direction.as_str(), call.sip_status(), rtp);
        self.metrics.call_end(cause.label());
        if let Some(media) = call.media.get() {
            media.stop();
            self.finish_recording(media, cause);

            let stats = &media.stats;
            tracing::info!(
                call = %call.id,
                rtp_in = stats.packets_in.load(Ordering::Relaxed),
                rtp_out = stats.packets_out.load(Ordering::Relaxed),
                rtp_ignored = stats.packets_ignored.load(Ordering::Relaxed),
                send_errors = stats.send_errors.load(Ordering::Relaxed),
                "call media totals"
            );
        }
        self.calls.remove(&call.id);
    }

    /// Asks every call to end (BYE, CANCEL or a final response) and waits
    /// up to `grace` for them to finish.
    pub async fn hang_up_all(&self, grace: Duration) {
        for call in self.calls() {
            let _ = call.control.send(Control::Shutdown).await;
        }
        let deadline = tokio::time::Instant::now() + grace;
        while !self.calls.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What `/metrics` reports as the state of things now.
    pub fn snapshot(&self) -> Snapshot {
        let mut now = Snapshot::default();
        for call in self.calls.iter() {
            if call.is_ended() {
                continue;
            }
            match call.direction {
                Direction::Inbound => now.calls_inbound += 1,
                Direction::Outbound => now.calls_outbound += 1,
            }
            if let Some(media) = call.media.get() {
                now.rtp += media.stats.totals();
            }
        }
        for client in self.clients.iter() {
            now.clients += 1;
            now.frames_dropped += client.frames_dropped();
        }
        {
            let ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
            now.port_pairs_free = ports.free_pairs() as u64;
            now.port_pairs = ports.total_pairs() as u64;
        }
        now.event_watchers = self.events.watchers() as u64;
        now.recording = self.recorder.as_ref().map(|r| {
            let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
            RecordingSnapshot {
                recordings: get(&r.stats.recordings),
                errors: get(&r.stats.errors),
                frames_dropped: get(&r.stats.frames_dropped),
            }
        });
        now
    }

    /// Closes every client connection (they send a close frame).
    pub fn close_clients(&self) {
        for c in self.clients() {
            c.closing.cancel();
        }
    }
}

/// Places outbound calls; implemented by the SIP shell.
pub trait Dialer: Send + Sync {
    /// Starts a call to `target` owned by `owner`, through the SIP account
    /// named `account` (or the default one for a plain number), following
    /// `script` once connected: registers it, tells the owner `CALLING`,
    /// and sends the INVITE in the background.
    fn dial(
        &self,
        owner: Arc<ClientHandle>,
        target: &str,
        account: Option<&str>,
        script: Script,
    ) -> Result<Arc<Call>, DialError>;
}

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The target cannot be dialled (malformed, or no SIP server for a number).
    #[error("{0}")]
    Refused(ProtocolError),
    /// No RTP port pair is free: the call fails with 503 under this id.
    #[error("no RTP port pair free")]
    NoPorts(CallId),
}
