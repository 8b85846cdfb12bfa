//! [`EtcdStore`] behind the session's seam, [`LockStore`]: every verb of
//! the store, each implemented here once (the line logic they share lives
//! in the sibling modules: [`super::rw`], [`super::handover`], ...).
//!
//! Every call that asks etcd something fails with a [`StoreError`] when
//! etcd does not answer ([`StoreError::Etcd`]: the session tells the
//! client so) or the node lost its lease ([`StoreError::LocksLost`]: the
//! session closes the connection). Nothing is answered as if it were
//! known. A call that only lets go of something (a release, a cancelled
//! wait, a disconnect) succeeds for the client at once; a delete etcd did
//! not take is retried as soon as it answers. A lost lease is also
//! reported on [`EtcdStore::lease_lost`], on which the server closes every
//! connection of the node.

use super::client::{self, Compare, EtcdError, Op, Order, Range, Relation, Target};
use super::deadlock::edge;
use super::keys::{self, Claim, Family};
use super::listing::registration;
use super::notify::lease_marker;
use super::rw::{readers, statuses};
use super::{admitted, deferred, holding, ranged, EtcdStore, Mode, Wait};
use crate::name::LockName;
use crate::store::{
    ClientId, ClientNames, Counts, ExclusiveView, Grant, LimitCounts, LockStore, ReadView,
    Released, SharedView, StoreError, StoreMetric, WaitStart, WatchEvent, Watcher,
};
use crossbeam_channel::Sender;
use std::sync::atomic::Ordering;

impl LockStore for EtcdStore {
    fn connect(&self, id: ClientId, default_name: Box<[u8]>, notify: Sender<Grant>) {
        // Without a lease the client is recorded all the same, and each of
        // its calls fails with `LocksLost`, which closes its connection.
        let _ = EtcdStore::connect(self, id, default_name, notify);
    }

    /// Removes a client and deletes all its keys in one transaction, so
    /// every node sees its locks released at once. If etcd fails, the keys
    /// are deleted as soon as it answers, or go with the node's lease.
    fn disconnect(&self, id: ClientId) -> Released {
        let Some(conn) = self.shared.clients.lock().remove(&id) else {
            return Released::default();
        };
        self.shared.waiters.forget(id);
        self.shared.notify.forget(id);
        let released = Released {
            exclusive: conn.exclusive.len(),
            read: conn.read.len(),
            shared: conn.shared.len(),
        };
        if !self.shared.lease.is_live(conn.epoch) {
            return released;
        }
        let mut doomed: Vec<Vec<u8>> = conn.exclusive.into_values().map(|(key, _)| key).collect();
        doomed.extend(conn.read.into_values());
        doomed.extend(conn.shared.into_values());
        // An upgrade waits with its read hold's key, already in the list.
        doomed.extend(
            conn.waiting
                .filter(|w| w.mode != Mode::Upgrade)
                .map(|w| w.key),
        );
        if conn.registered.is_some() {
            doomed.push(self.shared.layout.registration(&conn.owner));
        }
        if conn.edge {
            doomed.push(edge(&self.shared.layout, &conn.owner));
        }
        // Marked as a connection's end, for watchers ([`notify`]).
        if self.end_client(&doomed, &conn.owner, conn.lease).is_err() {
            deferred(
                "disconnect",
                self.shared.delete_or_later(doomed, conn.epoch),
            );
        }
        released
    }

    /// `wg`: takes the exclusive lock, or queues for it when `queue` is
    /// set. A queued client's grant arrives on its channel.
    ///
    /// # Errors
    /// See [`StoreError`].
    fn lock_or_queue(
        &self,
        id: ClientId,
        name: &[u8],
        queue: bool,
    ) -> Result<WaitStart, StoreError> {
        let s = &self.shared;
        if let Some(token) = s.held_token(id, name)? {
            return Ok(WaitStart::Granted(Grant::Exclusive { token }));
        }
        if let Some(key) = s.read_key(id, name)? {
            return self.upgrade(id, name, key, queue);
        }
        let caller = s.caller(id)?;
        let value = keys::value(0, &caller.default);
        let (key, revision, kvs) = if queue {
            s.join_line(&caller, Family::Exclusive, name, value.clone())?
        } else {
            let lock = s.layout.lock(Family::Exclusive, name);
            let key = s.new_key(Family::Exclusive, name, &caller);
            let put = Op::Put {
                key: key.clone(),
                value: value.clone(),
                lease: caller.lease,
            };
            let line = Range::prefix(&lock, Order::Created);
            // Put only if the line is empty; else read its head, which is
            // this very key when an earlier try was applied but its answer
            // lost (the client then retried on another member).
            let nobody = Compare {
                key: lock.clone(),
                range_end: Some(client::prefix_end(&lock)),
                relation: Relation::Equal,
                target: Target::CreateRevision(0),
            };
            let head = Op::Range(Range { limit: 1, ..line });
            let txn = s.written(
                &key,
                &caller,
                s.commit.txn(&s.client, &[nobody], &[put], &[head]),
            )?;
            if txn.succeeded {
                return s.granted(
                    id,
                    &caller,
                    Family::Exclusive,
                    name,
                    key,
                    keys::token(txn.revision, txn.slot),
                );
            }
            (key, txn.revision, ranged(&txn.results, 0))
        };
        match kvs.iter().position(|kv| kv.key == key) {
            Some(0) => {
                let token = keys::held_token(&kvs[0]);
                s.granted(id, &caller, Family::Exclusive, name, key, token)
            }
            Some(mine) if queue => {
                let created = kvs[mine].create_revision;
                let wait =
                    Wait::for_lock(Family::Exclusive, name, key, created, value, caller.lease);
                s.wait_in_line(id, &caller, wait, |s| {
                    s.wait_behind(id, &kvs[mine - 1].key, revision)
                })
            }
            _ => Ok(WaitStart::Busy),
        }
    }

    /// `r`: releases the lock if this client holds it; its next waiter,
    /// on whichever node, gets it.
    ///
    /// # Errors
    /// See [`StoreError`].
    fn release(&self, id: ClientId, name: &[u8]) -> Result<bool, StoreError> {
        self.shared.release(id, Family::Exclusive, name)
    }

    /// `wr`: a read hold when no writer holds the name and nobody waits
    /// for it, or a place in its line when `queue` is set. A writer asking
    /// to read its own lock would wait for itself: refused.
    ///
    /// # Errors
    /// See [`StoreError`].
    fn read_or_queue(
        &self,
        id: ClientId,
        name: &[u8],
        queue: bool,
    ) -> Result<WaitStart, StoreError> {
        let s = &self.shared;
        let lock = s.layout.lock(Family::Exclusive, name);
        let line = Range::prefix(&lock, Order::Created);
        if s.read_key(id, name)?.is_some() {
            let (_, kvs) = s.client.range(&line)?;
            let readers = readers(&statuses(&kvs));
            return Ok(WaitStart::Granted(Grant::Read { readers }));
        }
        if s.held_token(id, name)?.is_some() {
            return Ok(if queue {
                WaitStart::Deadlock
            } else {
                WaitStart::Busy
            });
        }
        let caller = s.caller(id)?;
        let value = keys::claim_value(Claim::Read, &caller.default);
        let (key, revision, kvs) = s.join_line(&caller, Family::Exclusive, name, value)?;
        let status = statuses(&kvs);
        match kvs.iter().position(|kv| kv.key == key) {
            Some(mine) if status[mine].holds() => {
                let written = key.clone();
                s.record(id, &caller, &written, |conn| {
                    conn.read.insert(LockName::new(name), key)
                })?;
                Ok(WaitStart::Granted(Grant::Read {
                    readers: readers(&status),
                }))
            }
            Some(mine) if queue => {
                let wait = Wait {
                    family: Family::Exclusive,
                    name: LockName::new(name),
                    key,
                    mode: Mode::Read,
                    // Only a writer's wait is stamped at its grant.
                    created: 0,
                    value: Vec::new(),
                    lease: caller.lease,
                };
                s.wait_in_line(id, &caller, wait, |s| {
                    s.wait_behind_writer(id, &kvs, mine, &lock, revision)
                })
            }
            _ => {
                s.delete_or_later(vec![key], caller.epoch)?;
                Ok(WaitStart::Busy)
            }
        }
    }

    /// `rr`: gives up this client's read hold; the line moves on.
    ///
    /// # Errors
    /// See [`StoreError`].
    fn release_read(&self, id: ClientId, name: &[u8]) -> Result<bool, StoreError> {
        let s = &self.shared;
        let key = s
            .clients
            .lock()
            .get_mut(&id)
            .and_then(|c| c.read.remove(name));
        let Some(key) = key else {
            return Ok(false);
        };
        let caller = s.caller(id)?;
        // The client holds it no more; a failed delete is retried.
        deferred("rr", s.delete_or_later(vec![key], caller.epoch));
        s.still_live(&caller)?;
        Ok(true)
    }

    /// `i`: does anyone hold the exclusive lock (or is it being handed to
    /// its next waiter)?
    ///
    /// # Errors
    /// See [`StoreError`].
    fn is_locked(&self, name: &[u8]) -> Result<bool, StoreError> {
        let lock = self.shared.layout.lock(Family::Exclusive, name);
        let (_, kvs) = self.shared.client.range(&Range {
            limit: 1,
            ..Range::prefix(&lock, Order::Key)
        })?;
        Ok(!kvs.is_empty())
    }

    /// `t`: the fencing token of a lock this client holds.
    ///
    /// # Errors
    /// [`StoreError::LocksLost`] once the node lost its lease.
    fn token(&self, id: ClientId, name: &[u8]) -> Result<Option<u64>, StoreError> {
        self.shared.held_token(id, name)
    }

    /// `sg`: takes a place among the holders (no limit). Returns the
    /// holder count.
    ///
    /// # Errors
    /// See [`StoreError`].
    fn lock_shared(&self, id: ClientId, name: &[u8]) -> Result<usize, StoreError> {
        match self.lock_shared_or_queue(id, name, 0, false)? {
            WaitStart::Granted(Grant::Shared { holders }) => Ok(holders),
            _ => Err(StoreError::Etcd(EtcdError::Protocol(
                "an unlimited shared place was refused".into(),
            ))),
        }
    }

    /// `wsg`: takes a place among at most `limit` holders (0: no limit),
    /// or queues for one when `queue` is set. A key holds when every key
    /// before it holds and fewer than `limit` of them are there (an
    /// unlimited one always holds).
    ///
    /// # Errors
    /// See [`StoreError`].
    fn lock_shared_or_queue(
        &self,
        id: ClientId,
        name: &[u8],
        limit: u32,
        queue: bool,
    ) -> Result<WaitStart, StoreError> {
        let s = &self.shared;
        let lock = s.layout.lock(Family::Shared, name);
        let line = Range::prefix(&lock, Order::Created);
        if s.holds_shared(id, name)? {
            let (_, kvs) = s.client.range(&line)?;
            let holders = holding(&kvs).iter().filter(|h| **h).count();
            return Ok(WaitStart::Granted(Grant::Shared { holders }));
        }
        let caller = s.caller(id)?;
        let value = keys::value(limit, &caller.default);
        let (key, revision, kvs) = s.join_line(&caller, Family::Shared, name, value.clone())?;
        let holds = holding(&kvs);
        match kvs.iter().position(|kv| kv.key == key) {
            Some(mine) if holds[mine] => {
                let holders = admitted(&holds, mine) as u64;
                s.granted(id, &caller, Family::Shared, name, key, holders)
            }
            Some(mine) if queue => {
                let created = kvs[mine].create_revision;
                let wait = Wait::for_lock(Family::Shared, name, key, created, value, caller.lease);
                s.wait_in_line(id, &caller, wait, |s| s.wait_on_lock(id, &lock, revision))
            }
            _ => {
                s.delete_or_later(vec![key], caller.epoch)?;
                Ok(WaitStart::Busy)
            }
        }
    }

    /// `sr`: gives up this client's place; waiters that now fit get in.
    ///
    /// # Errors
    /// See [`StoreError`].
    fn release_shared(&self, id: ClientId, name: &[u8]) -> Result<bool, StoreError> {
        self.shared.release(id, Family::Shared, name)
    }

    /// `si`: how many hold the shared lock.
    ///
    /// # Errors
    /// See [`StoreError`].
    fn shared_count(&self, name: &[u8]) -> Result<usize, StoreError> {
        let lock = self.shared.layout.lock(Family::Shared, name);
        let (_, kvs) = self
            .shared
            .client
            .range(&Range::prefix(&lock, Order::Created))?;
        Ok(holding(&kvs).iter().filter(|h| **h).count())
    }

    /// `ra`: releases everything this client holds, in one transaction;
    /// returns how many.
    ///
    /// # Errors
    /// See [`StoreError`].
    fn release_all(&self, id: ClientId) -> Result<Released, StoreError> {
        let s = &self.shared;
        let caller = s.caller(id)?;
        let (doomed, released) = {
            let mut clients = s.clients.lock();
            let Some(conn) = clients.get_mut(&id) else {
                return Ok(Released::default());
            };
            let released = Released {
                exclusive: conn.exclusive.len(),
                read: conn.read.len(),
                shared: conn.shared.len(),
            };
            let mut keys: Vec<Vec<u8>> = conn.exclusive.drain().map(|(_, (k, _))| k).collect();
            keys.extend(conn.read.drain().map(|(_, k)| k));
            keys.extend(conn.shared.drain().map(|(_, k)| k));
            (keys, released)
        };
        deferred("ra", s.delete_or_later(doomed, caller.epoch));
        s.still_live(&caller)?;
        Ok(released)
    }

    /// Ends a wait that timed out. `false` when the grant won the race:
    /// the client holds the lock and its [`Grant`] is on its channel. The
    /// waiting key is deleted now, or as soon as etcd answers.
    fn cancel_wait(&self, id: ClientId) -> bool {
        let s = &self.shared;
        let (wait, epoch, default, lease) = {
            let mut clients = s.clients.lock();
            let Some(conn) = clients.get_mut(&id) else {
                return false;
            };
            let Some(wait) = conn.waiting.take() else {
                return false;
            };
            (wait, conn.epoch, conn.default.clone(), conn.lease)
        };
        s.waiters.forget(id);
        if wait.mode == Mode::Upgrade {
            // The read hold stays: only its mark goes.
            s.unmark(&wait.key, &default, lease, epoch);
        } else {
            deferred("wait", s.delete_or_later(vec![wait.key], epoch));
        }
        true
    }

    /// `iam`: registers a name for every node to see (the empty name
    /// removes the registration).
    ///
    /// # Errors
    /// See [`StoreError`].
    fn register(&self, id: ClientId, name: &[u8]) -> Result<(), StoreError> {
        let s = &self.shared;
        let caller = s.caller(id)?;
        let key = s.layout.registration(&caller.owner);
        if name.is_empty() {
            s.delete_or_later(vec![key], caller.epoch)?;
        } else {
            let mut value = caller.default.to_vec();
            value.push(b'\n');
            value.extend_from_slice(name);
            let put = Op::Put {
                key: key.clone(),
                value,
                lease: caller.lease,
            };
            s.commit.txn(&s.client, &[], &[put], &[])?;
            s.record(id, &caller, &key, |conn| {
                conn.registered = Some(name.into())
            })?;
            return Ok(());
        }
        if let Some(conn) = s.clients.lock().get_mut(&id) {
            conn.registered = None;
        }
        Ok(())
    }

    /// `me`: this client's names.
    fn names(&self, id: ClientId) -> Option<ClientNames> {
        self.shared.clients.lock().get(&id).map(|c| ClientNames {
            default: c.default.clone(),
            registered: c.registered.clone(),
        })
    }

    /// `who`: registered clients of every node, oldest registration first;
    /// only those registered exactly as `filter` unless it is empty.
    ///
    /// # Errors
    /// See [`StoreError`].
    fn registered(&self, filter: &[u8]) -> Result<Vec<ClientNames>, StoreError> {
        let s = &self.shared;
        let (_, kvs) = s
            .client
            .range(&Range::prefix(&s.layout.registry(), Order::Modified))?;
        Ok(kvs
            .iter()
            .filter_map(|kv| registration(&kv.value))
            .filter(|names| filter.is_empty() || names.registered.as_deref() == Some(filter))
            .collect())
    }

    /// Write-held locks of the cluster, sorted by name; only `filter`
    /// unless it is empty. One read: every line is seen at one revision.
    ///
    /// # Errors
    /// See [`StoreError`].
    fn exclusive_locks(&self, filter: &[u8]) -> Result<Vec<ExclusiveView>, StoreError> {
        Ok(self.exclusive_namespace(filter)?.0)
    }

    /// Shared locks of the cluster with at least one holder, sorted by
    /// name; only `filter` unless it is empty.
    ///
    /// # Errors
    /// See [`StoreError`].
    fn shared_locks(&self, filter: &[u8]) -> Result<Vec<SharedView>, StoreError> {
        let s = &self.shared;
        let (lines, registry) = s.snapshot(Family::Shared, filter)?;
        Ok(lines
            .into_iter()
            .filter_map(|(name, kvs)| {
                let holds = holding(&kvs);
                let mut view = SharedView {
                    name,
                    holders: Vec::new(),
                    waiters: Vec::new(),
                };
                for (kv, held) in kvs.iter().zip(holds) {
                    let names = s.names_of(Family::Shared, kv, &registry);
                    if held {
                        view.holders.push(names);
                    } else {
                        let limit = keys::parse_value(&kv.value).map_or(0, |(l, _)| l);
                        view.waiters.push((names.default, limit));
                    }
                }
                (!view.holders.is_empty()).then_some(view)
            })
            .collect())
    }

    /// Read-held locks of the cluster, sorted by name; only `filter`
    /// unless it is empty.
    ///
    /// # Errors
    /// See [`StoreError`].
    fn read_locks(&self, filter: &[u8]) -> Result<Vec<ReadView>, StoreError> {
        Ok(self.exclusive_namespace(filter)?.1)
    }

    /// Gauges for `q`: `locks` and `shared_locks` count the cluster;
    /// `waiting` and `grants` this node.
    ///
    /// # Errors
    /// See [`StoreError`].
    fn counts(&self) -> Result<Counts, StoreError> {
        let (written, read) = self.exclusive_namespace(b"")?;
        let shared_locks = self.shared_locks(b"")?.len();
        let waiting = (self.shared.clients.lock().values())
            .filter(|c| c.waiting.is_some())
            .count();
        Ok(Counts {
            locks: written.len(),
            read_locks: read.len(),
            shared_locks,
            waiting,
            grants: self.shared.grants.load(Ordering::Relaxed),
            refused: LimitCounts::default(),
        })
    }

    /// `watch`: the snapshot of what `pattern` matches, sorted by name, and
    /// the event queue on the client's first pattern.
    ///
    /// # Errors
    /// The client's lease is gone, etcd did not take the marker write, or
    /// the stream did not catch up with it in time.
    fn watch(
        &self,
        id: ClientId,
        pattern: &[u8],
    ) -> Result<(Vec<WatchEvent>, Option<Watcher>), StoreError> {
        let s = &self.shared;
        let caller = s.caller(id)?;
        s.notify.starting(1);
        let marker = lease_marker(&s.layout, &s.node, caller.lease);
        let result = s
            .client
            .put(&marker, b"", caller.lease)
            .map_err(StoreError::from)
            .and_then(|revision| {
                s.notify.register(id, pattern, revision).ok_or_else(|| {
                    StoreError::Etcd(super::client::EtcdError::Protocol(
                        "the watch stream did not catch up in time".into(),
                    ))
                })
            });
        s.notify.starting(-1);
        s.still_live(&caller)?;
        result
    }

    /// A lower bound of the next token (one past the largest this node
    /// granted; tokens come from etcd revisions, so no mark is saved), for
    /// `/metrics`.
    fn token_marks(&self) -> (u64, Option<u64>) {
        (self.shared.last_token.load(Ordering::Relaxed) + 1, None)
    }

    /// Group commit's figures: requests sent, the commands they carried,
    /// and the most one carried.
    fn store_metrics(&self) -> Vec<StoreMetric> {
        let stats = self.commit_stats();
        vec![
            StoreMetric {
                name: "lockd_etcd_requests_total",
                gauge: false,
                help: "Transactions this node's group commit sent to etcd (one round trip each).",
                value: stats.transactions,
            },
            StoreMetric {
                name: "lockd_etcd_commands_total",
                gauge: false,
                help: "Commands those transactions carried: over lockd_etcd_requests_total, the mean batch.",
                value: stats.commands,
            },
            StoreMetric {
                name: "lockd_etcd_largest_batch",
                gauge: true,
                help: "The most commands one transaction to etcd carried.",
                value: stats.largest,
            },
        ]
    }
}
