//! `--floor`: what the kernel alone charges on this machine for the system
//! calls a bridged call cannot avoid, measured the simplest way (one thread,
//! blocking sockets, no event loop), so the daemon's figure can be read
//! against it.
//!
//! A bridged call moves, per second, 50 RTP packets each way (a UDP send
//! and a receive per packet) and 50 WebSocket frames each way (a TCP send
//! and a receive per frame). Both processes share that cost; the floor for
//! the two together is 100 UDP pairs plus 100 TCP pairs per call-second.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Instant;

const ROUNDS: u32 = 100_000;

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

/// Microseconds of CPU for one loopback UDP send plus its receive (172-byte RTP packet).
pub fn udp_pair_us() -> std::io::Result<f64> {
    let rx = UdpSocket::bind("127.0.0.1:0")?;
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    tx.connect(rx.local_addr()?)?;
    let packet = [0u8; 172];
    let mut buf = [0u8; 2048];
    let start = cpu_us();
    for _ in 0..ROUNDS {
        tx.send(&packet)?;
        rx.recv(&mut buf)?;
    }
    Ok((cpu_us() - start) / ROUNDS as f64)
}

/// Microseconds of CPU for one loopback TCP send plus its receive (a 450-byte
/// WebSocket audio frame), Nagle off as siprelay runs it.
pub fn tcp_pair_us() -> std::io::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut client = TcpStream::connect(listener.local_addr()?)?;
    let (mut server, _) = listener.accept()?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let frame = [0u8; 450];
    let mut buf = [0u8; 4096];
    let start = cpu_us();
    for _ in 0..ROUNDS {
        server.write_all(&frame)?;
        let mut got = 0;
        while got < frame.len() {
            got += client.read(&mut buf)?;
        }
    }
    Ok((cpu_us() - start) / ROUNDS as f64)
}

pub fn report() -> std::io::Result<()> {
    let wall = Instant::now();
    let udp = udp_pair_us()?;
    let tcp = tcp_pair_us()?;
    let per_call = 100.0 * udp + 100.0 * tcp;
    println!(
        "system-call floor on this machine ({:.1} s to measure)",
        wall.elapsed().as_secs_f64()
    );
    println!("  UDP send + receive (RTP packet)        {udp:.2} µs");
    println!("  TCP send + receive (WebSocket frame)   {tcp:.2} µs");
    println!("  one bridged call, both processes       {per_call:.0} µs per call-second");
    println!(
        "    (100 UDP pairs + 100 TCP pairs; about half falls to the daemon: {:.0} µs)",
        per_call / 2.0
    );
    Ok(())
}
