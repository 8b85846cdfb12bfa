//! Finds connections whose peer has hung up, so that another connection's
//! thread can release their locks before serving a command that could see
//! them (`PROTOCOL.md`: the release happens before the server serves
//! anything else that depends on it).
//!
//! The owner thread of a closed connection may not have been scheduled yet
//! when another client's command arrives; this epoll set (level-triggered,
//! hang-up only, no thread of its own) is polled without blocking by the
//! serving thread, which then orphans idle hung-up connections on their
//! owners' behalf.

use std::io;
use std::os::fd::RawFd;

/// Batches of 64 hang-ups read per [`Reaper::poll`]: enough for a burst of
/// thousands of closes.
const MAX_BATCHES: usize = 256;

/// An epoll set of every live connection, for hang-ups only.
pub struct Reaper {
    epoll: RawFd,
}

impl Reaper {
    /// Creates the epoll set.
    ///
    /// # Errors
    /// As `epoll_create1(2)`.
    pub fn new() -> io::Result<Reaper> {
        // SAFETY: plain syscall, no pointers.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Reaper { epoll })
    }

    /// Watches `fd` for hang-up under `key`.
    ///
    /// # Errors
    /// As `epoll_ctl(2)`.
    pub fn add(&self, fd: RawFd, key: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLRDHUP | libc::EPOLLHUP) as u32,
            u64: key,
        };
        // SAFETY: `event` lives across the call.
        if unsafe { libc::epoll_ctl(self.epoll, libc::EPOLL_CTL_ADD, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stops watching `fd` (closing it does the same).
    pub fn remove(&self, fd: RawFd) {
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `add`; failure (not in the set) is harmless.
        unsafe {
            libc::epoll_ctl(self.epoll, libc::EPOLL_CTL_DEL, fd, &mut event);
        }
    }

    /// Calls `hung_up` with the key of each connection whose peer has hung
    /// up, without blocking.
    pub fn poll(&self, mut hung_up: impl FnMut(u64)) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        // Level-triggered: a full buffer means there may be more. Bounded,
        // since entries that stay reported (a busy hang-up) recur.
        for _ in 0..MAX_BATCHES {
            // SAFETY: the buffer outlives the call and its length is passed.
            let n = unsafe {
                libc::epoll_wait(self.epoll, events.as_mut_ptr(), events.len() as i32, 0)
            };
            let n = n.max(0) as usize;
            for event in &events[..n] {
                hung_up(event.u64);
            }
            if n < events.len() {
                break;
            }
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // SAFETY: closes the descriptor this struct owns, once.
        unsafe {
            libc::close(self.epoll);
        }
    }
}

/// Bytes the peer sent that nobody has read yet (`FIONREAD`).
pub fn unread_bytes(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int to the pointer given.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } < 0 {
        return 0;
    }
    n.max(0) as usize
}
