//! Caps on what clients can make the store hold (issue 14), so that one
//! client, or a few, cannot exhaust the server's memory or make a line so
//! long that serving it stalls everyone.
//!
//! The defaults are far above any legitimate use and far below what a
//! 24 GB machine can hold:
//!
//! - `max_locks` 2,000,000 names held at once: about 0.4 GB with short
//!   names, and 8.6 GB even if every name is 4 KB (the default longest
//!   line), which still fits;
//! - `max_locks_per_connection` 100,000: ten times more locks than a
//!   server's default connection limit of 10,000 connections, held by one
//!   client; no lock-per-resource scheme needs more through one socket;
//! - `max_waiters` 100,000 per lock: a connection waits for one lock at a
//!   time, so only a server whose `--max-connections` was raised past
//!   100,000 can reach it at all.
//!
//! Past a cap the request is refused and nothing else changes. Each cap
//! counts its refusals for `q` and logs at most one line a minute.

use crate::log::{log, Priority};
use parking_lot::Mutex;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The caps. Zero in a field means no cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Lock names held at once, over all namespaces (`--max-locks`).
    pub max_locks: usize,
    /// Locks one connection holds at once (`--max-locks-per-connection`).
    pub max_locks_per_connection: usize,
    /// Waiters in the line of one lock (`--max-waiters`).
    pub max_waiters: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_locks: 2_000_000,
            max_locks_per_connection: 100_000,
            max_waiters: 100_000,
        }
    }
}

/// True when `n` more would pass `cap` (0: no cap).
pub(crate) fn reached(n: usize, cap: usize) -> bool {
    cap != 0 && n >= cap
}

/// Which cap refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitHit {
    /// [`Limits::max_locks`].
    Locks,
    /// [`Limits::max_locks_per_connection`].
    LocksPerConnection,
    /// [`Limits::max_waiters`].
    Waiters,
}

impl LimitHit {
    const ALL: [LimitHit; 3] = [
        LimitHit::Locks,
        LimitHit::LocksPerConnection,
        LimitHit::Waiters,
    ];

    /// The flag that sets this cap, without its dashes.
    pub fn flag(self) -> &'static str {
        match self {
            LimitHit::Locks => "max-locks",
            LimitHit::LocksPerConnection => "max-locks-per-connection",
            LimitHit::Waiters => "max-waiters",
        }
    }

    fn cap(self, limits: &Limits) -> usize {
        match self {
            LimitHit::Locks => limits.max_locks,
            LimitHit::LocksPerConnection => limits.max_locks_per_connection,
            LimitHit::Waiters => limits.max_waiters,
        }
    }
}

/// The text of a protocol-2 refusal: `limit reached: max-locks (2000000)`,
/// what follows `0 Error: `.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitError {
    /// The cap.
    pub hit: LimitHit,
    /// Its value.
    pub cap: usize,
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "limit reached: {} ({})", self.hit.flag(), self.cap)
    }
}

/// How often each cap refused a request, for `q`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitCounts {
    /// Refused by `max_locks`.
    pub locks: u64,
    /// Refused by `max_locks_per_connection`.
    pub locks_per_connection: u64,
    /// Refused by `max_waiters`.
    pub waiters: u64,
}

/// The refusal counters and the once-a-minute log of each cap.
pub(crate) struct LimitLog {
    limits: Limits,
    hits: [AtomicU64; 3],
    /// When each cap last logged, and the hits not logged since.
    logged: Mutex<[(Option<Instant>, u64); 3]>,
}

const LOG_EVERY: Duration = Duration::from_secs(60);

impl LimitLog {
    pub(crate) fn new(limits: Limits) -> LimitLog {
        LimitLog {
            limits,
            hits: Default::default(),
            logged: Mutex::new([(None, 0); 3]),
        }
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Counts a refusal (call it outside the table lock) and logs it unless
    /// this cap already logged within the last minute.
    pub(crate) fn hit(&self, hit: LimitHit) -> LimitError {
        let i = hit as usize;
        self.hits[i].fetch_add(1, Relaxed);
        let cap = hit.cap(&self.limits);
        if let Some(n) = self.due(hit, Instant::now()) {
            log(
                Priority::Warning,
                format_args!(
                    "warning: --{} {cap} reached: {n} request(s) refused since the last such line; raise --{} if this load is legitimate",
                    hit.flag(),
                    hit.flag()
                ),
            );
        }
        LimitError { hit, cap }
    }

    /// Notes one more refusal by `hit` at `now`; returns how many to
    /// report when a log line is due (none within a minute of the last).
    fn due(&self, hit: LimitHit, now: Instant) -> Option<u64> {
        let mut logged = self.logged.lock();
        let (last, unlogged) = &mut logged[hit as usize];
        *unlogged += 1;
        match last {
            Some(at) if now.saturating_duration_since(*at) < LOG_EVERY => None,
            _ => {
                *last = Some(now);
                Some(std::mem::take(unlogged))
            }
        }
    }

    pub(crate) fn counts(&self) -> LimitCounts {
        let [locks, per_connection, waiters] =
            LimitHit::ALL.map(|h| self.hits[h as usize].load(Relaxed));
        LimitCounts {
            locks,
            locks_per_connection: per_connection,
            waiters,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cap_logs_at_most_once_a_minute_with_the_count() {
        let log = LimitLog::new(Limits::default());
        let t0 = Instant::now();
        assert_eq!(log.due(LimitHit::Locks, t0), Some(1));
        assert_eq!(log.due(LimitHit::Locks, t0 + Duration::from_secs(1)), None);
        assert_eq!(log.due(LimitHit::Waiters, t0), Some(1), "caps are apart");
        assert_eq!(log.due(LimitHit::Locks, t0 + Duration::from_secs(59)), None);
        assert_eq!(log.due(LimitHit::Locks, t0 + LOG_EVERY), Some(3));
        log.hit(LimitHit::Locks);
        assert_eq!(
            log.counts(),
            LimitCounts {
                locks: 1,
                ..LimitCounts::default()
            }
        );
        let e = LimitError {
            hit: LimitHit::LocksPerConnection,
            cap: 5,
        };
        assert_eq!(e.to_string(), "limit reached: max-locks-per-connection (5)");
    }

    #[test]
    fn zero_is_no_cap() {
        assert!(!reached(usize::MAX, 0));
        assert!(reached(3, 3));
        assert!(!reached(2, 3));
    }
}
