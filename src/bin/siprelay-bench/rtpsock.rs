//! RTP sockets with kernel receive timestamps, drained in batches.
//!
//! Each datagram's arrival time comes from the kernel (SO_TIMESTAMPNS, wall
//! clock), not from when the bench got round to reading it, so jitter and
//! latency measured here do not include the bench's own scheduling delays.
//! One `recvmmsg` call reads everything a socket holds.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

/// Datagrams read per `recvmmsg` call.
pub const BATCH: usize = 16;
const DATAGRAM: usize = 2048;
const CONTROL: usize = 64;

/// Binds a non-blocking loopback UDP socket with kernel timestamps on.
pub fn bind() -> io::Result<UdpSocket> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    s.set_nonblocking(true)?;
    let on: libc::c_int = 1;
    // SAFETY: a valid fd and a c_int option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(s)
}

/// One received datagram.
pub struct Datagram<'a> {
    pub data: &'a [u8],
    /// Source port (the source address is always loopback here).
    pub from_port: u16,
    /// Kernel receive time, wall clock: (seconds, nanoseconds).
    pub stamp: Option<(i64, i64)>,
}

/// Reusable buffers for `recvmmsg`: one set for all sockets.
pub struct Receiver {
    bufs: Box<[[u8; DATAGRAM]; BATCH]>,
    controls: Box<[[u64; CONTROL / 8]; BATCH]>,
    names: Box<[libc::sockaddr_in; BATCH]>,
    iovs: Box<[libc::iovec; BATCH]>,
    msgs: Box<[libc::mmsghdr; BATCH]>,
}

impl Receiver {
    pub fn new() -> Receiver {
        // SAFETY: these C structs are plain data for which all-zero is valid.
        unsafe {
            Receiver {
                bufs: Box::new([[0; DATAGRAM]; BATCH]),
                controls: Box::new([[0; CONTROL / 8]; BATCH]),
                names: Box::new(zeroed()),
                iovs: Box::new(zeroed()),
                msgs: Box::new(zeroed()),
            }
        }
    }

    /// Reads every datagram waiting on `sock` (in batches), calling `each`
    /// for each one. Returns how many were read.
    pub fn drain(&mut self, sock: &UdpSocket, mut each: impl FnMut(Datagram<'_>)) -> usize {
        let mut total = 0;
        loop {
            for i in 0..BATCH {
                self.iovs[i] = libc::iovec {
                    iov_base: self.bufs[i].as_mut_ptr().cast(),
                    iov_len: DATAGRAM,
                };
                let hdr = &mut self.msgs[i].msg_hdr;
                hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_in).cast();
                hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
                hdr.msg_iov = &mut self.iovs[i];
                hdr.msg_iovlen = 1;
                hdr.msg_control = self.controls[i].as_mut_ptr().cast();
                hdr.msg_controllen = CONTROL as _;
                hdr.msg_flags = 0;
                self.msgs[i].msg_len = 0;
            }
            // SAFETY: every header points into buffers owned by self that
            // outlive the call, with the lengths given.
            let n = unsafe {
                libc::recvmmsg(
                    sock.as_raw_fd(),
                    self.msgs.as_mut_ptr(),
                    BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n <= 0 {
                return total;
            }
            let n = n as usize;
            for i in 0..n {
                let len = self.msgs[i].msg_len as usize;
                let stamp = timestamp(&self.msgs[i].msg_hdr);
                each(Datagram {
                    data: &self.bufs[i][..len.min(DATAGRAM)],
                    from_port: u16::from_be(self.names[i].sin_port),
                    stamp,
                });
            }
            total += n;
            if n < BATCH {
                return total;
            }
        }
    }
}

/// The SCM_TIMESTAMPNS control message of a received datagram.
fn timestamp(hdr: &libc::msghdr) -> Option<(i64, i64)> {
    // SAFETY: hdr was filled by recvmmsg; the CMSG macros stay within
    // msg_control..msg_control+msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                return Some((ts.tv_sec, ts.tv_nsec));
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_with_kernel_timestamps() {
        let rx = bind().unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        for i in 0..(BATCH + 3) as u8 {
            tx.send_to(&[i; 20], to).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut r = Receiver::new();
        let mut seen = Vec::new();
        let n = r.drain(&rx, |d| {
            assert_eq!(d.from_port, tx.local_addr().unwrap().port());
            assert!(d.stamp.unwrap().0 > 1_600_000_000);
            seen.push(d.data[0]);
        });
        assert_eq!(n, BATCH + 3);
        assert_eq!(seen, (0..(BATCH + 3) as u8).collect::<Vec<_>>());
        assert_eq!(r.drain(&rx, |_| {}), 0);
    }
}
