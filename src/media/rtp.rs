//! RTP packets (RFC 3550): parse and build, with no allocation.

use thiserror::Error;

/// Length of the fixed RTP header this daemon writes (no CSRCs, no extension).
pub const HEADER_LEN: usize = 12;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RtpError {
    #[error("packet shorter than an RTP header")]
    TooShort,
    #[error("RTP version {0}, expected 2")]
    BadVersion(u8),
    #[error("header fields run past the end of the packet")]
    Truncated,
}

/// A parsed RTP packet borrowing its payload from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        if buf.len() < HEADER_LEN {
            return Err(RtpError::TooShort);
        }
        let version = buf[0] >> 6;
        if version != 2 {
            return Err(RtpError::BadVersion(version));
        }
        let padding = buf[0] & 0x20 != 0;
        let extension = buf[0] & 0x10 != 0;
        let csrc_count = (buf[0] & 0x0F) as usize;
        let mut start = HEADER_LEN + 4 * csrc_count;
        if extension {
            let words = buf.get(start + 2..start + 4).ok_or(RtpError::Truncated)?;
            start += 4 + 4 * u16::from_be_bytes([words[0], words[1]]) as usize;
        }
        let mut end = buf.len();
        if padding {
            let pad = *buf.last().ok_or(RtpError::Truncated)? as usize;
            end = end.checked_sub(pad).ok_or(RtpError::Truncated)?;
        }
        if start > end {
            return Err(RtpError::Truncated);
        }
        Ok(RtpPacket {
            marker: buf[1] & 0x80 != 0,
            payload_type: buf[1] & 0x7F,
            sequence: u16::from_be_bytes([buf[2], buf[3]]),
            timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
            ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
            payload: &buf[start..end],
        })
    }
}

/// Writes a 12-byte RTP header into the start of `buf`.
///
/// The payload is written by the caller right after it, so that encoding goes
/// straight into the datagram buffer without a copy.
pub fn write_header(
    buf: &mut [u8; HEADER_LEN],
    marker: bool,
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
    ssrc: u32,
) {
    buf[0] = 0x80;
    buf[1] = ((marker as u8) << 7) | (payload_type & 0x7F);
    buf[2..4].copy_from_slice(&sequence.to_be_bytes());
    buf[4..8].copy_from_slice(&timestamp.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

/// An RTP sequence number extended with a roll-over count (RFC 3550 A.1),
/// so that ordering and loss arithmetic survive the 16-bit wrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExtSeq(pub u64);

/// Tracks the highest sequence number seen and extends new ones against it.
#[derive(Debug, Default, Clone)]
pub struct SeqExtender {
    highest: Option<ExtSeq>,
}

impl SeqExtender {
    /// Extends `seq` to the value closest to the highest one seen so far.
    pub fn extend(&mut self, seq: u16) -> ExtSeq {
        let ext = match self.highest {
            None => ExtSeq(u64::from(seq) + (1 << 16)),
            Some(ExtSeq(high)) => {
                let delta = seq.wrapping_sub(high as u16) as i16 as i64;
                ExtSeq((high as i64 + delta) as u64)
            }
        };
        if self.highest.is_none_or(|h| ext > h) {
            self.highest = Some(ext);
        }
        ext
    }

    pub fn highest(&self) -> Option<ExtSeq> {
        self.highest
    }
}

/// Packets whose audio is more than this far behind the newest audio
/// received arrive too late for the recording's 40 ms jitter buffer.
pub const LATE_AFTER_SAMPLES: u32 = super::jitter::DEPTH;

/// How one packet arrived, relative to those before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    InOrder,
    /// After a packet with a higher sequence number.
    OutOfOrder,
    /// Out of order and more than [`LATE_AFTER_SAMPLES`] behind.
    Late,
    /// A sequence number already received.
    Duplicate,
}

/// The reception counts of RFC 3550's receiver reports, for one source:
/// packets expected (from the sequence numbers), received, duplicated,
/// reordered and late. Fed by the call's receiver, one call per packet.
#[derive(Debug, Default, Clone)]
pub struct ReceptionStats {
    seq: SeqExtender,
    first: Option<ExtSeq>,
    /// The timestamp of the highest sequence number.
    newest_timestamp: u32,
    /// Bit i: the packet i below the highest was received.
    window: u64,
    pub received: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub late: u64,
}

impl ReceptionStats {
    pub fn on_packet(&mut self, sequence: u16, timestamp: u32) -> Arrival {
        let previous = self.seq.highest();
        let ext = self.seq.extend(sequence);
        let Some(highest) = previous else {
            self.first = Some(ext);
            return self.accept(timestamp, 1, Arrival::InOrder);
        };
        if ext > highest {
            let ahead = ext.0 - highest.0;
            self.window = if ahead < 64 { self.window << ahead } else { 0 };
            return self.accept(timestamp, 1, Arrival::InOrder);
        }
        let behind = highest.0 - ext.0;
        if behind < 64 {
            if self.window & (1 << behind) != 0 {
                self.duplicates += 1;
                return Arrival::Duplicate;
            }
            self.window |= 1 << behind;
        }
        if self.first.is_some_and(|f| ext < f) {
            self.first = Some(ext);
        }
        self.received += 1;
        self.out_of_order += 1;
        let lag = self.newest_timestamp.wrapping_sub(timestamp) as i32;
        if lag > LATE_AFTER_SAMPLES as i32 {
            self.late += 1;
            Arrival::Late
        } else {
            Arrival::OutOfOrder
        }
    }

    fn accept(&mut self, timestamp: u32, bit: u64, arrival: Arrival) -> Arrival {
        self.window |= bit;
        self.newest_timestamp = timestamp;
        self.received += 1;
        arrival
    }

    /// Packets the sequence numbers say were sent, first to highest.
    pub fn expected(&self) -> u64 {
        match (self.first, self.seq.highest()) {
            (Some(first), Some(highest)) => highest.0 - first.0 + 1,
            _ => 0,
        }
    }

    /// Expected but never received (RFC 3550's cumulative loss, never negative).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(pt: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut header = [0u8; HEADER_LEN];
        write_header(&mut header, true, pt, seq, 0xDEAD_BEEF, 0x0102_0304);
        let mut v = header.to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn build_then_parse_round_trips() {
        let buf = packet(8, 65535, &[1, 2, 3]);
        let p = RtpPacket::parse(&buf).unwrap();
        assert!(p.marker);
        assert_eq!(p.payload_type, 8);
        assert_eq!(p.sequence, 65535);
        assert_eq!(p.timestamp, 0xDEAD_BEEF);
        assert_eq!(p.ssrc, 0x0102_0304);
        assert_eq!(p.payload, &[1, 2, 3]);
    }

    #[test]
    fn skips_csrcs_extension_and_padding() {
        let mut buf = packet(0, 1, &[]);
        buf[0] |= 0x20 | 0x10 | 0x01; // padding, extension, one CSRC
        buf.extend_from_slice(&[9, 9, 9, 9]); // CSRC
        buf.extend_from_slice(&[0xBE, 0xDE, 0, 1, 7, 7, 7, 7]); // one-word extension
        buf.extend_from_slice(&[0xAA, 0xBB]); // payload
        buf.extend_from_slice(&[0, 0, 3]); // three bytes of padding
        assert_eq!(RtpPacket::parse(&buf).unwrap().payload, &[0xAA, 0xBB]);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(RtpPacket::parse(&[0x80; 5]), Err(RtpError::TooShort));
        assert_eq!(RtpPacket::parse(&[0x40; 12]), Err(RtpError::BadVersion(1)));
        let mut buf = packet(0, 1, &[]);
        buf[0] |= 0x0F; // 15 CSRCs that are not there
        assert_eq!(RtpPacket::parse(&buf), Err(RtpError::Truncated));
        let mut buf = packet(0, 1, &[1]);
        buf[0] |= 0x20;
        *buf.last_mut().unwrap() = 200; // padding longer than the packet
        assert_eq!(RtpPacket::parse(&buf), Err(RtpError::Truncated));
    }

    #[test]
    fn reception_counts_loss_reordering_lateness_and_duplicates() {
        let mut r = ReceptionStats::default();
        // 160 samples a packet, starting just below the wrap.
        let ts = |seq: u16| u32::from(seq.wrapping_sub(65530)) * 160;
        for seq in [65530u16, 65531, 65533, 65534, 0, 1] {
            assert_eq!(r.on_packet(seq, ts(seq)), Arrival::InOrder);
        }
        // 65532 and 65535 missing so far.
        assert_eq!((r.expected(), r.lost()), (8, 2));
        // 65535 comes two packets (320 samples) late: reordered, not late.
        assert_eq!(r.on_packet(65535, ts(65535)), Arrival::OutOfOrder);
        // 65532 comes four packets behind: late.
        assert_eq!(r.on_packet(65532, ts(65532)), Arrival::Late);
        assert_eq!(r.on_packet(65532, ts(65532)), Arrival::Duplicate);
        assert_eq!(r.on_packet(1, ts(1)), Arrival::Duplicate);
        assert_eq!((r.expected(), r.received, r.lost()), (8, 8, 0));
        assert_eq!((r.out_of_order, r.late, r.duplicates), (2, 1, 2));
        // A jump past the window forgets it without miscounting.
        assert_eq!(r.on_packet(200, ts(200)), Arrival::InOrder);
        assert_eq!(r.lost(), 198);
    }

    #[test]
    fn sequence_numbers_extend_across_the_wrap() {
        let mut ext = SeqExtender::default();
        let a = ext.extend(65534);
        let b = ext.extend(65535);
        let c = ext.extend(0);
        let late = ext.extend(65533);
        let d = ext.extend(1);
        assert!(a < b && b < c && c < d);
        assert_eq!(c.0 - b.0, 1);
        assert_eq!(b.0 - late.0, 2);
        assert_eq!(ext.highest(), Some(d));
    }
}
