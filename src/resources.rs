//! The process's share of the machine: memory handed back after a burst,
//! and an open-file limit that fits the RTP port range.

/// Returns the free pages at the top of the heaps to the system. glibc's
/// allocator keeps the pages a burst of work freed (a SIP flood's
/// transactions and buffers) for reuse, so the daemon's RSS would stay at
/// the burst's peak for good.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The open-file limit before and after [`raise_open_files`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    pub before: u64,
    pub now: u64,
    /// The hard limit: as far as an unprivileged process can go.
    pub hard: u64,
}

/// Raises the soft open-file limit to `needed` (at most the hard limit):
/// the common default of 1,024 runs out at a few hundred calls, each of
/// which holds two RTP sockets besides its client's.
pub fn raise_open_files(needed: u64) -> std::io::Result<OpenFiles> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    let hard = limit.rlim_max;
    if before < needed {
        limit.rlim_cur = needed.min(hard);
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(OpenFiles {
        before,
        now: limit.rlim_cur.max(before),
        hard,
    })
}

/// Files the process has open now, and its soft limit.
pub fn open_files() -> Option<(usize, u64)> {
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count();
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes `limit`.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0)
        .then_some((open, limit.rlim_cur))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_raised_to_what_is_needed_and_open_files_are_counted() {
        let now = raise_open_files(64).unwrap();
        assert!(now.now >= 64.min(now.hard));
        let (open, limit) = open_files().unwrap();
        assert!(open >= 3, "stdin, stdout, stderr at least: {open}");
        assert_eq!(limit, now.now);
        // A file opened shows up.
        let f = std::fs::File::open("/proc/self/status").unwrap();
        assert!(open_files().unwrap().0 > open - 1);
        drop(f);
    }
}
