//! RAII guards: a hold on a lock, released when the guard is dropped.
//!
//! A guard's drop never waits for the connection: when another caller is
//! using it, the release is queued and sent ahead of that client's next
//! command (see `conn.rs`). [`LockGuard::release`] and friends wait their
//! turn and return the server's answer.

use super::local::Kind;
use super::Client;
use crate::error::Error;
use crate::name::LockName;
use std::fmt;
use std::thread::{self, ThreadId};

/// The parts every guard has.
struct Held {
    client: Client,
    name: LockName,
    kind: Kind,
    /// The thread that took it: its entry in the client's table.
    holder: ThreadId,
    armed: bool,
}

impl Held {
    fn new(client: Client, name: LockName, kind: Kind) -> Held {
        Held {
            client,
            name,
            kind,
            holder: thread::current().id(),
            armed: true,
        }
    }

    fn release(&mut self) -> Result<(), Error> {
        self.armed = false;
        self.client.release_now(&self.name, self.kind, self.holder)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.armed {
            self.client
                .release_later(&self.name, self.kind, self.holder);
        }
    }
}

/// An exclusive lock held through a [`Client`], released when the guard
/// is dropped. While it lives, no other caller of the same client gets the
/// lock either: they wait in the process, as with a `Mutex`.
///
/// The lock also ends with the connection: watch
/// [`Client::on_disconnect`] when the work under it must stop the moment
/// it is lost.
#[must_use = "dropping the guard releases the lock"]
pub struct LockGuard {
    held: Held,
    token: Option<u64>,
}

impl LockGuard {
    pub(crate) fn new(client: Client, name: LockName, token: Option<u64>) -> LockGuard {
        LockGuard {
            held: Held::new(client, name, Kind::Write),
            token,
        }
    }

    /// The lock's name, as the server holds it (whitespace runs become
    /// single spaces).
    pub fn name(&self) -> &LockName {
        &self.held.name
    }

    /// The fencing token of this grant: always `Some` on protocol 2,
    /// `None` from a classic server (which has none). Pass it to the
    /// resource the lock protects, which refuses a token lower than one it
    /// has seen.
    pub fn token(&self) -> Option<u64> {
        self.token
    }

    /// The client whose connection holds the lock.
    pub fn client(&self) -> &Client {
        &self.held.client
    }

    /// Releases the lock now and returns the server's answer.
    ///
    /// # Errors
    /// [`Error::NotHeld`] when the server no longer had it (after
    /// [`Client::release_all`]); the connection errors, after which the
    /// lock is released anyway.
    pub fn release(mut self) -> Result<(), Error> {
        self.held.release()
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.held.name)
            .field("token", &self.token)
            .finish()
    }
}

/// A read hold on a lock (many readers or one writer on the same name),
/// released when the guard is dropped. The readers of one client share the
/// connection's one read hold: the first takes it, the last gives it back.
#[must_use = "dropping the guard releases the lock"]
pub struct ReadGuard {
    held: Held,
    readers: u64,
}

impl ReadGuard {
    pub(crate) fn new(client: Client, name: LockName, readers: u64) -> ReadGuard {
        ReadGuard {
            held: Held::new(client, name, Kind::Read),
            readers,
        }
    }

    /// The lock's name, as the server holds it.
    pub fn name(&self) -> &LockName {
        &self.held.name
    }

    /// How many connections read-held the lock when this client got its
    /// read hold, this one included.
    pub fn readers(&self) -> u64 {
        self.readers
    }

    /// The client whose connection holds the lock.
    pub fn client(&self) -> &Client {
        &self.held.client
    }

    /// Gives up this reader's part now. When it was the client's last
    /// reader of the name, the server is told and its answer returned.
    ///
    /// # Errors
    /// As [`LockGuard::release`].
    pub fn release(mut self) -> Result<(), Error> {
        self.held.release()
    }
}

impl fmt::Debug for ReadGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadGuard")
            .field("name", &self.held.name)
            .field("readers", &self.readers)
            .finish()
    }
}

/// A place among the holders of a shared lock (a semaphore when taken
/// with a limit), given up when the guard is dropped. The guards of one
/// client share the connection's one place, as [`ReadGuard`]s do.
#[must_use = "dropping the guard releases the lock"]
pub struct SharedGuard {
    held: Held,
    holders: u64,
}

impl SharedGuard {
    pub(crate) fn new(client: Client, name: LockName, holders: u64) -> SharedGuard {
        SharedGuard {
            held: Held::new(client, name, Kind::Shared),
            holders,
        }
    }

    /// The lock's name, as the server holds it.
    pub fn name(&self) -> &LockName {
        &self.held.name
    }

    /// How many connections held the lock when this client took its
    /// place, this one included. Ask [`Client::shared_count`] for the
    /// number now.
    pub fn holders(&self) -> u64 {
        self.holders
    }

    /// The client whose connection holds the place.
    pub fn client(&self) -> &Client {
        &self.held.client
    }

    /// Gives up the place now (when this is the client's last guard of the
    /// name) and returns the server's answer.
    ///
    /// # Errors
    /// As [`LockGuard::release`].
    pub fn release(mut self) -> Result<(), Error> {
        self.held.release()
    }
}

impl fmt::Debug for SharedGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedGuard")
            .field("name", &self.held.name)
            .field("holders", &self.holders)
            .finish()
    }
}
