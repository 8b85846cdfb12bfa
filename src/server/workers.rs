//! Connection threads that outlive their connection.
//!
//! The server runs a thread per connection, but it need not start and end
//! one per connection. When a connection ends, its thread waits a while
//! ([`ServerConfig::thread_linger`](super::ServerConfig::thread_linger))
//! for the next one; the accept loop hands a new connection to a waiting
//! thread when there is one and starts a thread only when there is none.
//!
//! Why: when ten thousand connections close at once, ten thousand threads
//! that exit spend most of their CPU unmapping their stacks (each unmap
//! interrupts every other core to flush its TLB), CPU that the threads
//! still releasing locks and every bystander need. A waiting thread costs
//! no CPU, and its stack is already mapped for the next connection.
//!
//! Threads that have waited their time end one at a time, at most one per
//! [`RETIRE_GAP`], so that the end of a burst is a trickle of exits, not a
//! storm. Dropping the pool ends every waiting thread at once.

use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// The least time between two waiting threads ending: at most a thousand
/// exits a second, about 6% of one core at the 60 µs an exit cost in a
/// mass close's profile (docs/PERFORMANCE.md).
pub(crate) const RETIRE_GAP: Duration = Duration::from_millis(1);

/// A piece of work run on a pool thread: one connection.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// See the module docs. Dropping it ends the waiting threads.
pub(crate) struct Workers {
    pool: Arc<Pool>,
}

/// What the pool's threads share.
struct Pool {
    queue: Mutex<Queue>,
    /// Signalled when a job is queued, or the pool is dropped.
    ready: Condvar,
    linger: Duration,
    name: &'static str,
    stack: usize,
}

struct Queue {
    jobs: VecDeque<Job>,
    /// Threads waiting for a job that no job has been queued for. `run`
    /// takes one off as it queues a job, so the threads waiting always
    /// number `idle` plus the jobs queued: a queued job is always taken.
    idle: usize,
    /// When the next waiting thread may end.
    next_retire: Instant,
    /// The pool was dropped.
    closed: bool,
}

impl Workers {
    /// A pool of threads named `name` with stacks of `stack` bytes, each of
    /// which waits `linger` for more work before it may end.
    pub(crate) fn new(name: &'static str, stack: usize, linger: Duration) -> Workers {
        Workers {
            pool: Arc::new(Pool {
                queue: Mutex::new(Queue {
                    jobs: VecDeque::new(),
                    idle: 0,
                    next_retire: Instant::now(),
                    closed: false,
                }),
                ready: Condvar::new(),
                linger,
                name,
                stack,
            }),
        }
    }

    /// Runs `job` on a waiting thread, or on a new one if none waits.
    ///
    /// # Errors
    /// No thread waited and a new one could not be started (out of memory
    /// or over a limit on threads); `job` is dropped.
    pub(crate) fn run(&self, job: Job) -> io::Result<()> {
        {
            let mut queue = self.pool.queue.lock();
            if queue.idle > 0 {
                queue.idle -= 1;
                queue.jobs.push_back(job);
                drop(queue);
                self.pool.ready.notify_one();
                return Ok(());
            }
        }
        let pool = Arc::clone(&self.pool);
        thread::Builder::new()
            .name(pool.name.into())
            .stack_size(pool.stack)
            .spawn(move || {
                job();
                pool.serve();
            })
            .map(|_| ())
    }

    /// Threads waiting for work.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.pool.queue.lock().idle
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.pool.queue.lock().closed = true;
        self.pool.ready.notify_all();
    }
}

impl Pool {
    /// A thread's life after its first job: wait for the next, run it,
    /// until it has waited its linger and its turn to end comes, or the
    /// pool is dropped.
    fn serve(&self) {
        let mut queue = self.queue.lock();
        loop {
            queue.idle += 1;
            let mut deadline = Instant::now() + self.linger;
            // When this thread may end, once it has waited its linger.
            let mut turn = None;
            let job = loop {
                if let Some(job) = queue.jobs.pop_front() {
                    break job;
                }
                if queue.closed {
                    queue.idle -= 1;
                    return;
                }
                if !self.ready.wait_until(&mut queue, deadline).timed_out() {
                    continue;
                }
                let now = Instant::now();
                let at = *turn.get_or_insert_with(|| {
                    // Threads that time out together end one after
                    // another, each woken once more, at its turn.
                    let at = queue.next_retire.max(now);
                    queue.next_retire = at + RETIRE_GAP;
                    at
                });
                if at > now {
                    deadline = at;
                } else {
                    // No job is queued, so this thread is one of `idle`.
                    queue.idle -= 1;
                    return;
                }
            };
            // `run` took this thread's place in `idle`.
            drop(queue);
            job();
            queue = self.queue.lock();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::poll_until;
    use std::collections::HashSet;
    use std::sync::mpsc;

    fn thread_id_of(workers: &Workers) -> thread::ThreadId {
        let (tx, rx) = mpsc::channel();
        workers
            .run(Box::new(move || {
                tx.send(thread::current().id()).expect("send")
            }))
            .expect("run");
        rx.recv_timeout(Duration::from_secs(10)).expect("ran")
    }

    #[test]
    fn a_thread_whose_job_ended_takes_the_next() {
        let workers = Workers::new("test-worker", 64 * 1024, Duration::from_secs(60));
        let first = thread_id_of(&workers);
        poll_until("the thread to wait", || workers.idle() == 1);
        assert_eq!(thread_id_of(&workers), first);
        poll_until("the thread to wait again", || workers.idle() == 1);
    }

    #[test]
    fn jobs_at_once_get_threads_of_their_own_and_all_run() {
        let workers = Workers::new("test-worker", 64 * 1024, Duration::from_secs(60));
        let (release, gate) = crossbeam_channel::unbounded::<()>();
        let (tx, rx) = mpsc::channel();
        for _ in 0..8 {
            let (gate, tx) = (gate.clone(), tx.clone());
            workers
                .run(Box::new(move || {
                    tx.send(thread::current().id()).expect("send");
                    let _ = gate.recv();
                }))
                .expect("run");
        }
        let ids: HashSet<_> = (0..8)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).expect("ran"))
            .collect();
        assert_eq!(
            ids.len(),
            8,
            "eight jobs blocked at once need eight threads"
        );
        drop(release);
        poll_until("all eight to wait", || workers.idle() == 8);
        // The next eight reuse them: no new thread.
        let again: HashSet<_> = (0..8).map(|_| thread_id_of(&workers)).collect();
        assert!(again.is_subset(&ids), "a new thread was started");
    }

    #[test]
    fn waiting_threads_end_after_their_linger_one_gap_apart() {
        let workers = Workers::new("test-worker", 64 * 1024, Duration::from_millis(50));
        let (release, gate) = crossbeam_channel::unbounded::<()>();
        for _ in 0..20 {
            let gate = gate.clone();
            workers
                .run(Box::new(move || {
                    let _ = gate.recv();
                }))
                .expect("run");
        }
        drop(release);
        poll_until("all twenty to wait", || workers.idle() == 20);
        poll_until("the first to end", || workers.idle() < 20);
        let first = Instant::now();
        poll_until("all twenty to end", || workers.idle() == 0);
        // Nineteen more exits, a gap apart (less the polling's slack).
        assert!(
            first.elapsed() >= RETIRE_GAP * 15,
            "the last nineteen ended within {:?}",
            first.elapsed()
        );
        // The pool still works: a new thread is started.
        thread_id_of(&workers);
    }

    #[test]
    fn dropping_the_pool_ends_its_waiting_threads() {
        let workers = Workers::new("test-worker", 64 * 1024, Duration::from_secs(60));
        thread_id_of(&workers);
        poll_until("the thread to wait", || workers.idle() == 1);
        // Each thread holds the pool until it ends.
        let pool = Arc::downgrade(&workers.pool);
        drop(workers);
        poll_until("the thread to end", || pool.upgrade().is_none());
    }
}
