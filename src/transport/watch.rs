//! Notices, while a connection waits in line, that its peer went away.
//!
//! A waiting connection thread blocks on its grant channel, not on its
//! socket, so it cannot see a FIN or RST itself. One watcher thread per
//! server keeps an epoll set of the sockets of waiting connections (for
//! hang-up only, not for data: pipelined commands must wait) and tells the
//! waiter at once.

use crossbeam_channel::Sender;
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

    /// Watches `fd` until [`CloseWatcher::unwatch`]; sends on `closed` when
    /// the peer hangs up (at once if it already has).
    ///
    /// # Errors
    /// As `epoll_ctl(2)`.
    pub fn watch(&self, fd: RawFd, key: u64, closed: Sender<()>) -> io::Result<()> {
        self.shared.waiters.lock().insert(key, closed);
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
        Ok(())
    }

    /// Stops watching `fd`.
    pub fn unwatch(&self, fd: RawFd, key: u64) {
        self.shared.waiters.lock().remove(&key);
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `watch`; a descriptor not in the set just fails.
        unsafe {
            libc::epoll_ctl(self.shared.epoll, libc::EPOLL_CTL_DEL, fd, &mut event);
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
