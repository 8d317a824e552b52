//! `PaceKeeper`: keeps a device's playout queue near a target depth
//! although the device's 20 ms is not siprelay's.
//!
//! A board's crystal is off by up to ±100 ppm, and Wi-Fi hands its frames
//! over in bursts. Played out as they come, a fast board's audio would pile
//! up (+100 ppm is 360 ms more latency an hour) and a slow board's would run
//! dry every few minutes (a click of silence). The keeper watches the
//! queue's lowest depth over each second (the trough between bursts) and,
//! while that trough is off target, plays 161 queued samples in a frame's
//! 160 (or 159 in 160), linearly interpolated: a 0.6 % speed change
//! spread over the whole frame, not a dropped or repeated sample. Pure:
//! the media clock calls it once a tick.

use super::playout::FRAME_SAMPLES;

/// Ticks over which the trough is measured: one second.
const WINDOW_TICKS: u32 = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Take 160 samples a frame.
    Even,
    /// Take 161: the queue is too deep.
    Faster,
    /// Take 159: the queue runs too low.
    Slower,
}

#[derive(Debug, Clone)]
pub struct PaceKeeper {
    /// The trough depth aimed at, in samples.
    target: usize,
    /// Tolerance either side before correcting.
    slack: usize,
    window_min: usize,
    ticks: u32,
    pace: Pace,
    /// Whether the device has sent anything yet (an idle queue is not slow).
    started: bool,
}

impl PaceKeeper {
    /// Aims at a trough of 60 ms of audio, correcting beyond ±20 ms. The
    /// trough jumps by a frame whenever the board's bursts slip past one of
    /// our ticks, so the low bound keeps a frame in hand.
    pub fn new() -> Self {
        PaceKeeper {
            target: 3 * FRAME_SAMPLES,
            slack: FRAME_SAMPLES,
            window_min: usize::MAX,
            ticks: 0,
            pace: Pace::Even,
            started: false,
        }
    }

    /// Samples to take from a queue `depth` samples deep for this tick's frame.
    pub fn samples_for_frame(&mut self, depth: usize) -> usize {
        self.started |= depth > 0;
        self.window_min = self.window_min.min(depth);
        self.ticks += 1;
        if self.ticks == WINDOW_TICKS {
            let trough = self.window_min;
            self.pace = if !self.started {
                Pace::Even
            } else if trough > self.target + self.slack {
                Pace::Faster
            } else if trough + self.slack < self.target {
                Pace::Slower
            } else if (self.pace == Pace::Faster && trough <= self.target)
                || (self.pace == Pace::Slower && trough >= self.target)
            {
                Pace::Even
            } else {
                self.pace
            };
            self.ticks = 0;
            self.window_min = usize::MAX;
        }
        match self.pace {
            Pace::Even => FRAME_SAMPLES,
            Pace::Faster => FRAME_SAMPLES + 1,
            Pace::Slower => FRAME_SAMPLES - 1,
        }
    }

    pub fn pace(&self) -> Pace {
        self.pace
    }
}

impl Default for PaceKeeper {
    fn default() -> Self {
        Self::new()
    }
}

/// Plays `input` (any length near 160) into exactly one frame, linearly
/// interpolated.
pub fn stretch_into(input: &[i16], frame: &mut [i16; FRAME_SAMPLES]) {
    match input.len() {
        0 => frame.fill(0),
        FRAME_SAMPLES => frame.copy_from_slice(input),
        n => {
            let step = (n - 1) as f64 / (FRAME_SAMPLES - 1) as f64;
            for (k, out) in frame.iter_mut().enumerate() {
                let x = k as f64 * step;
                let i = x as usize;
                let frac = x - i as f64;
                let a = input[i] as f64;
                let b = input[(i + 1).min(n - 1)] as f64;
                *out = (a + (b - a) * frac).round() as i16;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::playout::PlayoutQueue;

    /// A board on `ppm` of drift handing frames over in bursts of `burst`,
    /// against siprelay's clock, for `seconds` of simulated time. Returns
    /// the deepest queue after the first minute, in samples, and the ticks
    /// that had to be padded with silence after it.
    fn simulate(ppm: f64, burst: u32, seconds: u64) -> (usize, u64) {
        let mut queue = PlayoutQueue::new(60 * 8000);
        let mut keeper = PaceKeeper::new();
        let tick_us = 20_000u64;
        // The board's frame period in siprelay's microseconds.
        let board_us = 20_000.0 / (1.0 + ppm * 1e-6);
        let mut board_next = 0.0f64;
        let mut pending = 0u32;
        let mut frame = [0i16; FRAME_SAMPLES];
        let mut take = Vec::new();
        let (mut deepest, mut padded) = (0, 0);
        let mut n = 0i64;
        for tick in 0..seconds * 50 {
            let now = tick * tick_us;
            // Frames the board has made by now, delivered once a burst is full.
            while board_next <= now as f64 {
                pending += 1;
                board_next += board_us;
                if pending == burst {
                    for _ in 0..burst {
                        let pcm: Vec<i16> = (0..FRAME_SAMPLES)
                            .map(|_| {
                                n += 1;
                                ((n as f64 * 0.1).sin() * 1000.0) as i16
                            })
                            .collect();
                        queue.push_samples(&pcm).unwrap();
                    }
                    pending = 0;
                }
            }
            let want = keeper.samples_for_frame(queue.len());
            take.clear();
            let got = queue.take(want, &mut take);
            stretch_into(&take, &mut frame);
            if tick >= 60 * 50 {
                deepest = deepest.max(queue.len());
                if got < want {
                    padded += 1;
                }
            }
        }
        (deepest, padded)
    }

    #[test]
    fn a_fast_board_stays_within_bounded_latency_for_an_hour() {
        let (deepest, padded) = simulate(100.0, 5, 3600);
        // A burst of 5 frames (100 ms) on top of the trough: target, slack,
        // and a frame of phase.
        assert!(
            deepest <= 5 * 160 + 3 * 160 + 160 + 160,
            "{deepest} samples deep"
        );
        assert_eq!(padded, 0);
        // Without the keeper the queue would have grown by 2,880 samples.
    }

    #[test]
    fn a_slow_board_never_runs_dry_after_settling() {
        let (deepest, padded) = simulate(-100.0, 5, 3600);
        assert!(deepest <= 5 * 160 + 3 * 160 + 160, "{deepest}");
        assert_eq!(padded, 0, "no silence inserted in an hour");
    }

    #[test]
    fn an_accurate_board_is_played_as_it_comes() {
        let mut keeper = PaceKeeper::new();
        for _ in 0..500 {
            assert_eq!(keeper.samples_for_frame(2 * 160), 160);
        }
        assert_eq!(keeper.pace(), Pace::Even);
        // Idle (nothing sent yet): no correction.
        let mut idle = PaceKeeper::new();
        for _ in 0..500 {
            assert_eq!(idle.samples_for_frame(0), 160);
        }
    }

    #[test]
    fn stretching_keeps_a_tone_smooth() {
        let input: Vec<i16> = (0..161).map(|i| (i * 100) as i16).collect();
        let mut frame = [0; FRAME_SAMPLES];
        stretch_into(&input, &mut frame);
        assert_eq!(frame[0], 0);
        assert_eq!(frame[159], 16000, "ends on the last input sample");
        assert!(
            frame.windows(2).all(|w| w[1] > w[0]),
            "monotonic: no repeats, no jumps"
        );
    }
}
