//! `JitterBuffer`: the far end's audio placed on the call's media clock.
//!
//! Packets arrive late, early, out of order or not at all; their RTP
//! timestamps say where each belongs. The buffer writes every payload at its
//! timestamp's place in a ring and the media clock reads one 20 ms frame per
//! tick, a fixed depth behind the first packet. A lost packet leaves
//! silence of its exact length, so the timeline is never shortened.
//!
//! The far end's clock is not ours: if it runs fast the buffered audio grows
//! and the read point skips ahead; if slow, the reader meets silence. A jump
//! in timestamps (a new stream, a new SSRC) resynchronises the buffer.

use super::playout::FRAME_SAMPLES;

/// How far behind the newest audio the reader stays: room for this much
/// reordering and jitter.
pub const DEPTH: u32 = 2 * FRAME_SAMPLES as u32;
/// The ring: half a second at 8 kHz.
const RING: usize = 4000;
/// Buffered audio beyond this means the far end's clock runs fast: skip ahead.
const MAX_AHEAD: u32 = DEPTH + 10 * FRAME_SAMPLES as u32;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets that arrived after their place had been read.
    pub late: u64,
    /// Times the timeline was resynchronised (jump or drift).
    pub resyncs: u64,
}

#[derive(Debug)]
pub struct JitterBuffer {
    ring: Box<[i16; RING]>,
    /// The RTP timestamp of the next sample to read; None before the first packet.
    read: Option<u32>,
    /// One past the newest sample written, relative to `read`.
    written_ahead: u32,
    pub stats: JitterStats,
}

impl Default for JitterBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl JitterBuffer {
    pub fn new() -> Self {
        JitterBuffer {
            ring: Box::new([0; RING]),
            read: None,
            written_ahead: 0,
            stats: JitterStats::default(),
        }
    }

    /// Writes decoded samples that start at RTP timestamp `timestamp`.
    pub fn push(&mut self, timestamp: u32, samples: &[i16]) {
        let read = *self
            .read
            .get_or_insert_with(|| timestamp.wrapping_sub(DEPTH));
        let offset = timestamp.wrapping_sub(read) as i32;
        let end = offset as i64 + samples.len() as i64;
        if offset < 0 && offset > -(RING as i32) {
            self.stats.late += 1;
            // The part not yet read still counts.
            let skip = (-offset) as usize;
            if skip < samples.len() {
                self.write_at(0, &samples[skip..]);
            }
            return;
        }
        if offset < 0 || end > RING as i64 {
            // Far outside the window: the stream jumped. Start over here.
            self.resync(timestamp);
            self.write_at(DEPTH, samples);
            return;
        }
        self.write_at(offset as u32, samples);
        if self.written_ahead > MAX_AHEAD {
            // The far end is ahead of our clock: drop the excess.
            let excess = self.written_ahead - DEPTH;
            self.skip(excess);
            self.stats.resyncs += 1;
        }
    }

    /// Reads the next 20 ms (silence where nothing arrived).
    pub fn pop_frame(&mut self, frame: &mut [i16; FRAME_SAMPLES]) {
        let Some(read) = self.read else {
            frame.fill(0);
            return;
        };
        for (i, out) in frame.iter_mut().enumerate() {
            let slot = &mut self.ring[Self::index(read.wrapping_add(i as u32))];
            *out = std::mem::take(slot);
        }
        self.read = Some(read.wrapping_add(FRAME_SAMPLES as u32));
        self.written_ahead = self.written_ahead.saturating_sub(FRAME_SAMPLES as u32);
    }

    fn write_at(&mut self, offset: u32, samples: &[i16]) {
        let read = self.read.unwrap_or_default();
        let start = read.wrapping_add(offset);
        for (i, &s) in samples.iter().enumerate() {
            self.ring[Self::index(start.wrapping_add(i as u32))] = s;
        }
        self.written_ahead = self.written_ahead.max(offset + samples.len() as u32);
    }

    fn skip(&mut self, samples: u32) {
        let read = self.read.unwrap_or_default();
        for i in 0..samples {
            self.ring[Self::index(read.wrapping_add(i))] = 0;
        }
        self.read = Some(read.wrapping_add(samples));
        self.written_ahead -= samples;
    }

    fn resync(&mut self, timestamp: u32) {
        self.ring.fill(0);
        self.read = Some(timestamp.wrapping_sub(DEPTH));
        self.written_ahead = 0;
        self.stats.resyncs += 1;
    }

    fn index(timestamp: u32) -> usize {
        timestamp as usize % RING
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: usize = FRAME_SAMPLES;

    fn frame_of(v: i16) -> Vec<i16> {
        vec![v; F]
    }

    fn pop(jb: &mut JitterBuffer) -> [i16; F] {
        let mut f = [0; F];
        jb.pop_frame(&mut f);
        f
    }

    /// Packet n carries the value n+1 at timestamp base + n*160.
    fn push_packet(jb: &mut JitterBuffer, base: u32, n: u32) {
        jb.push(base.wrapping_add(n * F as u32), &frame_of(n as i16 + 1));
    }

    #[test]
    fn in_order_audio_comes_out_depth_frames_later_unchanged() {
        let mut jb = JitterBuffer::new();
        let mut out = Vec::new();
        for n in 0..10 {
            push_packet(&mut jb, 1000, n);
            out.push(pop(&mut jb)[0]);
        }
        assert_eq!(out, [0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn reordered_packets_land_in_place_and_a_lost_one_is_silence_of_its_length() {
        let mut jb = JitterBuffer::new();
        let mut out = Vec::new();
        // Packet 3 arrives after 4; packet 6 never arrives.
        for n in [0, 1, 2, 4, 3, 5, 7, 8, 9, 10] {
            push_packet(&mut jb, u32::MAX - 500, n); // across the wrap, too
            out.push(pop(&mut jb)[0]);
        }
        for _ in 0..2 {
            out.push(pop(&mut jb)[0]);
        }
        assert_eq!(out, [0, 0, 1, 2, 3, 4, 5, 6, 0, 8, 9, 10]);
        assert_eq!(jb.stats.late, 0);
    }

    #[test]
    fn a_packet_later_than_the_depth_is_counted_and_dropped() {
        let mut jb = JitterBuffer::new();
        push_packet(&mut jb, 0, 0);
        for _ in 0..5 {
            pop(&mut jb);
        }
        push_packet(&mut jb, 0, 1);
        assert_eq!(jb.stats.late, 1);
        assert!(pop(&mut jb).iter().all(|&s| s == 0));
    }

    #[test]
    fn a_timestamp_jump_resynchronises() {
        let mut jb = JitterBuffer::new();
        push_packet(&mut jb, 0, 0);
        pop(&mut jb);
        jb.push(5_000_000, &frame_of(42));
        assert_eq!(jb.stats.resyncs, 1);
        let got: Vec<i16> = (0..3).map(|_| pop(&mut jb)[0]).collect();
        assert_eq!(got, [0, 0, 42]);
    }

    #[test]
    fn a_fast_far_end_clock_keeps_the_delay_bounded() {
        // The far end sends 21 frames for every 20 of our ticks, for a minute.
        let mut jb = JitterBuffer::new();
        let mut n = 0;
        for tick in 0..3000 {
            push_packet(&mut jb, 0, n);
            n += 1;
            if tick % 20 == 0 {
                push_packet(&mut jb, 0, n);
                n += 1;
            }
            pop(&mut jb);
            assert!(jb.written_ahead <= MAX_AHEAD);
        }
        // The newest audio is still within reach of the reader.
        let newest = n as i16;
        let mut seen = false;
        for _ in 0..(MAX_AHEAD as usize / F + 1) {
            seen |= pop(&mut jb)[0] == newest;
        }
        assert!(seen, "the newest frame was not played within the bound");
    }
}
