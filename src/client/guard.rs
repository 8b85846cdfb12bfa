//! RAII guards: a held lock that is released when the guard is dropped.

use super::Client;
use crate::error::Error;
use crate::name::LockName;
use std::fmt;

/// An exclusive lock held by a [`Client`]'s connection, released when the
/// guard is dropped.
///
/// The drop queues the release behind the client's other calls and returns
/// at once: it never waits on the network, and the server's answer is
/// discarded. To learn the answer, call [`LockGuard::release`]. The guard
/// keeps its client (and so the connection and the lock) alive.
///
/// The lock also ends with the connection: watch
/// [`Client::on_disconnect`] when the work under it must stop the moment
/// it is lost.
#[must_use = "dropping the guard releases the lock"]
pub struct LockGuard {
    client: Client,
    name: LockName,
    token: Option<u64>,
    armed: bool,
}

impl LockGuard {
    pub(crate) fn new(client: Client, name: LockName, token: Option<u64>) -> LockGuard {
        LockGuard {
            client,
            name,
            token,
            armed: true,
        }
    }

    /// The lock's name, as the server holds it (whitespace runs become
    /// single spaces).
    pub fn name(&self) -> &LockName {
        &self.name
    }

    /// The fencing token, for a guard from [`Client::lock_wait`]; `None`
    /// from [`Client::lock`] (ask [`Client::token`] for it).
    pub fn token(&self) -> Option<u64> {
        self.token
    }

    /// The client whose connection holds the lock.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Releases the lock now and returns the server's answer.
    ///
    /// # Errors
    /// [`Error::NotHeld`] when the lock was already released (by
    /// [`Client::release`] or [`Client::release_all`]); the connection
    /// errors, after which the lock is released anyway.
    pub fn release(mut self) -> Result<(), Error> {
        self.armed = false;
        self.client.release(self.name.as_bytes())
    }

    /// Drops the guard without releasing the lock: it stays held until
    /// [`Client::release`] or the end of the connection. Returns its name.
    pub fn leak(mut self) -> LockName {
        self.armed = false;
        std::mem::take(&mut self.name)
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.armed {
            self.client
                .forget(super::command("r", self.name.as_bytes()));
        }
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.name)
            .field("token", &self.token)
            .finish()
    }
}

/// A place among the holders of a shared lock, given up when the guard is
/// dropped. Drop and [`SharedGuard::release`] behave as for [`LockGuard`].
#[must_use = "dropping the guard releases the lock"]
pub struct SharedGuard {
    client: Client,
    name: LockName,
    holders: u64,
    armed: bool,
}

impl SharedGuard {
    pub(crate) fn new(client: Client, name: LockName, holders: u64) -> SharedGuard {
        SharedGuard {
            client,
            name,
            holders,
            armed: true,
        }
    }

    /// The lock's name, as the server holds it.
    pub fn name(&self) -> &LockName {
        &self.name
    }

    /// How many connections held the lock when this one got it, this one
    /// included. Ask [`Client::shared_count`] for the number now.
    pub fn holders(&self) -> u64 {
        self.holders
    }

    /// The client whose connection holds the place.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Gives up the place now and returns the server's answer.
    ///
    /// # Errors
    /// [`Error::NotHeld`] when it was already given up; the connection
    /// errors.
    pub fn release(mut self) -> Result<(), Error> {
        self.armed = false;
        self.client.release_shared(self.name.as_bytes())
    }

    /// Drops the guard without giving up the place. Returns its name.
    pub fn leak(mut self) -> LockName {
        self.armed = false;
        std::mem::take(&mut self.name)
    }
}

impl Drop for SharedGuard {
    fn drop(&mut self) {
        if self.armed {
            self.client
                .forget(super::command("sr", self.name.as_bytes()));
        }
    }
}

impl fmt::Debug for SharedGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedGuard")
            .field("name", &self.name)
            .field("holders", &self.holders)
            .finish()
    }
}
