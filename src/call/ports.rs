//! `PortPairAllocator`: RTP port pairs (an even RTP port and the odd RTCP
//! port above it) from the configured range.
//!
//! Freed pairs go to the back of the queue, so a port is reused as late as
//! possible and stray packets from an ended call do not reach a new one.

use std::collections::VecDeque;

#[derive(Debug)]
pub struct PortPairAllocator {
    free: VecDeque<u16>,
    first: u16,
    /// Indexed by pair number: whether the pair is in `free`.
    is_free: Vec<bool>,
}

impl PortPairAllocator {
    /// All even ports `p` in `low..=high` with `p + 1 <= high`.
    pub fn new(low: u16, high: u16) -> Self {
        let first = low + (low % 2);
        let free: VecDeque<u16> = (first..high).step_by(2).collect();
        let is_free = vec![true; free.len()];
        PortPairAllocator {
            free,
            first,
            is_free,
        }
    }

    /// The even RTP port of a free pair.
    pub fn allocate(&mut self) -> Option<u16> {
        let port = self.free.pop_front()?;
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
        assert_eq!(got, [31002, 31004, 31006, 31008]);
        assert_eq!(a.total_pairs(), 4);
    }

    #[test]
    fn exhausts_and_reuses_the_oldest_freed_pair_last() {
        let mut a = PortPairAllocator::new(40000, 40005);
        let p1 = a.allocate().unwrap();
        let p2 = a.allocate().unwrap();
        assert_eq!(a.allocate(), Some(40004));
        assert_eq!(a.allocate(), None);
        a.release(p2);
        a.release(p1);
        assert_eq!(a.allocate(), Some(p2));
        assert_eq!(a.allocate(), Some(p1));
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
