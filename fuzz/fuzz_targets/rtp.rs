//! RTP from the far end, along `media::receive::RtpReceiver::on_datagram`:
//! SRTP unprotect (fixed key) when the call has keys, `RtpPacket::parse`,
//! the reception statistics and sequence extension, RFC 4733
//! telephone-events, G.711 decoding and the device jitter buffer.
//!
//! Input: byte 0 holds flags (bit 0: SRTP, bit 1: the _32 suite, bit 2:
//! A-law); the rest is a run of datagrams, each a 2-byte big-endian
//! length and that many bytes (the last one takes whatever is left), so
//! the per-stream state (replay window, ROC, sequence, jitter) is driven
//! across packets. SRTP is also run on each datagram protected first with
//! the same key, so packets that authenticate reach the parser too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use siprelay::media::dtmf::{DtmfDetector, TelephoneEvent};
use siprelay::media::g711::Law;
use siprelay::media::jitter::JitterBuffer;
use siprelay::media::playout::FRAME_SAMPLES;
use siprelay::media::rtp::{ReceptionStats, RtpPacket, SeqExtender};
use siprelay::media::sdp::PT_TELEPHONE_EVENT;
use siprelay::media::socket::DATAGRAM;
use siprelay::media::srtp::{SrtpContext, Suite, MASTER_LEN, MAX_TAG};

const KEY: [u8; MASTER_LEN] = *b"0123456789abcdefghijklmnopqr!!";

struct Stream {
    law: Law,
    reception: ReceptionStats,
    seq: SeqExtender,
    dtmf: DtmfDetector,
    jitter: JitterBuffer,
}

impl Stream {
    /// Everything after SRTP, as `on_datagram` does it.
    fn on_rtp(&mut self, datagram: &[u8]) {
        let Ok(packet) = RtpPacket::parse(datagram) else {
            return;
        };
        assert!(packet.payload.len() <= datagram.len());
        self.seq.extend(packet.sequence);
        let _ = self.reception.on_packet(packet.sequence, packet.timestamp);
        let _ = (self.reception.expected(), self.reception.lost());
        if packet.payload_type == PT_TELEPHONE_EVENT {
            let _ = TelephoneEvent::parse(packet.payload);
            let _ = self.dtmf.on_packet(packet.timestamp, packet.payload);
            return;
        }
        let mut decoded = [0i16; DATAGRAM];
        let pcm = &mut decoded[..packet.payload.len()];
        self.law.decode(packet.payload, pcm);
        self.jitter.push(packet.timestamp, pcm);
        let mut frame = [0i16; FRAME_SAMPLES];
        self.jitter.pop_frame(&mut frame);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let suite = if flags & 2 == 0 {
        Suite::AesCm128HmacSha1_80
    } else {
        Suite::AesCm128HmacSha1_32
    };
    let srtp = flags & 1 != 0;
    let mut stream = Stream {
        law: if flags & 4 == 0 { Law::Mu } else { Law::A },
        reception: ReceptionStats::default(),
        seq: SeqExtender::default(),
        dtmf: DtmfDetector::default(),
        jitter: JitterBuffer::new(),
    };
    let mut rx = SrtpContext::new(suite, &KEY);
    let mut tx = SrtpContext::new(suite, &KEY);
    let mut rx_own = SrtpContext::new(suite, &KEY);
    while !rest.is_empty() {
        let datagram = match rest {
            [hi, lo, tail @ ..] => {
                let len = (usize::from(*hi) << 8 | usize::from(*lo)).min(tail.len());
                let (d, r) = tail.split_at(len);
                rest = r;
                d
            }
            _ => std::mem::take(&mut rest),
        };
        if datagram.len() > DATAGRAM {
            continue;
        }
        if !srtp {
            stream.on_rtp(datagram);
            continue;
        }
        // A forged packet: almost always refused, and then changes nothing.
        let mut buf = [0u8; DATAGRAM + MAX_TAG];
        buf[..datagram.len()].copy_from_slice(datagram);
        if let Ok(len) = rx.unprotect(&mut buf[..datagram.len()]) {
            stream.on_rtp(&buf[..len]);
        }
        // The same packet protected with the key: it must come back as it was.
        let mut buf = [0u8; DATAGRAM + MAX_TAG];
        buf[..datagram.len()].copy_from_slice(datagram);
        let Ok(len) = tx.protect(&mut buf, datagram.len()) else {
            continue;
        };
        if let Ok(plain) = rx_own.unprotect(&mut buf[..len]) {
            assert_eq!(&buf[..plain], datagram, "SRTP round trip");
            stream.on_rtp(&buf[..plain]);
        }
    }
});
