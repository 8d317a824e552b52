//! `--floor`: what the kernel alone charges on this machine for the system
//! calls a bridged call cannot avoid, measured the simplest way (one thread,
//! no event loop), so the daemon's figure can be read against it.
//!
//! A bridged call moves, per second, 50 RTP packets each way (a UDP send
//! and a receive per packet) and 50 WebSocket frames each way (a TCP send
//! and a receive per frame). Both processes share that cost; the floor for
//! the two together is 100 UDP pairs plus 100 TCP pairs per call-second.
//!
//! Each pair is measured three ways: one system call per message; many
//! messages of one socket per call (`sendmmsg`/`recvmmsg`, which is what a
//! design with one RTP port for all calls could use); and one message on
//! each of many sockets, all in one io_uring submission (what a design with a
//! port pair per call could use). Where batching leaves the cost where it
//! was, the time goes to the network stack, not to entering the kernel, and
//! no design that moves the same messages can go below it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use io_uring::{opcode, types, IoUring};

/// Messages per measurement.
const MESSAGES: usize = 100_000;
/// Sockets (or connections) batched per io_uring submission: a shard's worth of calls.
const SOCKETS: usize = 200;
/// Datagrams per `sendmmsg`/`recvmmsg`.
const BATCH: usize = 64;
const RTP_PACKET: usize = 172;
const WS_FRAME: usize = 450;

/// CPU time of this process (user + system), in microseconds.
fn cpu_us() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 * 1e6 + tv.tv_usec as f64;
    t(usage.ru_utime) + t(usage.ru_stime)
}

/// CPU microseconds per message of `run`, which moves `MESSAGES` messages.
fn per_message(run: impl FnOnce() -> std::io::Result<()>) -> std::io::Result<f64> {
    let start = cpu_us();
    run()?;
    Ok((cpu_us() - start) / MESSAGES as f64)
}

fn udp_pair() -> std::io::Result<(UdpSocket, UdpSocket)> {
    let rx = UdpSocket::bind("127.0.0.1:0")?;
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    tx.connect(rx.local_addr()?)?;
    Ok((tx, rx))
}

fn tcp_pair(listener: &TcpListener) -> std::io::Result<(TcpStream, TcpStream)> {
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    Ok((server, client))
}

/// One loopback UDP send plus its receive (an RTP packet), a system call each.
pub fn udp_plain_us() -> std::io::Result<f64> {
    let (tx, rx) = udp_pair()?;
    let packet = [0u8; RTP_PACKET];
    let mut buf = [0u8; 2048];
    per_message(|| {
        for _ in 0..MESSAGES {
            tx.send(&packet)?;
            rx.recv(&mut buf)?;
        }
        Ok(())
    })
}

/// The same, `BATCH` datagrams of one socket per `sendmmsg` and `recvmmsg`.
pub fn udp_mmsg_us() -> std::io::Result<f64> {
    let (tx, rx) = udp_pair()?;
    let packet = [0u8; RTP_PACKET];
    let mut buffers = vec![[0u8; 2048]; BATCH];
    let mut send_iov: Vec<libc::iovec> = (0..BATCH)
        .map(|_| libc::iovec {
            iov_base: packet.as_ptr() as *mut libc::c_void,
            iov_len: packet.len(),
        })
        .collect();
    let mut recv_iov: Vec<libc::iovec> = buffers
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    let headers = |iov: &mut [libc::iovec]| -> Vec<libc::mmsghdr> {
        iov.iter_mut()
            .map(|v| {
                // SAFETY: an all-zero mmsghdr is a valid empty header.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect()
    };
    let mut sends = headers(&mut send_iov);
    let mut receives = headers(&mut recv_iov);
    per_message(|| {
        for _ in 0..MESSAGES / BATCH {
            // SAFETY: every header points at a live iovec over a live buffer.
            let sent =
                unsafe { libc::sendmmsg(tx.as_raw_fd(), sends.as_mut_ptr(), BATCH as u32, 0) };
            if sent != BATCH as i32 {
                return Err(std::io::Error::last_os_error());
            }
            let mut got = 0;
            while got < BATCH {
                // SAFETY: as above; at most the remaining headers are filled.
                let n = unsafe {
                    libc::recvmmsg(
                        rx.as_raw_fd(),
                        receives[got..].as_mut_ptr(),
                        (BATCH - got) as u32,
                        0,
                        std::ptr::null_mut(),
                    )
                };
                if n <= 0 {
                    return Err(std::io::Error::last_os_error());
                }
                got += n as usize;
            }
        }
        Ok(())
    })
    .map(|us| us * MESSAGES as f64 / (MESSAGES / BATCH * BATCH) as f64)
}

/// One message on each of `SOCKETS` sockets, sent in one io_uring
/// submission, then received in another.
fn uring_rounds(senders: &[RawFd], receivers: &[RawFd], message: usize) -> std::io::Result<()> {
    let mut ring = IoUring::new(2 * SOCKETS as u32)?;
    let payload = vec![0u8; message];
    let mut buffers = vec![[0u8; 4096]; receivers.len()];
    let mut submit_all = |entries: Vec<io_uring::squeue::Entry>| -> std::io::Result<()> {
        // SAFETY: every entry's buffer (payload, buffers) outlives the wait below.
        unsafe {
            ring.submission()
                .push_multiple(&entries)
                .map_err(|_| std::io::Error::other("submission queue full"))?;
        }
        ring.submit_and_wait(entries.len())?;
        for done in ring.completion() {
            if done.result() < message as i32 {
                return Err(std::io::Error::other(format!(
                    "io_uring message of {} bytes, not {message}",
                    done.result()
                )));
            }
        }
        Ok(())
    };
    for _ in 0..MESSAGES / senders.len() {
        let sends = senders
            .iter()
            .map(|&fd| opcode::Send::new(types::Fd(fd), payload.as_ptr(), message as u32).build())
            .collect();
        submit_all(sends)?;
        let receives = receivers
            .iter()
            .zip(buffers.iter_mut())
            .map(|(&fd, buf)| {
                opcode::Recv::new(types::Fd(fd), buf.as_mut_ptr(), buf.len() as u32).build()
            })
            .collect();
        submit_all(receives)?;
    }
    Ok(())
}

/// UDP pairs on `SOCKETS` sockets, batched through io_uring.
pub fn udp_uring_us() -> std::io::Result<f64> {
    let pairs = (0..SOCKETS)
        .map(|_| udp_pair())
        .collect::<std::io::Result<Vec<_>>>()?;
    let senders: Vec<RawFd> = pairs.iter().map(|(tx, _)| tx.as_raw_fd()).collect();
    let receivers: Vec<RawFd> = pairs.iter().map(|(_, rx)| rx.as_raw_fd()).collect();
    per_message(|| uring_rounds(&senders, &receivers, RTP_PACKET))
}

/// One loopback TCP send plus its receive (a WebSocket audio frame), Nagle
/// off as siprelay runs it, a system call each.
pub fn tcp_plain_us() -> std::io::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let (mut server, mut client) = tcp_pair(&listener)?;
    let frame = [0u8; WS_FRAME];
    let mut buf = [0u8; 4096];
    per_message(|| {
        for _ in 0..MESSAGES {
            server.write_all(&frame)?;
            let mut got = 0;
            while got < frame.len() {
                got += client.read(&mut buf)?;
            }
        }
        Ok(())
    })
}

/// TCP pairs on `SOCKETS` connections, batched through io_uring.
pub fn tcp_uring_us() -> std::io::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let pairs = (0..SOCKETS)
        .map(|_| tcp_pair(&listener))
        .collect::<std::io::Result<Vec<_>>>()?;
    let senders: Vec<RawFd> = pairs.iter().map(|(s, _)| s.as_raw_fd()).collect();
    let receivers: Vec<RawFd> = pairs.iter().map(|(_, c)| c.as_raw_fd()).collect();
    per_message(|| uring_rounds(&senders, &receivers, WS_FRAME))
}

/// A call-second's floor for both processes: 100 UDP and 100 TCP pairs.
fn per_call_second(udp: f64, tcp: f64) -> f64 {
    100.0 * udp + 100.0 * tcp
}

pub fn report() -> std::io::Result<()> {
    let wall = Instant::now();
    // io_uring may be switched off (a sysctl, a container's seccomp
    // profile): its rows then say so and the rest still stands.
    let uring = |r: std::io::Result<f64>| match r {
        Ok(us) => (format!("{us:.2} µs"), us),
        Err(e) => (format!("unavailable ({e})"), f64::INFINITY),
    };
    let (udp_plain, udp_mmsg) = (udp_plain_us()?, udp_mmsg_us()?);
    let (udp_uring_text, udp_uring) = uring(udp_uring_us());
    let tcp_plain = tcp_plain_us()?;
    let (tcp_uring_text, tcp_uring) = uring(tcp_uring_us());
    println!(
        "system-call floor on this machine ({:.1} s to measure), CPU per send + receive:",
        wall.elapsed().as_secs_f64()
    );
    println!("  UDP (RTP packet)          one call each {udp_plain:.2} µs, sendmmsg/recvmmsg ×{BATCH} {udp_mmsg:.2} µs, io_uring ×{SOCKETS} sockets {udp_uring_text}");
    println!(
        "  TCP (WebSocket frame)     one call each {tcp_plain:.2} µs, io_uring ×{SOCKETS} connections {tcp_uring_text}"
    );
    let plain = per_call_second(udp_plain, tcp_plain);
    let best = per_call_second(
        udp_plain.min(udp_mmsg).min(udp_uring),
        tcp_plain.min(tcp_uring),
    );
    println!("  one bridged call, both processes       {plain:.0} µs per call-second (cheapest batching: {best:.0})");
    println!(
        "    (100 UDP pairs + 100 TCP pairs; about half falls to the daemon: {:.0} µs, {:.0} batched)",
        plain / 2.0,
        best / 2.0
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batched_variants_move_every_message() {
        // Each measurement returns an error if a message goes missing or
        // arrives short; the figures themselves are not asserted.
        assert!(udp_mmsg_us().unwrap() > 0.0);
        assert!(udp_uring_us().unwrap() > 0.0);
        assert!(tcp_uring_us().unwrap() > 0.0);
    }
}
