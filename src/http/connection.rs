//! `Connection`: one WebSocket client's commands, carried out against the
//! switchboard. No socket here: the transport shell (`ws.rs`) feeds it text
//! frames, and replies go out through the client's queues.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::call::state::{Direction, Phase};
use crate::call::{Call, CallId, Control, Script};
use crate::client::ClientHandle;
use crate::media::session::MediaSession;

use crate::switchboard::{DialError, Dialer, Switchboard};
use crate::wire::{truncate_for_error, AudioPayload, Command, Event, ProtocolError};

/// Largest text frame handled; larger ones get `ERROR:413`.
pub const MAX_COMMAND_BYTES: usize = 1 << 20;

pub struct Connection {
    board: Arc<Switchboard>,
    dialer: Arc<dyn Dialer>,
    client: Arc<ClientHandle>,
    /// Calls this client owns, so audio finds its call without a global
    /// lookup. Weak: an ended call (its media session, its RTP port pair)
    /// must not live on for as long as the connection does.
    owned: HashMap<CallId, Weak<Call>>,
    /// Decoded audio, reused for every `RTP` message.
    pcm: Vec<u8>,
}

impl Connection {
    pub fn new(
        board: Arc<Switchboard>,
        dialer: Arc<dyn Dialer>,
        client: Arc<ClientHandle>,
    ) -> Self {
        Connection {
            board,
            dialer,
            client,
            owned: HashMap::new(),
            pcm: Vec::with_capacity(4096),
        }
    }

    pub fn client(&self) -> &Arc<ClientHandle> {
        &self.client
    }

    /// Handles one text frame; any failure goes back as `ERROR`.
    pub async fn handle_text(&mut self, text: &str) {
        if let Err(e) = self.dispatch(text).await {
            self.client.send_event(&Event::Error(&e));
        }
    }

    async fn dispatch(&mut self, text: &str) -> Result<(), ProtocolError> {
        if text.len() > MAX_COMMAND_BYTES {
            return Err(ProtocolError::new(
                413,
                format!(
                    "message of {} bytes exceeds {MAX_COMMAND_BYTES}",
                    text.len()
                ),
            ));
        }
        match Command::parse(self.client.dialect, text)? {
            Command::Ping => {
                self.client.send_event(&Event::Pong);
                Ok(())
            }
            Command::Audio { call, payload } => self.audio(call, payload),
            Command::Play { call, name } => self.play(call, name).await,
            Command::Clear { call } => {
                let call = self.owned_call(call)?;
                connected(&call)?.clear();
                Ok(())
            }
            // A device has at most one call: it dials only when it has none,
            // and answers only when it is not talking already.
            Command::Call { .. } if self.device_busy(true) => Err(device_busy()),
            Command::Answer { .. } if self.device_busy(false) => Err(device_busy()),
            Command::Dtmf { call, digits } => {
                let call = match call {
                    Some(id) => self.owned_call(id)?,
                    None => self.only_call()?,
                };
                connected(&call)?
                    .send_dtmf(digits)
                    .map_err(|e| ProtocolError::bad_request(e.to_string()))
            }
            Command::Call { target, account } => self.dial(target, account),
            Command::Answer { call } => self.answer(call).await,
            Command::Reject { call, status } => {
                let call = self.offered_call(call)?;
                self.control(
                    &call,
                    Control::Reject {
                        status,
                        client: self.client.clone(),
                    },
                )
            }
            Command::Hangup { call: Some(id) } if !self.owned.contains_key(id) => {
                // Hanging up a call that is only offered to us rejects it.
                let call = self.board.call(id).ok_or_else(|| unknown(id))?;
                if call.owner_id().is_some_and(|owner| owner != self.client.id) {
                    return Err(ProtocolError::new(
                        403,
                        format!("call {id} belongs to another client"),
                    ));
                }
                let call = self.offered_call(id)?;
                self.control(
                    &call,
                    Control::Reject {
                        status: 486,
                        client: self.client.clone(),
                    },
                )
            }
            Command::Hangup { call } => {
                let call = match call {
                    Some(id) => self.owned_call(id)?,
                    None => self.only_call()?,
                };
                self.control(&call, Control::Hangup)
            }
        }
    }

    /// Whether this is a device with a call: connected or dialling, and
    /// with `offers`, one ringing it too.
    fn device_busy(&self, offers: bool) -> bool {
        if self.client.device_format.is_none() {
            return false;
        }
        if offers {
            self.board.in_a_call(&self.client)
        } else {
            !self.board.calls_owned_by(self.client.id).is_empty()
        }
    }

    /// One binary frame of a device's audio, in its format, for its call.
    pub fn handle_device_audio(&mut self, frame: &[u8]) {
        let Some(format) = self.client.device_format else {
            return;
        };
        if let Err(e) = self.device_audio(format, frame) {
            self.client.send_event(&Event::Error(&e));
        }
    }

    fn device_audio(
        &mut self,
        format: crate::devices::AudioFormat,
        frame: &[u8],
    ) -> Result<(), ProtocolError> {
        let call = self.only_call()?;
        let media = connected(&call)?;
        self.pcm.clear();
        format
            .decode_to_pcm_bytes(frame, &mut self.pcm)
            .map_err(|e| ProtocolError::bad_request(e.to_string()))?;
        media
            .push_pcm(&self.pcm)
            .map_err(|e| ProtocolError::new(413, e.to_string()))
    }

    fn audio(
        &mut self,
        call: Option<&str>,
        payload: AudioPayload<'_>,
    ) -> Result<(), ProtocolError> {
        let call = match call {
            Some(id) => self.owned_call(id)?,
            None => self.only_call()?,
        };
        let media = connected(&call)?;
        payload.decode_into(&mut self.pcm)?;
        media
            .push_pcm(&self.pcm)
            .map_err(|e| ProtocolError::new(413, e.to_string()))
    }

    /// `PLAY`: the file is loaded (and resampled, the first time) off the
    /// async workers; a bad name or file is an `ERROR` and the call goes on.
    async fn play(&mut self, id: &str, name: &str) -> Result<(), ProtocolError> {
        let call = self.owned_call(id)?;
        connected(&call)?;
        let prompt = self
            .board
            .load_prompt(name)
            .await
            .map_err(|(status, message)| ProtocolError::new(status, message))?;
        connected(&call)?.play(prompt, false);
        Ok(())
    }

    fn dial(&mut self, target: &str, account: Option<&str>) -> Result<(), ProtocolError> {
        match self
            .dialer
            .dial(self.client.clone(), target, account, Script::default())
        {
            Ok(call) => {
                self.own(&call);
                Ok(())
            }
            Err(DialError::Refused(e)) => Err(e),
            Err(DialError::NoPorts(id)) => {
                self.client.send_event(&Event::CallFailed {
                    status: 503,
                    reason: "Service Unavailable (no RTP ports free)",
                    call: id.as_str(),
                });
                Ok(())
            }
        }
    }

    async fn answer(&mut self, id: &str) -> Result<(), ProtocolError> {
        let call = self.offered_call(id)?;
        let (reply, answered) = oneshot::channel();
        self.control(
            &call,
            Control::Answer {
                client: self.client.clone(),
                reply,
            },
        )?;
        // The call task answers in well under a second; the bound only
        // keeps a wedged call from wedging this connection too.
        match tokio::time::timeout(Duration::from_secs(5), answered).await {
            Ok(Ok(Ok(()))) => {
                self.own(&call);
                Ok(())
            }
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) | Err(_) => Err(ProtocolError::new(
                409,
                format!("call {id} ended before it was answered"),
            )),
        }
    }

    fn control(&self, call: &Call, request: Control) -> Result<(), ProtocolError> {
        call.control
            .try_send(request)
            .map_err(|_| ProtocolError::new(503, format!("call {} is busy or ended", call.id)))
    }

    /// An inbound call still ringing, offered to this client.
    fn offered_call(&self, id: &str) -> Result<Arc<Call>, ProtocolError> {
        let call = self.board.call(id).ok_or_else(|| unknown(id))?;
        if call.direction != Direction::Inbound
            || !call.offered_to().iter().any(|c| c.id == self.client.id)
        {
            return Err(ProtocolError::new(
                403,
                format!("call {id} was not offered to this client"),
            ));
        }
        if call.phase() != Phase::Offered {
            return Err(ProtocolError::new(
                409,
                format!("call {id} is no longer ringing"),
            ));
        }
        Ok(call)
    }

    /// Takes a call on as this connection's (dialled, answered, or taken
    /// over from a device's earlier connection).
    pub fn own(&mut self, call: &Arc<Call>) {
        self.owned.retain(|_, c| c.strong_count() > 0);
        self.owned.insert(call.id.clone(), Arc::downgrade(call));
    }

    fn owned_call(&mut self, id: &str) -> Result<Arc<Call>, ProtocolError> {
        match self.owned.get(id).map(Weak::upgrade) {
            Some(Some(call)) if !call.is_ended() => Ok(call),
            Some(_) => {
                self.owned.remove(id);
                Err(unknown(id))
            }
            None if self.board.call(id).is_some() => Err(ProtocolError::new(
                403,
                format!("call {id} belongs to another client"),
            )),
            None => Err(unknown(id)),
        }
    }

    /// The connection's one live call, for the forms without a call id.
    fn only_call(&mut self) -> Result<Arc<Call>, ProtocolError> {
        self.owned
            .retain(|_, c| c.upgrade().is_some_and(|c| !c.is_ended()));
        let mut live = self.owned.values().filter_map(Weak::upgrade);
        match (live.next(), live.next()) {
            (Some(call), None) => Ok(call),
            (None, _) => Err(ProtocolError::new(404, "this connection has no call")),
            (Some(_), Some(_)) => Err(ProtocolError::bad_request(
                "this connection has several calls: name one",
            )),
        }
    }
}

/// The media of a connected call.
fn connected(call: &Call) -> Result<&Arc<MediaSession>, ProtocolError> {
    call.connected_media()
        .ok_or_else(|| ProtocolError::new(409, format!("call {} is not connected", call.id)))
}

fn device_busy() -> ProtocolError {
    ProtocolError::new(409, "this device is already in a call: hang it up first")
}

fn unknown(id: &str) -> ProtocolError {
    ProtocolError::new(404, format!("unknown call {}", truncate_for_error(id)))
}
