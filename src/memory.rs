//! Giving freed memory back to the system. glibc's allocator keeps the
//! pages a burst of work freed (a SIP flood's transactions and buffers)
//! for reuse, so the daemon's RSS would stay at the flood's peak for good.

/// Returns the free pages at the top of the heaps to the system.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
