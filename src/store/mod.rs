//! The lock semantics of `PROTOCOL.md` Parts 1 and 2, behind one seam.
//!
//! A session talks to its store only through [`LockStore`]. The in-memory
//! table of a single server, [`memory::Table`], is one implementation; a
//! clustered store plugs in below the same trait without touching the
//! session or the server above it.
//!
//! Every method takes `&self` and returns owned values: no guard of the
//! store's own locks ever reaches the caller, so nobody can hold them
//! across socket I/O or a wait.

pub mod etcd;
pub mod memory;

pub use memory::{
    ClientId, ClientNames, Counts, ExclusiveView, Grant, Released, SharedView, Table, WaitStart,
};

use crate::name::LockName;
use crossbeam_channel::Sender;

/// What a session needs of a lock store: the operations behind every verb.
/// Names and meanings follow [`memory::Table`], whose docs say more.
pub trait LockStore: Send + Sync {
    /// Adds a client; grants for its waits arrive on `notify` (room for one).
    fn connect(&self, id: ClientId, default_name: Box<[u8]>, notify: Sender<Grant>);
    /// Removes a client, releasing all it holds and taking it out of line.
    /// Idempotent.
    fn disconnect(&self, id: ClientId) -> Released;
    /// `g`: the exclusive lock if free or already ours; its fencing token.
    fn try_lock(&self, id: ClientId, name: &LockName) -> Option<u64>;
    /// `wg`: the exclusive lock, or a place in line when `queue` is set.
    fn lock_or_queue(&self, id: ClientId, name: &LockName, queue: bool) -> WaitStart;
    /// `r`: `true` if this client held the lock.
    fn release(&self, id: ClientId, name: &[u8]) -> bool;
    /// `i`: whether anyone holds the exclusive lock.
    fn is_locked(&self, name: &[u8]) -> bool;
    /// `t`: this client's fencing token for the lock, if it holds it.
    fn token(&self, id: ClientId, name: &[u8]) -> Option<u64>;
    /// `sg`: joins the holders of a shared lock; holders now.
    fn lock_shared(&self, id: ClientId, name: &LockName) -> usize;
    /// `wsg`: a place among at most `limit` holders (0: no limit), or in
    /// line when `queue` is set.
    fn lock_shared_or_queue(
        &self,
        id: ClientId,
        name: &LockName,
        limit: u32,
        queue: bool,
    ) -> WaitStart;
    /// `sr`: `true` if this client held the shared lock.
    fn release_shared(&self, id: ClientId, name: &[u8]) -> bool;
    /// `si`: how many hold the shared lock.
    fn shared_count(&self, name: &[u8]) -> usize;
    /// `ra`: releases everything this client holds; how many.
    fn release_all(&self, id: ClientId) -> usize;
    /// Ends a wait that timed out; `false` when the grant won the race.
    fn cancel_wait(&self, id: ClientId) -> bool;
    /// `iam`: registers a name (empty removes it).
    fn register(&self, id: ClientId, name: &[u8]);
    /// `me`: this client's names.
    fn names(&self, id: ClientId) -> Option<ClientNames>;
    /// `who`: registered clients, oldest registration first.
    fn registered(&self, filter: &[u8]) -> Vec<ClientNames>;
    /// `d`, `dump`, `dj`: exclusive locks sorted by name.
    fn exclusive_locks(&self, filter: &[u8]) -> Vec<ExclusiveView>;
    /// `sd`, `dump shared`, `dj`: shared locks sorted by name.
    fn shared_locks(&self, filter: &[u8]) -> Vec<SharedView>;
    /// Gauges for `q`.
    fn counts(&self) -> Counts;
}

impl LockStore for Table {
    fn connect(&self, id: ClientId, default_name: Box<[u8]>, notify: Sender<Grant>) {
        Table::connect(self, id, default_name, notify);
    }
    fn disconnect(&self, id: ClientId) -> Released {
        Table::disconnect(self, id)
    }
    fn try_lock(&self, id: ClientId, name: &LockName) -> Option<u64> {
        Table::try_lock(self, id, name)
    }
    fn lock_or_queue(&self, id: ClientId, name: &LockName, queue: bool) -> WaitStart {
        Table::lock_or_queue(self, id, name, queue)
    }
    fn release(&self, id: ClientId, name: &[u8]) -> bool {
        Table::release(self, id, name)
    }
    fn is_locked(&self, name: &[u8]) -> bool {
        Table::is_locked(self, name)
    }
    fn token(&self, id: ClientId, name: &[u8]) -> Option<u64> {
        Table::token(self, id, name)
    }
    fn lock_shared(&self, id: ClientId, name: &LockName) -> usize {
        Table::lock_shared(self, id, name)
    }
    fn lock_shared_or_queue(
        &self,
        id: ClientId,
        name: &LockName,
        limit: u32,
        queue: bool,
    ) -> WaitStart {
        Table::lock_shared_or_queue(self, id, name, limit, queue)
    }
    fn release_shared(&self, id: ClientId, name: &[u8]) -> bool {
        Table::release_shared(self, id, name)
    }
    fn shared_count(&self, name: &[u8]) -> usize {
        Table::shared_count(self, name)
    }
    fn release_all(&self, id: ClientId) -> usize {
        Table::release_all(self, id)
    }
    fn cancel_wait(&self, id: ClientId) -> bool {
        Table::cancel_wait(self, id)
    }
    fn register(&self, id: ClientId, name: &[u8]) {
        Table::register(self, id, name);
    }
    fn names(&self, id: ClientId) -> Option<ClientNames> {
        Table::names(self, id)
    }
    fn registered(&self, filter: &[u8]) -> Vec<ClientNames> {
        Table::registered(self, filter)
    }
    fn exclusive_locks(&self, filter: &[u8]) -> Vec<ExclusiveView> {
        Table::exclusive_locks(self, filter)
    }
    fn shared_locks(&self, filter: &[u8]) -> Vec<SharedView> {
        Table::shared_locks(self, filter)
    }
    fn counts(&self) -> Counts {
        Table::counts(self)
    }
}
