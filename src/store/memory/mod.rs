//! The lock table: exclusive locks with their readers, counted shared
//! locks, the lines of waiters, and which client holds what. A plain data
//! structure: no sockets, no threads, no clocks. Front ends (the TCP server
//! today) call it.
//!
//! Every method takes `&self`, locks inside, and returns owned values: no
//! table guard escapes, so no caller can hold the lock across I/O. Names
//! come in borrowed; the table copies one only when it inserts a lock.
//!
//! - `rw.rs`: the exclusive namespace, one writer or many readers, and its
//!   first-come-first-served line of `wg` and `wr` waiters;
//! - `shared.rs`: counted shared locks and semaphores;
//! - `deadlock.rs`: refusing a wait that would close a cycle;
//! - `holders.rs`: ordered sets of holders with O(1) updates;
//! - `index.rs`: the names of a big namespace in order, so that listings
//!   copy it out in bounded pages.

mod deadlock;
mod holders;
mod index;
mod rw;
mod shared;
mod watch;

pub use index::PAGE;
pub(crate) use watch::Watchers;
pub use watch::{Event, HoldKind, WatchEvent, Watcher, QUEUE as WATCH_QUEUE};

use super::limits::{reached, LimitCounts, LimitError, LimitHit, LimitLog, Limits};
use super::{LockStore, StoreError};
use crate::name::LockName;
use crate::token::TokenCounter;
use crossbeam_channel::Sender;
use holders::Holders;
use index::Index;
use parking_lot::RwLock;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// Identifies one client (one connection) for the life of the table.
pub type ClientId = u64;

/// Sent to a waiting client when the table hands it what it waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// The exclusive (write) lock, with its fencing token.
    Exclusive {
        /// The fencing token of this grant.
        token: u64,
    },
    /// A read hold on the exclusive namespace.
    Read {
        /// Readers now, this one included.
        readers: usize,
    },
    /// A place among the holders of a shared lock.
    Shared {
        /// Holders now, this one included.
        holders: usize,
    },
}

/// The outcome of asking to wait for a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStart {
    /// Granted at once.
    Granted(Grant),
    /// In line; a [`Grant`] arrives on the client's channel.
    Queued,
    /// Not free and the caller did not want to queue.
    Busy,
    /// Waiting would close a cycle of waiters: refused.
    Deadlock,
    /// A cap of [`Limits`] refused it; nothing changed.
    Limit(LimitError),
}

/// How many locks a client lost when it left.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Released {
    /// Exclusive (write) locks released.
    pub exclusive: usize,
    /// Read holds released.
    pub read: usize,
    /// Shared locks released.
    pub shared: usize,
}

impl Released {
    /// Everything released.
    pub fn total(&self) -> usize {
        self.exclusive + self.read + self.shared
    }
}

/// A client as `who`, `me`, `d` and `dj` show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientNames {
    /// `IP:PORT` or `unix:N`.
    pub default: Box<[u8]>,
    /// The name given by `iam`, if any.
    pub registered: Option<Box<[u8]>>,
}

impl ClientNames {
    /// The registered name if there is one, else the default name.
    pub fn display(&self) -> &[u8] {
        self.registered.as_deref().unwrap_or(&self.default)
    }
}

/// One write-held lock, for `d`, `dump` and `dj`.
#[derive(Clone, Debug)]
pub struct ExclusiveView {
    /// The lock.
    pub name: LockName,
    /// Its holder.
    pub holder: ClientNames,
    /// The fencing token of the current grant.
    pub token: u64,
    /// Default names of the waiters (`wg` and `wr`), first in line first.
    pub waiters: Vec<Box<[u8]>>,
}

/// One read-held lock, for `dj`.
#[derive(Clone, Debug)]
pub struct ReadView {
    /// The lock.
    pub name: LockName,
    /// Default names of its readers in the order they got it.
    pub readers: Vec<Box<[u8]>>,
    /// Default names of the waiters (`wg` and `wr`), first in line first.
    pub waiters: Vec<Box<[u8]>>,
}

/// One shared lock, for `sd`, `dump shared` and `dj`.
#[derive(Clone, Debug)]
pub struct SharedView {
    /// The lock.
    pub name: LockName,
    /// Holders in the order they got it.
    pub holders: Vec<ClientNames>,
    /// Default names and limits of the waiters, first in line first.
    pub waiters: Vec<(Box<[u8]>, u32)>,
}

/// One page of a listing, copied out under one acquisition of the table's
/// lock: a listing asks for pages until `next` is `None`, each resuming
/// after the `next` of the one before, so it never holds the lock for
/// long however big the table (see [`PAGE`]).
#[derive(Clone, Debug)]
pub struct Page<T, C = LockName> {
    /// The entries, sorted.
    pub items: Vec<T>,
    /// Where the next page starts (after this key); `None` at the end.
    pub next: Option<C>,
}

/// Gauges for `q`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Exclusive locks write-held now.
    pub locks: usize,
    /// Exclusive-namespace names read-held now.
    pub read_locks: usize,
    /// Shared locks held now (names, not holders).
    pub shared_locks: usize,
    /// Clients waiting now.
    pub waiting: usize,
    /// Exclusive grants so far (each drew a fencing token).
    pub grants: u64,
    /// Requests refused by each cap.
    pub refused: LimitCounts,
}

/// The lock table. See the module docs.
pub struct Table {
    inner: RwLock<Inner>,
    limits: LimitLog,
}

/// What a client waits for; a client waits for one lock at a time.
enum Waiting {
    /// `wg`: the write lock.
    Write(LockName),
    /// `wr`: a read hold.
    Read(LockName),
    /// `wsg`: a place in a shared lock.
    Shared(LockName),
}

/// Hashes keys the server chose itself (client ids, buffer addresses), so
/// no client can aim for collisions: a multiply is enough, where lock names
/// (chosen by clients) keep std's keyed SipHash.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

type ById = BuildHasherDefault<IdHasher>;

/// A lock a client holds: the very buffer that keys the table's map,
/// compared and hashed by address, so the client's set costs no second copy
/// of the name and no second SipHash.
#[derive(Clone)]
struct Held(LockName);

impl PartialEq for Held {
    fn eq(&self, other: &Held) -> bool {
        self.0.ptr_eq(&other.0)
    }
}

impl Eq for Held {}

impl Hash for Held {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.0.addr());
    }
}

struct Client {
    default: Box<[u8]>,
    /// Registration order and name, from `iam`.
    registered: Option<(u64, Box<[u8]>)>,
    /// Write holds.
    exclusive: HashSet<Held, ById>,
    /// Read holds.
    read: HashSet<Held, ById>,
    shared: HashSet<Held, ById>,
    waiting: Option<Waiting>,
    notify: Sender<Grant>,
}

impl Client {
    fn names(&self) -> ClientNames {
        ClientNames {
            default: self.default.clone(),
            registered: self.registered.as_ref().map(|(_, n)| n.clone()),
        }
    }
}

/// A map of lock names, keyed by std's SipHash (names are chosen by
/// clients). hashbrown's rather than std's, for its raw entries: the hot
/// paths of `g` and `r` hash a name once for both the lookup and the
/// insert or removal that follows (see [`Inner::name_hash`]). SipHash is
/// about a tenth of a pipelined `g`/`r` (190 of 1,900 instructions); a
/// faster keyed hash (foldhash) was measured and not kept: its authors do
/// not claim it resists collisions crafted by someone who studies a
/// long-running program's behaviour, which is what a lock server open
/// to untrusted clients is.
type NameMap<V> = hashbrown::HashMap<LockName, V, std::hash::RandomState>;

struct Inner {
    /// The exclusive namespace: writers, readers and their lines.
    locks: NameMap<rw::Lock>,
    shared: NameMap<shared::Shared>,
    /// `locks` in name order, while it is big.
    lock_index: Index,
    /// `shared` in name order, while it is big.
    shared_index: Index,
    clients: HashMap<ClientId, Client, ById>,
    registrations: u64,
    /// Registered clients by registration order, for `who`.
    by_registration: BTreeMap<u64, ClientId>,
    waiting: usize,
    grants: u64,
    /// Names write-held now.
    write_held: usize,
    /// Names read-held now.
    read_held: usize,
    tokens: TokenCounter,
    limits: Limits,
    watchers: Watchers,
    /// The name of the last lock `r` dropped (one buffer, kept until the
    /// next `g` of a free name): that `g` reuses it when the names are as
    /// long and nothing else refers to it, so a `g`/`r` loop allocates and
    /// frees no name (see [`LockName::refill`]).
    spare_name: Option<LockName>,
}

impl Table {
    /// An empty table drawing fencing tokens from `tokens`, with the
    /// default [`Limits`].
    pub fn new(tokens: TokenCounter) -> Table {
        Table::with_limits(tokens, Limits::default())
    }

    /// An empty table with the given caps.
    pub fn with_limits(tokens: TokenCounter, limits: Limits) -> Table {
        Table {
            limits: LimitLog::new(limits),
            inner: RwLock::new(Inner {
                locks: NameMap::default(),
                shared: NameMap::default(),
                lock_index: Index::default(),
                shared_index: Index::default(),
                clients: HashMap::default(),
                registrations: 0,
                by_registration: BTreeMap::new(),
                waiting: 0,
                grants: 0,
                write_held: 0,
                read_held: 0,
                tokens,
                limits,
                watchers: Watchers::default(),
                spare_name: None,
            }),
        }
    }

    /// The caps this table enforces.
    pub fn limits(&self) -> &Limits {
        self.limits.limits()
    }

    /// Counts and logs a refusal by a cap, outside the table lock.
    fn counted(&self, start: WaitStart) -> WaitStart {
        if let WaitStart::Limit(error) = start {
            self.limits.hit(error.hit);
        }
        start
    }

    /// `g`: takes the write lock if nobody else holds it or waits for it
    /// (or this client already holds it, or is its only reader: the read
    /// hold becomes the write hold). Returns the grant's fencing token.
    pub fn try_lock(&self, id: ClientId, name: &[u8]) -> Option<u64> {
        match self.lock_or_queue(id, name, false) {
            Ok(WaitStart::Granted(Grant::Exclusive { token })) => Some(token),
            _ => None,
        }
    }
}

/// The memory table never fails but for its caps ([`StoreError::Limit`]).
impl LockStore for Table {
    /// Adds a client. Grants for its waits arrive on `notify`, which must
    /// have room for one message (a client waits for one lock at a time).
    fn connect(&self, id: ClientId, default_name: Box<[u8]>, notify: Sender<Grant>) {
        self.inner.write().clients.insert(
            id,
            Client {
                default: default_name,
                registered: None,
                exclusive: HashSet::default(),
                read: HashSet::default(),
                shared: HashSet::default(),
                waiting: None,
                notify,
            },
        );
    }

    /// Removes a client: releases everything it holds (handing each lock to
    /// its next waiters), takes it out of any line, forgets its name.
    fn disconnect(&self, id: ClientId) -> Released {
        let mut inner = self.inner.write();
        inner.unwatch(id);
        inner.stop_waiting(id);
        let released = inner.release_all(id, Event::Orphaned);
        if let Some((seq, _)) = inner.clients.remove(&id).and_then(|c| c.registered) {
            inner.by_registration.remove(&seq);
        }
        released
    }

    /// `wg`: takes the write lock, or queues for it when `queue` is set,
    /// unless queueing would close a cycle of waiters.
    fn lock_or_queue(
        &self,
        id: ClientId,
        name: &[u8],
        queue: bool,
    ) -> Result<WaitStart, StoreError> {
        let start = self.inner.write().lock(id, name, queue);
        Ok(self.counted(start))
    }

    /// `g` before settling: the grant if the name is free for `id`; a
    /// refusal by a cap is left for [`LockStore::lock_or_queue`] to count.
    fn lock_if_free(&self, id: ClientId, name: &[u8]) -> Option<Grant> {
        match self.inner.write().lock(id, name, false) {
            WaitStart::Granted(grant) => Some(grant),
            _ => None,
        }
    }

    /// `r`: releases the write lock if this client holds it, handing the
    /// name to the head of its line.
    fn release(&self, id: ClientId, name: &[u8]) -> Result<bool, StoreError> {
        Ok(self.inner.write().release_write(id, name, Event::Released))
    }

    /// `wr`: takes a read hold, or queues for one when `queue` is set,
    /// unless queueing would close a cycle of waiters. Granted at once only
    /// when no writer holds the name and nobody waits for it.
    fn read_or_queue(
        &self,
        id: ClientId,
        name: &[u8],
        queue: bool,
    ) -> Result<WaitStart, StoreError> {
        let start = self.inner.write().read(id, name, queue);
        Ok(self.counted(start))
    }

    /// `rr`: gives up this client's read hold, serving the line if it was
    /// the last.
    fn release_read(&self, id: ClientId, name: &[u8]) -> Result<bool, StoreError> {
        Ok(self.inner.write().release_read(id, name, Event::Released))
    }

    /// `i`: is the name held by a writer or any reader?
    fn is_locked(&self, name: &[u8]) -> Result<bool, StoreError> {
        Ok(self
            .inner
            .read()
            .locks
            .get(name)
            .is_some_and(rw::Lock::held))
    }

    /// `t`: the fencing token of a lock this client write-holds.
    fn token(&self, id: ClientId, name: &[u8]) -> Result<Option<u64>, StoreError> {
        let inner = self.inner.read();
        let writer = inner.locks.get(name).and_then(|l| l.writer);
        Ok(writer.filter(|w| w.id == id).map(|w| w.token))
    }

    /// `sg`: takes a place among the holders (no limit). Returns the
    /// holder count.
    /// [`StoreError::Limit`] when a cap of [`Limits`] refused it.
    fn lock_shared(&self, id: ClientId, name: &[u8]) -> Result<usize, StoreError> {
        let result = self.inner.write().add_shared_holder(id, name);
        if let Err(error) = result {
            self.limits.hit(error.hit);
        }
        Ok(result?)
    }

    /// `wsg`: takes a place among at most `limit` holders (0: no limit),
    /// or queues for one when `queue` is set. Waiters are served in order,
    /// so a newcomer queues behind anyone already waiting.
    fn lock_shared_or_queue(
        &self,
        id: ClientId,
        name: &[u8],
        limit: u32,
        queue: bool,
    ) -> Result<WaitStart, StoreError> {
        let start = self.inner.write().lock_shared(id, name, limit, queue);
        Ok(self.counted(start))
    }

    /// `sr`: gives up this client's place, admitting waiters that now fit.
    fn release_shared(&self, id: ClientId, name: &[u8]) -> Result<bool, StoreError> {
        Ok(self.inner.write().release_shared(id, name, Event::Released))
    }

    /// `si`: how many hold the shared lock.
    fn shared_count(&self, name: &[u8]) -> Result<usize, StoreError> {
        let inner = self.inner.read();
        Ok(inner.shared.get(name).map_or(0, |l| l.holders.len()))
    }

    /// `ra`: releases everything this client holds.
    fn release_all(&self, id: ClientId) -> Result<Released, StoreError> {
        Ok(self.inner.write().release_all(id, Event::Released))
    }

    /// `watch`: registers `pattern` (a name, or a prefix ending in `*`) for
    /// client `id`. Returns the `held` snapshot of what it matches, sorted
    /// by name, and the client's event queue if this was its first pattern.
    /// Events after the snapshot arrive on the queue, none missed.
    fn watch(
        &self,
        id: ClientId,
        pattern: &[u8],
    ) -> Result<(Vec<WatchEvent>, Option<Watcher>), StoreError> {
        let (mut held, watcher) = self.inner.write().watch(id, pattern);
        held.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((held, watcher))
    }

    /// Ends a wait that timed out. `false` when the grant won the race: the
    /// client now holds the lock and its [`Grant`] is on its channel.
    fn cancel_wait(&self, id: ClientId) -> bool {
        self.inner.write().stop_waiting(id)
    }

    /// `iam`: registers a name (the empty name removes the registration).
    /// The latest registration sorts last in [`LockStore::registered`].
    fn register(&self, id: ClientId, name: &[u8]) -> Result<(), StoreError> {
        let mut inner = self.inner.write();
        inner.registrations += 1;
        let seq = inner.registrations;
        let Some(client) = inner.clients.get_mut(&id) else {
            return Ok(());
        };
        let before = std::mem::replace(
            &mut client.registered,
            (!name.is_empty()).then(|| (seq, name.into())),
        );
        if let Some((old, _)) = before {
            inner.by_registration.remove(&old);
        }
        if !name.is_empty() {
            inner.by_registration.insert(seq, id);
        }
        Ok(())
    }

    /// `me`: this client's names.
    fn names(&self, id: ClientId) -> Option<ClientNames> {
        self.inner.read().clients.get(&id).map(Client::names)
    }

    /// `who`: registered clients, oldest registration first; only those
    /// registered exactly as `filter` unless it is empty.
    fn registered(&self, filter: &[u8]) -> Result<Vec<ClientNames>, StoreError> {
        let mut found: Vec<(u64, ClientNames)> = {
            let inner = self.inner.read();
            inner
                .clients
                .values()
                .filter_map(|c| {
                    let (seq, name) = c.registered.as_ref()?;
                    (filter.is_empty() || filter == &name[..]).then(|| (*seq, c.names()))
                })
                .collect()
        };
        found.sort_by_key(|(seq, _)| *seq);
        Ok(found.into_iter().map(|(_, names)| names).collect())
    }

    /// Write-held locks, sorted by name; only `filter` unless it is empty.
    /// The whole table is copied a page at a time (see
    /// [`LockStore::exclusive_page`]), so it never holds the lock for long.
    fn exclusive_locks(&self, filter: &[u8]) -> Result<Vec<ExclusiveView>, StoreError> {
        if filter.is_empty() {
            return all_pages(|after| self.exclusive_page(after));
        }
        let inner = self.inner.read();
        let lock = inner.locks.get(filter);
        Ok(lock
            .and_then(|l| inner.exclusive_view(l))
            .into_iter()
            .collect())
    }

    /// Read-held locks, sorted by name; only `filter` unless it is empty.
    fn read_locks(&self, filter: &[u8]) -> Result<Vec<ReadView>, StoreError> {
        if filter.is_empty() {
            return all_pages(|after| self.read_page(after));
        }
        let inner = self.inner.read();
        let lock = inner.locks.get(filter);
        Ok(lock.and_then(|l| inner.read_view(l)).into_iter().collect())
    }

    /// Shared locks, sorted by name; only `filter` unless it is empty.
    fn shared_locks(&self, filter: &[u8]) -> Result<Vec<SharedView>, StoreError> {
        if filter.is_empty() {
            return all_pages(|after| self.shared_page(after));
        }
        let inner = self.inner.read();
        let lock = inner.shared.get(filter);
        Ok(lock.map(|l| inner.shared_view(l)).into_iter().collect())
    }

    /// A page of write-held locks after `after` (from the first when
    /// `None`), in name order.
    fn exclusive_page(&self, after: Option<&[u8]>) -> Result<Page<ExclusiveView>, StoreError> {
        let (mut items, next) = {
            let inner = self.inner.read();
            let (locks, next) = inner.lock_index.page(&inner.locks, after);
            let items: Vec<_> = locks
                .into_iter()
                .filter_map(|l| inner.exclusive_view(l))
                .collect();
            (items, next)
        };
        items.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Page { items, next })
    }

    /// A page of read-held locks after `after`, in name order.
    fn read_page(&self, after: Option<&[u8]>) -> Result<Page<ReadView>, StoreError> {
        let (mut items, next) = {
            let inner = self.inner.read();
            let (locks, next) = inner.lock_index.page(&inner.locks, after);
            let items: Vec<_> = locks
                .into_iter()
                .filter_map(|l| inner.read_view(l))
                .collect();
            (items, next)
        };
        items.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Page { items, next })
    }

    /// A page of shared locks after `after`, in name order.
    fn shared_page(&self, after: Option<&[u8]>) -> Result<Page<SharedView>, StoreError> {
        let (mut items, next) = {
            let inner = self.inner.read();
            let (locks, next) = inner.shared_index.page(&inner.shared, after);
            let items: Vec<_> = locks.into_iter().map(|l| inner.shared_view(l)).collect();
            (items, next)
        };
        items.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Page { items, next })
    }

    /// A page of registered clients, registered after the registration
    /// `after` (0: from the first), oldest registration first.
    fn registered_page(&self, after: u64) -> Result<Page<ClientNames, u64>, StoreError> {
        let inner = self.inner.read();
        let start = (std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded);
        let mut order = inner.by_registration.range(start);
        let mut items = Vec::new();
        let mut last = None;
        for (&seq, id) in order.by_ref().take(PAGE) {
            items.extend(inner.clients.get(id).map(Client::names));
            last = Some(seq);
        }
        let next = order.next().and(last);
        Ok(Page { items, next })
    }

    /// The fencing-token counter's (next token, mark on disk); no mark
    /// when tokens are kept in memory only.
    fn token_marks(&self) -> (u64, Option<u64>) {
        self.inner.read().tokens.marks()
    }

    /// Gauges for `q`.
    fn counts(&self) -> Result<Counts, StoreError> {
        let inner = self.inner.read();
        Ok(Counts {
            locks: inner.write_held,
            read_locks: inner.read_held,
            shared_locks: inner.shared.len(),
            waiting: inner.waiting,
            grants: inner.grants,
            refused: self.limits.counts(),
        })
    }
}

/// Every page of a listing, from the first to the last.
fn all_pages<T>(
    mut page: impl FnMut(Option<&[u8]>) -> Result<Page<T>, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut all = Vec::new();
    let mut after: Option<LockName> = None;
    loop {
        let Page { items, next } = page(after.as_ref().map(LockName::as_bytes))?;
        all.extend(items);
        match next {
            Some(name) => after = Some(name),
            None => return Ok(all),
        }
    }
}

impl Inner {
    fn client_names(&self, id: ClientId) -> ClientNames {
        self.clients.get(&id).map_or_else(
            || ClientNames {
                default: Box::default(),
                registered: None,
            },
            Client::names,
        )
    }

    fn default_name(&self, id: ClientId) -> Box<[u8]> {
        self.clients
            .get(&id)
            .map_or_else(Box::default, |c| c.default.clone())
    }

    /// May `id` take one more lock, and may the table hold one more name
    /// (when `new_name`)?
    fn may_hold(&self, id: ClientId, new_name: bool) -> Result<(), LimitError> {
        let held = self
            .clients
            .get(&id)
            .map_or(0, |c| c.exclusive.len() + c.read.len() + c.shared.len());
        if reached(held, self.limits.max_locks_per_connection) {
            return Err(self.limit(LimitHit::LocksPerConnection));
        }
        if new_name && reached(self.locks.len() + self.shared.len(), self.limits.max_locks) {
            return Err(self.limit(LimitHit::Locks));
        }
        Ok(())
    }

    /// May `id` join a line of `waiters`, to take one more lock when it is
    /// served (unless it upgrades a read hold it has)?
    fn may_queue(&self, id: ClientId, waiters: usize, upgrade: bool) -> Result<(), LimitError> {
        if reached(waiters, self.limits.max_waiters) {
            return Err(self.limit(LimitHit::Waiters));
        }
        if upgrade {
            return Ok(());
        }
        self.may_hold(id, false)
    }

    fn limit(&self, hit: LimitHit) -> LimitError {
        let cap = match hit {
            LimitHit::Locks => self.limits.max_locks,
            LimitHit::LocksPerConnection => self.limits.max_locks_per_connection,
            LimitHit::Waiters => self.limits.max_waiters,
        };
        LimitError { hit, cap }
    }

    fn set_waiting(&mut self, id: ClientId, waiting: Waiting) {
        if let Some(client) = self.clients.get_mut(&id) {
            if client.waiting.replace(waiting).is_none() {
                self.waiting += 1;
            }
        }
    }

    /// Marks `id` as no longer waiting (its grant came) and returns its
    /// channel.
    fn granted(&mut self, id: ClientId) -> Option<&mut Client> {
        let client = self.clients.get_mut(&id)?;
        if client.waiting.take().is_some() {
            self.waiting -= 1;
        }
        Some(client)
    }

    /// Takes `id` out of the line it stands in, serving whoever it held
    /// back. `false` if it was not waiting (its grant already came).
    fn stop_waiting(&mut self, id: ClientId) -> bool {
        let Some(waiting) = self.clients.get_mut(&id).and_then(|c| c.waiting.take()) else {
            return false;
        };
        self.waiting -= 1;
        match waiting {
            Waiting::Write(name) | Waiting::Read(name) => self.leave_line(id, name.as_bytes()),
            Waiting::Shared(name) => self.leave_shared_line(id, name.as_bytes()),
        }
        true
    }

    fn release_all(&mut self, id: ClientId, cause: Event) -> Released {
        let Some(client) = self.clients.get_mut(&id) else {
            return Released::default();
        };
        let exclusive = std::mem::take(&mut client.exclusive);
        let read = std::mem::take(&mut client.read);
        let shared = std::mem::take(&mut client.shared);
        for Held(name) in &exclusive {
            self.release_write(id, name.as_bytes(), cause);
        }
        for Held(name) in &read {
            self.release_read(id, name.as_bytes(), cause);
        }
        for Held(name) in &shared {
            self.release_shared(id, name.as_bytes(), cause);
        }
        Released {
            exclusive: exclusive.len(),
            read: read.len(),
            shared: shared.len(),
        }
    }
}

#[cfg(test)]
mod tests;
