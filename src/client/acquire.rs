//! Taking holds: in the process first (see `local.rs`), then on the
//! server, with `wg`/`wr`/`wsg` on protocol 2 or by polling a classic
//! server; and giving them back.

use super::local::{Entry, Kind, Wait};
use super::{named, Client};
use crate::error::{Error, Phase};
use crate::name::LockName;
use crate::protocol::reply::{self, push_number};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

/// Longest wait `wg`/`wr`/`wsg` can carry: the server takes at most 18
/// digits. It stands for "no deadline".
const MAX_WAIT_MS: u64 = 100_000_000_000_000_000;

/// Against a classic server (no waiting in line), [`Client::lock`] and
/// the `_for` methods try again after 10 ms, 20 ms, 40 ms, ... up to this.
pub const CLASSIC_POLL_MAX: Duration = Duration::from_secs(1);

const CLASSIC_POLL_FIRST: Duration = Duration::from_millis(10);

/// Read-hold replies (protocol 2, Part 2 "Reader/writer locks").
const READ_GET_SUCCESS: &str = "Read Lock Get Success";
const READ_GET_TIMEOUT: &str = "Read Lock Get Timeout";
const READ_RELEASE_SUCCESS: &str = "Read Lock Release Success";
const READ_RELEASE_FAILURE: &str = "Read Lock Release Failure";
const SHARED_GET_DEADLOCK: &str = "Shared Lock Get Deadlock";

/// What the server said to a request for a hold.
enum Grant {
    /// Granted, with the token (exclusive) or holder count.
    Yes(u64),
    /// Busy until the wait ran out.
    No,
    /// Refused: waiting would deadlock.
    Deadlock,
}
impl Client {
    /// Takes a hold, waiting up to `wait` (`None`: as long as it takes)
    /// first here, then on the server; `None` when it stayed busy.
    pub(super) fn hold(
        &self,
        name: &LockName,
        kind: Kind,
        limit: u32,
        wait: Option<Duration>,
    ) -> Result<Option<u64>, Error> {
        let deadline = wait.and_then(|w| Instant::now().checked_add(w));
        let local = match (wait, deadline) {
            (None, _) | (Some(_), None) => Wait::Forever,
            (Some(w), Some(_)) if w.is_zero() => Wait::No,
            (Some(_), Some(d)) => Wait::Until(d),
        };
        match self.inner.holds.enter(name, kind, local)? {
            Entry::Joined(n) => return Ok(Some(n)),
            Entry::Busy => return Ok(None),
            Entry::Take => {}
        }
        let left = match local {
            Wait::Forever => None,
            Wait::No => Some(Duration::ZERO),
            Wait::Until(d) => Some(d.saturating_duration_since(Instant::now())),
        };
        let grant = match self.protocol() {
            2.. => self.grant(name, kind, limit, left),
            _ => self.classic_grant(name, kind, limit, left),
        };
        match grant {
            Ok(Grant::Yes(n)) => {
                self.inner.holds.granted(name, kind, n);
                Ok(Some(n))
            }
            Ok(Grant::No) => {
                self.inner.holds.refused(name, kind);
                Ok(None)
            }
            Ok(Grant::Deadlock) => {
                self.inner.holds.refused(name, kind);
                Err(Error::Deadlock { name: name.clone() })
            }
            Err(e) => {
                self.inner.holds.refused(name, kind);
                Err(e)
            }
        }
    }

    /// [`Client::hold`] without a deadline: a "no" can only be the server
    /// ending the longest wait it knows.
    pub(super) fn hold_forever(
        &self,
        name: &LockName,
        kind: Kind,
        limit: u32,
    ) -> Result<u64, Error> {
        self.hold(name, kind, limit, None)?
            .ok_or_else(|| Error::Timeout {
                phase: Phase::Wait,
                context: format!("waiting for lock {name:?}"),
            })
    }

    /// `wg` / `wr` / `wsg`: asks the server, waiting in its line for
    /// `wait` (`None`: no deadline).
    fn grant(
        &self,
        name: &LockName,
        kind: Kind,
        limit: u32,
        wait: Option<Duration>,
    ) -> Result<Grant, Error> {
        let ms = wait.map_or(MAX_WAIT_MS, wait_ms);
        let verb: &[u8] = match kind {
            Kind::Write => b"wg ",
            Kind::Read => b"wr ",
            Kind::Shared => b"wsg ",
        };
        let (success, timeout, deadlock) = match kind {
            Kind::Write => (
                reply::LOCK_GET_SUCCESS,
                reply::LOCK_GET_TIMEOUT,
                reply::LOCK_GET_DEADLOCK,
            ),
            Kind::Read => (READ_GET_SUCCESS, READ_GET_TIMEOUT, reply::LOCK_GET_DEADLOCK),
            Kind::Shared => (
                reply::SHARED_GET_SUCCESS,
                reply::SHARED_GET_TIMEOUT,
                SHARED_GET_DEADLOCK,
            ),
        };
        self.inner.conn.call(
            |out| {
                out.extend_from_slice(verb);
                push_number(out, ms);
                out.push(b' ');
                if kind == Kind::Shared {
                    push_number(out, u64::from(limit));
                    out.push(b' ');
                }
                out.extend_from_slice(name.as_bytes());
            },
            (ms < MAX_WAIT_MS).then(|| Duration::from_millis(ms)),
            |line| {
                let (n, text) = named(line, name)?;
                match (n, text) {
                    (n, t) if n >= 1 && t == success => Some(Grant::Yes(n)),
                    (0, t) if t == timeout => Some(Grant::No),
                    (0, t) if t == deadlock => Some(Grant::Deadlock),
                    _ => None,
                }
            },
        )
    }

    /// A classic server cannot wait in line: try, then try again after a
    /// growing pause, until `wait` runs out.
    fn classic_grant(
        &self,
        name: &LockName,
        kind: Kind,
        limit: u32,
        wait: Option<Duration>,
    ) -> Result<Grant, Error> {
        if kind == Kind::Read {
            return Err(Error::NotSupported { command: "wr" });
        }
        let deadline = wait.map(|w| Instant::now().checked_add(w));
        let mut pause = CLASSIC_POLL_FIRST;
        loop {
            if let Some(n) = self.classic_try(name, kind, limit)? {
                return Ok(Grant::Yes(n));
            }
            let left = match deadline {
                Some(Some(d)) => d.saturating_duration_since(Instant::now()),
                Some(None) | None => Duration::MAX,
            };
            if left.is_zero() {
                return Ok(Grant::No);
            }
            thread::sleep(pause.min(left));
            pause = pause.saturating_mul(2).min(CLASSIC_POLL_MAX);
        }
    }

    /// One `g`, or one `sg` (stepping back out with `sr` when that makes
    /// more than `limit` holders).
    fn classic_try(&self, name: &LockName, kind: Kind, limit: u32) -> Result<Option<u64>, Error> {
        if kind == Kind::Write {
            return self.ask(b"g", name, |n, text| match (n, text) {
                (1, reply::LOCK_GET_SUCCESS) => Some(Some(1)),
                (0, reply::LOCK_GET_FAILURE) => Some(None),
                _ => None,
            });
        }
        let holders = self.ask(b"sg", name, |n, text| match (n, text) {
            (n, reply::SHARED_GET_SUCCESS) if n >= 1 => Some(n),
            _ => None,
        })?;
        if limit == 0 || holders <= u64::from(limit) {
            return Ok(Some(holders));
        }
        self.server_release(name, Kind::Shared)?;
        Ok(None)
    }

    /// A guard's explicit release: waits its turn and returns the answer.
    pub(crate) fn release_now(
        &self,
        name: &LockName,
        kind: Kind,
        holder: ThreadId,
    ) -> Result<(), Error> {
        if !self.inner.holds.leave(name, kind, holder) {
            return Ok(());
        }
        let result = if self.is_connected() {
            self.server_release(name, kind)
        } else {
            Ok(())
        };
        self.inner.holds.released(name, kind);
        result
    }

    /// A guard's drop: queues the release, never waits for the connection.
    pub(crate) fn release_later(&self, name: &LockName, kind: Kind, holder: ThreadId) {
        if self.inner.holds.leave(name, kind, holder) {
            self.inner
                .conn
                .release_later(release_verb(kind), name.as_bytes());
            self.inner.holds.released(name, kind);
        }
    }

    fn server_release(&self, name: &LockName, kind: Kind) -> Result<(), Error> {
        let (success, failure) = match kind {
            Kind::Write => (reply::LOCK_RELEASE_SUCCESS, reply::LOCK_RELEASE_FAILURE),
            Kind::Read => (READ_RELEASE_SUCCESS, READ_RELEASE_FAILURE),
            Kind::Shared => (reply::SHARED_RELEASE_SUCCESS, reply::SHARED_RELEASE_FAILURE),
        };
        let released = self.ask(release_verb(kind), name, |n, text| match (n, text) {
            (1, t) if t == success => Some(true),
            (0, t) if t == failure => Some(false),
            _ => None,
        })?;
        if released {
            Ok(())
        } else {
            Err(Error::NotHeld { name: name.clone() })
        }
    }
}

fn release_verb(kind: Kind) -> &'static [u8] {
    match kind {
        Kind::Write => b"r",
        Kind::Read => b"rr",
        Kind::Shared => b"sr",
    }
}

/// Whole milliseconds to wait, rounded up (so a wait of 1 µs waits, and
/// only zero tries once), at most [`MAX_WAIT_MS`].
fn wait_ms(wait: Duration) -> u64 {
    let ms = wait
        .as_millis()
        .saturating_add(u128::from(!wait.subsec_nanos().is_multiple_of(1_000_000)));
    u64::try_from(ms).unwrap_or(MAX_WAIT_MS).min(MAX_WAIT_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_never_overflow() {
        assert_eq!(wait_ms(Duration::ZERO), 0);
        assert_eq!(wait_ms(Duration::from_micros(1)), 1);
        assert_eq!(wait_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(wait_ms(Duration::MAX), MAX_WAIT_MS);
        assert_eq!(wait_ms(Duration::from_secs(u64::MAX / 1000)), MAX_WAIT_MS);
    }
}
