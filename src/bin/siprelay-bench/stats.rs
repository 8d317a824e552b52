//! Counting without allocating: a log-linear histogram (about 1.6 % value
//! resolution) shared between tasks and threads through atomics, and the
//! sequence tracking used for loss, lateness and duplicates.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// Sub-buckets per power of two, as a bit count.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = ((64 - SUB_BITS + 1) as usize) << SUB_BITS;

/// Values in µs. Recording is a few relaxed atomic adds.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
    max: AtomicU64,
}

fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    let mantissa = v >> (e - SUB_BITS);
    (((e - SUB_BITS + 1) as u64) << SUB_BITS | (mantissa - SUB)) as usize
}

/// The middle of the values that land in bucket `i`.
fn value(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let b = i >> SUB_BITS;
    let low = (SUB + (i & (SUB - 1))) << (b - 1);
    low + ((1u64 << (b - 1)) >> 1)
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn record(&self, v: u64) {
        self.buckets[index(v)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum.fetch_add(v, Relaxed);
        self.max.fetch_max(v, Relaxed);
    }

    /// Records only while `gate` is set (the steady window).
    pub fn record_if(&self, gate: &AtomicBool, v: u64) {
        if gate.load(Relaxed) {
            self.record(v);
        }
    }

    pub fn summary(&self) -> Summary {
        let count = self.count.load(Relaxed);
        let quantile = |q: f64| -> f64 {
            if count == 0 {
                return 0.0;
            }
            let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
            let mut seen = 0;
            for (i, b) in self.buckets.iter().enumerate() {
                seen += b.load(Relaxed);
                if seen >= rank {
                    return value(i) as f64 / 1000.0;
                }
            }
            0.0
        };
        let max = self.max.load(Relaxed) as f64 / 1000.0;
        Summary {
            count,
            p50_ms: quantile(0.50).min(max),
            p99_ms: quantile(0.99).min(max),
            max_ms: max,
            mean_ms: if count == 0 {
                0.0
            } else {
                self.sum.load(Relaxed) as f64 / count as f64 / 1000.0
            },
        }
    }
}

/// A histogram as reported, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// Loss, lateness and duplicates of one numbered stream.
///
/// Numbers are extended past their wrap (`bits` wide) against the highest
/// seen; a 64-entry window of what arrived tells duplicates from late ones.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    first: Option<u64>,
    highest: u64,
    /// Bit i: `highest - i` arrived.
    window: u64,
    pub received: u64,
    pub late: u64,
    pub duplicated: u64,
    /// Older than the window: cannot tell, counted as late.
    pub too_old: u64,
}

/// What happened to one arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next one, or one after a gap.
    InOrder {
        gap: u64,
    },
    Late,
    Duplicate,
}

impl SeqTracker {
    /// `seq` is the number as carried, `bits` its width (16 for RTP).
    pub fn observe(&mut self, seq: u64, bits: u32) -> (u64, Arrival) {
        let modulus = 1u64 << bits;
        let ext = match self.first {
            None => {
                let ext = seq + modulus;
                self.first = Some(ext);
                self.highest = ext;
                self.window = 1;
                self.received = 1;
                return (ext, Arrival::InOrder { gap: 0 });
            }
            Some(_) => {
                let delta = seq.wrapping_sub(self.highest) & (modulus - 1);
                let delta = if delta >= modulus / 2 {
                    delta as i64 - modulus as i64
                } else {
                    delta as i64
                };
                (self.highest as i64 + delta) as u64
            }
        };
        if ext > self.highest {
            let gap = ext - self.highest - 1;
            let shift = ext - self.highest;
            self.window = if shift >= 64 { 0 } else { self.window << shift } | 1;
            self.highest = ext;
            self.received += 1;
            return (ext, Arrival::InOrder { gap });
        }
        let back = self.highest - ext;
        if back >= 64 {
            self.too_old += 1;
            self.late += 1;
            self.received += 1;
            return (ext, Arrival::Late);
        }
        if self.window & (1 << back) != 0 {
            self.duplicated += 1;
            return (ext, Arrival::Duplicate);
        }
        self.window |= 1 << back;
        self.late += 1;
        self.received += 1;
        (ext, Arrival::Late)
    }

    /// Numbers between the first and the highest that never arrived.
    pub fn lost(&self) -> u64 {
        match self.first {
            None => 0,
            Some(first) => (self.highest - first + 1).saturating_sub(self.received),
        }
    }

    /// How many numbers the stream spanned (first to highest).
    pub fn expected(&self) -> u64 {
        self.first.map_or(0, |f| self.highest - f + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in (0..5_000_000u64).step_by(997) {
            let i = index(v);
            assert!(i >= last);
            last = i;
            let mid = value(i) as f64;
            assert!(
                (mid - v as f64).abs() <= 0.016 * v as f64 + 1.0,
                "{v} -> {mid}"
            );
        }
        assert!(index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn quantiles() {
        let h = Histogram::default();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 500.0).abs() < 10.0, "{s:?}");
        assert!((s.p99_ms - 990.0).abs() < 16.0, "{s:?}");
        assert_eq!(s.max_ms, 1000.0);
    }

    #[test]
    fn sequence_loss_late_and_duplicates_across_the_wrap() {
        let mut t = SeqTracker::default();
        for s in [65533u64, 65534, 0, 1, 65535, 1, 4] {
            t.observe(s, 16);
        }
        // 65533..=4 spans 8 numbers; 2 and 3 never came; 65535 was late; 1 twice.
        assert_eq!(t.expected(), 8);
        assert_eq!(t.received, 6);
        assert_eq!(t.late, 1);
        assert_eq!(t.duplicated, 1);
        assert_eq!(t.lost(), 2);
    }
}
