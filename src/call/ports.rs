//! `PortPairAllocator`: RTP port pairs (an even RTP port and the odd RTCP
//! port above it) from the configured range.
//!
//! Freed pairs go to the back of the queue, so a port is reused as late as
//! possible and stray packets from an ended call do not reach a new one.

use std::collections::VecDeque;

#[derive(Debug)]
pub struct PortPairAllocator {
    free: VecDeque<u16>,
    total: usize,
}

impl PortPairAllocator {
    /// All even ports `p` in `low..=high` with `p + 1 <= high`.
    pub fn new(low: u16, high: u16) -> Self {
        let first = low + (low % 2);
        let free: VecDeque<u16> = (first..high).step_by(2).collect();
        let total = free.len();
        PortPairAllocator { free, total }
    }

    /// The even RTP port of a free pair.
    pub fn allocate(&mut self) -> Option<u16> {
        self.free.pop_front()
    }

    /// Returns a pair. A port outside the range, or already free, is ignored,
    /// so a double release cannot hand one pair to two calls.
    pub fn release(&mut self, port: u16) {
        if port % 2 == 0 && self.free.len() < self.total && !self.free.contains(&port) {
            self.free.push_back(port);
        }
    }

    pub fn free_pairs(&self) -> usize {
        self.free.len()
    }

    pub fn total_pairs(&self) -> usize {
        self.total
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
