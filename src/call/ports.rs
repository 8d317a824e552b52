//! `PortPairAllocator`: RTP port pairs (an even RTP port and the odd RTCP
//! port above it) from the configured range.
//!
//! Pairs are handed out in random order, so that nobody can tell which port
//! the next call will have and send to it while it rings; the pick is among
//! the longest-free half, so that a freed port is reused as late as can be
//! and stray packets from an ended call do not reach a new one.

use std::collections::VecDeque;

#[derive(Debug)]
pub struct PortPairAllocator {
    /// Oldest-freed first.
    free: VecDeque<u16>,
    first: u16,
    /// Indexed by pair number: whether the pair is in `free`.
    is_free: Vec<bool>,
    /// xorshift64* state for the random pick.
    rng: u64,
}

impl PortPairAllocator {
    /// All even ports `p` in `low..=high` with `p + 1 <= high`, handed out
    /// in an order seeded from the operating system's random source.
    pub fn new(low: u16, high: u16) -> Self {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        Self::with_seed(low, high, u64::from_le_bytes(seed))
    }

    /// The same, in the order `seed` gives (for tests).
    pub fn with_seed(low: u16, high: u16, seed: u64) -> Self {
        let first = low + (low % 2);
        let free: VecDeque<u16> = (first..high).step_by(2).collect();
        let is_free = vec![true; free.len()];
        PortPairAllocator {
            free,
            first,
            is_free,
            // splitmix64 spreads any seed over the whole state.
            rng: {
                let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                (z ^ (z >> 31)) | 1
            },
        }
    }

    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// The even RTP port of a free pair: a random one of the longest-free half.
    pub fn allocate(&mut self) -> Option<u16> {
        let candidates = self.free.len().div_ceil(2);
        if candidates == 0 {
            return None;
        }
        let pick = (self.next_random() % candidates as u64) as usize;
        let port = self.free.swap_remove_front(pick)?;
        let slot = self.slot(port)?;
        self.is_free[slot] = false;
        Some(port)
    }

    fn slot(&self, port: u16) -> Option<usize> {
        let offset = port.checked_sub(self.first)?;
        (offset.is_multiple_of(2) && (offset as usize / 2) < self.is_free.len())
            .then_some(offset as usize / 2)
    }

    /// Returns a pair. A port outside the range, or already free, is ignored,
    /// so a double release cannot hand one pair to two calls.
    pub fn release(&mut self, port: u16) {
        if let Some(slot) = self.slot(port) {
            if !self.is_free[slot] {
                self.is_free[slot] = true;
                self.free.push_back(port);
            }
        }
    }

    pub fn free_pairs(&self) -> usize {
        self.free.len()
    }

    pub fn total_pairs(&self) -> usize {
        self.is_free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_even_ports_with_the_odd_one_inside_the_range() {
        let mut a = PortPairAllocator::new(31001, 31010);
        let mut got = Vec::new();
        while let Some(p) = a.allocate() {
            got.push(p);
        }
        got.sort();
        assert_eq!(got, [31002, 31004, 31006, 31008]);
        assert_eq!(a.total_pairs(), 4);
        assert_eq!(a.allocate(), None);
    }

    #[test]
    fn the_next_port_cannot_be_guessed() {
        // From the same state, the first pick differs between seeds, and
        // successive picks are not the ascending sequence.
        let firsts: std::collections::HashSet<u16> = (0..50)
            .map(|seed| {
                PortPairAllocator::with_seed(20000, 29999, seed)
                    .allocate()
                    .unwrap()
            })
            .collect();
        assert!(
            firsts.len() > 40,
            "{} distinct first ports of 50",
            firsts.len()
        );
        let mut a = PortPairAllocator::with_seed(20000, 29999, 7);
        let seq: Vec<u16> = (0..20).map(|_| a.allocate().unwrap()).collect();
        let ascending = seq.windows(2).filter(|w| w[1] == w[0] + 2).count();
        assert!(ascending < 3, "{seq:?}");
    }

    #[test]
    fn a_freed_pair_waits_behind_the_longest_free_half() {
        let mut a = PortPairAllocator::with_seed(40000, 40019, 3);
        let p = a.allocate().unwrap();
        a.release(p);
        // Ten pairs, the freed one last in line: not picked for the next 4.
        for _ in 0..4 {
            assert_ne!(a.allocate(), Some(p));
        }
    }

    #[test]
    fn double_release_does_not_duplicate_a_pair() {
        let mut a = PortPairAllocator::new(40000, 40003);
        let p = a.allocate().unwrap();
        a.release(p);
        a.release(p);
        a.release(40001);
        assert_eq!(a.free_pairs(), 2);
    }
}

/// A port pair held by a call, returned to its allocator when dropped.
#[derive(Debug)]
pub struct PortLease {
    port: u16,
    pool: std::sync::Arc<std::sync::Mutex<PortPairAllocator>>,
}

impl PortLease {
    /// Takes a pair from `pool`, or `None` when all are in use.
    pub fn take(pool: &std::sync::Arc<std::sync::Mutex<PortPairAllocator>>) -> Option<PortLease> {
        let port = pool.lock().unwrap_or_else(|e| e.into_inner()).allocate()?;
        Some(PortLease {
            port,
            pool: pool.clone(),
        })
    }

    pub fn rtp_port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .release(self.port);
    }
}

#[cfg(test)]
mod lease_tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_lease_returns_its_pair_when_dropped() {
        let pool = Arc::new(Mutex::new(PortPairAllocator::new(40000, 40003)));
        let a = PortLease::take(&pool).unwrap();
        let b = PortLease::take(&pool).unwrap();
        assert!(PortLease::take(&pool).is_none());
        assert_ne!(a.rtp_port(), b.rtp_port());
        drop(a);
        assert_eq!(pool.lock().unwrap().free_pairs(), 1);
    }
}
