//! A cap on incoming calls that are not yet confirmed (ringing, or
//! answered and waiting for the ACK) from untrusted sources, overall and
//! per source: unauthenticated INVITEs each hold a port pair and a
//! transaction, and a flood of them must not take what real calls need.
//! Calls from trusted sources (the accounts' PBXs) are never capped here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub struct RingingLimit {
    max: usize,
    per_source: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// Why an INVITE was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TooMany {
    FromSource,
    Overall,
}

/// One unconfirmed call's place; given back when dropped.
#[derive(Debug)]
pub struct RingingSlot {
    limit: Arc<RingingLimit>,
    source: IpAddr,
}

impl RingingLimit {
    pub fn new(max: usize, per_source: usize) -> Arc<RingingLimit> {
        Arc::new(RingingLimit {
            max,
            per_source,
            held: Mutex::default(),
        })
    }

    pub fn take(self: &Arc<Self>, source: IpAddr) -> Result<RingingSlot, TooMany> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let from_source = held.by_source.get(&source).copied().unwrap_or(0);
        if from_source >= self.per_source {
            return Err(TooMany::FromSource);
        }
        if held.total >= self.max {
            return Err(TooMany::Overall);
        }
        held.total += 1;
        *held.by_source.entry(source).or_insert(0) += 1;
        Ok(RingingSlot {
            limit: self.clone(),
            source,
        })
    }

    /// Unconfirmed calls held now.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for RingingSlot {
    fn drop(&mut self) {
        let mut held = self.limit.held.lock().unwrap_or_else(|e| e.into_inner());
        held.total -= 1;
        if let Some(n) = held.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                held.by_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn one_source_cannot_hold_more_than_its_share() {
        let limit = RingingLimit::new(10, 3);
        let held: Vec<_> = (0..3).map(|_| limit.take(ip(1)).unwrap()).collect();
        assert_eq!(limit.take(ip(1)).unwrap_err(), TooMany::FromSource);
        // Others still get in.
        let other = limit.take(ip(2)).unwrap();
        drop(held);
        assert_eq!(limit.held(), 1);
        assert!(limit.take(ip(1)).is_ok());
        drop(other);
    }

    #[test]
    fn many_sources_together_stop_at_the_overall_cap_and_places_come_back() {
        let limit = RingingLimit::new(5, 3);
        let held: Vec<_> = (1..=5).map(|i| limit.take(ip(i)).unwrap()).collect();
        assert_eq!(limit.take(ip(9)).unwrap_err(), TooMany::Overall);
        drop(held);
        assert_eq!(limit.held(), 0);
        assert!(limit.held.lock().unwrap().by_source.is_empty());
        assert!(limit.take(ip(9)).is_ok());
    }
}
