//! G.711 µ-law and A-law, table driven.
//!
//! Both directions are single table lookups. The encode tables are indexed by
//! the bits of the linear sample that the codec actually keeps (14 for µ-law,
//! 13 for A-law), so they stay small (16 KiB and 8 KiB) and hot in cache.
//! All tables are built at compile time from the ITU-T G.711 reference
//! algorithm, so there is no start-up cost and no lazy initialisation.

/// Which G.711 law a call's payload uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Law {
    /// µ-law, RTP payload type 0 (PCMU).
    Mu,
    /// A-law, RTP payload type 8 (PCMA).
    A,
}

impl Law {
    pub fn encode(self, pcm: &[i16], out: &mut [u8]) {
        match self {
            Law::Mu => encode_mulaw(pcm, out),
            Law::A => encode_alaw(pcm, out),
        }
    }

    pub fn decode(self, payload: &[u8], out: &mut [i16]) {
        let table = match self {
            Law::Mu => &MULAW_DECODE,
            Law::A => &ALAW_DECODE,
        };
        for (o, &b) in out.iter_mut().zip(payload) {
            *o = table[b as usize];
        }
    }

    /// The byte that decodes to (near) zero: what a silent frame is filled with.
    pub fn silence(self) -> u8 {
        match self {
            Law::Mu => 0xFF,
            Law::A => 0xD5,
        }
    }
}

/// Encodes `pcm` into `out` (pairs up to the shorter of the two).
pub fn encode_mulaw(pcm: &[i16], out: &mut [u8]) {
    for (o, &s) in out.iter_mut().zip(pcm) {
        *o = MULAW_ENCODE[((s >> 2) as u16 & 0x3FFF) as usize];
    }
}

/// Encodes `pcm` into `out` (pairs up to the shorter of the two).
pub fn encode_alaw(pcm: &[i16], out: &mut [u8]) {
    for (o, &s) in out.iter_mut().zip(pcm) {
        *o = ALAW_ENCODE[((s >> 3) as u16 & 0x1FFF) as usize];
    }
}

pub fn decode_mulaw(b: u8) -> i16 {
    MULAW_DECODE[b as usize]
}

pub fn decode_alaw(b: u8) -> i16 {
    ALAW_DECODE[b as usize]
}

const MULAW_BIAS: i32 = 0x84;
const MULAW_CLIP: i32 = 8159;

/// Upper bounds of the eight segments, on the 14-bit (µ) or 13-bit (A) scale.
const SEG_UEND: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
const SEG_AEND: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

const fn segment(value: i32, ends: &[i32; 8]) -> i32 {
    let mut seg = 0;
    while seg < 8 {
        if value <= ends[seg] {
            return seg as i32;
        }
        seg += 1;
    }
    8
}

/// Reference µ-law encoder for one sample already reduced to 14 bits.
const fn mulaw_from_14bit(mut pcm: i32) -> u8 {
    let mask;
    if pcm < 0 {
        pcm = -pcm;
        mask = 0x7F;
    } else {
        mask = 0xFF;
    }
    if pcm > MULAW_CLIP {
        pcm = MULAW_CLIP;
    }
    pcm += MULAW_BIAS >> 2;
    let seg = segment(pcm, &SEG_UEND);
    if seg >= 8 {
        (0x7F ^ mask) as u8
    } else {
        (((seg << 4) | ((pcm >> (seg + 1)) & 0xF)) ^ mask) as u8
    }
}

/// Reference A-law encoder for one sample already reduced to 13 bits.
const fn alaw_from_13bit(mut pcm: i32) -> u8 {
    let mask;
    if pcm >= 0 {
        mask = 0xD5;
    } else {
        mask = 0x55;
        pcm = -pcm - 1;
    }
    let seg = segment(pcm, &SEG_AEND);
    if seg >= 8 {
        (0x7F ^ mask) as u8
    } else {
        let quant = if seg < 2 {
            (pcm >> 1) & 0xF
        } else {
            (pcm >> seg) & 0xF
        };
        (((seg << 4) | quant) ^ mask) as u8
    }
}

const fn mulaw_to_linear(byte: u8) -> i16 {
    let u = !byte as i32;
    let mut t = ((u & 0x0F) << 3) + MULAW_BIAS;
    t <<= (u & 0x70) >> 4;
    (if u & 0x80 != 0 {
        MULAW_BIAS - t
    } else {
        t - MULAW_BIAS
    }) as i16
}

const fn alaw_to_linear(byte: u8) -> i16 {
    let a = (byte ^ 0x55) as i32;
    let mut t = (a & 0x0F) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

/// Sign-extends the low `bits` bits of `index`.
const fn sign_extend(index: usize, bits: u32) -> i32 {
    let shift = 32 - bits;
    ((index as i32) << shift) >> shift
}

static MULAW_ENCODE: [u8; 1 << 14] = {
    let mut t = [0u8; 1 << 14];
    let mut i = 0;
    while i < t.len() {
        t[i] = mulaw_from_14bit(sign_extend(i, 14));
        i += 1;
    }
    t
};

static ALAW_ENCODE: [u8; 1 << 13] = {
    let mut t = [0u8; 1 << 13];
    let mut i = 0;
    while i < t.len() {
        t[i] = alaw_from_13bit(sign_extend(i, 13));
        i += 1;
    }
    t
};

static MULAW_DECODE: [i16; 256] = {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = mulaw_to_linear(i as u8);
        i += 1;
    }
    t
};

static ALAW_DECODE: [i16; 256] = {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = alaw_to_linear(i as u8);
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_survives_decode_then_encode() {
        // G.711 is a bijection between its 256 codes and their decoded values
        // (µ-law has two zero codes, 0x7F and 0xFF, which both decode to 0).
        for b in 0..=255u8 {
            let mut out = [0u8; 1];
            encode_mulaw(&[decode_mulaw(b)], &mut out);
            if b != 0x7F {
                assert_eq!(out[0], b, "µ-law code {b:#04x}");
            }
            encode_alaw(&[decode_alaw(b)], &mut out);
            assert_eq!(out[0], b, "A-law code {b:#04x}");
        }
    }

    #[test]
    fn known_reference_values() {
        // Values from the ITU-T G.711 tables.
        assert_eq!(decode_mulaw(0x00), -32124);
        assert_eq!(decode_mulaw(0x80), 32124);
        assert_eq!(decode_mulaw(0xFF), 0);
        assert_eq!(decode_alaw(0xD5), 8);
        assert_eq!(decode_alaw(0x55), -8);
        assert_eq!(decode_alaw(0xAA), 32256);
        let mut out = [0u8; 2];
        encode_mulaw(&[0, i16::MAX], &mut out);
        assert_eq!(out, [0xFF, 0x80]);
        encode_alaw(&[0, i16::MIN], &mut out);
        assert_eq!(out, [0xD5, 0x2A]);
    }

    #[test]
    fn quantisation_error_stays_within_a_step() {
        for s in (i16::MIN..=i16::MAX).step_by(7) {
            for law in [Law::Mu, Law::A] {
                let mut code = [0u8];
                law.encode(&[s], &mut code);
                let mut back = [0i16];
                law.decode(&code, &mut back);
                let err = (s as i32 - back[0] as i32).abs();
                // A logarithmic code: the step grows with the magnitude, about 1/16 of it.
                let bound = (s as i32).abs() / 16 + 16;
                assert!(err <= bound, "{law:?} {s} -> {} err {err}", back[0]);
            }
        }
    }

    #[test]
    fn silence_bytes_decode_near_zero() {
        assert_eq!(decode_mulaw(Law::Mu.silence()), 0);
        assert!(decode_alaw(Law::A.silence()).abs() <= 8);
    }
}
