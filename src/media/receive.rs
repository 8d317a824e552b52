//! `RtpReceiver`: what one call does with each datagram from its far end.
//!
//! It latches onto the first real RTP source, counts reception (loss,
//! reordering, duplicates), detects telephone events, decodes G.711 and
//! passes the audio on: to the recording, and to whoever takes the far
//! end's audio (an application's text frames, or a device's jitter buffer).
//! The shard's intake calls it for every datagram; it never waits.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::dtmf::DtmfDetector;
use super::playout::FRAME_SAMPLES;
use super::rtp::{Arrival, ReceptionStats, RtpPacket};
use super::session::MediaSession;
use super::socket::DATAGRAM;
use crate::call::CallId;
use crate::client::ClientHandle;
use crate::wire::audio;

/// A call's audio flowing to a client, for as long as this lives.
pub(super) struct AudioStream(pub(super) Arc<ClientHandle>);

impl Drop for AudioStream {
    fn drop(&mut self) {
        self.0.audio_stream_ended();
    }
}

/// Where the far end's decoded audio goes besides the recording.
pub(super) enum FarAudio {
    /// Text frames to an application, as they arrive.
    Client(AudioStream),
    /// The device's jitter buffer, read by the media clock.
    Device,
    /// Nowhere but the recording (a call driven over REST).
    Nowhere,
}

impl std::fmt::Debug for FarAudio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FarAudio::Client(_) => "Client",
            FarAudio::Device => "Device",
            FarAudio::Nowhere => "Nowhere",
        })
    }
}

pub struct RtpReceiver {
    session: Arc<MediaSession>,
    forward: Option<Forwarder>,
    to_device: bool,
    latched: Option<SocketAddr>,
    reception: ReceptionStats,
    dtmf: DtmfDetector,
    /// Checks and decrypts each packet when the call's media is SRTP.
    srtp: Option<super::srtp::SrtpContext>,
}

impl RtpReceiver {
    /// Until `session` says where its far end's audio goes, it goes only to
    /// the recording.
    pub fn new(session: Arc<MediaSession>) -> RtpReceiver {
        let mut receiver = RtpReceiver {
            srtp: session.srtp.as_ref().map(|k| k.receiver()),
            session,
            forward: None,
            to_device: false,
            latched: None,
            reception: ReceptionStats::default(),
            dtmf: DtmfDetector::default(),
        };
        receiver.follow_owner();
        receiver
    }

    pub fn session(&self) -> &Arc<MediaSession> {
        &self.session
    }

    /// Takes up a new owner set on the session since the last datagram (a
    /// device that came back on a new connection): one atomic load when
    /// there is none (`take_new_far_audio` loads before it swaps).
    fn follow_owner(&mut self) {
        let Some(sink) = self.session.take_new_far_audio() else {
            return;
        };
        self.to_device = matches!(sink, FarAudio::Device);
        self.forward = match sink {
            FarAudio::Client(stream) => Some(Forwarder::new(self.session.call.clone(), stream)),
            FarAudio::Device | FarAudio::Nowhere => None,
        };
    }

    /// Handles one datagram from `from`.
    pub fn on_datagram(&mut self, datagram: &[u8], from: SocketAddr) {
        // After the hang-up, nothing more reaches the owner; the shard drops
        // this receiver at its next tick.
        if self.session.is_stopped() {
            return;
        }
        self.follow_owner();
        let session = &*self.session;
        let stats = &session.stats;
        // SRTP: only a packet that authenticates is RTP at all (forged,
        // replayed or plain packets are ignored, never latched to).
        let mut plain = [0u8; DATAGRAM];
        let datagram = match &mut self.srtp {
            Some(srtp) if datagram.len() <= DATAGRAM => {
                let buf = &mut plain[..datagram.len()];
                buf.copy_from_slice(datagram);
                match srtp.unprotect(buf) {
                    Ok(len) => &plain[..len],
                    Err(_) => {
                        stats.packets_ignored.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
            Some(_) => {
                stats.packets_ignored.fetch_add(1, Ordering::Relaxed);
                return;
            }
            None => datagram,
        };
        let packet = match RtpPacket::parse(datagram) {
            Ok(p) if self.latched.is_none_or(|addr| addr == from) => p,
            _ => {
                stats.packets_ignored.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if self.latched.is_none() {
            // The first real RTP packet decides where ours go from now on.
            self.latched = Some(from);
            session.outbound().peer = from;
        }
        let is_event = session.telephone_event == Some(packet.payload_type);
        if packet.payload_type != session.codec.payload_type && !is_event {
            stats.packets_ignored.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let arrival = self.reception.on_packet(packet.sequence, packet.timestamp);
        // The receiver lives as long as the session, owner switches included.
        stats
            .packets_expected
            .store(self.reception.expected(), Ordering::Relaxed);
        match arrival {
            Arrival::InOrder => {}
            Arrival::OutOfOrder => {
                stats.packets_out_of_order.fetch_add(1, Ordering::Relaxed);
            }
            Arrival::Late => {
                stats.packets_out_of_order.fetch_add(1, Ordering::Relaxed);
                stats.packets_late.fetch_add(1, Ordering::Relaxed);
            }
            // Its audio was heard already.
            Arrival::Duplicate => {
                stats.packets_duplicated.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        stats.packets_in.fetch_add(1, Ordering::Relaxed);
        stats
            .bytes_in
            .fetch_add(datagram.len() as u64, Ordering::Relaxed);
        if is_event {
            if let Some(digit) = self.dtmf.on_packet(packet.timestamp, packet.payload) {
                session.far_end_pressed(digit);
            }
            return;
        }
        let mut decoded = [0i16; DATAGRAM];
        let pcm = &mut decoded[..packet.payload.len()];
        session.codec.law.decode(packet.payload, pcm);
        session.record_far(packet.timestamp, pcm);
        if let Some(forward) = &mut self.forward {
            forward.push(pcm);
        } else if self.to_device {
            session.feed_device(packet.timestamp, pcm);
        }
    }
}

/// Turns RTP payloads of any duration into 20 ms frames for the owner.
struct Forwarder {
    call: CallId,
    owner: AudioStream,
    pcm: [i16; FRAME_SAMPLES],
    filled: usize,
}

impl Forwarder {
    fn new(call: CallId, owner: AudioStream) -> Self {
        Forwarder {
            call,
            owner,
            pcm: [0; FRAME_SAMPLES],
            filled: 0,
        }
    }

    fn push(&mut self, mut pcm: &[i16]) {
        while !pcm.is_empty() {
            let take = pcm.len().min(FRAME_SAMPLES - self.filled);
            self.pcm[self.filled..self.filled + take].copy_from_slice(&pcm[..take]);
            self.filled += take;
            pcm = &pcm[take..];

            if self.filled == FRAME_SAMPLES {
                self.emit();
            }
        }
    }

    fn emit(&mut self) {
        self.filled = 0;
        let mut bytes = [0u8; FRAME_SAMPLES * 2];
        for (pair, s) in bytes.chunks_exact_mut(2).zip(self.pcm) {
            pair.copy_from_slice(&s.to_le_bytes());
        }
        let owner = &self.owner.0;
        // Room for the longer encoding (legacy hex, 4 characters a sample)
        // and the call id, so the one allocation per frame is the only one.
        let mut text = String::with_capacity(FRAME_SAMPLES * 4 + self.call.as_str().len() + 16);
        audio::write_event(owner.dialect, self.call.as_str(), &bytes, &mut text);
        owner.send_audio(text);
    }
}
