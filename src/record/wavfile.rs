//! The recording file: a canonical 44-byte-header WAV (stereo, 16-bit,
//! 8 kHz) written as the call goes, and the repair of one left unfinished.
//!
//! The header's two length fields are rewritten in place (positional
//! writes, no seeking) every [`HEADER_EVERY_FRAMES`] frames, so a file cut
//! short by a crash is still a valid WAV holding all but the last second.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

pub const HEADER_LEN: u64 = 44;
pub const CHANNELS: u16 = 2;
pub const RATE: u32 = 8000;
/// Bytes of one stereo sample frame.
pub const BLOCK_ALIGN: u64 = 4;
pub use crate::media::tap::STEREO_FRAME;
/// The header is brought up to date once per second of audio.
pub const HEADER_EVERY_FRAMES: u64 = 50;

/// The canonical header for `data_len` bytes of audio.
pub fn header(data_len: u32) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&data_len.saturating_add(36).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&CHANNELS.to_le_bytes());
    h[24..28].copy_from_slice(&RATE.to_le_bytes());
    h[28..32].copy_from_slice(&(RATE * BLOCK_ALIGN as u32).to_le_bytes());
    h[32..34].copy_from_slice(&(BLOCK_ALIGN as u16).to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}

/// A recording being written.
pub struct StereoWavWriter {
    out: BufWriter<File>,
    frames: u64,
    frames_at_header: u64,
}

impl StereoWavWriter {
    pub fn create(path: &Path) -> io::Result<Self> {
        let mut file = File::options().write(true).create_new(true).open(path)?;
        file.write_all(&header(0))?;
        Ok(StereoWavWriter {
            out: BufWriter::with_capacity(8 * 1024, file),
            frames: 0,
            frames_at_header: 0,
        })
    }

    /// 20 ms frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    pub fn write_frame(&mut self, frame: &[i16; STEREO_FRAME]) -> io::Result<()> {
        let mut bytes = [0u8; STEREO_FRAME * 2];
        for (b, s) in bytes.chunks_exact_mut(2).zip(frame) {
            b.copy_from_slice(&s.to_le_bytes());
        }
        self.out.write_all(&bytes)?;
        self.frames += 1;
        if self.frames - self.frames_at_header >= HEADER_EVERY_FRAMES {
            self.sync_header()?;
        }
        Ok(())
    }

    /// Flushes the audio and makes the header describe all of it.
    pub fn sync_header(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let data = self.data_len();
        let h = header(data);
        let file = self.out.get_ref();
        file.write_all_at(&h[4..8], 4)?;
        file.write_all_at(&h[40..44], 40)?;
        self.frames_at_header = self.frames;
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<u64> {
        self.sync_header()?;
        self.out.get_ref().sync_data()?;
        Ok(self.frames)
    }

    fn data_len(&self) -> u32 {
        let bytes = self.frames * (STEREO_FRAME as u64) * 2;
        bytes.min((u32::MAX - 36) as u64) as u32
    }
}

/// What a repair found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    /// The data length the header claimed, and the one it now says.
    pub claimed: u32,
    pub actual: u32,
}

/// Brings the header of a recording left unfinished (a crash, `kill -9`,
/// power loss) up to the audio the file really holds. `Ok(None)`: it was
/// fine. Files that are not siprelay recordings are left alone (an error).
pub fn repair(path: &Path) -> io::Result<Option<Repaired>> {
    let mut file = File::options().read(true).write(true).open(path)?;
    let mut h = [0u8; HEADER_LEN as usize];
    file.read_exact(&mut h)
        .map_err(|_| invalid("shorter than a WAV header"))?;
    let expected = header(0);
    // Everything but the two lengths must be ours.
    if h[..4] != expected[..4] || h[8..40] != expected[8..40] {
        return Err(invalid("not a siprelay recording (header differs)"));
    }
    let len = file.metadata()?.len();
    let audio = len - HEADER_LEN;
    let whole = audio - audio % BLOCK_ALIGN;
    let actual = whole.min((u32::MAX - 36) as u64) as u32;
    let claimed = u32::from_le_bytes(h[40..44].try_into().expect("4 bytes"));
    let riff = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
    if claimed == actual && riff == actual + 36 && whole == audio {
        return Ok(None);
    }
    if whole != audio {
        // A torn last sample frame.
        file.set_len(HEADER_LEN + whole)?;
    }
    let fixed = header(actual);
    file.write_all_at(&fixed[4..8], 4)?;
    file.write_all_at(&fixed[40..44], 40)?;
    file.sync_data()?;
    Ok(Some(Repaired { claimed, actual }))
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::playout::FRAME_SAMPLES;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("siprelay-wav-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn frame(left: i16, right: i16) -> [i16; STEREO_FRAME] {
        let mut f = [0; STEREO_FRAME];
        for pair in f.chunks_exact_mut(2) {
            pair[0] = left;
            pair[1] = right;
        }
        f
    }

    #[test]
    fn a_finished_recording_reads_back_in_hound() {
        let dir = temp_dir("finish");
        let path = dir.join("a.wav");
        let mut w = StereoWavWriter::create(&path).unwrap();
        for i in 0..7 {
            w.write_frame(&frame(i, -i)).unwrap();
        }
        assert_eq!(w.finish().unwrap(), 7);
        let mut r = hound::WavReader::open(&path).unwrap();
        let spec = r.spec();
        assert_eq!(
            (spec.channels, spec.sample_rate, spec.bits_per_sample),
            (2, 8000, 16)
        );
        let samples: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(samples.len(), 7 * STEREO_FRAME);
        assert_eq!(samples[6 * STEREO_FRAME], 6);
        assert_eq!(samples[6 * STEREO_FRAME + 1], -6);
        assert_eq!(
            repair(&path).unwrap(),
            None,
            "a finished file needs no repair"
        );
    }

    #[test]
    fn an_abandoned_recording_is_valid_to_the_last_second_then_repaired_whole() {
        let dir = temp_dir("abandon");
        let path = dir.join("b.wav");
        let mut w = StereoWavWriter::create(&path).unwrap();
        for i in 0..130 {
            w.write_frame(&frame(i, 1)).unwrap();
        }
        w.out.flush().unwrap();
        // The writer dies without finishing: no final header update.
        std::mem::forget(w);
        // Valid already, holding the first 100 frames (the last header update).
        let r = hound::WavReader::open(&path).unwrap();
        assert_eq!(r.duration() as usize, 100 * FRAME_SAMPLES);
        // A torn half sample at the end, as a crash mid-write leaves.
        let mut f = File::options().append(true).open(&path).unwrap();
        f.write_all(&[1, 2, 3]).unwrap();
        drop(f);
        let fixed = repair(&path).unwrap().unwrap();
        assert_eq!(fixed.claimed as usize, 100 * STEREO_FRAME * 2);
        assert_eq!(fixed.actual as usize, 130 * STEREO_FRAME * 2);
        let mut r = hound::WavReader::open(&path).unwrap();
        assert_eq!(r.duration() as usize, 130 * FRAME_SAMPLES);
        let last: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(last[129 * STEREO_FRAME], 129);
        assert_eq!(repair(&path).unwrap(), None);
    }

    #[test]
    fn foreign_files_are_not_touched() {
        let dir = temp_dir("foreign");
        let path = dir.join("c.wav");
        std::fs::write(&path, b"hello, this is not a wav file at all, no sir").unwrap();
        assert!(repair(&path).is_err());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"hello, this is not a wav file at all, no sir"
        );
        std::fs::write(&path, b"RIFF").unwrap();
        assert!(repair(&path).is_err());
    }
}
