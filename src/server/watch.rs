//! Notices, while a connection waits in line, that its peer went away.
//!
//! A waiting connection thread blocks on its grant channel, not on its
//! socket, so it cannot see a FIN or RST itself. One watcher thread per
//! server keeps an epoll set of the sockets of connections that have waited
//! (for hang-up only, not for data: pipelined commands must wait) and tells
//! the waiter at once.
//!
//! A socket stays in the set from its connection's first wait until the
//! connection ends ([`Watch`]), not just during each wait, which saves
//! two `epoll_ctl` per wait and grant (issue 8). That is
//! sound because a hang-up is final: once the peer has closed (or
//! half-closed, which the server cannot tell apart, `lockd-protocol(7)`
//! NOTES) no later wait of the connection can be answered, so the one
//! message a hang-up leaves in [`Watch::closed`] is never stale.

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

/// The epoll set and its thread. Dropping it stops the thread.
pub struct CloseWatcher {
    shared: Arc<Shared>,
}

struct Shared {
    epoll: RawFd,
    waiters: Mutex<HashMap<u64, Sender<()>>>,
    stop: AtomicBool,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: closes the epoll descriptor this struct owns, once.
        unsafe {
            libc::close(self.epoll);
        }
    }
}

impl CloseWatcher {
    /// Creates the epoll set and starts its thread.
    ///
    /// # Errors
    /// As `epoll_create1(2)` and thread spawning.
    pub fn start() -> io::Result<CloseWatcher> {
        // SAFETY: plain syscall, no pointers.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(io::Error::last_os_error());
        }
        let shared = Arc::new(Shared {
            epoll,
            waiters: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
        });
        let thread_shared = Arc::clone(&shared);
        thread::Builder::new()
            .name("lockd-closewatch".into())
            .stack_size(64 * 1024)
            .spawn(move || run(&thread_shared))?;
        Ok(CloseWatcher { shared })
    }

    /// Watches `fd` for hang-up under `key` (unique among the watched)
    /// until the returned [`Watch`] is dropped, which must happen before
    /// `fd` is closed. The hang-up is reported once, at once if the peer
    /// has already hung up.
    ///
    /// # Errors
    /// As `epoll_ctl(2)`.
    pub fn watch(&self, fd: RawFd, key: u64) -> io::Result<Watch<'_>> {
        let (sender, closed) = bounded(1);
        self.shared.waiters.lock().insert(key, sender);
        // One-shot: a hang-up is final, and it is reported once.
        let mut event = libc::epoll_event {
            events: (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLONESHOT)
                as u32,
            u64: key,
        };
        // SAFETY: `event` is a live epoll_event for the duration of the call.
        let rc = unsafe { libc::epoll_ctl(self.shared.epoll, libc::EPOLL_CTL_ADD, fd, &mut event) };
        if rc < 0 {
            self.shared.waiters.lock().remove(&key);
            return Err(io::Error::last_os_error());
        }
        Ok(Watch {
            watcher: self,
            fd,
            key,
            closed,
        })
    }

    /// How many sockets are watched now.
    pub fn watched(&self) -> usize {
        self.shared.waiters.lock().len()
    }
}

/// One socket's place in a [`CloseWatcher`]; dropping it stops the
/// watching (drop it before closing the socket).
#[must_use = "dropping the watch stops watching the socket"]
pub struct Watch<'a> {
    watcher: &'a CloseWatcher,
    fd: RawFd,
    key: u64,
    closed: Receiver<()>,
}

impl Watch<'_> {
    /// Receives one message once the peer has hung up.
    pub fn closed(&self) -> &Receiver<()> {
        &self.closed
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let shared = &self.watcher.shared;
        shared.waiters.lock().remove(&self.key);
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `watch`; the fd is still open (the owner drops the
        // watch first), so it cannot be another connection's socket.
        unsafe {
            libc::epoll_ctl(shared.epoll, libc::EPOLL_CTL_DEL, self.fd, &mut event);
        }
    }
}

impl Drop for CloseWatcher {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

fn run(shared: &Shared) {
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
    while !shared.stop.load(Ordering::Relaxed) {
        // SAFETY: the buffer outlives the call and its length is passed.
        let n = unsafe {
            libc::epoll_wait(shared.epoll, events.as_mut_ptr(), events.len() as i32, 200)
        };
        if n <= 0 {
            continue;
        }
        let waiters = shared.waiters.lock();
        for event in &events[..n as usize] {
            let key = event.u64;
            if let Some(closed) = waiters.get(&key) {
                let _ = closed.try_send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    #[test]
    fn a_hang_up_is_reported_once_and_the_watch_leaves_no_entry() {
        let watcher = CloseWatcher::start().expect("epoll");
        let (ours, peer) = UnixStream::pair().expect("socketpair");
        let (other, other_peer) = UnixStream::pair().expect("socketpair");
        let watch = watcher.watch(ours.as_raw_fd(), 1).expect("watch");
        let other_watch = watcher.watch(other.as_raw_fd(), 2).expect("watch");
        assert_eq!(watcher.watched(), 2);
        // Data is not a hang-up.
        (&peer).write_all(b"g x\n").expect("write");
        let quiet = Duration::from_millis(50);
        assert!(watch.closed().recv_timeout(quiet).is_err());
        drop(peer);
        let wait = Duration::from_secs(5);
        assert_eq!(watch.closed().recv_timeout(wait), Ok(()));
        assert!(
            watch.closed().recv_timeout(quiet).is_err(),
            "reported twice"
        );
        assert!(other_watch.closed().try_recv().is_err());
        drop(watch);
        assert_eq!(watcher.watched(), 1);
        drop(other_watch);
        assert_eq!(watcher.watched(), 0);
        // A socket whose peer is already gone is reported at once.
        drop(other_peer);
        let late = watcher.watch(other.as_raw_fd(), 3).expect("watch");
        assert_eq!(late.closed().recv_timeout(wait), Ok(()));
    }
}
