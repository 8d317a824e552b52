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
    latch: Latch,
    reception: ReceptionStats,
    dtmf: DtmfDetector,
    /// Checks and decrypts each packet when the call's media is SRTP.
    srtp: Option<super::srtp::SrtpContext>,
}

impl RtpReceiver {
    /// Until `session` says where its far end's audio goes, it goes only to
    /// the recording.
    pub fn new(session: Arc<MediaSession>) -> RtpReceiver {
        let sdp = session.outbound().peer;
        let mut receiver = RtpReceiver {
            srtp: session.srtp.as_ref().map(|k| k.receiver()),
            session,
            forward: None,
            to_device: false,
            latch: Latch::new(sdp),
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
        let Ok(packet) = RtpPacket::parse(datagram) else {
            stats.packets_ignored.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let is_event = session.telephone_event == Some(packet.payload_type);
        let negotiated = packet.payload_type == session.codec.payload_type || is_event;
        if !negotiated || !self.latch.accepts(from, packet.ssrc) {
            stats.packets_ignored.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Some(to) = self.latch.newly_latched() {
            // Symmetric RTP: ours go where the far end's come from.
            session.outbound().peer = to;
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

/// Which source a call's RTP is taken from (symmetric RTP without the
/// hijack, "RTP bleed"). The first packet of a negotiated payload type
/// decides: from the address in the far end's SDP, that address is the
/// call's from then on (its SSRC may change, as it does across a
/// transfer); from anywhere else (a far end behind NAT) that source with
/// that SSRC, until a packet comes from the SDP's address, which takes
/// over. Packets that came before the answer were discarded, so a stranger
/// cannot win the race while the call rings.
#[derive(Debug)]
struct Latch {
    /// Where the far end's SDP said its RTP comes from.
    sdp: SocketAddr,
    /// The source taken, and its SSRC when it is not the SDP's address.
    latched: Option<(SocketAddr, Option<u32>)>,
    /// Set by the packet that latched, until `newly_latched` reads it.
    fresh: bool,
}

impl Latch {
    fn new(sdp: SocketAddr) -> Latch {
        Latch {
            sdp,
            latched: None,
            fresh: false,
        }
    }

    /// Whether a negotiated packet from `from` with `ssrc` is the call's.
    fn accepts(&mut self, from: SocketAddr, ssrc: u32) -> bool {
        match self.latched {
            Some((addr, None)) => addr == from,
            Some((addr, Some(locked))) if addr == from => locked == ssrc,
            // The SDP's address wins over whoever came first from elsewhere.
            Some((_, Some(_))) if from == self.sdp => {
                self.latched = Some((from, None));
                self.fresh = true;
                true
            }
            Some(_) => false,
            None => {
                let ssrc = (from != self.sdp).then_some(ssrc);
                self.latched = Some((from, ssrc));
                self.fresh = true;
                true
            }
        }
    }

    /// The source, right after the packet that latched to it.
    fn newly_latched(&mut self) -> Option<SocketAddr> {
        std::mem::take(&mut self.fresh)
            .then(|| self.latched.map(|(a, _)| a))
            .flatten()
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

#[cfg(test)]
mod latch_tests {
    use super::Latch;
    use std::net::SocketAddr;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_sdp_address_latches_and_may_change_its_ssrc() {
        let mut l = Latch::new(addr("10.0.0.1:4000"));
        assert!(l.accepts(addr("10.0.0.1:4000"), 1));
        assert_eq!(l.newly_latched(), Some(addr("10.0.0.1:4000")));
        assert_eq!(l.newly_latched(), None);
        assert!(
            l.accepts(addr("10.0.0.1:4000"), 2),
            "a new SSRC from the same place"
        );
        assert!(!l.accepts(addr("10.6.6.6:4000"), 1), "a stranger");
    }

    #[test]
    fn a_nat_source_is_held_to_its_ssrc_until_the_sdp_address_speaks() {
        let mut l = Latch::new(addr("10.0.0.1:4000"));
        assert!(l.accepts(addr("203.0.113.5:6000"), 7));
        assert_eq!(l.newly_latched(), Some(addr("203.0.113.5:6000")));
        assert!(l.accepts(addr("203.0.113.5:6000"), 7));
        assert!(
            !l.accepts(addr("203.0.113.5:6000"), 8),
            "same source, other SSRC"
        );
        assert!(!l.accepts(addr("198.51.100.9:6000"), 7), "another source");
        assert!(
            l.accepts(addr("10.0.0.1:4000"), 9),
            "the SDP address takes over"
        );
        assert_eq!(l.newly_latched(), Some(addr("10.0.0.1:4000")));
        assert!(!l.accepts(addr("203.0.113.5:6000"), 7));
    }
}
