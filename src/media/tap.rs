//! `RecordTap`: one call's two directions, side by side on the media clock,
//! for its recording.
//!
//! The far end's audio goes through a [`JitterBuffer`] (so loss and
//! reordering keep their place in time); what siprelay sends is delayed by
//! the buffer's depth, so the two channels line up as they were heard at
//! the daemon. Each frame sent yields one stereo frame, numbered, so that the
//! writer can fill any frame lost on the way with silence of its length.

use super::jitter::{JitterBuffer, DEPTH};
use super::playout::FRAME_SAMPLES;

/// Stereo samples in one 20 ms frame (left, right interleaved).
pub const STEREO_FRAME: usize = 2 * FRAME_SAMPLES;
const DELAY_FRAMES: usize = DEPTH as usize / FRAME_SAMPLES;

/// One recorded 20 ms: left is the far end, right is what siprelay sent.
#[derive(Debug, Clone)]
pub struct TappedFrame {
    /// The recording it belongs to.
    pub key: u64,
    /// Frames since the recording started.
    pub index: u64,
    pub samples: [i16; STEREO_FRAME],
}

/// Where the media clock hands recorded frames, one batch per slot.
pub trait RecordingSink: Send + Sync {
    fn submit(&self, frames: Vec<TappedFrame>);
}

#[derive(Debug)]
pub struct RecordTap {
    pub key: u64,
    pub far: JitterBuffer,
    sent: [[i16; FRAME_SAMPLES]; DELAY_FRAMES],
    index: u64,
}

impl RecordTap {
    pub fn new(key: u64) -> Self {
        RecordTap {
            key,
            far: JitterBuffer::new(),
            sent: [[0; FRAME_SAMPLES]; DELAY_FRAMES],
            index: 0,
        }
    }

    /// Frames produced so far.
    pub fn frames(&self) -> u64 {
        self.index
    }

    /// Called once per frame with the frame siprelay just sent.
    pub fn tick(&mut self, sent_now: &[i16; FRAME_SAMPLES]) -> TappedFrame {
        let slot = self.index as usize % DELAY_FRAMES;
        let sent = std::mem::replace(&mut self.sent[slot], *sent_now);
        let mut far = [0i16; FRAME_SAMPLES];
        self.far.pop_frame(&mut far);
        let mut samples = [0i16; STEREO_FRAME];
        for (i, pair) in samples.chunks_exact_mut(2).enumerate() {
            pair[0] = far[i];
            pair[1] = sent[i];
        }
        let frame = TappedFrame {
            key: self.key,
            index: self.index,
            samples,
        };
        self.index += 1;
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_line_up_as_heard_at_the_daemon() {
        let mut tap = RecordTap::new(9);
        // Tick n: the far end's packet n (value 100+n) arrived just before,
        // and siprelay sends frame value n.
        let mut frames = Vec::new();
        for n in 0..6i16 {
            tap.far
                .push(8000 + n as u32 * 160, &[100 + n; FRAME_SAMPLES]);
            frames.push(tap.tick(&[n; FRAME_SAMPLES]));
        }
        for (n, f) in frames.iter().enumerate().skip(DELAY_FRAMES) {
            let heard = n - DELAY_FRAMES;
            assert_eq!(f.samples[0], 100 + heard as i16, "left of frame {n}");
            assert_eq!(f.samples[1], heard as i16, "right of frame {n}");
            assert_eq!(f.index, n as u64);
            assert_eq!(f.key, 9);
        }
        assert_eq!(tap.frames(), 6);
    }
}
