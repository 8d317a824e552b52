//! `RtpSocket`: a call's non-blocking RTP socket, and `RecvBatch`, the
//! reused buffers that drain one socket in a single `recvmmsg` (IO shell).
//!
//! The socket is not registered with tokio's reactor: the shard that owns
//! the call waits for it through its own epoll set (`intake.rs`), so one
//! wake-up serves every socket that became readable meanwhile.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

/// Datagrams read per `recvmmsg`. A socket holds one packet per 20 ms
/// normally; a short batch tells that the socket is empty without the
/// extra call that would return `EAGAIN`.
pub const BATCH: usize = 4;
/// Largest datagram read whole: G.711 at 60 ms is 492 bytes; longer ones
/// are truncated and then fail RTP parsing or decode as a shorter frame.
pub const DATAGRAM: usize = 2048;

#[derive(Debug)]
pub struct RtpSocket(UdpSocket);

impl RtpSocket {
    /// Binds `addr`, non-blocking.
    pub fn bind(addr: SocketAddr) -> io::Result<RtpSocket> {
        let socket = UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        Ok(RtpSocket(socket))
    }

    /// Sends without waiting; a full send buffer is an error, not a wait.
    pub fn try_send_to(&self, packet: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.0.send_to(packet, to)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    /// Reads and drops whatever is queued (at most a socket buffer's worth):
    /// what anyone sent before the call was answered reaches nobody. The
    /// number of datagrams dropped.
    pub fn discard_pending(&self) -> usize {
        let mut buf = [0u8; DATAGRAM];
        let mut dropped = 0;
        // A socket's receive buffer holds a few thousand datagrams at most.
        while dropped < 65_536 && self.0.recv_from(&mut buf).is_ok() {
            dropped += 1;
        }
        dropped
    }
}

impl AsRawFd for RtpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Buffers for one `recvmmsg` of up to `BATCH` datagrams, shared by all the
/// sockets of a shard.
pub struct RecvBatch {
    buffers: Box<[[u8; DATAGRAM]; BATCH]>,
    sources: [libc::sockaddr_storage; BATCH],
    iovecs: [libc::iovec; BATCH],
    headers: [libc::mmsghdr; BATCH],
    received: usize,
}

// SAFETY: the raw pointers inside are rebuilt before every use and only
// ever point into the batch's own buffers.
unsafe impl Send for RecvBatch {}

impl Default for RecvBatch {
    fn default() -> Self {
        // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C data for
        // which all-zero is a valid value.
        unsafe {
            RecvBatch {
                buffers: Box::new([[0; DATAGRAM]; BATCH]),
                sources: zeroed(),
                iovecs: zeroed(),
                headers: zeroed(),
                received: 0,
            }
        }
    }
}

impl RecvBatch {
    /// Reads what `socket` holds, up to `BATCH` datagrams, without waiting.
    /// Returns how many were read: fewer than `BATCH` means the socket is
    /// empty now. `WouldBlock` comes back as 0.
    pub fn receive(&mut self, socket: &RtpSocket) -> io::Result<usize> {
        for i in 0..BATCH {
            self.iovecs[i] = libc::iovec {
                iov_base: self.buffers[i].as_mut_ptr().cast(),
                iov_len: DATAGRAM,
            };
            let header = &mut self.headers[i];
            header.msg_hdr.msg_name = (&mut self.sources[i] as *mut libc::sockaddr_storage).cast();
            header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_hdr.msg_iov = &mut self.iovecs[i];
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_control = std::ptr::null_mut();
            header.msg_hdr.msg_controllen = 0;
            header.msg_hdr.msg_flags = 0;
            header.msg_len = 0;
        }
        // SAFETY: every header points at buffers owned by `self`, which
        // outlive the call, with their true lengths.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        self.received = 0;
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(0)
            } else {
                Err(e)
            };
        }
        self.received = n as usize;
        Ok(self.received)
    }

    /// The `i`th datagram of the last `receive` and where it came from.
    pub fn datagram(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if i >= self.received {
            return None;
        }
        let len = (self.headers[i].msg_len as usize).min(DATAGRAM);
        let from = source(&self.sources[i])?;
        Some((&self.buffers[i][..len], from))
    }
}

fn source(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a: &libc::sockaddr_in = unsafe { &*(storage as *const _ as *const _) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(storage as *const _ as *const _) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_in_batches_and_reports_sources() {
        let rx = RtpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        for i in 0..(BATCH + 2) as u8 {
            tx.send_to(&[i; 30], to).unwrap();
        }
        let mut batch = RecvBatch::default();
        let mut seen = Vec::new();
        loop {
            let n = batch.receive(&rx).unwrap();
            for i in 0..n {
                let (data, from) = batch.datagram(i).unwrap();
                assert_eq!(from, tx.local_addr().unwrap());
                assert_eq!(data.len(), 30);
                seen.push(data[0]);
            }
            assert!(batch.datagram(n).is_none());
            if n < BATCH {
                break;
            }
        }
        assert_eq!(seen, (0..(BATCH + 2) as u8).collect::<Vec<_>>());
        assert_eq!(batch.receive(&rx).unwrap(), 0, "empty socket reads nothing");
    }

    #[test]
    fn what_was_queued_before_is_discarded() {
        let rx = RtpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        for _ in 0..5 {
            tx.send_to(b"early", to).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(rx.discard_pending(), 5);
        assert_eq!(rx.discard_pending(), 0);
        tx.send_to(b"later", to).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut batch = RecvBatch::default();
        assert_eq!(batch.receive(&rx).unwrap(), 1, "later packets are read");
    }

    #[test]
    fn ipv6_sources_are_read() {
        let Ok(rx) = RtpSocket::bind("[::1]:0".parse().unwrap()) else {
            return; // no IPv6 loopback on this machine
        };
        let tx = UdpSocket::bind("[::1]:0").unwrap();
        tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
        let mut batch = RecvBatch::default();
        assert_eq!(batch.receive(&rx).unwrap(), 1);
        let (data, from) = batch.datagram(0).unwrap();
        assert_eq!((data, from), (&b"hello"[..], tx.local_addr().unwrap()));
    }
}
