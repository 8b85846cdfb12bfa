//! A counting semaphore that bounds how many listings are being made at
//! once, server-wide.
//!
//! Making a piece of a listing is pure CPU (copying pages of the table,
//! formatting them). Forty clients that each ask for `dj` over a million
//! locks would otherwise be forty runnable threads on a machine with a few
//! cores: every other client's thread waits its turn behind them, and one
//! of them preempted while it holds the table's read lock for a page
//! makes every writer wait for it to be scheduled again. With one permit
//! per core, the listings queue for the CPU among themselves instead. A
//! permit is held for one piece only (at most `--max-output` bytes), never
//! while the piece is written to a socket that may block.

use parking_lot::{Condvar, Mutex};

/// See the module docs.
pub(crate) struct Permits {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Permits {
    /// One permit per CPU this process may run on (at least one).
    pub(crate) fn per_core() -> Permits {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Permits::new(cores)
    }

    pub(crate) fn new(permits: usize) -> Permits {
        Permits {
            free: Mutex::new(permits.max(1)),
            freed: Condvar::new(),
        }
    }

    /// Runs `work` once a permit is free, holding it meanwhile.
    pub(crate) fn with<T>(&self, work: impl FnOnce() -> T) -> T {
        {
            let mut free = self.free.lock();
            while *free == 0 {
                self.freed.wait(&mut free);
            }
            *free -= 1;
        }
        // Given back even if `work` panics, so no permit is ever lost.
        let _permit = Permit(self);
        work()
    }
}

struct Permit<'a>(&'a Permits);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock() += 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::Permits;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    #[test]
    fn no_more_than_the_permits_run_at_once_and_all_run() {
        let permits = Arc::new(Permits::new(2));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (permits, running, most) = (
                    Arc::clone(&permits),
                    Arc::clone(&running),
                    Arc::clone(&most),
                );
                thread::spawn(move || {
                    permits.with(|| {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        thread::sleep(Duration::from_millis(10));
                        running.fetch_sub(1, Ordering::SeqCst);
                        i
                    })
                })
            })
            .collect();
        let done: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
        assert_eq!(done, (0..8).sum::<usize>());
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }
}
