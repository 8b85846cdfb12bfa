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

#[cfg(feature = "cluster")]
pub mod etcd;
pub mod limits;
pub mod memory;

pub use limits::{LimitCounts, LimitError, LimitHit, Limits};

pub use memory::{
    ClientId, ClientNames, Counts, Event, ExclusiveView, Grant, HoldKind, Page, ReadView, Released,
    SharedView, Table, WaitStart, WatchEvent, Watcher, PAGE, WATCH_QUEUE,
};

use crossbeam_channel::Sender;

/// What a session needs of a lock store: the operations behind every verb.
/// Names and meanings follow [`memory::Table`], whose docs say more.
pub trait LockStore: Send + Sync {
    /// Adds a client; grants for its waits arrive on `notify` (room for one).
    fn connect(&self, id: ClientId, default_name: Box<[u8]>, notify: Sender<Grant>);
    /// Removes a client, releasing all it holds and taking it out of line.
    /// Idempotent.
    fn disconnect(&self, id: ClientId) -> Released;
    /// `g` and `wg`: the write lock, or a place in line when `queue` is
    /// set.
    fn lock_or_queue(&self, id: ClientId, name: &[u8], queue: bool) -> WaitStart;
    /// `r`: `true` if this client held the write lock.
    fn release(&self, id: ClientId, name: &[u8]) -> bool;
    /// `wr`: a read hold, or a place in line when `queue` is set.
    fn read_or_queue(&self, id: ClientId, name: &[u8], queue: bool) -> WaitStart;
    /// `rr`: `true` if this client read-held the lock.
    fn release_read(&self, id: ClientId, name: &[u8]) -> bool;
    /// `i`: whether a writer or any reader holds the lock.
    fn is_locked(&self, name: &[u8]) -> bool;
    /// `t`: this client's fencing token for the lock, if it holds it.
    fn token(&self, id: ClientId, name: &[u8]) -> Option<u64>;
    /// `sg`: joins the holders of a shared lock; holders now, or the cap
    /// that refused it.
    fn lock_shared(&self, id: ClientId, name: &[u8]) -> Result<usize, LimitError>;
    /// `wsg`: a place among at most `limit` holders (0: no limit), or in
    /// line when `queue` is set.
    fn lock_shared_or_queue(&self, id: ClientId, name: &[u8], limit: u32, queue: bool)
        -> WaitStart;
    /// `sr`: `true` if this client held the shared lock.
    fn release_shared(&self, id: ClientId, name: &[u8]) -> bool;
    /// `si`: how many hold the shared lock.
    fn shared_count(&self, name: &[u8]) -> usize;
    /// `ra`: releases everything this client holds.
    fn release_all(&self, id: ClientId) -> Released;
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
    /// `dj`: read-held locks sorted by name.
    fn read_locks(&self, filter: &[u8]) -> Vec<ReadView>;
    /// `d`, `dump`, `dj` page by page: write-held locks after `after`
    /// in name order. A store that cannot page returns the rest at once.
    fn exclusive_page(&self, after: Option<&[u8]>) -> Page<ExclusiveView> {
        let mut items = self.exclusive_locks(b"");
        items.retain(|l| after.is_none_or(|a| l.name.as_bytes() > a));
        Page { items, next: None }
    }
    /// `sd`, `dump shared`, `dj` page by page: shared locks after `after`.
    fn shared_page(&self, after: Option<&[u8]>) -> Page<SharedView> {
        let mut items = self.shared_locks(b"");
        items.retain(|l| after.is_none_or(|a| l.name.as_bytes() > a));
        Page { items, next: None }
    }
    /// `dj` page by page: read-held locks after `after`.
    fn read_page(&self, after: Option<&[u8]>) -> Page<ReadView> {
        let mut items = self.read_locks(b"");
        items.retain(|l| after.is_none_or(|a| l.name.as_bytes() > a));
        Page { items, next: None }
    }
    /// `who` page by page: registered clients after registration `after`
    /// (0: from the first).
    fn registered_page(&self, after: u64) -> Page<ClientNames, u64> {
        let items = if after == 0 {
            self.registered(b"")
        } else {
            Vec::new()
        };
        Page { items, next: None }
    }
    /// Gauges for `q`.
    fn counts(&self) -> Counts;
    /// `watch`: the snapshot of what `pattern` matches, and the event
    /// queue on the client's first pattern.
    fn watch(&self, id: ClientId, pattern: &[u8]) -> (Vec<WatchEvent>, Option<Watcher>);
    /// The fencing-token counter's next token and saved mark (none when
    /// tokens live in memory only), for `/metrics`.
    fn token_marks(&self) -> (u64, Option<u64>);
    /// Why this store does not serve `verb` (a wire verb, e.g. `wr`), if
    /// it does not: the session then answers `0 Error: WHY` (protocol 2)
    /// or nothing (classic) without calling the store.
    fn unsupported(&self, _verb: &str) -> Option<&'static str> {
        None
    }
}

impl LockStore for Table {
    fn connect(&self, id: ClientId, default_name: Box<[u8]>, notify: Sender<Grant>) {
        Table::connect(self, id, default_name, notify);
    }
    fn disconnect(&self, id: ClientId) -> Released {
        Table::disconnect(self, id)
    }
    fn lock_or_queue(&self, id: ClientId, name: &[u8], queue: bool) -> WaitStart {
        Table::lock_or_queue(self, id, name, queue)
    }
    fn release(&self, id: ClientId, name: &[u8]) -> bool {
        Table::release(self, id, name)
    }
    fn read_or_queue(&self, id: ClientId, name: &[u8], queue: bool) -> WaitStart {
        Table::read_or_queue(self, id, name, queue)
    }
    fn release_read(&self, id: ClientId, name: &[u8]) -> bool {
        Table::release_read(self, id, name)
    }
    fn is_locked(&self, name: &[u8]) -> bool {
        Table::is_locked(self, name)
    }
    fn token(&self, id: ClientId, name: &[u8]) -> Option<u64> {
        Table::token(self, id, name)
    }
    fn lock_shared(&self, id: ClientId, name: &[u8]) -> Result<usize, LimitError> {
        Table::lock_shared(self, id, name)
    }
    fn lock_shared_or_queue(
        &self,
        id: ClientId,
        name: &[u8],
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
    fn release_all(&self, id: ClientId) -> Released {
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
    fn read_locks(&self, filter: &[u8]) -> Vec<ReadView> {
        Table::read_locks(self, filter)
    }
    fn exclusive_page(&self, after: Option<&[u8]>) -> Page<ExclusiveView> {
        Table::exclusive_page(self, after)
    }
    fn shared_page(&self, after: Option<&[u8]>) -> Page<SharedView> {
        Table::shared_page(self, after)
    }
    fn read_page(&self, after: Option<&[u8]>) -> Page<ReadView> {
        Table::read_page(self, after)
    }
    fn registered_page(&self, after: u64) -> Page<ClientNames, u64> {
        Table::registered_page(self, after)
    }
    fn counts(&self) -> Counts {
        Table::counts(self)
    }
    fn watch(&self, id: ClientId, pattern: &[u8]) -> (Vec<WatchEvent>, Option<Watcher>) {
        Table::watch(self, id, pattern)
    }
    fn token_marks(&self) -> (u64, Option<u64>) {
        Table::token_marks(self)
    }
}
