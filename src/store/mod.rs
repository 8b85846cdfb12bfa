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
use std::fmt;

/// Why a store could not do what was asked. The in-memory table fails only
/// with [`StoreError::Limit`]; a clustered store also when it cannot reach
/// its backend, or no longer vouches for a client's locks.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// A cap of [`Limits`] refused it; nothing changed.
    Limit(LimitError),
    /// etcd did not answer: nothing is known of the lock now. What the
    /// call may have written is undone as soon as etcd answers again.
    #[cfg(feature = "cluster")]
    Etcd(etcd::client::EtcdError),
    /// The node lost its cluster lease: the client's locks may already
    /// belong to others, and its connection must be closed.
    LocksLost,
}

impl StoreError {
    /// Whether the client's locks can no longer be vouched for, so that
    /// its connection must be closed.
    pub fn locks_lost(&self) -> bool {
        matches!(self, StoreError::LocksLost)
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Limit(e) => e.fmt(f),
            #[cfg(feature = "cluster")]
            StoreError::Etcd(e) => write!(f, "cluster store unavailable: {e}"),
            StoreError::LocksLost => f.write_str(
                "cluster lease lost: the locks of this connection are gone (connect again)",
            ),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Limit(_) => None,
            #[cfg(feature = "cluster")]
            StoreError::Etcd(e) => Some(e),
            StoreError::LocksLost => None,
        }
    }
}

impl From<LimitError> for StoreError {
    fn from(e: LimitError) -> StoreError {
        StoreError::Limit(e)
    }
}

/// What a session needs of a lock store: the operations behind every verb.
/// Names and meanings follow [`memory::Table`], whose docs say more.
///
/// A call that asks the store something may fail with a [`StoreError`]
/// (see [`StoreError::locks_lost`]). Calls that only let go of something
/// (`disconnect`, `cancel_wait`) cannot: a store that cannot answer then
/// finishes the job later, or lets it go with the client's lease.
pub trait LockStore: Send + Sync {
    /// Adds a client; grants for its waits arrive on `notify` (room for one).
    /// A store that cannot take clients now records it all the same, and
    /// fails its later calls with [`StoreError::LocksLost`].
    fn connect(&self, id: ClientId, default_name: Box<[u8]>, notify: Sender<Grant>);
    /// Removes a client, releasing all it holds and taking it out of line.
    /// Idempotent.
    fn disconnect(&self, id: ClientId) -> Released;
    /// `g` and `wg`: the write lock, or a place in line when `queue` is
    /// set.
    fn lock_or_queue(
        &self,
        id: ClientId,
        name: &[u8],
        queue: bool,
    ) -> Result<WaitStart, StoreError>;
    /// `g` tried before the server has released the locks of clients that
    /// hung up: the write lock's grant if it can be given at once, `None`
    /// otherwise (busy, refused by a cap, or a store that cannot tell
    /// without side effects). Nothing but a grant may change, and a refusal
    /// is neither counted nor logged: the caller releases what clients that
    /// hung up held and then asks [`LockStore::lock_or_queue`], whose
    /// answer stands. A grant needs no such settling, since it shows
    /// nothing of any other client. The default always says `None`.
    fn lock_if_free(&self, id: ClientId, name: &[u8]) -> Option<Grant> {
        let _ = (id, name);
        None
    }
    /// `r`: `true` if this client held the write lock.
    fn release(&self, id: ClientId, name: &[u8]) -> Result<bool, StoreError>;
    /// `wr`: a read hold, or a place in line when `queue` is set.
    fn read_or_queue(
        &self,
        id: ClientId,
        name: &[u8],
        queue: bool,
    ) -> Result<WaitStart, StoreError>;
    /// `rr`: `true` if this client read-held the lock.
    fn release_read(&self, id: ClientId, name: &[u8]) -> Result<bool, StoreError>;
    /// `i`: whether a writer or any reader holds the lock.
    fn is_locked(&self, name: &[u8]) -> Result<bool, StoreError>;
    /// `t`: this client's fencing token for the lock, if it holds it.
    fn token(&self, id: ClientId, name: &[u8]) -> Result<Option<u64>, StoreError>;
    /// `sg`: joins the holders of a shared lock; holders now.
    fn lock_shared(&self, id: ClientId, name: &[u8]) -> Result<usize, StoreError>;
    /// `wsg`: a place among at most `limit` holders (0: no limit), or in
    /// line when `queue` is set.
    fn lock_shared_or_queue(
        &self,
        id: ClientId,
        name: &[u8],
        limit: u32,
        queue: bool,
    ) -> Result<WaitStart, StoreError>;
    /// `sr`: `true` if this client held the shared lock.
    fn release_shared(&self, id: ClientId, name: &[u8]) -> Result<bool, StoreError>;
    /// `si`: how many hold the shared lock.
    fn shared_count(&self, name: &[u8]) -> Result<usize, StoreError>;
    /// `ra`: releases everything this client holds.
    fn release_all(&self, id: ClientId) -> Result<Released, StoreError>;
    /// Ends a wait that timed out; `false` when the grant won the race.
    fn cancel_wait(&self, id: ClientId) -> bool;
    /// `iam`: registers a name (empty removes it).
    fn register(&self, id: ClientId, name: &[u8]) -> Result<(), StoreError>;
    /// `me`: this client's names.
    fn names(&self, id: ClientId) -> Option<ClientNames>;
    /// `who`: registered clients, oldest registration first.
    fn registered(&self, filter: &[u8]) -> Result<Vec<ClientNames>, StoreError>;
    /// `d`, `dump`, `dj`: exclusive locks sorted by name.
    fn exclusive_locks(&self, filter: &[u8]) -> Result<Vec<ExclusiveView>, StoreError>;
    /// `sd`, `dump shared`, `dj`: shared locks sorted by name.
    fn shared_locks(&self, filter: &[u8]) -> Result<Vec<SharedView>, StoreError>;
    /// `dj`: read-held locks sorted by name.
    fn read_locks(&self, filter: &[u8]) -> Result<Vec<ReadView>, StoreError>;
    /// `d`, `dump`, `dj` page by page: write-held locks after `after`
    /// in name order. A store that cannot page returns the rest at once.
    fn exclusive_page(&self, after: Option<&[u8]>) -> Result<Page<ExclusiveView>, StoreError> {
        let mut items = self.exclusive_locks(b"")?;
        items.retain(|l| after.is_none_or(|a| l.name.as_bytes() > a));
        Ok(Page { items, next: None })
    }
    /// `sd`, `dump shared`, `dj` page by page: shared locks after `after`.
    fn shared_page(&self, after: Option<&[u8]>) -> Result<Page<SharedView>, StoreError> {
        let mut items = self.shared_locks(b"")?;
        items.retain(|l| after.is_none_or(|a| l.name.as_bytes() > a));
        Ok(Page { items, next: None })
    }
    /// `dj` page by page: read-held locks after `after`.
    fn read_page(&self, after: Option<&[u8]>) -> Result<Page<ReadView>, StoreError> {
        let mut items = self.read_locks(b"")?;
        items.retain(|l| after.is_none_or(|a| l.name.as_bytes() > a));
        Ok(Page { items, next: None })
    }
    /// `who` page by page: registered clients after registration `after`
    /// (0: from the first).
    fn registered_page(&self, after: u64) -> Result<Page<ClientNames, u64>, StoreError> {
        let items = if after == 0 {
            self.registered(b"")?
        } else {
            Vec::new()
        };
        Ok(Page { items, next: None })
    }
    /// Gauges for `q`.
    fn counts(&self) -> Result<Counts, StoreError>;
    /// `watch`: the snapshot of what `pattern` matches, and the event
    /// queue on the client's first pattern.
    fn watch(
        &self,
        id: ClientId,
        pattern: &[u8],
    ) -> Result<(Vec<WatchEvent>, Option<Watcher>), StoreError>;
    /// The fencing-token counter's next token and saved mark (none when
    /// tokens live in memory only), for `/metrics`.
    fn token_marks(&self) -> (u64, Option<u64>);
    /// Figures of the store's own work, for `/metrics` (the etcd store's
    /// group commit); the in-memory table has none.
    fn store_metrics(&self) -> Vec<StoreMetric> {
        Vec::new()
    }
}

/// One figure of [`LockStore::store_metrics`]: a Prometheus family of one
/// sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreMetric {
    /// The metric's name, `lockd_...`.
    pub name: &'static str,
    /// A gauge, else a counter.
    pub gauge: bool,
    /// What it counts.
    pub help: &'static str,
    /// Its value now.
    pub value: u64,
}
