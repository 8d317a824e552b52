//! `Switchboard`: the session manager. It knows every call and every
//! connected client, hands out RTP port pairs, starts and stops media, and
//! routes call events to the clients that should hear them.
//!
//! The SIP shell drives calls through it; the WebSocket shell looks calls
//! and clients up in it. It holds no SIP or HTTP types.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::call::ports::{PortLease, PortPairAllocator};
use crate::call::state::EndCause;
use crate::call::state::{Direction, Notice};
use crate::call::{Call, CallId, Control};
use crate::client::{ClientHandle, ClientId, OfferFilter, Outgoing};
use crate::config::Config;
use crate::media::clock::MediaClock;
use crate::media::sdp::RemoteMedia;
use crate::media::session::{MediaSession, RtpBinding};
use crate::media::tap::RecordTap;
use crate::prompts::PromptLibrary;
use crate::record::clock_time::Utc;
use crate::record::{Ending, Recorder, RecordingId, Sidecar};
use crate::wire::{Dialect, Event, ProtocolError};

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
}

impl Switchboard {
    pub fn new(
        config: Config,
        clock: Arc<MediaClock>,
        prompts: Arc<PromptLibrary>,
        recorder: Option<Arc<Recorder>>,
    ) -> Arc<Switchboard> {
        let (low, high) = config.rtp_ports;
        Arc::new(Switchboard {
            config,
            calls: DashMap::new(),
            clients: DashMap::new(),
            next_client: AtomicU64::new(1),
            ports: Arc::new(Mutex::new(PortPairAllocator::new(low, high))),
            clock,
            prompts,
            recorder,
        })
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

    /// Forgets a client and hangs up every call it owns.
    pub fn disconnect_client(&self, id: ClientId) {
        self.clients.remove(&id);
        for call in self.calls_owned_by(id) {
            let _ = call.control.try_send(Control::OwnerGone);
        }
    }

    pub fn clients(&self) -> Vec<Arc<ClientHandle>> {
        self.clients.iter().map(|c| c.value().clone()).collect()
    }

    /// Whether any connected client would be offered a call to `called`.
    pub fn takes_calls_to(&self, called: &str) -> bool {
        self.clients.iter().any(|c| c.offers.wants(called))
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

    /// Offers an inbound call to every connected client. False if there is
    /// nobody to offer it to.
    /// Offers an inbound call to every connected client that takes calls
    /// to its number. False if there is nobody to offer it to.
    pub fn offer(&self, call: &Arc<Call>) -> bool {
        let clients: Vec<_> = self
            .clients
            .iter()
            .filter(|c| c.offers.wants(&call.to))
            .map(|c| c.value().clone())
            .collect();
        if clients.is_empty() {
            return false;
        }
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
    pub fn notify(&self, call: &Call, notice: &Notice) {
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
        };
        match (call.direction, notice, call.owner()) {
            (Direction::Inbound, Notice::OfferWithdrawn, owner) => {
                for c in call.offered_to() {
                    if owner.as_ref().is_none_or(|o| o.id != c.id) {
                        c.send_event(&event);
                    }
                }
            }
            (Direction::Inbound, Notice::Connected, Some(owner)) => {
                owner.send_event(&event);
                // The offer is no longer open to the others.
                let withdrawn = Event::RingIgnore { call: id };
                for c in call.offered_to().iter().filter(|c| c.id != owner.id) {
                    c.send_event(&withdrawn);
                }
            }
            (_, _, Some(owner)) => owner.send_event(&event),
            (_, _, None) => {}
        }
    }

    /// Binds an RTP socket on a free even port of the range.
    pub fn bind_rtp(&self) -> Result<RtpBinding, NoPorts> {
        let ip = self.config.sip_listen.ip();
        let total = self
            .ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .total_pairs();
        // A port another program holds is skipped (and goes to the back of the queue).
        for _ in 0..total.min(64) {
            let lease = PortLease::take(&self.ports).ok_or(NoPorts)?;
            let Ok(std_socket) = std::net::UdpSocket::bind(SocketAddr::new(ip, lease.rtp_port()))
            else {
                continue;
            };
            if std_socket.set_nonblocking(true).is_err() {
                continue;
            }
            if let Ok(socket) = UdpSocket::from_std(std_socket) {
                return Ok(RtpBinding { socket, lease });
            }
        }
        Err(NoPorts)
    }

    pub fn free_port_pairs(&self) -> usize {
        self.ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .free_pairs()
    }

    /// Starts the call's audio both ways: the clock sends a frame every
    /// 20 ms from now on (the greeting first, for incoming calls), the far
    /// end's audio goes to `owner`, and both are recorded.
    pub fn start_media(
        &self,
        call: &Call,
        binding: RtpBinding,
        remote: &RemoteMedia,
        owner: Arc<ClientHandle>,
    ) {
        let tap = self.start_recording(call, remote, &owner);
        let session = MediaSession::new(call.id.clone(), binding, remote.codec, remote.rtp, tap);
        if call.media.set(session.clone()).is_err() {
            return;
        }
        let greets = call.direction == Direction::Inbound || self.config.greeting_outbound;
        if let Some(greeting) = self.prompts.greeting().filter(|_| greets) {
            session.play(greeting, true);
        }
        self.clock.add(session.clone());
        session.start_receiving(owner);
    }

    fn start_recording(
        &self,
        call: &Call,
        remote: &RemoteMedia,
        owner: &Arc<ClientHandle>,
    ) -> Option<RecordTap> {
        let recorder = self.recorder.as_ref()?;
        let answered = Utc::from_system(std::time::SystemTime::now());
        let id = RecordingId::new(&answered, call.id.as_str()).ok()?;
        let sidecar = Sidecar {
            id: id.as_str().to_string(),
            call_id: call.id.to_string(),
            direction: call.direction.as_str().to_string(),
            from: call.from.clone(),
            to: call.to.clone(),
            codec: remote.codec.name().to_string(),
            started_at: Utc::from_system(call.created).rfc3339(),
            answered_at: Some(answered.rfc3339()),
            ended_at: None,
            duration_s: None,
            hangup_by: None,
            sip_status: Some(200),
            end_reason: None,
            wav: id.wav_name(),
            recording_error: None,
            repaired: false,
        };
        let owner = owner.clone();
        let key = recorder.open(
            sidecar,
            Box::new(move |message| {
                owner.send_event(&Event::Error(&ProtocolError::new(500, message)));
            }),
        );
        Some(RecordTap::new(key))
    }

    /// The call is over: stop its media and recording, forget it.
    pub fn finish(&self, call: &Call, cause: &EndCause) {
        call.set_phase(crate::call::state::Phase::Ended);
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

    /// Closes every client connection (they send a close frame).
    pub fn close_clients(&self) {
        for c in self.clients() {
            c.closing.cancel();
        }
    }
}

/// Places outbound calls; implemented by the SIP shell.
pub trait Dialer: Send + Sync {
    /// Starts a call to `target` owned by `owner`: registers it, tells the
    /// owner `CALLING`, and sends the INVITE in the background.
    fn dial(&self, owner: Arc<ClientHandle>, target: &str) -> Result<Arc<Call>, DialError>;
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

impl Switchboard {
    fn finish_recording(&self, media: &MediaSession, cause: &EndCause) {
        let (Some(recorder), Some(tap)) = (&self.recorder, &media.recording) else {
            return;
        };
        let (key, frames) = {
            let tap = tap.lock().unwrap_or_else(|e| e.into_inner());
            (tap.key, tap.frames())
        };
        let (hangup_by, end_reason) = match cause {
            EndCause::Local => ("local", "siprelay's side hung up"),
            EndCause::Remote => ("remote", "the far end hung up"),
            EndCause::Timeout => ("timeout", "no answer in time"),
            EndCause::Shutdown => ("shutdown", "siprelay shut down"),
        };
        recorder.close(
            key,
            frames,
            Ending {
                ended_at: Utc::from_system(std::time::SystemTime::now()).rfc3339(),
                hangup_by,
                end_reason: end_reason.to_string(),
                sip_status: Some(200),
            },
        );
    }
}
