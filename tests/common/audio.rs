//! Audio for the tests: tones, µ-law written from the G.711 formula (not
//! siprelay's tables, so a symmetric bug there cannot hide), and a Goertzel
//! detector that measures which frequency a signal carries.

use std::f64::consts::PI;

pub fn tone(freq: f64, samples: usize, amplitude: f64) -> Vec<i16> {
    (0..samples)
        .map(|n| (amplitude * (2.0 * PI * freq * n as f64 / 8000.0).sin()) as i16)
        .collect()
}

pub fn to_le_bytes(pcm: &[i16]) -> Vec<u8> {
    pcm.iter().flat_map(|s| s.to_le_bytes()).collect()
}

pub fn from_le_bytes(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|p| i16::from_le_bytes([p[0], p[1]]))
        .collect()
}

/// µ-law by the G.711 formula: sign, biased magnitude, segment, mantissa.
pub fn ulaw_encode(sample: i16) -> u8 {
    let mut x = sample as i32;
    let sign = if x < 0 {
        x = -x;
        0x80
    } else {
        0
    };
    let x = (x.min(32635) + 0x84) as u32;
    let exponent = (31 - x.leading_zeros()) as i32 - 7;
    let mantissa = (x >> (exponent + 3)) & 0x0F;
    !(sign as u8 | ((exponent as u8) << 4) | mantissa as u8)
}

pub fn ulaw_decode(code: u8) -> i16 {
    let u = !code;
    let exponent = (u >> 4) & 0x07;
    let mantissa = (u & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Power of `freq` in `pcm` (Goertzel), normalised by length.
pub fn power_at(pcm: &[i16], freq: f64) -> f64 {
    let coeff = 2.0 * (2.0 * PI * freq / 8000.0).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in pcm {
        let s = x as f64 + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (pcm.len() as f64).powi(2)
}

/// The strongest frequency between 100 and 3900 Hz, in 10 Hz steps.
pub fn dominant_frequency(pcm: &[i16]) -> f64 {
    (10..390)
        .map(|i| i as f64 * 10.0)
        .map(|f| (f, power_at(pcm, f)))
        .fold(
            (0.0, f64::MIN),
            |best, cur| if cur.1 > best.1 { cur } else { best },
        )
        .0
}

pub fn rms(pcm: &[i16]) -> f64 {
    if pcm.is_empty() {
        return 0.0;
    }
    (pcm.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt()
}

/// Asserts that `pcm` carries `freq` (±15 Hz) with real energy.
pub fn assert_tone(pcm: &[i16], freq: f64, what: &str) {
    assert!(pcm.len() >= 1600, "{what}: only {} samples", pcm.len());
    let level = rms(pcm);
    assert!(
        level > 1000.0,
        "{what}: RMS {level:.0} is too quiet for a tone"
    );
    let found = dominant_frequency(pcm);
    assert!(
        (found - freq).abs() <= 15.0,
        "{what}: expected {freq} Hz, measured {found} Hz"
    );
}

#[test]
fn detector_tells_tones_apart() {
    assert_eq!(dominant_frequency(&tone(440.0, 8000, 8000.0)), 440.0);
    assert_eq!(dominant_frequency(&tone(1000.0, 4000, 8000.0)), 1000.0);
    let sum: Vec<i16> = tone(700.0, 8000, 2000.0)
        .iter()
        .zip(tone(1500.0, 8000, 8000.0))
        .map(|(a, b)| a + b)
        .collect();
    assert_eq!(dominant_frequency(&sum), 1500.0);
}

#[test]
fn formula_ulaw_matches_itu_reference_points() {
    assert_eq!(ulaw_encode(0), 0xFF);
    assert_eq!(ulaw_decode(0x80), 32124);
    assert_eq!(ulaw_decode(0x00), -32124);
    for code in 0..=255u8 {
        if code != 0x7F {
            assert_eq!(ulaw_encode(ulaw_decode(code)), code, "{code:#x}");
        }
    }
}

/// Writes a WAV of `seconds` of `freq` Hz with hound, in any layout the
/// daemon must accept (so that the test exercises its resampler).
pub fn write_tone_wav(path: &std::path::Path, rate: u32, channels: u16, freq: f64, seconds: f64) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..(rate as f64 * seconds) as usize {
        let x = 12000.0 * (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin();
        for _ in 0..channels {
            w.write_sample(x as i16).unwrap();
        }
    }
    w.finalize().unwrap();
}

/// Which of two tones dominates a frame (None: neither, e.g. silence).
pub fn which_tone(pcm: &[i16], a: f64, b: f64) -> Option<f64> {
    if rms(pcm) < 500.0 {
        return None;
    }
    let (pa, pb) = (power_at(pcm, a), power_at(pcm, b));
    if pa > 10.0 * pb {
        Some(a)
    } else if pb > 10.0 * pa {
        Some(b)
    } else {
        None
    }
}

/// The 20 ms frames of `pcm` with audio in them (RMS over `threshold`),
/// joined: a tone's samples without the silence around it.
pub fn loud_frames(pcm: &[i16], threshold: f64) -> Vec<i16> {
    pcm.chunks(160)
        .filter(|f| rms(f) > threshold)
        .flatten()
        .copied()
        .collect()
}
