//! `PlayoutQueue`: audio a client sent, waiting for the media clock.
//!
//! Clients send PCM in chunks of any size and at any pace (a text-to-speech
//! engine often sends seconds at once). The queue keeps those samples in
//! order and hands the media clock exactly one 20 ms frame each time it asks; the
//! clock pads with silence when the queue runs dry. The queue is bounded:
//! a client cannot make the daemon hold more than `capacity` samples.

use std::collections::VecDeque;

use thiserror::Error;

/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("playout queue full: {dropped} samples dropped (holds at most {capacity})")]
pub struct QueueFull {
    pub dropped: usize,
    pub capacity: usize,
}

#[derive(Debug)]
pub struct PlayoutQueue {
    samples: VecDeque<i16>,
    capacity: usize,
    /// A byte left over from a chunk with an odd length: the low half of a
    /// sample whose high half is in the next chunk.
    pending_byte: Option<u8>,
}

impl PlayoutQueue {
    /// Memory kept after the queue drains; above this it is given back.
    const RETAINED_SAMPLES: usize = 8 * FRAME_SAMPLES;

    pub fn new(capacity: usize) -> Self {
        PlayoutQueue {
            samples: VecDeque::new(),
            capacity,
            pending_byte: None,
        }
    }

    /// Samples waiting.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Appends 16-bit little-endian PCM bytes. A chunk may split a sample;
    /// the odd byte waits for the next chunk. Samples past the capacity are
    /// dropped and reported.
    pub fn push_le_bytes(&mut self, mut bytes: &[u8]) -> Result<(), QueueFull> {
        let mut dropped = 0;
        if let Some(low) = self.pending_byte.take() {
            match bytes.split_first() {
                Some((&high, rest)) => {
                    dropped += self.push_sample(i16::from_le_bytes([low, high]));
                    bytes = rest;
                }
                None => self.pending_byte = Some(low),
            }
        }
        let room = self.capacity - self.samples.len();
        let whole = bytes.len() / 2;
        let take = whole.min(room);
        self.samples.extend(
            bytes[..take * 2]
                .chunks_exact(2)
                .map(|p| i16::from_le_bytes([p[0], p[1]])),
        );
        dropped += whole - take;
        if bytes.len() % 2 == 1 {
            self.pending_byte = Some(bytes[bytes.len() - 1]);
        }
        if dropped > 0 {
            return Err(QueueFull {
                dropped,
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    pub fn push_samples(&mut self, pcm: &[i16]) -> Result<(), QueueFull> {
        let room = self.capacity - self.samples.len();
        let take = pcm.len().min(room);
        self.samples.extend(&pcm[..take]);
        match pcm.len() - take {
            0 => Ok(()),
            dropped => Err(QueueFull {
                dropped,
                capacity: self.capacity,
            }),
        }
    }

    fn push_sample(&mut self, s: i16) -> usize {
        if self.samples.len() < self.capacity {
            self.samples.push_back(s);
            0
        } else {
            1
        }
    }

    /// Fills `frame` with the next samples, padding with silence. Returns how
    /// many samples came from the queue (0: the frame is pure silence).
    pub fn pop_frame(&mut self, frame: &mut [i16; FRAME_SAMPLES]) -> usize {
        let n = self.samples.len().min(FRAME_SAMPLES);
        for (dst, src) in frame.iter_mut().zip(self.samples.drain(..n)) {
            *dst = src;
        }
        frame[n..].fill(0);
        if self.samples.is_empty() && self.samples.capacity() > Self::RETAINED_SAMPLES {
            self.samples.shrink_to(Self::RETAINED_SAMPLES);
        }
        n
    }

    /// Moves up to `n` samples into `out`; returns how many there were.
    pub fn take(&mut self, n: usize, out: &mut Vec<i16>) -> usize {
        let n = n.min(self.samples.len());
        out.extend(self.samples.drain(..n));
        n
    }

    /// Drops everything queued (barge-in, hang-up).
    pub fn clear(&mut self) {
        self.samples.clear();
        self.pending_byte = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le(samples: impl IntoIterator<Item = i16>) -> Vec<u8> {
        samples.into_iter().flat_map(i16::to_le_bytes).collect()
    }

    #[test]
    fn reframes_chunks_of_any_size_into_20ms_frames() {
        let mut q = PlayoutQueue::new(10_000);
        let bytes = le(0..400);
        // 401 bytes then the rest: the split falls inside a sample.
        q.push_le_bytes(&bytes[..401]).unwrap();
        q.push_le_bytes(&bytes[401..]).unwrap();
        let mut frame = [0i16; FRAME_SAMPLES];
        assert_eq!(q.pop_frame(&mut frame), 160);
        assert_eq!(frame[0], 0);
        assert_eq!(frame[159], 159);
        assert_eq!(q.pop_frame(&mut frame), 160);
        assert_eq!(frame[0], 160);
        assert_eq!(q.pop_frame(&mut frame), 80);
        assert_eq!(frame[79], 399);
        assert!(
            frame[80..].iter().all(|&s| s == 0),
            "tail padded with silence"
        );
        assert_eq!(q.pop_frame(&mut frame), 0);
        assert!(frame.iter().all(|&s| s == 0));
    }

    #[test]
    fn bounded_and_reports_what_it_dropped() {
        let mut q = PlayoutQueue::new(100);
        assert_eq!(q.push_samples(&[1; 60]), Ok(()));
        assert_eq!(
            q.push_samples(&[2; 60]),
            Err(QueueFull {
                dropped: 20,
                capacity: 100
            })
        );
        assert_eq!(q.len(), 100);
        assert_eq!(
            q.push_le_bytes(&le([3; 10])),
            Err(QueueFull {
                dropped: 10,
                capacity: 100
            })
        );
        let mut frame = [0i16; FRAME_SAMPLES];
        assert_eq!(q.pop_frame(&mut frame), 100);
        assert_eq!(frame[59], 1);
        assert_eq!(frame[99], 2);
    }

    #[test]
    fn clear_drops_queued_audio_and_half_samples() {
        let mut q = PlayoutQueue::new(1000);
        q.push_le_bytes(&[1, 2, 3]).unwrap();
        q.clear();
        q.push_le_bytes(&[0x10, 0x00]).unwrap();
        let mut frame = [0i16; FRAME_SAMPLES];
        assert_eq!(q.pop_frame(&mut frame), 1);
        assert_eq!(frame[0], 0x10);
    }

    #[test]
    fn gives_memory_back_after_a_long_utterance() {
        let mut q = PlayoutQueue::new(1_000_000);
        q.push_samples(&vec![5; 100_000]).unwrap();
        let mut frame = [0i16; FRAME_SAMPLES];
        while q.pop_frame(&mut frame) > 0 {}
        assert!(q.samples.capacity() <= 4 * PlayoutQueue::RETAINED_SAMPLES);
    }
}
