//! What /proc says about a process (CPU time, memory, descriptors) and the
//! descriptor limit.

use std::time::Instant;

/// Clock ticks per second of /proc's CPU times.
pub fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// utime + stime of a `stat` file (a process's or a thread's), in seconds.
pub fn cpu_seconds(stat_path: &str) -> Option<f64> {
    let text = std::fs::read_to_string(stat_path).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split_ascii_whitespace();
    // Field 3 (state) is the first here; utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / clk_tck() as f64)
}

/// A value in kB from a `status` file (`VmRSS`, `VmHWM`, `Threads`).
pub fn status_field(pid: u32, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

pub fn rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS").unwrap_or(0)
}

pub fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

/// CPU time of a process at one instant, to difference later.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    pub at: Instant,
    pub cpu_s: f64,
}

impl CpuSample {
    pub fn take(stat_path: &str) -> CpuSample {
        CpuSample {
            at: Instant::now(),
            cpu_s: cpu_seconds(stat_path).unwrap_or(0.0),
        }
    }

    /// CPU seconds used between `self` and `later`, and the wall seconds.
    pub fn until(&self, later: &CpuSample) -> (f64, f64) {
        (
            later.cpu_s - self.cpu_s,
            later.at.duration_since(self.at).as_secs_f64(),
        )
    }
}

/// Busy and total CPU seconds of the whole machine (all cores), from /proc/stat.
pub fn machine_cpu() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().next() else {
        return (0.0, 0.0);
    };
    let v: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    let tck = clk_tck() as f64;
    ((total - idle) as f64 / tck, total as f64 / tck)
}

/// UDP sockets on 127.0.0.1 whose local port passes `wanted`: how many,
/// the bytes waiting in their receive queues, and the datagrams the kernel
/// dropped because a receive queue was full (from /proc/net/udp).
pub fn udp_queues(wanted: impl Fn(u16) -> bool) -> UdpQueues {
    let mut q = UdpQueues::default();
    let text = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        let (Some(local), Some(queues), Some(drops)) = (f.get(1), f.get(4), f.get(12)) else {
            continue;
        };
        let Some(port) = local
            .split_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
        else {
            continue;
        };
        if !wanted(port) {
            continue;
        }
        q.sockets += 1;
        q.rx_queue_bytes += queues
            .split_once(':')
            .and_then(|(_, rx)| u64::from_str_radix(rx, 16).ok())
            .unwrap_or(0);
        q.drops += drops.parse::<u64>().unwrap_or(0);
    }
    q
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct UdpQueues {
    pub sockets: u64,
    pub rx_queue_bytes: u64,
    pub drops: u64,
}

/// Restricts the calling thread (and the threads and children it starts
/// afterwards) to `cpus`.
pub fn pin_to(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET stays within it for cpu < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// This thread's kernel id, for /proc/self/task/{tid}/stat.
pub fn thread_id() -> i64 {
    // SAFETY: gettid has no preconditions.
    i64::from(unsafe { libc::gettid() })
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns (before, after).
/// A child started afterwards (the daemon) inherits the raised limit.
pub fn raise_nofile() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid rlimit to write to.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return (0, 0);
    }
    let before: u64 = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: lim is a valid rlimit; failure leaves the limit unchanged.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return (before, before);
        }
    }
    (before, lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        assert!(cpu_seconds("/proc/self/stat").is_some());
        let pid = std::process::id();
        assert!(rss_kib(pid) > 0);
        assert!(open_fds(pid) >= 3);
        assert!(status_field(pid, "Threads").unwrap() >= 1);
    }
}
