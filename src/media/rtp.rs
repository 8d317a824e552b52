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
