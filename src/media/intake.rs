//! `RtpIntake`: one shard's receiving side (IO shell). All the shard's RTP
//! sockets sit in one epoll set of its own, and that set's descriptor is
//! what tokio waits on; so a wake-up of the shard reads every socket that
//! became readable meanwhile, each in one `recvmmsg`, with no task per call
//! and no `EAGAIN` read per packet.
//!
//! Sockets are registered edge-triggered and drained on every event; a
//! short `epoll_wait` result therefore means nothing is left, and the
//! readiness can be cleared without another call.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::io::Interest;

use super::receive::RtpReceiver;
use super::session::MediaSession;
use super::socket::{RecvBatch, BATCH};

/// Events fetched per `epoll_wait`.
const EVENTS: usize = 256;
/// Reads in a row that fail with an error other than `EAGAIN` (a pending
/// ICMP error, say) before a socket is left until its next event.
const ERRORS_IN_A_ROW: usize = 4;

/// The shard's epoll set.
pub struct EpollSet(OwnedFd);

impl AsRawFd for EpollSet {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl EpollSet {
    fn new() -> io::Result<EpollSet> {
        // SAFETY: plain system call; a valid descriptor is owned below.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just created and nothing else owns it.
        Ok(EpollSet(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn control(&self, op: libc::c_int, fd: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: token,
        };
        // SAFETY: both descriptors are open; the event is read during the call only.
        if unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Ready tokens, without waiting.
    fn ready(&self, events: &mut [libc::epoll_event; EVENTS]) -> io::Result<usize> {
        // SAFETY: the buffer holds EVENTS entries.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.as_mut_ptr(),
                EVENTS as libc::c_int,
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// The epoll set as tokio sees it: readable when any member socket is.
pub struct IntakeWaker(AsyncFd<EpollSet>);

impl IntakeWaker {
    pub async fn readable(&self) -> io::Result<AsyncFdReadyGuard<'_, EpollSet>> {
        self.0.readable().await
    }
}

/// The shard's calls, by epoll token (their slot).
pub struct RtpIntake {
    receivers: Vec<Option<RtpReceiver>>,
    free: Vec<usize>,
    batch: RecvBatch,
    events: Box<[libc::epoll_event; EVENTS]>,
}

/// Creates a shard's intake and what its task waits on. Needs a tokio runtime.
pub fn intake() -> io::Result<(RtpIntake, IntakeWaker)> {
    // SAFETY: EpollSet owns its descriptor, never replaces it, and closes
    // it only when dropped, that is with the AsyncFd.
    let set = unsafe { AsyncFd::register_with_interest(EpollSet::new()?, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    let intake = RtpIntake {
        receivers: Vec::new(),
        free: Vec::new(),
        batch: RecvBatch::default(),
        events: Box::new([libc::epoll_event { events: 0, u64: 0 }; EVENTS]),
    };
    Ok((intake, IntakeWaker(set)))
}

impl RtpIntake {
    /// Reads `session`'s socket from now on (anything already waiting in it too).
    pub fn add(&mut self, waker: &IntakeWaker, session: Arc<MediaSession>) -> io::Result<()> {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.receivers.push(None);
            self.receivers.len() - 1
        });
        let fd = session.rtp.socket.as_raw_fd();
        if let Err(e) = waker
            .0
            .get_ref()
            .control(libc::EPOLL_CTL_ADD, fd, slot as u64)
        {
            self.free.push(slot);
            return Err(e);
        }
        self.receivers[slot] = Some(RtpReceiver::new(session));
        Ok(())
    }

    /// Drops the calls that have ended, closing their sockets.
    pub fn remove_stopped(&mut self, waker: &IntakeWaker) {
        for (slot, entry) in self.receivers.iter_mut().enumerate() {
            if entry.as_ref().is_some_and(|r| r.session().is_stopped()) {
                if let Some(receiver) = entry.take() {
                    let fd = receiver.session().rtp.socket.as_raw_fd();
                    // Taken out before the socket can close, so the slot's
                    // token never names another socket's events.
                    let _ = waker.0.get_ref().control(libc::EPOLL_CTL_DEL, fd, 0);
                    self.free.push(slot);
                }
            }
        }
    }

    /// Reads every socket that is ready, then clears the readiness `guard`
    /// stands for once nothing is left.
    pub fn drain(&mut self, mut guard: AsyncFdReadyGuard<'_, EpollSet>) {
        loop {
            let ready = match guard.get_inner().ready(&mut self.events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(error = %e, "epoll_wait on the RTP sockets failed");
                    return;
                }
            };
            for i in 0..ready {
                let slot = self.events[i].u64 as usize;
                if let Some(Some(receiver)) = self.receivers.get_mut(slot) {
                    read_all(receiver, &mut self.batch);
                }
            }
            if ready < EVENTS {
                guard.clear_ready();
                return;
            }
        }
    }
}

/// Reads `receiver`'s socket until it is empty.
fn read_all(receiver: &mut RtpReceiver, batch: &mut RecvBatch) {
    let mut errors = 0;
    loop {
        let received = match batch.receive(&receiver.session().rtp.socket) {
            Ok(n) => n,
            // A late ICMP error from an earlier send shows up here; it says
            // nothing about what is queued, so read on.
            Err(_) if errors < ERRORS_IN_A_ROW => {
                errors += 1;
                continue;
            }
            Err(_) => return,
        };
        for i in 0..received {
            if let Some((datagram, from)) = batch.datagram(i) {
                receiver.on_datagram(datagram, from);
            }
        }
        // Short means empty: the socket is unconnected and has no
        // IP_RECVERR, so no ICMP error can cut a batch short and wait for
        // the next call.
        if received < BATCH {
            return;
        }
    }
}
