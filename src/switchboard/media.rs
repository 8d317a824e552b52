//! The switchboard's media side: RTP port pairs, starting a call's media
//! session with its greeting, listeners and recording, and loading prompts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use super::{NoPorts, Switchboard};
use crate::call::ports::PortLease;
use crate::call::state::{Direction, EndCause};
use crate::call::{Call, Control};
use crate::client::ClientHandle;
use crate::clock_time::Utc;
use crate::events::CallEvent;
use crate::media::sdp::RemoteMedia;
use crate::media::session::{MediaSession, RtpBinding};
use crate::media::socket::RtpSocket;
use crate::media::tap::RecordTap;
use crate::record::{Ending, RecordingId, Sidecar};
use crate::wire::{Event, ProtocolError};

impl Switchboard {
    /// Loads a prompt from the assets directory, off the async workers (the
    /// first load decodes and resamples). Errors are an HTTP-style status
    /// (400 bad name, 404 missing, 415 not a WAV, 500) and a message.
    pub async fn load_prompt(
        &self,
        name: &str,
    ) -> Result<crate::media::prompt::Prompt, (u16, String)> {
        let prompts = self.prompts.clone();
        let owned = name.to_string();
        let loaded = tokio::task::spawn_blocking(move || prompts.load(&owned))
            .await
            .map_err(|_| (500, "prompt loader failed".to_string()))?
            .map_err(|e| (e.status(), e.to_string()));
        if loaded.is_err() {
            self.metrics.prompt_errors.inc();
        }
        loaded
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
            match RtpSocket::bind(SocketAddr::new(ip, lease.rtp_port())) {
                Ok(socket) => {
                    return Ok(RtpBinding {
                        socket,
                        lease,
                        discarded: None,
                    })
                }
                // Out of open files: every port would fail alike, and the
                // cause must not pass for a full port range.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    let limit = crate::resources::open_files().map(|(_, l)| l);
                    tracing::warn!(error = %e, ?limit, "cannot bind RTP: out of open files");
                    return Err(NoPorts);
                }
                Err(_) => {}
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
        call: &Arc<Call>,
        binding: RtpBinding,
        remote: &RemoteMedia,
        owner: Arc<ClientHandle>,
        srtp: Option<crate::media::srtp::SrtpKeys>,
    ) {
        let _ = call.answered.set(SystemTime::now());
        let script = call.script();
        let session = MediaSession::new(
            call.id.clone(),
            binding,
            remote.codec,
            remote.telephone_event,
            remote.rtp,
            srtp,
        );
        if call.media.set(session.clone()).is_err() {
            return;
        }
        session.on_prompt_end(self.prompt_listener(call));
        session.on_dtmf(self.dtmf_listener(call));
        let greets = call.direction == Direction::Inbound || self.config.greeting_outbound;
        if let Some(greeting) = self.prompts.greeting().filter(|_| greets) {
            session.play(greeting, true);
        }
        if let Some(prompt) = script.play {
            session.play(prompt, false);
        }
        // Whatever reached the socket while the call rang (a stranger's
        // packets sent to a port it guessed) is not the call's: dropped
        // now, unless that was done when the call was answered.
        let early = match session.rtp.discarded {
            Some(n) => n,
            None => session.rtp.socket.discard_pending(),
        };
        if early > 0 {
            session
                .stats
                .packets_ignored
                .fetch_add(early as u64, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(call = %call.id, early, "discarded RTP that came before the answer");
        }
        // The owner first: the clock's shard may read the far end's first
        // packet as soon as it has the session.
        session.start_receiving(owner);
        self.clock.add(session.clone());
    }

    /// The far end pressed a key: the owner and watchers hear it.
    fn dtmf_listener(&self, call: &Arc<Call>) -> impl Fn(char) + Send + Sync + 'static {
        let call = Arc::downgrade(call);
        let events = self.events.clone();
        move |digit| {
            let Some(call) = call.upgrade() else {
                return;
            };
            if let Some(owner) = call.owner() {
                owner.send_event(&Event::Dtmf {
                    call: call.id.as_str(),
                    digit,
                });
            }
            events.publish(|| CallEvent {
                digit: Some(digit.to_string()),
                ..CallEvent::new("DTMF", &call)
            });
        }
    }

    /// What happens when a prompt ends: `PLAYED` to the owner and watchers
    /// (not for the greeting), and the hang-up a REST call may have asked for.
    fn prompt_listener(
        &self,
        call: &Arc<Call>,
    ) -> impl Fn(&crate::media::prompt::PromptEnded) + Send + Sync + 'static {
        // Weak: the call owns its media session, which owns this listener.
        let call = Arc::downgrade(call);
        let events = self.events.clone();
        move |ended| {
            let Some(call) = call.upgrade() else {
                return;
            };
            if ended.greeting {
                return;
            }
            if let Some(owner) = call.owner() {
                owner.send_event(&Event::Played {
                    call: call.id.as_str(),
                    name: &ended.name,
                });
            }
            events.publish(|| CallEvent {
                name: Some(ended.name.to_string()),
                ..CallEvent::new("PLAYED", &call)
            });
            if ended.completed && call.script().hangup_after_play {
                let _ = call.control.try_send(Control::Hangup);
            }
        }
    }

    /// Starts recording a call that has just connected: after `CALL_ANS`
    /// went out, so that a recording error never reaches the owner first.
    pub(super) fn start_recording(&self, call: &Arc<Call>) -> Option<RecordTap> {
        let recorder = self.recorder.as_ref()?;
        let codec = call.media.get()?.codec;
        if call.script().no_record {
            return None;
        }
        let answered = Utc::from_system(std::time::SystemTime::now());
        let id = RecordingId::new(&answered, call.id.as_str()).ok()?;
        let sidecar = Sidecar {
            id: id.as_str().to_string(),
            call_id: call.id.to_string(),
            direction: call.direction.as_str().to_string(),
            from: call.from.clone(),
            to: call.to.clone(),
            codec: codec.name().to_string(),
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
        let weak = Arc::downgrade(call);
        let events = self.events.clone();
        let key = recorder.open(
            sidecar,
            Box::new(move |message| {
                let Some(call) = weak.upgrade() else {
                    return;
                };
                if let Some(owner) = call.owner() {
                    owner.send_event(&Event::Error(&ProtocolError::new(500, message)));
                }
                events.publish(|| CallEvent {
                    status: Some(500),
                    reason: Some(message.to_string()),
                    ..CallEvent::new("ERROR", &call)
                });
            }),
        );
        Some(RecordTap::new(key))
    }

    pub(super) fn finish_recording(&self, media: &MediaSession, cause: &EndCause) {
        let (Some(recorder), Some(tap)) = (&self.recorder, media.recording.get()) else {
            return;
        };
        let (key, frames) = {
            let tap = tap.lock().unwrap_or_else(|e| e.into_inner());
            (tap.key, tap.frames())
        };
        let (hangup_by, end_reason) = (cause.label(), cause.description());
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
