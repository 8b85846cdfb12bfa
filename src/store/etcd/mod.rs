//! Cluster mode: the lock store on etcd, so that several lockd nodes serve
//! one lock namespace (`PROTOCOL.md` Part 3; the design notes are
//! `CLUSTER.md` in the shared notes).
//!
//! [`EtcdStore`] offers the session what [`crate::store::Table`] offers,
//! with every answer coming from etcd: the holders and waiters of a lock
//! are its keys ordered by create revision (see [`keys`]), so every node
//! sees one order; readers and writers of a name share its line (`rw.rs`).
//! A node's clients' keys hang on the node's lease
//! ([`lease`]); waiters wake through the node's one watch ([`watch`]).
//! A client that holds a lock and starts to wait writes its waits-for edge
//! only if no edge changed since its check (`deadlock.rs`).
//!
//! Every call may fail with a [`StoreError`]: etcd unreachable, or the
//! node's lease lost, after which the client's locks can no longer be
//! vouched for and its connection must be closed.

pub mod client;
pub mod commit;
mod deadlock;
mod handover;
pub mod keys;
pub mod lease;
mod listing;
mod notify;
mod rw;
mod seam;
pub mod watch;

use crate::log::{log, Priority};
use crate::name::LockName;
use crate::store::{ClientId, Grant, LockStore, StoreError, WaitStart};
use client::{Client, ClientConfig, EtcdError, KeyValue, Op, OpResult, Order, Range};
use commit::{CommitStats, Committer, MAX_TXN_OPS};
use crossbeam_channel::{Receiver, Sender};
use keys::{Family, Layout};
use lease::Lease;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use watch::Waiters;

/// The line a node without a lease sends a new client before closing.
pub const NOT_SERVING: &[u8] =
    b"0 Error: no cluster lease: this node cannot reach etcd (try another node)\n";

/// Settings of an [`EtcdStore`].
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// `host:port` of each etcd member.
    pub endpoints: Vec<String>,
    /// Every key the store writes starts with this.
    pub prefix: Vec<u8>,
    /// TTL of the node's lease (whole seconds, at least 2).
    pub lease_ttl: Duration,
    /// This node's name in its keys (no `/`).
    pub node: String,
}

impl EtcdConfig {
    /// The defaults for `endpoints`: prefix `/lockd`, a 5 s lease, the
    /// node named `HOST-PID`.
    pub fn new(endpoints: Vec<String>) -> EtcdConfig {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host: String = host
            .trim()
            .chars()
            .map(|c| {
                if c == '/' || c.is_whitespace() {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        let host = if host.is_empty() {
            "lockd".into()
        } else {
            host
        };
        EtcdConfig {
            endpoints,
            prefix: b"/lockd".to_vec(),
            lease_ttl: Duration::from_secs(5),
            node: format!("{host}-{}", std::process::id()),
        }
    }
}

/// Parses `etcd://H1:P1,H2:P2` into its endpoints.
///
/// # Errors
/// The text says what is wrong.
pub fn parse_cluster_url(url: &str) -> Result<Vec<String>, String> {
    let rest = url
        .strip_prefix("etcd://")
        .ok_or_else(|| format!("{url:?} does not start with etcd://"))?;
    let mut endpoints = Vec::new();
    for part in rest.split(',') {
        let (host, port) = part
            .rsplit_once(':')
            .ok_or_else(|| format!("{part:?} in {url:?} is not HOST:PORT"))?;
        if host.is_empty() || host.contains('/') || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("{part:?} in {url:?} is not HOST:PORT"));
        }
        endpoints.push(part.to_string());
    }
    Ok(endpoints)
}

impl From<EtcdError> for StoreError {
    fn from(e: EtcdError) -> StoreError {
        StoreError::Etcd(e)
    }
}

/// The lock store on etcd. Cheap to share: clones are one store. When the
/// last clone goes, the node's threads stop and its lease is no longer
/// renewed, so its keys expire with it (see [`EtcdStore::shutdown`] for a
/// prompt release).
#[derive(Clone)]
pub struct EtcdStore {
    shared: Arc<Shared>,
    _life: Arc<Life>,
}

/// Stops the node's threads (which hold `Shared` too) when the last
/// [`EtcdStore`] clone goes.
struct Life(Arc<Shared>);

impl Drop for Life {
    fn drop(&mut self) {
        self.0.shut();
    }
}

struct Shared {
    client: Client,
    /// Group commit: every write goes through it.
    commit: Committer,
    layout: Layout,
    node: String,
    lease: Lease,
    waiters: Waiters,
    notify: notify::Notify,
    clients: Mutex<HashMap<ClientId, Conn>>,
    seq: AtomicU64,
    stop: AtomicBool,
    jobs: Sender<Job>,
    lost: Mutex<Vec<Sender<()>>>,
    grants: AtomicU64,
    /// The largest token this node granted (for `/metrics`).
    last_token: AtomicU64,
    /// Clients starting to wait, whose waits-for edges this node checks
    /// and inserts a batch at a time (see [`deadlock`]).
    checks: deadlock::Checks,
}

/// One client of this node.
struct Conn {
    default: Box<[u8]>,
    registered: Option<Box<[u8]>>,
    epoch: u64,
    owner: Vec<u8>,
    lease: i64,
    notify: Sender<Grant>,
    exclusive: HashMap<LockName, (Vec<u8>, u64)>,
    read: HashMap<LockName, Vec<u8>>,
    shared: HashMap<LockName, Vec<u8>>,
    waiting: Option<Wait>,
    /// Its waits-for edge may be in etcd (see [`deadlock`]): deleted at
    /// its end.
    edge: bool,
}

/// A wait in a line.
#[derive(Clone)]
struct Wait {
    family: Family,
    name: LockName,
    key: Vec<u8>,
    /// The key's create revision: its place in line.
    created: i64,
    /// The key's value and lease, for the write that stamps its grant.
    value: Vec<u8>,
    lease: i64,
    mode: Mode,
}

impl Wait {
    /// A wait for the family's lock (`wg`, `wsg`) with `key`, whose create
    /// revision is `created`.
    fn for_lock(
        family: Family,
        name: &[u8],
        key: Vec<u8>,
        created: i64,
        value: Vec<u8>,
        lease: i64,
    ) -> Wait {
        Wait {
            family,
            name: LockName::new(name),
            key,
            created,
            value,
            lease,
            mode: Mode::Lock,
        }
    }
}

/// What a wait is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The family's lock: the write lock, or a shared place.
    Lock,
    /// A read hold (see `rw.rs`).
    Read,
    /// The write lock for a reader, whose key is its read hold's.
    Upgrade,
}

/// Work for the node's grant thread.
enum Job {
    /// A waiter's predecessor went: see whether it is its turn.
    Settle(ClientId),
    /// Keys a failed call left behind (its answer was lost, or a delete
    /// failed): deleted as soon as etcd answers, while the lease lives.
    Delete {
        /// The keys.
        keys: Vec<Vec<u8>>,
        /// The lease epoch they were written under.
        epoch: u64,
    },
    /// An upgrading reader's key to turn back into a plain reader's (see
    /// [`Shared::unmark`]), as soon as etcd answers, while the lease lives.
    Unmark {
        /// The key.
        key: Vec<u8>,
        /// The client's default name, in the key's value.
        default: Box<[u8]>,
        /// The lease the key hangs on.
        lease: i64,
        /// The lease epoch it was written under.
        epoch: u64,
    },
}

/// Who a call is for, as of its start.
struct Caller {
    owner: Vec<u8>,
    lease: i64,
    epoch: u64,
    default: Box<[u8]>,
}

impl EtcdStore {
    /// Connects to etcd, takes the node's lease, and starts the node's
    /// threads (lease keeper, lease guard, watch, grants).
    ///
    /// # Errors
    /// etcd does not answer or refuses the lease.
    pub fn open(config: &EtcdConfig) -> Result<EtcdStore, StoreError> {
        let ttl = Duration::from_secs(config.lease_ttl.as_secs().max(2));
        let client = Client::new(&ClientConfig {
            endpoints: config.endpoints.clone(),
            // Short enough that a hung member leaves time to try the
            // others before the lease guard gives up (TTL/3 after the last
            // renewal, at worst).
            request_timeout: (ttl / 4).max(Duration::from_millis(500)),
            watch_idle: Duration::from_secs(3),
        });
        let layout = Layout::new(&config.prefix);
        let (revision, _) = client.range(&Range {
            limit: 1,
            ..Range::prefix(layout.root(), Order::Key)
        })?;
        let lease = Lease::grant(&client, ttl)?;
        let (jobs, jobs_rx) = crossbeam_channel::unbounded();
        let (commit, commits) = Committer::new(&layout);
        let shared = Arc::new(Shared {
            client,
            commit,
            layout,
            node: config.node.clone(),
            lease,
            waiters: Waiters::new(revision),
            notify: notify::Notify::new(),
            clients: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            jobs,
            lost: Mutex::new(Vec::new()),
            grants: AtomicU64::new(0),
            last_token: AtomicU64::new(0),
            checks: deadlock::Checks::default(),
        });
        let store = EtcdStore {
            _life: Arc::new(Life(Arc::clone(&shared))),
            shared,
        };
        for _ in 0..commit::COMMITTERS {
            let commits = commits.clone();
            store.spawn("lockd-etcd-commit", move |s| {
                commit::run(&s.client, &commits, &s.stop)
            })?;
        }
        store.spawn("lockd-etcd-lease", |s| {
            s.lease.keep(&s.client, &|epoch| s.lease_lost(epoch))
        })?;
        store.spawn("lockd-etcd-guard", |s| {
            s.lease.guard(&|epoch| s.lease_lost(epoch))
        })?;
        store.spawn("lockd-etcd-watch", |s| {
            watch::follow(&s.client, s.layout.root(), &s.waiters, &s.stop, &|ids| {
                for id in ids {
                    let _ = s.jobs.send(Job::Settle(id));
                }
            })
        })?;
        store.spawn("lockd-etcd-notify", |s| {
            s.notify
                .run(&s.client, &s.layout, &s.node, &s.lease, &s.stop)
        })?;
        store.spawn("lockd-etcd-grant", move |s| {
            while !s.stop.load(Ordering::Relaxed) {
                match jobs_rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(Job::Settle(id)) => s.settle(id),
                    Ok(Job::Delete { keys, epoch }) => s.clean_up(keys, epoch),
                    Ok(Job::Unmark {
                        key,
                        default,
                        lease,
                        epoch,
                    }) => s.unmark_later(key, default, lease, epoch),
                    Err(_) => {}
                }
            }
        })?;
        Ok(store)
    }

    fn spawn(
        &self,
        name: &str,
        body: impl FnOnce(&Shared) + Send + 'static,
    ) -> Result<(), StoreError> {
        let shared = Arc::clone(&self.shared);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(&shared))
            .map(|_| ())
            .map_err(|e| {
                self.shared.shut();
                StoreError::Etcd(EtcdError::Protocol(format!("cannot start {name}: {e}")))
            })
    }

    /// A channel that gets one message each time the node loses its lease.
    /// The server must then close every client connection at once (their
    /// locks may be given to others within [`lease::margin`] of the loss)
    /// and take none until [`EtcdStore::is_serving`] again.
    pub fn lease_lost(&self) -> Receiver<()> {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.shared.lost.lock().push(tx);
        rx
    }

    /// Whether the node holds a live lease and takes clients.
    pub fn is_serving(&self) -> bool {
        self.shared.lease.current().is_some()
    }

    /// Until when the node vouches for its clients' locks (the last proof
    /// of its lease minus the margin), if it does.
    pub fn vouch_until(&self) -> Option<Instant> {
        self.shared.lease.vouch_until()
    }

    /// Stops the node's threads and revokes its lease, which releases
    /// every lock its clients hold, at once for every node.
    ///
    /// # Errors
    /// etcd did not take the revoke; the keys expire with the lease.
    pub fn shutdown(&self) -> Result<(), StoreError> {
        match self.shared.shut() {
            Some(id) => Ok(self.shared.client.lease_revoke(id)?),
            None => Ok(()),
        }
    }

    /// Adds a client. Grants of its waits arrive on `notify`.
    ///
    /// # Errors
    /// [`StoreError::LocksLost`] while the node has no lease: the client
    /// is still recorded (so [`EtcdStore::disconnect`] finds it), and every
    /// later call of it fails the same way.
    pub fn connect(
        &self,
        id: ClientId,
        default_name: Box<[u8]>,
        notify: Sender<Grant>,
    ) -> Result<(), StoreError> {
        // Epochs start at 1, so epoch 0 is never live.
        let (lease, epoch) = self.shared.lease.current().unwrap_or((0, 0));
        let owner = keys::owner(&self.shared.node, lease, id);
        self.shared.clients.lock().insert(
            id,
            Conn {
                default: default_name,
                registered: None,
                epoch,
                owner,
                lease,
                notify,
                exclusive: HashMap::new(),
                read: HashMap::new(),
                shared: HashMap::new(),
                waiting: None,
                edge: false,
            },
        );
        if epoch == 0 {
            return Err(StoreError::LocksLost);
        }
        Ok(())
    }

    /// `g`: takes the exclusive lock if nobody holds or waits for it (or it
    /// is already this client's). Returns the grant's fencing token.
    ///
    /// # Errors
    /// See [`StoreError`].
    pub fn try_lock(&self, id: ClientId, name: &[u8]) -> Result<Option<u64>, StoreError> {
        match self.lock_or_queue(id, name, false)? {
            WaitStart::Granted(Grant::Exclusive { token }) => Ok(Some(token)),
            _ => Ok(None),
        }
    }

    /// What group commit sent so far: round trips and the commands they
    /// carried.
    pub fn commit_stats(&self) -> CommitStats {
        self.shared.commit.stats()
    }
}

impl Shared {
    /// Stops the threads; returns the live lease, if any.
    fn shut(&self) -> Option<i64> {
        self.stop.store(true, Ordering::Relaxed);
        self.lease.stop()
    }

    fn lease_lost(&self, epoch: u64) {
        {
            let mut clients = self.clients.lock();
            for conn in clients.values_mut().filter(|c| c.epoch == epoch) {
                conn.exclusive.clear();
                conn.read.clear();
                conn.shared.clear();
                conn.waiting = None;
            }
        }
        for id in self.clients.lock().keys() {
            self.waiters.forget(*id);
        }
        self.lost.lock().retain(|tx| tx.send(()).is_ok());
    }

    fn caller(&self, id: ClientId) -> Result<Caller, StoreError> {
        let clients = self.clients.lock();
        let conn = clients.get(&id).ok_or(StoreError::LocksLost)?;
        let caller = Caller {
            owner: conn.owner.clone(),
            lease: conn.lease,
            epoch: conn.epoch,
            default: conn.default.clone(),
        };
        drop(clients);
        self.still_live(&caller)?;
        Ok(caller)
    }

    fn still_live(&self, caller: &Caller) -> Result<(), StoreError> {
        if self.lease.is_live(caller.epoch) {
            Ok(())
        } else {
            Err(StoreError::LocksLost)
        }
    }

    fn new_key(&self, family: Family, name: &[u8], caller: &Caller) -> Vec<u8> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        self.layout.entry(family, name, &caller.owner, seq)
    }

    /// Puts a new key of the caller's with `value` at the end of
    /// `family`'s line of `name`, and reads the line in the same
    /// transaction (group-committed): the key, the revision of the read,
    /// and the line, the new key in its place.
    fn join_line(
        &self,
        caller: &Caller,
        family: Family,
        name: &[u8],
        value: Vec<u8>,
    ) -> Result<(Vec<u8>, i64, Vec<KeyValue>), StoreError> {
        let key = self.new_key(family, name, caller);
        let put = Op::Put {
            key: key.clone(),
            value,
            lease: caller.lease,
        };
        let line = Range::prefix(&self.layout.lock(family, name), Order::Created);
        let written = self
            .commit
            .txn(&self.client, &[], &[put, Op::Range(line)], &[]);
        let txn = self.written(&key, caller, written)?;
        let kvs = ranged(&txn.results, 1);
        Ok((key, txn.revision, kvs))
    }

    /// The token of a lock the client holds; fails once its locks can no
    /// longer be vouched for.
    fn held_token(&self, id: ClientId, name: &[u8]) -> Result<Option<u64>, StoreError> {
        let clients = self.clients.lock();
        let conn = clients.get(&id).ok_or(StoreError::LocksLost)?;
        if !self.lease.is_live(conn.epoch) {
            return Err(StoreError::LocksLost);
        }
        Ok(conn.exclusive.get(name).map(|(_, t)| *t))
    }

    fn holds_shared(&self, id: ClientId, name: &[u8]) -> Result<bool, StoreError> {
        let clients = self.clients.lock();
        let conn = clients.get(&id).ok_or(StoreError::LocksLost)?;
        if !self.lease.is_live(conn.epoch) {
            return Err(StoreError::LocksLost);
        }
        Ok(conn.shared.contains_key(name))
    }

    /// Records a grant made by the caller's own request. `number` is the
    /// token (exclusive) or the holder count (shared).
    fn granted(
        &self,
        id: ClientId,
        caller: &Caller,
        family: Family,
        name: &[u8],
        key: Vec<u8>,
        number: u64,
    ) -> Result<WaitStart, StoreError> {
        let written = key.clone();
        let grant = self.record(id, caller, &written, |conn| match family {
            Family::Exclusive => {
                conn.exclusive.insert(LockName::new(name), (key, number));
                self.grants.fetch_add(1, Ordering::Relaxed);
                self.last_token.fetch_max(number, Ordering::Relaxed);
                Grant::Exclusive { token: number }
            }
            Family::Shared => {
                conn.shared.insert(LockName::new(name), key);
                Grant::Shared {
                    holders: number as usize,
                }
            }
        })?;
        Ok(WaitStart::Granted(grant))
    }

    fn queue(&self, id: ClientId, caller: &Caller, wait: Wait) -> Result<(), StoreError> {
        let written = wait.key.clone();
        self.record(id, caller, &written, |conn| conn.waiting = Some(wait))
    }

    /// Records `key`, which the caller just wrote to etcd, under its
    /// connection (with `record`). A disconnect (the liveness sweep's, on
    /// another thread) that took the connection away since
    /// [`Shared::caller`] deleted only the keys recorded then: the writer
    /// deletes its new key itself, else the lock would stay held until
    /// the node's lease ends, and fails with [`StoreError::LocksLost`].
    /// The clients' mutex orders the two: a key is either recorded before
    /// the disconnect takes the connection, or found orphaned here.
    fn record<T>(
        &self,
        id: ClientId,
        caller: &Caller,
        key: &[u8],
        record: impl FnOnce(&mut Conn) -> T,
    ) -> Result<T, StoreError> {
        self.still_live(caller)?;
        if let Some(conn) = self.clients.lock().get_mut(&id) {
            return Ok(record(conn));
        }
        deferred(
            "disconnect",
            self.delete_or_later(vec![key.to_vec()], caller.epoch),
        );
        Err(StoreError::LocksLost)
    }

    /// Waits for `predecessor` to go; looks again at once if its delete
    /// went by since the read at `read_at`.
    fn wait_behind(&self, id: ClientId, predecessor: &[u8], read_at: i64) {
        if self.waiters.wait_for_key(id, predecessor, read_at) {
            let _ = self.jobs.send(Job::Settle(id));
        }
    }

    fn wait_on_lock(&self, id: ClientId, lock: &[u8], read_at: i64) {
        if self.waiters.wait_for_lock(id, lock, read_at) {
            let _ = self.jobs.send(Job::Settle(id));
        }
    }

    /// A waiter's predecessor went: grant it if it is now at the head (an
    /// exclusive grant is stamped with a write, whose revision is its
    /// token: see [`handover`]), else wait again behind the key now before
    /// it.
    fn settle(&self, id: ClientId) {
        let Some(wait) = self.clients.lock().get(&id).and_then(|c| c.waiting.clone()) else {
            return;
        };
        match wait.mode {
            Mode::Read => return self.settle_read(id, wait),
            Mode::Upgrade => return self.settle_upgrade(id, wait),
            Mode::Lock => {}
        }
        let grant = match wait.family {
            Family::Exclusive => match self.take_turn(&wait) {
                handover::Turn::Granted(token) => Grant::Exclusive { token },
                handover::Turn::Behind(before, revision) => {
                    self.wait_behind(id, &before, revision);
                    return;
                }
                handover::Turn::Gone => return,
                handover::Turn::Again => {
                    // etcd hiccup: look again shortly (the lease guard
                    // covers a longer outage).
                    std::thread::sleep(Duration::from_millis(50));
                    let _ = self.jobs.send(Job::Settle(id));
                    return;
                }
            },
            Family::Shared => {
                let lock = self.layout.lock(wait.family, wait.name.as_bytes());
                let Ok((revision, kvs)) = self.client.range(&Range::prefix(&lock, Order::Created))
                else {
                    std::thread::sleep(Duration::from_millis(50));
                    let _ = self.jobs.send(Job::Settle(id));
                    return;
                };
                let Some(mine) = kvs.iter().position(|kv| kv.key == wait.key) else {
                    return; // cancelled, or its lease is gone
                };
                let holds = holding(&kvs);
                if !holds[mine] {
                    self.wait_on_lock(id, &lock, revision);
                    return;
                }
                Grant::Shared {
                    holders: admitted(&holds, mine),
                }
            }
        };
        self.deliver(id, &wait, grant);
    }

    fn release(&self, id: ClientId, family: Family, name: &[u8]) -> Result<bool, StoreError> {
        let key = {
            let mut clients = self.clients.lock();
            let Some(conn) = clients.get_mut(&id) else {
                return Ok(false);
            };
            match family {
                Family::Exclusive => conn.exclusive.remove(name).map(|(k, _)| k),
                Family::Shared => conn.shared.remove(name),
            }
        };
        let Some(key) = key else {
            return Ok(false);
        };
        let caller = self.caller(id)?;
        // The client holds it no more; a failed delete is retried.
        let deleted = match family {
            Family::Exclusive => self.release_exclusive(key, caller.epoch),
            Family::Shared => self.delete_or_later(vec![key], caller.epoch),
        };
        deferred("release", deleted);
        self.still_live(&caller)?;
        Ok(true)
    }

    /// The answer to a write of `key`; when there is none, the write may
    /// still have happened, so the key is deleted later.
    fn written<T>(
        &self,
        key: &[u8],
        caller: &Caller,
        result: Result<T, EtcdError>,
    ) -> Result<T, StoreError> {
        result.map_err(|e| {
            let _ = self.jobs.send(Job::Delete {
                keys: vec![key.to_vec()],
                epoch: caller.epoch,
            });
            StoreError::Etcd(e)
        })
    }

    /// Deletes `keys` now, or, if etcd fails, on the grant thread as soon
    /// as it answers (while lease `epoch` lives; after that the keys go
    /// with the lease).
    fn delete_or_later(&self, keys: Vec<Vec<u8>>, epoch: u64) -> Result<(), StoreError> {
        match self.delete_keys(&keys) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = self.jobs.send(Job::Delete { keys, epoch });
                Err(e)
            }
        }
    }

    /// A [`Job::Delete`]: tries again after a pause while the lease lives.
    fn clean_up(&self, keys: Vec<Vec<u8>>, epoch: u64) {
        if !self.lease.is_live(epoch) || self.delete_keys(&keys).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
        let _ = self.jobs.send(Job::Delete { keys, epoch });
    }

    /// Deletes keys in as few transactions as etcd allows.
    fn delete_keys(&self, keys: &[Vec<u8>]) -> Result<(), StoreError> {
        let ops: Vec<Op> = keys
            .iter()
            .map(|key| Op::Delete {
                key: key.clone(),
                range_end: None,
            })
            .collect();
        for batch in ops.chunks(MAX_TXN_OPS) {
            self.commit.txn(&self.client, &[], batch, &[])?;
        }
        Ok(())
    }
}

/// Logs a delete that failed and is retried in the background (see
/// [`Shared::delete_or_later`]): for the client the lock is gone already.
fn deferred(what: &str, result: Result<(), StoreError>) {
    if let Err(e) = result {
        log(
            Priority::Warning,
            format_args!("cluster store: {what}: {e} (the delete is retried)"),
        );
    }
}

/// The keys of the `index`th range result of a transaction.
fn ranged(results: &[OpResult], index: usize) -> Vec<KeyValue> {
    match results.get(index) {
        Some(OpResult::Range { kvs, .. }) => kvs.clone(),
        _ => Vec::new(),
    }
}

/// Which keys of a shared line (in create order) hold a place: an
/// unlimited key always; a limited one when every key before it holds
/// and fewer than its limit hold.
fn holding(kvs: &[KeyValue]) -> Vec<bool> {
    let mut holds = Vec::with_capacity(kvs.len());
    let mut holders = 0usize;
    let mut all_before_hold = true;
    for kv in kvs {
        let limit = keys::parse_value(&kv.value).map_or(0, |(l, _)| l as usize);
        let held = limit == 0 || (all_before_hold && holders < limit);
        if held {
            holders += 1;
        } else {
            all_before_hold = false;
        }
        holds.push(held);
    }
    holds
}

/// The holder count a grant to the key at `mine` reports: the holders up
/// to and including it. Waiters admitted together are answered as if one
/// after the other, in line order, as a single server admits them.
fn admitted(holds: &[bool], mine: usize) -> usize {
    holds[..=mine].iter().filter(|h| **h).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(limit: u32) -> KeyValue {
        KeyValue {
            key: Vec::new(),
            value: keys::value(limit, b"c"),
            create_revision: 0,
            mod_revision: 0,
            lease: 0,
        }
    }

    #[test]
    fn shared_places_go_in_order_and_unlimited_ones_always_hold() {
        let line = [kv(2), kv(2), kv(2), kv(0), kv(5)];
        assert_eq!(holding(&line), vec![true, true, false, true, false]);
        assert_eq!(holding(&[kv(0), kv(3), kv(1)]), vec![true, true, false]);
    }

    #[test]
    fn waiters_admitted_together_count_holders_in_line_order() {
        // One holder left; a waiter of limit 1 and one of limit 2 get in
        // together: answered 1 and 2, as a single server admits them.
        let holds = holding(&[kv(1), kv(2)]);
        assert_eq!(holds, vec![true, true]);
        assert_eq!((admitted(&holds, 0), admitted(&holds, 1)), (1, 2));
    }

    #[test]
    fn cluster_urls_list_host_port_endpoints() {
        assert_eq!(
            parse_cluster_url("etcd://a:2379,10.0.0.2:2380").as_deref(),
            Ok(&["a:2379".to_string(), "10.0.0.2:2380".to_string()][..])
        );
        for bad in [
            "http://a:1",
            "etcd://",
            "etcd://a",
            "etcd://a:0",
            "etcd://a:x",
            "etcd://a:1,",
        ] {
            assert!(parse_cluster_url(bad).is_err(), "{bad}");
        }
    }
}
