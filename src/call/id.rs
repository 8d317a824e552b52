//! `CallId`: the short, protocol-safe name a call goes by on every interface.
//!
//! SIP Call-IDs may hold characters that clash with the text protocol (`#`,
//! `:`, spaces) and leak host names, so calls get their own ids: 16 lowercase
//! hex digits, unique for the life of the process and unguessable enough that
//! clients cannot stumble onto each other's calls.

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(Arc<str>);

impl CallId {
    /// A fresh id: a process-wide counter mixed with a per-process random key.
    pub fn generate() -> CallId {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        static KEY: OnceLock<RandomState> = OnceLock::new();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut h = KEY.get_or_init(RandomState::new).build_hasher();
        h.write_u64(n);
        // The low 16 bits are the counter itself, so two ids can only collide
        // after 65,536 calls *and* a 48-bit hash collision.
        let id = (h.finish() & !0xFFFF) | (n & 0xFFFF);
        CallId(Arc::from(format!("{id:016x}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for CallId {
    fn from(s: &str) -> Self {
        CallId(Arc::from(s))
    }
}

impl Borrow<str> for CallId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_hex_and_protocol_safe() {
        let ids: HashSet<CallId> = (0..100_000).map(|_| CallId::generate()).collect();
        assert_eq!(ids.len(), 100_000);
        for id in ids.iter().take(100) {
            assert_eq!(id.as_str().len(), 16);
            assert!(id
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
    }
}
