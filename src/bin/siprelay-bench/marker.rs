//! Latency markers carried inside the audio, in both directions.
//!
//! G.711 is lossy, but not for the 255 distinct µ-law codes: the daemon
//! decodes a code to PCM with the ITU table, and encoding that PCM value
//! gives the code back (0x7F, the second zero, is the one exception). So a
//! marker written as µ-law codes survives both trips exactly:
//!
//! - RTP → WebSocket: the bench writes the codes into the RTP payload; the
//!   daemon sends their decoded PCM; the bench re-encodes the first samples
//!   of the frame to µ-law and reads the codes back.
//! - WebSocket → RTP: the bench sends PCM samples equal to the decoded values
//!   of the codes; the daemon's encoder reproduces the codes in its RTP.
//!
//! A marker is 12 codes, each `0x80 | 7 bits` (so never 0x7F): 84 bits of
//! magic (14), packet index (28) and send time (42 bits of µs since the
//! bench started). The rest of each frame is a 1 kHz tone.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// Codes (= samples) at the start of a frame that carry the marker.
pub const MARKER_LEN: usize = 12;
/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME: usize = 160;
/// Base64 characters of the marker's PCM (24 bytes → 32 characters, no padding).
pub const MARKER_B64_LEN: usize = MARKER_LEN * 2 / 3 * 4;

const MAGIC: u128 = 0x2A5B;
const INDEX_BITS: u32 = 28;
const TIME_BITS: u32 = 42;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// Which packet of its stream this is (wraps at 2^28).
    pub index: u32,
    /// Send time, µs since the bench started (wall clock).
    pub sent_us: u64,
}

impl Marker {
    pub fn to_codes(self) -> [u8; MARKER_LEN] {
        let bits = (MAGIC << (INDEX_BITS + TIME_BITS))
            | (u128::from(self.index & ((1 << INDEX_BITS) - 1)) << TIME_BITS)
            | u128::from(self.sent_us & ((1 << TIME_BITS) - 1));
        let mut codes = [0u8; MARKER_LEN];
        for (i, c) in codes.iter_mut().enumerate() {
            let shift = 7 * (MARKER_LEN - 1 - i);
            *c = 0x80 | ((bits >> shift) & 0x7F) as u8;
        }
        codes
    }

    /// Reads a marker from µ-law codes; `None` if they carry none (silence,
    /// or audio that is not ours).
    pub fn from_codes(codes: &[u8]) -> Option<Marker> {
        let codes = codes.get(..MARKER_LEN)?;
        let mut bits: u128 = 0;
        for &c in codes {
            if c & 0x80 == 0 {
                return None;
            }
            bits = (bits << 7) | u128::from(c & 0x7F);
        }
        if bits >> (INDEX_BITS + TIME_BITS) != MAGIC {
            return None;
        }
        Some(Marker {
            index: ((bits >> TIME_BITS) & ((1 << INDEX_BITS) - 1)) as u32,
            sent_us: (bits & ((1 << TIME_BITS) - 1)) as u64,
        })
    }

    /// Reads a marker from the start of a base64 frame of 16-bit LE PCM.
    pub fn from_pcm_base64(b64: &str) -> Option<Marker> {
        let head = b64.as_bytes().get(..MARKER_B64_LEN)?;
        let mut pcm = [0u8; MARKER_LEN * 2];
        B64.decode_slice(head, &mut pcm).ok()?;
        let mut codes = [0u8; MARKER_LEN];
        for (c, pair) in codes.iter_mut().zip(pcm.chunks_exact(2)) {
            *c = ulaw_encode(i16::from_le_bytes([pair[0], pair[1]]));
        }
        Marker::from_codes(&codes)
    }

    /// Writes the marker as the PCM (16-bit LE) whose µ-law codes it is
    /// into the start of `frame`.
    pub fn write_pcm(self, frame: &mut [u8]) {
        for (pair, c) in frame[..MARKER_LEN * 2]
            .chunks_exact_mut(2)
            .zip(self.to_codes())
        {
            pair.copy_from_slice(&ulaw_decode(c).to_le_bytes());
        }
    }

    /// Appends the marker as base64 of the PCM whose µ-law codes it is.
    pub fn push_pcm_base64(self, out: &mut String) {
        let mut pcm = [0u8; MARKER_LEN * 2];
        self.write_pcm(&mut pcm);
        B64.encode_string(pcm, out);
    }
}

/// µ-law code → linear PCM (ITU-T G.711).
pub fn ulaw_decode(code: u8) -> i16 {
    let u = !code;
    let exponent = (u >> 4) & 0x07;
    let mantissa = i32::from(u & 0x0F);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Linear PCM → µ-law code (ITU-T G.711, 14-bit reduction as the reference code).
pub fn ulaw_encode(sample: i16) -> u8 {
    let mut x = i32::from(sample) >> 2;
    let mask: u8 = if x < 0 {
        x = -x;
        0x7F
    } else {
        0xFF
    };
    let x = x.min(8159) + (0x84 >> 2);
    let ends = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
    match ends.iter().position(|&e| x <= e) {
        Some(seg) => ((((seg as i32) << 4) | ((x >> (seg + 1)) & 0xF)) as u8) ^ mask,
        None => 0x7F ^ mask,
    }
}

/// The audio both directions carry after the marker: a 1 kHz tone at about
/// -12 dBFS, as µ-law codes (RTP) and as the base64 of their PCM (WebSocket).
pub struct Tone {
    pub ulaw: [u8; FRAME],
    /// The PCM of those codes, 16-bit LE.
    pub pcm_le: [u8; FRAME * 2],
    /// Base64 of the PCM of samples `MARKER_LEN..FRAME`; the marker's 24
    /// bytes are a whole number of base64 groups, so this is appended as is.
    pub tail_b64: String,
}

impl Tone {
    pub fn new() -> Tone {
        let mut ulaw = [0u8; FRAME];
        for (n, c) in ulaw.iter_mut().enumerate() {
            let s = 8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * n as f64 / 8000.0).sin();
            *c = ulaw_encode(s as i16);
        }
        let mut pcm_le = [0u8; FRAME * 2];
        for (pair, &c) in pcm_le.chunks_exact_mut(2).zip(&ulaw) {
            pair.copy_from_slice(&ulaw_decode(c).to_le_bytes());
        }
        Tone {
            ulaw,
            pcm_le,
            tail_b64: B64.encode(&pcm_le[MARKER_LEN * 2..]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_but_the_second_zero_round_trips() {
        for c in 0..=255u8 {
            let back = ulaw_encode(ulaw_decode(c));
            if c == 0x7F {
                assert_eq!(back, 0xFF);
            } else {
                assert_eq!(back, c, "code {c:#04x}");
            }
        }
    }

    #[test]
    fn matches_the_daemons_g711_tables() {
        use siprelay::media::g711;
        for c in 0..=255u8 {
            assert_eq!(ulaw_decode(c), g711::decode_mulaw(c), "decode {c:#04x}");
        }
        for s in (i16::MIN..=i16::MAX).step_by(3) {
            let mut out = [0u8];
            g711::encode_mulaw(&[s], &mut out);
            assert_eq!(ulaw_encode(s), out[0], "encode {s}");
        }
    }

    #[test]
    fn marker_survives_the_trip_through_the_daemons_codec() {
        use siprelay::media::g711;
        let m = Marker {
            index: 123_456,
            sent_us: 987_654_321_000,
        };
        // RTP → WS: the daemon decodes our codes to PCM.
        let mut pcm = [0i16; MARKER_LEN];
        g711::Law::Mu.decode(&m.to_codes(), &mut pcm);
        let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
        assert_eq!(Marker::from_pcm_base64(&B64.encode(&bytes)), Some(m));
        // WS → RTP: the daemon encodes our PCM to µ-law.
        let mut text = String::new();
        m.push_pcm_base64(&mut text);
        text.push_str(&Tone::new().tail_b64);
        let raw = B64.decode(&text).unwrap();
        assert_eq!(raw.len(), FRAME * 2);
        let samples: Vec<i16> = raw
            .chunks_exact(2)
            .map(|p| i16::from_le_bytes([p[0], p[1]]))
            .collect();
        let mut codes = [0u8; FRAME];
        g711::encode_mulaw(&samples, &mut codes);
        assert_eq!(Marker::from_codes(&codes), Some(m));
    }

    #[test]
    fn silence_and_tone_carry_no_marker() {
        assert_eq!(Marker::from_codes(&[0xFF; FRAME]), None);
        assert_eq!(Marker::from_codes(&Tone::new().ulaw), None);
        let silence = B64.encode([0u8; FRAME * 2]);
        assert_eq!(Marker::from_pcm_base64(&silence), None);
        assert_eq!(Marker::from_pcm_base64("AAAA"), None);
    }
}
