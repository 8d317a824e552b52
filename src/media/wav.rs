//! Prompt audio: any WAV file hound reads, turned once into what a call
//! sends (8 kHz mono 16-bit).
//!
//! Channels are averaged, integer and float samples scaled to 16 bits, and
//! other rates converted by a windowed-sinc resampler whose low-pass keeps
//! everything above 4 kHz out of the result. (Dropping samples instead would
//! fold a 44.1 kHz file's high frequencies down into the speech band.)

use std::io::Read;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Async, FixedAsync, Resampler, SincInterpolationParameters, WindowFunction};
use thiserror::Error;

/// The rate calls run at.
pub const CALL_RATE: u32 = 8000;

/// Longest prompt accepted: a file longer than this is refused at load
/// rather than held in memory.
pub const MAX_PROMPT_SECONDS: u32 = 10 * 60;

#[derive(Debug, Error)]
pub enum WavError {
    #[error("not a WAV file hound can read: {0}")]
    Format(String),
    #[error("unsupported WAV: {0}")]
    Unsupported(String),
    #[error("WAV longer than {MAX_PROMPT_SECONDS} s")]
    TooLong,
    #[error("resampling failed: {0}")]
    Resample(String),
}

impl From<hound::Error> for WavError {
    fn from(e: hound::Error) -> Self {
        match e {
            hound::Error::Unsupported => WavError::Unsupported("sample format".into()),
            other => WavError::Format(other.to_string()),
        }
    }
}

/// Reads a whole WAV and returns it as 8 kHz mono 16-bit samples.
pub fn decode_to_call_rate(source: impl Read) -> Result<Vec<i16>, WavError> {
    let mut reader = hound::WavReader::new(source)?;
    let spec = reader.spec();
    let channels = spec.channels as usize;
    if channels == 0 || spec.sample_rate == 0 {
        return Err(WavError::Unsupported(format!(
            "{} channels at {} Hz",
            spec.channels, spec.sample_rate
        )));
    }
    // hound takes an extensible header's valid-bits field as the sample
    // width, whatever it says; integer samples are read as i32.
    if spec.sample_format == hound::SampleFormat::Int && !(1..=32).contains(&spec.bits_per_sample) {
        return Err(WavError::Unsupported(format!(
            "{}-bit integer samples",
            spec.bits_per_sample
        )));
    }
    let frames = reader.duration() as u64;
    if frames > MAX_PROMPT_SECONDS as u64 * spec.sample_rate as u64 {
        return Err(WavError::TooLong);
    }
    let mono = read_mono(&mut reader, channels)?;
    let resampled = if spec.sample_rate == CALL_RATE {
        mono
    } else {
        resample(&mono, spec.sample_rate)?
    };
    Ok(resampled
        .iter()
        .map(|&x| (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect())
}

/// Every frame's channels averaged, as floats in [-1, 1).
fn read_mono<R: Read>(
    reader: &mut hound::WavReader<R>,
    channels: usize,
) -> Result<Vec<f64>, WavError> {
    let spec = reader.spec();
    let interleaved: Vec<f64> = match spec.sample_format {
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .map(|s| s.map(f64::from))
            .collect::<Result<_, _>>()?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f64;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f64 * scale))
                .collect::<Result<_, _>>()?
        }
    };
    Ok(interleaved
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<f64>() / channels as f64)
        .collect())
}

fn resample(mono: &[f64], from_rate: u32) -> Result<Vec<f64>, WavError> {
    if mono.is_empty() {
        return Ok(Vec::new());
    }
    let ratio = CALL_RATE as f64 / from_rate as f64;
    let params = SincInterpolationParameters::new(256, WindowFunction::BlackmanHarris2);
    let chunk = 1024;
    let mut resampler = Async::<f64>::new_sinc(ratio, 1.0, &params, chunk, 1, FixedAsync::Input)
        .map_err(|e| WavError::Resample(e.to_string()))?;
    let input = InterleavedSlice::new(mono, 1, mono.len())
        .map_err(|e| WavError::Resample(e.to_string()))?;
    let output = resampler
        .process_all(&input, mono.len(), None)
        .map_err(|e| WavError::Resample(e.to_string()))?;
    Ok(output.take_data())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A WAV of `seconds` of `freq` Hz at `rate`, written by hound in the given format.
    fn tone_wav(rate: u32, channels: u16, format: Format, freq: f64, seconds: f64) -> Vec<u8> {
        let (bits, sample_format) = match format {
            Format::Int(bits) => (bits, hound::SampleFormat::Int),
            Format::Float => (32, hound::SampleFormat::Float),
        };
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format,
        };
        let mut out = Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut out, spec).unwrap();
        let n = (rate as f64 * seconds) as usize;
        for i in 0..n {
            let x = 0.5 * (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin();
            for _ in 0..channels {
                match format {
                    Format::Float => w.write_sample(x as f32).unwrap(),
                    Format::Int(8) => w.write_sample((x * 127.0) as i8).unwrap(),
                    Format::Int(16) => w.write_sample((x * 32767.0) as i16).unwrap(),
                    Format::Int(b) => w
                        .write_sample((x * ((1i64 << (b - 1)) - 1) as f64) as i32)
                        .unwrap(),
                }
            }
        }
        w.finalize().unwrap();
        out.into_inner()
    }

    #[derive(Clone, Copy, Debug)]
    enum Format {
        Int(u16),
        Float,
    }

    /// Power of `freq` in `pcm` at 8 kHz (Goertzel), normalised by length.
    fn power(pcm: &[i16], freq: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * freq / CALL_RATE as f64;
        let c = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for &x in pcm {
            let s = x as f64 + c * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        (s1 * s1 + s2 * s2 - c * s1 * s2) / (pcm.len() as f64).powi(2)
    }

    fn rms(pcm: &[i16]) -> f64 {
        (pcm.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt()
    }

    #[test]
    fn every_rate_and_format_becomes_the_same_8k_tone() {
        for rate in [8000, 16000, 22050, 44100, 48000] {
            for channels in [1, 2] {
                for format in [
                    Format::Int(8),
                    Format::Int(16),
                    Format::Int(24),
                    Format::Int(32),
                    Format::Float,
                ] {
                    let wav = tone_wav(rate, channels, format, 440.0, 1.0);
                    let pcm = decode_to_call_rate(Cursor::new(wav)).unwrap();
                    let what = format!("{rate} Hz, {channels} ch, {format:?}");
                    assert!(
                        (pcm.len() as i64 - 8000).abs() <= 2,
                        "{what}: {} samples",
                        pcm.len()
                    );
                    // Half scale, sine: RMS = 0.5 / sqrt(2) of full scale.
                    let middle = &pcm[1000..7000];
                    let level = rms(middle) / 32768.0;
                    assert!((level - 0.3536).abs() < 0.02, "{what}: RMS {level}");
                    assert!(
                        power(middle, 440.0) > 100.0 * power(middle, 1000.0),
                        "{what}: the tone is not at 440 Hz"
                    );
                }
            }
        }
    }

    #[test]
    fn frequencies_above_4k_are_filtered_not_folded() {
        // 6 kHz at 48 kHz: sample dropping would fold it to 2 kHz at 8 kHz.
        let wav = tone_wav(48000, 1, Format::Int(16), 6000.0, 1.0);
        let pcm = decode_to_call_rate(Cursor::new(wav)).unwrap();
        let level = rms(&pcm[1000..7000]) / 32768.0;
        assert!(level < 0.01, "6 kHz leaked through as RMS {level}");
    }

    #[test]
    fn an_extensible_header_claiming_65_bit_samples_is_refused() {
        // Found by the `wav` fuzz target: wValidBitsPerSample = 65 made the
        // integer scale's shift overflow.
        const FILE: [u8; 68] = [
            0x52, 0x49, 0x46, 0x46, 0x3c, 0x00, 0x00, 0x00, 0x57, 0x41, 0x56, 0x45, 0x66, 0x6d,
            0x74, 0x20, 0x28, 0x00, 0x00, 0x00, 0xfe, 0xff, 0x01, 0x00, 0x40, 0x1f, 0x00, 0x00,
            0x80, 0x3e, 0x00, 0x00, 0x02, 0x00, 0x10, 0x00, 0x16, 0x00, 0x41, 0x00, 0x04, 0x00,
            0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xaa,
            0x00, 0x38, 0x9b, 0x71, 0x64, 0x61, 0x74, 0x61, 0x00, 0x00, 0x00, 0x00,
        ];
        let e = decode_to_call_rate(Cursor::new(FILE.to_vec())).unwrap_err();
        assert!(
            matches!(e, WavError::Unsupported(ref why) if why.contains("65-bit")),
            "{e}"
        );
    }

    #[test]
    fn garbage_and_empty_input_are_errors_not_panics() {
        assert!(matches!(
            decode_to_call_rate(Cursor::new(b"RIFF\0\0\0\0WAVEjunk".to_vec())),
            Err(WavError::Format(_) | WavError::Unsupported(_))
        ));
        assert!(decode_to_call_rate(Cursor::new(Vec::new())).is_err());
        let mut wav = tone_wav(16000, 1, Format::Int(16), 440.0, 0.1);
        wav.truncate(wav.len() / 2);
        assert!(decode_to_call_rate(Cursor::new(wav)).is_err());
        let silent = tone_wav(16000, 2, Format::Int(16), 440.0, 0.0);
        assert_eq!(decode_to_call_rate(Cursor::new(silent)).unwrap().len(), 0);
    }
}
