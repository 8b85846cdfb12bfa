//! Handing an exclusive lock to its next waiter in one transaction.
//!
//! A waiter's grant is stamped with a write, whose revision is its token
//! (`CLUSTER.md`: the create revision of a queued key is older than grants
//! made meanwhile). Two ways get it there in one round trip:
//! - **A local successor.** When the releasing client's node also serves
//!   the waiter queued just behind the released key, the release deletes
//!   the key and stamps the waiter's key in the same transaction: the
//!   waiter read its line atomically with its own put, so no key lies
//!   between the holder's key and its own, and once the holder's key is
//!   gone it is first. The compare only checks that the waiter is still in
//!   line. No watch event is waited for.
//! - **A waiter woken by the watch** (its predecessor went, on any node)
//!   stamps its key if every key of the line was created no earlier than
//!   its own, and otherwise reads the line to wait behind the key now just
//!   before it: one compare transaction instead of a read and then a write.
//!   A key stamped since it queued was granted by a local successor's
//!   hand-over: it is left as it is, so the token the holder was given is
//!   the one every listing shows.

use super::client::{prefix_end, Compare, Op, OpResult, Order, Range, Relation, Target};
use super::keys::{self, Family};
use super::{Job, Shared, StoreError, Wait};
use crate::store::{ClientId, Grant};
use std::sync::atomic::Ordering;

/// What a waiter's look at its line found.
pub(super) enum Turn {
    /// Granted, with this token.
    Granted(u64),
    /// Still waiting: the key just before its own, and the revision read.
    Behind(Vec<u8>, i64),
    /// Its key is gone (cancelled, or its lease expired).
    Gone,
    /// etcd did not answer; look again later.
    Again,
}

impl Shared {
    /// Deletes the released exclusive key `key`; if this node's waiter
    /// queued just behind it, grants it in the same transaction.
    pub(super) fn release_exclusive(&self, key: Vec<u8>, epoch: u64) -> Result<(), StoreError> {
        let Some((id, wait)) = self.successor(&key) else {
            return self.delete_or_later(vec![key], epoch);
        };
        let delete = Op::Delete {
            key: key.clone(),
            range_end: None,
        };
        let stamp = Op::Put {
            key: wait.key.clone(),
            value: wait.value.clone(),
            lease: wait.lease,
        };
        let in_line = Compare {
            key: wait.key.clone(),
            range_end: None,
            relation: Relation::Equal,
            target: Target::CreateRevision(wait.created),
        };
        match self.commit.txn(
            &self.client,
            &[in_line],
            &[delete.clone(), stamp],
            &[delete],
        ) {
            Ok(txn) => {
                if txn.succeeded {
                    self.deliver(
                        id,
                        &wait,
                        Grant::Exclusive {
                            token: keys::token(txn.revision, txn.slot),
                        },
                    );
                }
                Ok(())
            }
            Err(e) => {
                let _ = self.jobs.send(Job::Delete {
                    keys: vec![key],
                    epoch,
                });
                Err(e.into())
            }
        }
    }

    /// This node's exclusive waiter queued just behind `key`, if any.
    fn successor(&self, key: &[u8]) -> Option<(ClientId, Wait)> {
        let clients = self.clients.lock();
        self.waiters
            .waiting_for_key(key)
            .into_iter()
            .filter_map(|id| {
                let wait = clients.get(&id)?.waiting.clone()?;
                let writer = matches!(wait.mode, super::Mode::Lock);
                (writer && wait.family == Family::Exclusive && wait.created > 0)
                    .then_some((id, wait))
            })
            .min_by_key(|(_, wait)| wait.created)
    }

    /// A woken exclusive waiter's look at its line, in one transaction:
    /// stamp its key if it is first, else read the line.
    pub(super) fn take_turn(&self, wait: &Wait) -> Turn {
        let lock = self.layout.lock(Family::Exclusive, wait.name.as_bytes());
        let compares = [
            Compare {
                key: wait.key.clone(),
                range_end: None,
                relation: Relation::Equal,
                target: Target::CreateRevision(wait.created),
            },
            // Every key of the line was created no earlier than this one.
            Compare {
                key: lock.clone(),
                range_end: Some(prefix_end(&lock)),
                relation: Relation::Greater,
                target: Target::CreateRevision(wait.created - 1),
            },
            // Not stamped since it queued: a hand-over on this node may
            // have granted it in the meantime (its delete woke us), and
            // a second stamp would change the token the holder was given.
            Compare {
                key: wait.key.clone(),
                range_end: None,
                relation: Relation::Equal,
                target: Target::ModRevision(wait.created),
            },
        ];
        let stamp = Op::Put {
            key: wait.key.clone(),
            value: wait.value.clone(),
            lease: wait.lease,
        };
        let line = Op::Range(Range::prefix(&lock, Order::Created));
        let txn = match self.commit.txn(&self.client, &compares, &[stamp], &[line]) {
            Ok(txn) => txn,
            Err(_) => return Turn::Again,
        };
        if txn.succeeded {
            return Turn::Granted(keys::token(txn.revision, txn.slot));
        }
        let kvs = match txn.results.first() {
            Some(OpResult::Range { kvs, .. }) => kvs,
            _ => return Turn::Again,
        };
        match kvs.iter().position(|kv| kv.key == wait.key) {
            None => Turn::Gone,
            // Stamped: granted by a hand-over, which delivers it.
            Some(0) if kvs[0].mod_revision != wait.created => Turn::Gone,
            // First after all: the line changed between the compare and
            // the read (not within one batch, which has one command per
            // lock); look again.
            Some(0) => Turn::Again,
            Some(mine) => Turn::Behind(kvs[mine - 1].key.clone(), txn.revision),
        }
    }

    /// Gives a waiter its grant (a write lock, which also ends an
    /// upgrader's read hold; a read hold; or a shared place), if it still
    /// waits with this key and its lease lives.
    pub(super) fn deliver(&self, id: ClientId, wait: &Wait, grant: Grant) {
        let mut clients = self.clients.lock();
        let Some(conn) = clients.get_mut(&id) else {
            return;
        };
        if conn.waiting.as_ref().map(|w| &w.key) != Some(&wait.key)
            || !self.lease.is_live(conn.epoch)
        {
            return;
        }
        conn.waiting = None;
        // A settle that saw an older line may have registered it again.
        self.waiters.forget(id);
        match grant {
            Grant::Exclusive { token } => {
                conn.read.remove(&wait.name);
                conn.exclusive
                    .insert(wait.name.clone(), (wait.key.clone(), token));
                self.grants.fetch_add(1, Ordering::Relaxed);
                self.last_token.fetch_max(token, Ordering::Relaxed);
            }
            Grant::Read { .. } => {
                conn.read.insert(wait.name.clone(), wait.key.clone());
            }
            Grant::Shared { .. } => {
                conn.shared.insert(wait.name.clone(), wait.key.clone());
            }
        }
        let _ = conn.notify.try_send(grant);
    }
}
