//! The lock table: exclusive locks, counted shared locks, the lines of
//! waiters, and which client holds what. A plain data structure: no sockets,
//! no threads, no clocks. Front ends (the TCP server today) call it.
//!
//! Every method takes `&self`, locks inside, and returns owned values: no
//! table guard escapes, so no caller can hold the lock across I/O.

use crate::name::LockName;
use crate::token::TokenCounter;
use crossbeam_channel::Sender;
use parking_lot::RwLock;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// Identifies one client (one connection) for the life of the table.
pub type ClientId = u64;

/// Sent to a waiting client when the table hands it what it waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// The exclusive lock, with its fencing token.
    Exclusive {
        /// The fencing token of this grant.
        token: u64,
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
}

/// How many locks a client lost when it left.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Released {
    /// Exclusive locks released.
    pub exclusive: usize,
    /// Shared locks released.
    pub shared: usize,
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

/// One exclusive lock, for `d`, `dump` and `dj`.
#[derive(Clone, Debug)]
pub struct ExclusiveView {
    /// The lock.
    pub name: LockName,
    /// Its holder.
    pub holder: ClientNames,
    /// The fencing token of the current grant.
    pub token: u64,
    /// Default names of the waiters, first in line first.
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

/// Gauges for `q`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Exclusive locks held now.
    pub locks: usize,
    /// Shared locks held now (names, not holders).
    pub shared_locks: usize,
    /// Clients waiting now.
    pub waiting: usize,
    /// Exclusive grants so far (each drew a fencing token).
    pub grants: u64,
}

/// The lock table. See the module docs.
pub struct Table {
    inner: RwLock<Inner>,
}

struct Exclusive {
    holder: ClientId,
    token: u64,
    waiters: VecDeque<ClientId>,
}

struct Shared {
    holders: Vec<ClientId>,
    waiters: VecDeque<(ClientId, u32)>,
}

enum Waiting {
    Exclusive(LockName),
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
    exclusive: HashSet<Held, ById>,
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

struct Inner {
    exclusive: HashMap<LockName, Exclusive>,
    shared: HashMap<LockName, Shared>,
    clients: HashMap<ClientId, Client, ById>,
    registrations: u64,
    waiting: usize,
    grants: u64,
    tokens: TokenCounter,
}

impl Table {
    /// An empty table drawing fencing tokens from `tokens`.
    pub fn new(tokens: TokenCounter) -> Table {
        Table {
            inner: RwLock::new(Inner {
                exclusive: HashMap::new(),
                shared: HashMap::new(),
                clients: HashMap::default(),
                registrations: 0,
                waiting: 0,
                grants: 0,
                tokens,
            }),
        }
    }

    /// Adds a client. Grants for its waits arrive on `notify`, which must
    /// have room for one message (a client waits for one lock at a time).
    pub fn connect(&self, id: ClientId, default_name: Box<[u8]>, notify: Sender<Grant>) {
        self.inner.write().clients.insert(
            id,
            Client {
                default: default_name,
                registered: None,
                exclusive: HashSet::default(),
                shared: HashSet::default(),
                waiting: None,
                notify,
            },
        );
    }

    /// Removes a client: releases everything it holds (handing each lock to
    /// its next waiter), takes it out of any line, forgets its name.
    pub fn disconnect(&self, id: ClientId) -> Released {
        let mut inner = self.inner.write();
        inner.stop_waiting(id);
        let released = inner.release_all(id);
        inner.clients.remove(&id);
        released
    }

    /// `g`: takes the exclusive lock if it is free (or already this
    /// client's). Returns the grant's fencing token.
    pub fn try_lock(&self, id: ClientId, name: impl Into<LockName>) -> Option<u64> {
        match self.inner.write().lock(id, name.into(), false) {
            WaitStart::Granted(Grant::Exclusive { token }) => Some(token),
            _ => None,
        }
    }

    /// `wg`: takes the exclusive lock, or queues for it when `queue` is set,
    /// unless queueing would close a cycle of waiters.
    pub fn lock_or_queue(&self, id: ClientId, name: impl Into<LockName>, queue: bool) -> WaitStart {
        self.inner.write().lock(id, name.into(), queue)
    }

    /// `r`: releases the lock if this client holds it, handing it to the
    /// next waiter.
    pub fn release(&self, id: ClientId, name: &[u8]) -> bool {
        self.inner.write().release_exclusive(id, name)
    }

    /// `i`: is the exclusive lock held by anyone?
    pub fn is_locked(&self, name: &[u8]) -> bool {
        self.inner.read().exclusive.contains_key(name)
    }

    /// `t`: the fencing token of a lock this client holds.
    pub fn token(&self, id: ClientId, name: &[u8]) -> Option<u64> {
        self.inner
            .read()
            .exclusive
            .get(name)
            .filter(|l| l.holder == id)
            .map(|l| l.token)
    }

    /// `sg`: takes a place among the holders (no limit). Returns the
    /// holder count.
    pub fn lock_shared(&self, id: ClientId, name: impl Into<LockName>) -> usize {
        let mut inner = self.inner.write();
        inner.add_shared_holder(id, name.into())
    }

    /// `wsg`: takes a place among at most `limit` holders (0: no limit),
    /// or queues for one when `queue` is set. Waiters are served in order,
    /// so a newcomer queues behind anyone already waiting.
    pub fn lock_shared_or_queue(
        &self,
        id: ClientId,
        name: impl Into<LockName>,
        limit: u32,
        queue: bool,
    ) -> WaitStart {
        let name = name.into();
        let mut inner = self.inner.write();
        if let Some(lock) = inner.shared.get(&name) {
            if lock.holders.contains(&id) {
                let holders = lock.holders.len();
                return WaitStart::Granted(Grant::Shared { holders });
            }
            let fits = lock.waiters.is_empty() && fits(lock.holders.len(), limit);
            if !fits {
                if !queue {
                    return WaitStart::Busy;
                }
                if let Some(lock) = inner.shared.get_mut(&name) {
                    lock.waiters.push_back((id, limit));
                }
                inner.set_waiting(id, Waiting::Shared(name));
                return WaitStart::Queued;
            }
        }
        let holders = inner.add_shared_holder(id, name);
        WaitStart::Granted(Grant::Shared { holders })
    }

    /// `sr`: gives up this client's place, admitting waiters that now fit.
    pub fn release_shared(&self, id: ClientId, name: &[u8]) -> bool {
        self.inner.write().release_shared(id, name)
    }

    /// `si`: how many hold the shared lock.
    pub fn shared_count(&self, name: &[u8]) -> usize {
        self.inner
            .read()
            .shared
            .get(name)
            .map_or(0, |l| l.holders.len())
    }

    /// `ra`: releases everything this client holds; returns how many.
    pub fn release_all(&self, id: ClientId) -> usize {
        let released = self.inner.write().release_all(id);
        released.exclusive + released.shared
    }

    /// Ends a wait that timed out. `false` when the grant won the race: the
    /// client now holds the lock and its [`Grant`] is on its channel.
    pub fn cancel_wait(&self, id: ClientId) -> bool {
        self.inner.write().stop_waiting(id)
    }

    /// `iam`: registers a name (the empty name removes the registration).
    /// The latest registration sorts last in [`Table::registered`].
    pub fn register(&self, id: ClientId, name: &[u8]) {
        let mut inner = self.inner.write();
        inner.registrations += 1;
        let seq = inner.registrations;
        if let Some(client) = inner.clients.get_mut(&id) {
            client.registered = (!name.is_empty()).then(|| (seq, name.into()));
        }
    }

    /// `me`: this client's names.
    pub fn names(&self, id: ClientId) -> Option<ClientNames> {
        self.inner.read().clients.get(&id).map(Client::names)
    }

    /// `who`: registered clients, oldest registration first; only those
    /// registered exactly as `filter` unless it is empty.
    pub fn registered(&self, filter: &[u8]) -> Vec<ClientNames> {
        let inner = self.inner.read();
        let mut found: Vec<(u64, ClientNames)> = inner
            .clients
            .values()
            .filter_map(|c| {
                let (seq, name) = c.registered.as_ref()?;
                (filter.is_empty() || filter == &name[..]).then(|| (*seq, c.names()))
            })
            .collect();
        found.sort_by_key(|(seq, _)| *seq);
        found.into_iter().map(|(_, names)| names).collect()
    }

    /// Exclusive locks, sorted by name; only `filter` unless it is empty.
    pub fn exclusive_locks(&self, filter: &[u8]) -> Vec<ExclusiveView> {
        let inner = self.inner.read();
        let view = |(name, lock): (&LockName, &Exclusive)| ExclusiveView {
            name: name.clone(),
            holder: inner.client_names(lock.holder),
            token: lock.token,
            waiters: lock
                .waiters
                .iter()
                .map(|w| inner.client_names(*w).default)
                .collect(),
        };
        let mut locks: Vec<ExclusiveView> = if filter.is_empty() {
            inner.exclusive.iter().map(view).collect()
        } else {
            inner
                .exclusive
                .get_key_value(filter)
                .map(view)
                .into_iter()
                .collect()
        };
        locks.sort_by(|a, b| a.name.cmp(&b.name));
        locks
    }

    /// Shared locks, sorted by name; only `filter` unless it is empty.
    pub fn shared_locks(&self, filter: &[u8]) -> Vec<SharedView> {
        let inner = self.inner.read();
        let view = |(name, lock): (&LockName, &Shared)| SharedView {
            name: name.clone(),
            holders: lock
                .holders
                .iter()
                .map(|h| inner.client_names(*h))
                .collect(),
            waiters: lock
                .waiters
                .iter()
                .map(|(w, limit)| (inner.client_names(*w).default, *limit))
                .collect(),
        };
        let mut locks: Vec<SharedView> = if filter.is_empty() {
            inner.shared.iter().map(view).collect()
        } else {
            inner
                .shared
                .get_key_value(filter)
                .map(view)
                .into_iter()
                .collect()
        };
        locks.sort_by(|a, b| a.name.cmp(&b.name));
        locks
    }

    /// The fencing-token counter's (next token, mark on disk); no mark
    /// when tokens are kept in memory only.
    pub fn token_marks(&self) -> (u64, Option<u64>) {
        self.inner.read().tokens.marks()
    }

    /// Gauges for `q`.
    pub fn counts(&self) -> Counts {
        let inner = self.inner.read();
        Counts {
            locks: inner.exclusive.len(),
            shared_locks: inner.shared.len(),
            waiting: inner.waiting,
            grants: inner.grants,
        }
    }
}

fn fits(holders: usize, limit: u32) -> bool {
    limit == 0 || holders < limit as usize
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

    /// One SipHash of the name for the common cases (free, or held by
    /// someone when not queueing); queueing looks the lock up again.
    fn lock(&mut self, id: ClientId, name: LockName, queue: bool) -> WaitStart {
        let (key, holder, token) = match self.exclusive.entry(name) {
            Entry::Occupied(lock) => (lock.key().clone(), lock.get().holder, lock.get().token),
            Entry::Vacant(free) => {
                // No token can be issued safely (the state cannot be
                // saved): no grant, as if the lock were busy.
                let Some(token) = self.tokens.draw() else {
                    return WaitStart::Busy;
                };
                let key = free.key().clone();
                self.grants += 1;
                free.insert(Exclusive {
                    holder: id,
                    token,
                    waiters: VecDeque::new(),
                });
                if let Some(client) = self.clients.get_mut(&id) {
                    client.exclusive.insert(Held(key));
                }
                return WaitStart::Granted(Grant::Exclusive { token });
            }
        };
        if holder == id {
            return WaitStart::Granted(Grant::Exclusive { token });
        }
        if !queue {
            return WaitStart::Busy;
        }
        if self.closes_cycle(id, holder) {
            return WaitStart::Deadlock;
        }
        if let Some(lock) = self.exclusive.get_mut(&key) {
            lock.waiters.push_back(id);
        }
        self.set_waiting(id, Waiting::Exclusive(key));
        WaitStart::Queued
    }

    /// Would `waiter` waiting on a lock held by `holder` close a cycle?
    /// Each client waits for at most one lock, so follow the chain.
    fn closes_cycle(&self, waiter: ClientId, mut holder: ClientId) -> bool {
        for _ in 0..=self.clients.len() {
            if holder == waiter {
                return true;
            }
            let next = match self.clients.get(&holder).and_then(|c| c.waiting.as_ref()) {
                Some(Waiting::Exclusive(name)) => self.exclusive.get(name).map(|l| l.holder),
                _ => None,
            };
            match next {
                Some(next) => holder = next,
                None => return false,
            }
        }
        false
    }

    fn set_waiting(&mut self, id: ClientId, waiting: Waiting) {
        if let Some(client) = self.clients.get_mut(&id) {
            if client.waiting.replace(waiting).is_none() {
                self.waiting += 1;
            }
        }
    }

    /// Takes `id` out of the line it stands in. `false` if it was not
    /// waiting (its grant already came).
    fn stop_waiting(&mut self, id: ClientId) -> bool {
        let Some(waiting) = self.clients.get_mut(&id).and_then(|c| c.waiting.take()) else {
            return false;
        };
        self.waiting -= 1;
        match waiting {
            Waiting::Exclusive(name) => {
                if let Some(lock) = self.exclusive.get_mut(&name) {
                    lock.waiters.retain(|w| *w != id);
                }
            }
            Waiting::Shared(name) => {
                if let Some(lock) = self.shared.get_mut(&name) {
                    lock.waiters.retain(|(w, _)| *w != id);
                }
                // The one that left may have been holding back others.
                self.admit_shared_waiters(name.as_bytes());
            }
        }
        true
    }

    /// Releases `name` if `id` holds it, handing it straight to the next
    /// waiter (the lock is never free in between). One SipHash when nobody
    /// waits.
    fn release_exclusive(&mut self, id: ClientId, name: &[u8]) -> bool {
        let Some((key, mut lock)) = self.exclusive.remove_entry(name) else {
            return false;
        };
        if lock.holder != id {
            self.exclusive.insert(key, lock);
            return false;
        }
        if let Some(client) = self.clients.get_mut(&id) {
            client.exclusive.remove(&Held(key.clone()));
        }
        while let Some(next) = lock.waiters.pop_front() {
            let Some(client) = self.clients.get_mut(&next) else {
                continue;
            };
            // No token can be issued safely: nobody gets the lock, and
            // those still in line time out.
            let Some(token) = self.tokens.draw() else {
                break;
            };
            self.grants += 1;
            lock.holder = next;
            lock.token = token;
            client.waiting = None;
            self.waiting -= 1;
            client.exclusive.insert(Held(key.clone()));
            let _ = client.notify.try_send(Grant::Exclusive { token });
            self.exclusive.insert(key, lock);
            break;
        }
        true
    }

    fn add_shared_holder(&mut self, id: ClientId, name: LockName) -> usize {
        let (key, lock) = match self.shared.entry(name) {
            Entry::Occupied(lock) => (lock.key().clone(), lock.into_mut()),
            Entry::Vacant(free) => (
                free.key().clone(),
                free.insert(Shared {
                    holders: Vec::new(),
                    waiters: VecDeque::new(),
                }),
            ),
        };
        if !lock.holders.contains(&id) {
            lock.holders.push(id);
            if let Some(client) = self.clients.get_mut(&id) {
                client.shared.insert(Held(key));
            }
        }
        lock.holders.len()
    }

    fn release_shared(&mut self, id: ClientId, name: &[u8]) -> bool {
        let Some((key, lock)) = self.shared.get_key_value(name) else {
            return false;
        };
        let Some(pos) = lock.holders.iter().position(|h| *h == id) else {
            return false;
        };
        let key = key.clone();
        if let Some(lock) = self.shared.get_mut(name) {
            lock.holders.remove(pos);
        }
        if let Some(client) = self.clients.get_mut(&id) {
            client.shared.remove(&Held(key));
        }
        self.admit_shared_waiters(name);
        true
    }

    /// Admits waiters in order while the first in line fits; drops the
    /// entry when nobody holds the lock.
    fn admit_shared_waiters(&mut self, name: &[u8]) {
        let Some(key) = self.shared.get_key_value(name).map(|(key, _)| key.clone()) else {
            return;
        };
        let Some(lock) = self.shared.get_mut(name) else {
            return;
        };
        while let Some(&(next, limit)) = lock.waiters.front() {
            if !fits(lock.holders.len(), limit) {
                break;
            }
            lock.waiters.pop_front();
            let Some(client) = self.clients.get_mut(&next) else {
                continue;
            };
            lock.holders.push(next);
            client.waiting = None;
            self.waiting -= 1;
            client.shared.insert(Held(key.clone()));
            let holders = lock.holders.len();
            let _ = client.notify.try_send(Grant::Shared { holders });
        }
        if lock.holders.is_empty() && lock.waiters.is_empty() {
            self.shared.remove(name);
        }
    }

    fn release_all(&mut self, id: ClientId) -> Released {
        let Some(client) = self.clients.get_mut(&id) else {
            return Released::default();
        };
        let exclusive = std::mem::take(&mut client.exclusive);
        let shared = std::mem::take(&mut client.shared);
        for Held(name) in &exclusive {
            self.release_exclusive(id, name.as_bytes());
        }
        for Held(name) in &shared {
            self.release_shared(id, name.as_bytes());
        }
        Released {
            exclusive: exclusive.len(),
            shared: shared.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::{bounded, Receiver};

    fn table() -> Table {
        Table::new(TokenCounter::in_memory())
    }

    fn join(table: &Table, id: ClientId) -> Receiver<Grant> {
        let (tx, rx) = bounded(1);
        table.connect(id, format!("c{id}").into_bytes().into(), tx);
        rx
    }

    #[test]
    fn exclusive_lock_and_tokens() {
        let t = table();
        let _a = join(&t, 1);
        let _b = join(&t, 2);
        let first = t.try_lock(1, b"x").expect("free");
        assert_eq!(t.try_lock(1, b"x"), Some(first), "re-get keeps its token");
        assert_eq!(t.try_lock(2, b"x"), None);
        assert!(!t.release(2, b"x"));
        assert!(t.release(1, b"x"));
        let second = t.try_lock(2, b"x").expect("free again");
        assert!(second > first);
        assert_eq!(t.counts().locks, 1);
    }

    #[test]
    fn handoff_in_order_and_on_disconnect() {
        let t = table();
        let _a = join(&t, 1);
        let b = join(&t, 2);
        let c = join(&t, 3);
        t.try_lock(1, b"x").expect("free");
        assert_eq!(t.lock_or_queue(2, b"x", true), WaitStart::Queued);
        assert_eq!(t.lock_or_queue(3, b"x", true), WaitStart::Queued);
        assert_eq!(t.counts().waiting, 2);
        assert_eq!(
            t.disconnect(1),
            Released {
                exclusive: 1,
                shared: 0
            }
        );
        assert!(matches!(b.try_recv(), Ok(Grant::Exclusive { .. })));
        assert!(c.try_recv().is_err());
        assert!(t.token(2, b"x").is_some());
        t.disconnect(3);
        assert_eq!(t.counts().waiting, 0);
        assert!(t.release(2, b"x"));
        assert_eq!(
            t.counts().locks + t.counts().shared_locks + t.counts().waiting,
            0
        );
    }

    #[test]
    fn deadlock_cycle_refused_chain_allowed() {
        let t = table();
        let rx: Vec<_> = (1..=3).map(|id| join(&t, id)).collect();
        t.try_lock(1, b"a").expect("free");
        t.try_lock(2, b"b").expect("free");
        t.try_lock(3, b"c").expect("free");
        assert_eq!(t.lock_or_queue(1, b"b", true), WaitStart::Queued);
        assert_eq!(t.lock_or_queue(2, b"c", true), WaitStart::Queued);
        assert_eq!(t.lock_or_queue(3, b"a", true), WaitStart::Deadlock);
        assert!(t.cancel_wait(2));
        assert_eq!(t.lock_or_queue(3, b"a", true), WaitStart::Queued);
        drop(rx);
    }

    #[test]
    fn semaphore_limit_and_order() {
        let t = table();
        let rx: Vec<_> = (1..=4).map(|id| join(&t, id)).collect();
        let grant = |holders| WaitStart::Granted(Grant::Shared { holders });
        assert_eq!(t.lock_shared_or_queue(1, b"s", 2, true), grant(1));
        assert_eq!(t.lock_shared_or_queue(2, b"s", 2, true), grant(2));
        assert_eq!(t.lock_shared_or_queue(3, b"s", 2, true), WaitStart::Queued);
        assert_eq!(t.lock_shared_or_queue(4, b"s", 3, false), WaitStart::Busy);
        assert!(t.release_shared(1, b"s"));
        assert_eq!(rx[2].try_recv(), Ok(Grant::Shared { holders: 2 }));
        assert_eq!(t.shared_count(b"s"), 2);
        assert!(!t.cancel_wait(3));
        t.disconnect(2);
        t.disconnect(3);
        assert_eq!(
            t.counts().locks + t.counts().shared_locks + t.counts().waiting,
            0
        );
    }

    #[test]
    fn registry_order() {
        let t = table();
        let _rx: Vec<_> = (1..=3).map(|id| join(&t, id)).collect();
        t.register(2, b"x");
        t.register(1, b"y");
        t.register(2, b"x");
        let who: Vec<_> = t.registered(b"").into_iter().map(|n| n.default).collect();
        assert_eq!(who, vec![b"c1"[..].into(), b"c2"[..].into()]);
        t.register(1, b"");
        assert_eq!(t.registered(b"").len(), 1);
        assert_eq!(t.registered(b"y").len(), 0);
    }
}
