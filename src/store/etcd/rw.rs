//! Reader/writer locks on etcd (`wr`, `rr`, and `g`/`wg` by a reader):
//! readers and writers of a name share its one exclusive line, the keys
//! under `PREFIX/x/<hex name>/` in create order, which is `PROTOCOL.md`
//! Part 2's first-come-first-served line, the same from every node.
//!
//! - A writer holds the name when its key comes first.
//! - A reader holds it when every key before its own holds a read, and
//!   none of those asked to upgrade before the reader came: a new reader
//!   never overtakes a waiting writer, nor an upgrade.
//! - A reader asking to write marks its own key `u`, keeping its place
//!   among the holders (the memory table puts it at the head of the line),
//!   and gets the write lock once it is the only holder left: a write of
//!   its key turns it into a writer's, and that write's revision is the
//!   token.
//!
//! Waking: a waiting reader waits for the writer (or upgrading reader)
//! just ahead of it to change or go; an upgrading reader for any delete
//! under the lock; a writer, as always, for the key before its own.

use super::client::{Compare, EtcdError, KeyValue, Op, Order, Range, Relation, Target};
use super::keys::{self, Claim, Family};
use super::{deferred, ranged, Caller, EtcdStore, Job, Mode, Shared, Wait};
use crate::name::LockName;
use crate::store::{ClientId, Grant, StoreError, WaitStart};
use std::sync::atomic::Ordering;

/// Tries of a try-once upgrade whose line changed under it.
const UPGRADE_TRIES: usize = 5;

/// Where a key of an exclusive line stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Status {
    /// Holds the write lock.
    Write,
    /// Holds a read.
    Read,
    /// Holds a read and waits to upgrade it to the write lock.
    Upgrading,
    /// Waits for the write lock or a read.
    Waiting,
}

impl Status {
    /// Holds the write lock or a read.
    pub(super) fn holds(self) -> bool {
        self != Status::Waiting
    }

    /// Waits for something (an upgrading reader holds and waits).
    pub(super) fn waits(self) -> bool {
        matches!(self, Status::Waiting | Status::Upgrading)
    }

    fn reads(self) -> bool {
        matches!(self, Status::Read | Status::Upgrading)
    }
}

/// Where each key of an exclusive line (in create order) stands.
pub(super) fn statuses(kvs: &[KeyValue]) -> Vec<Status> {
    let mut out = Vec::with_capacity(kvs.len());
    // Every key so far holds a read.
    let mut readers_only = true;
    // The first upgrade request among them: a reader that came later waits.
    let mut upgrade_asked = i64::MAX;
    for (i, kv) in kvs.iter().enumerate() {
        let claim = keys::claim(&kv.value);
        let status = match claim {
            Claim::Write if i == 0 => Status::Write,
            Claim::Write => Status::Waiting,
            Claim::Read | Claim::Upgrade if readers_only && kv.create_revision < upgrade_asked => {
                if claim == Claim::Upgrade {
                    upgrade_asked = upgrade_asked.min(kv.mod_revision);
                    Status::Upgrading
                } else {
                    Status::Read
                }
            }
            Claim::Read | Claim::Upgrade => Status::Waiting,
        };
        readers_only &= status.reads();
        out.push(status);
    }
    out
}

/// How many hold a read.
pub(super) fn readers(statuses: &[Status]) -> usize {
    statuses.iter().filter(|s| s.reads()).count()
}

/// Whether the reader at `mine` is the only holder: it may write.
fn alone(statuses: &[Status], mine: usize) -> bool {
    mine == 0 && statuses[0].reads() && !statuses.get(1).is_some_and(|s| s.holds())
}

/// The key a waiting reader at `mine` waits behind: the nearest writer or
/// upgrading reader before it.
fn blocker(kvs: &[KeyValue], mine: usize) -> Option<&[u8]> {
    kvs[..mine]
        .iter()
        .rev()
        .find(|kv| keys::claim(&kv.value) != Claim::Read)
        .map(|kv| &kv.key[..])
}

impl EtcdStore {
    /// `g`/`wg` by a reader of `name` (its read key is `key`): the write
    /// lock at once when it is the only holder, else (with `queue`) it
    /// marks its key and waits until the other readers are gone.
    pub(super) fn upgrade(
        &self,
        id: ClientId,
        name: &[u8],
        key: Vec<u8>,
        queue: bool,
    ) -> Result<WaitStart, StoreError> {
        let s = &self.shared;
        let caller = s.caller(id)?;
        let lock = s.layout.lock(Family::Exclusive, name);
        let line = Range::prefix(&lock, Order::Created);
        for _ in 0..UPGRADE_TRIES {
            let (revision, kvs) = s.client.range(&line)?;
            let mine = kvs
                .iter()
                .position(|kv| kv.key == key)
                .ok_or(StoreError::LocksLost)?;
            if !alone(&statuses(&kvs), mine) {
                break;
            }
            // Only if nobody joined the line since the read: a reader that
            // did would hold a read beside the new writer.
            let unchanged = Compare {
                key: lock.clone(),
                range_end: Some(super::client::prefix_end(&lock)),
                relation: Relation::Less,
                target: Target::ModRevision(revision + 1),
            };
            let put = Op::Put {
                key: key.clone(),
                value: keys::claim_value(Claim::Write, &caller.default),
                lease: caller.lease,
            };
            let txn = s.client.txn(&[unchanged], &[put], &[])?;
            if txn.succeeded {
                let token = keys::token(txn.revision, txn.slot);
                s.upgraded(id, &caller, name, &key, token)?;
                return Ok(WaitStart::Granted(Grant::Exclusive { token }));
            }
        }
        if !queue {
            return Ok(WaitStart::Busy);
        }
        // Mark the key (if it is still there) and read the line after it.
        let exists = Compare {
            key: key.clone(),
            range_end: None,
            relation: Relation::Greater,
            target: Target::CreateRevision(0),
        };
        let mark = Op::Put {
            key: key.clone(),
            value: keys::claim_value(Claim::Upgrade, &caller.default),
            lease: caller.lease,
        };
        let txn = s.client.txn(&[exists], &[mark, Op::Range(line)], &[])?;
        if !txn.succeeded {
            return Err(StoreError::LocksLost);
        }
        let kvs = ranged(&txn.results, 1);
        let wait = Wait {
            family: Family::Exclusive,
            name: LockName::new(name),
            key,
            mode: Mode::Upgrade,
            created: 0,
            value: Vec::new(),
            lease: caller.lease,
        };
        let cycle = s.begin_wait(id, &caller, &wait.key);
        if !matches!(cycle, Ok(false)) {
            s.unmark(&wait.key, &caller.default, caller.lease, caller.epoch);
            return cycle.map(|_| WaitStart::Deadlock);
        }
        let mine = kvs.iter().position(|kv| kv.key == wait.key);
        let now = mine.is_some_and(|mine| alone(&statuses(&kvs), mine));
        s.queue(id, &caller, wait)?;
        if now {
            let _ = s.jobs.send(Job::Settle(id));
        } else {
            s.wait_on_lock(id, &lock, txn.revision);
        }
        Ok(WaitStart::Queued)
    }
}

impl Shared {
    /// The key of this client's read hold on `name`; fails once its locks
    /// can no longer be vouched for.
    pub(super) fn read_key(
        &self,
        id: ClientId,
        name: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let clients = self.clients.lock();
        let conn = clients.get(&id).ok_or(StoreError::LocksLost)?;
        if !self.lease.is_live(conn.epoch) {
            return Err(StoreError::LocksLost);
        }
        Ok(conn.read.get(name).cloned())
    }

    /// Records an upgrade granted to the caller's own request: its read
    /// key (`key`, just written again) is its write key now.
    fn upgraded(
        &self,
        id: ClientId,
        caller: &Caller,
        name: &[u8],
        key: &[u8],
        token: u64,
    ) -> Result<(), StoreError> {
        self.record(id, caller, key, |conn| {
            let key = conn.read.remove(name)?;
            conn.exclusive.insert(LockName::new(name), (key, token));
            Some(())
        })?
        .ok_or(StoreError::LocksLost)?;
        self.grants.fetch_add(1, Ordering::Relaxed);
        self.last_token.fetch_max(token, Ordering::Relaxed);
        Ok(())
    }

    /// A waiting reader at `mine` waits for the writer or upgrading
    /// reader ahead of it to change or go.
    pub(super) fn wait_behind_writer(
        &self,
        id: ClientId,
        kvs: &[KeyValue],
        mine: usize,
        lock: &[u8],
        read_at: i64,
    ) {
        match blocker(kvs, mine) {
            Some(key) => {
                if self.waiters.wait_for_change(id, key, read_at) {
                    let _ = self.jobs.send(Job::Settle(id));
                }
            }
            None => self.wait_on_lock(id, lock, read_at),
        }
    }

    /// Turns an upgrading reader's key back into a plain reader's (its
    /// upgrade timed out or was refused); retried while its lease lives
    /// if etcd fails.
    pub(super) fn unmark(&self, key: &[u8], default: &[u8], lease: i64, epoch: u64) {
        if let Err(e) = self.put_if_present(key, default, lease) {
            deferred("wg", Err(e.into()));
            let _ = self.jobs.send(Job::Unmark {
                key: key.to_vec(),
                default: default.into(),
                lease,
                epoch,
            });
        }
    }

    /// A [`Job::Unmark`]: tries again after a pause while the lease lives.
    pub(super) fn unmark_later(&self, key: Vec<u8>, default: Box<[u8]>, lease: i64, epoch: u64) {
        if !self.lease.is_live(epoch) || self.put_if_present(&key, &default, lease).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        let _ = self.jobs.send(Job::Unmark {
            key,
            default,
            lease,
            epoch,
        });
    }

    fn put_if_present(&self, key: &[u8], default: &[u8], lease: i64) -> Result<(), EtcdError> {
        let exists = Compare {
            key: key.to_vec(),
            range_end: None,
            relation: Relation::Greater,
            target: Target::CreateRevision(0),
        };
        let put = Op::Put {
            key: key.to_vec(),
            value: keys::claim_value(Claim::Read, default),
            lease,
        };
        self.client.txn(&[exists], &[put], &[]).map(|_| ())
    }

    /// A waiting reader's turn may have come: a read when it holds, else
    /// it waits again.
    pub(super) fn settle_read(&self, id: ClientId, wait: Wait) {
        let lock = self.layout.lock(wait.family, wait.name.as_bytes());
        let Some((revision, kvs)) = self.read_line(id, &lock) else {
            return;
        };
        let Some(mine) = kvs.iter().position(|kv| kv.key == wait.key) else {
            return; // cancelled, or its lease is gone
        };
        let status = statuses(&kvs);
        if !status[mine].holds() {
            self.wait_behind_writer(id, &kvs, mine, &lock, revision);
            return;
        }
        // Readers admitted together are answered in line order, as a
        // single server admits them one after the other.
        let readers = readers(&status[..=mine]);
        self.deliver(id, &wait, Grant::Read { readers });
    }

    /// An upgrading reader's turn may have come: the write lock once it is
    /// the only holder (stamped by a write of its key while it still
    /// carries its mark), else it waits again.
    pub(super) fn settle_upgrade(&self, id: ClientId, wait: Wait) {
        let lock = self.layout.lock(wait.family, wait.name.as_bytes());
        let Some((revision, kvs)) = self.read_line(id, &lock) else {
            return;
        };
        let Some(mine) = kvs.iter().position(|kv| kv.key == wait.key) else {
            return;
        };
        if !alone(&statuses(&kvs), mine) {
            self.wait_on_lock(id, &lock, revision);
            return;
        }
        let kv = &kvs[mine];
        let still_marked = Compare {
            key: kv.key.clone(),
            range_end: None,
            relation: Relation::Equal,
            target: Target::ModRevision(kv.mod_revision),
        };
        let default = keys::parse_value(&kv.value).map_or(&b""[..], |(_, d)| d);
        let put = Op::Put {
            key: kv.key.clone(),
            value: keys::claim_value(Claim::Write, default),
            lease: kv.lease,
        };
        match self.client.txn(&[still_marked], &[put], &[]) {
            Ok(txn) if txn.succeeded => {
                let token = keys::token(txn.revision, txn.slot);
                self.deliver(id, &wait, Grant::Exclusive { token });
            }
            // Unmarked meanwhile: the wait was cancelled.
            Ok(_) => {}
            Err(_) => {
                std::thread::sleep(std::time::Duration::from_millis(50));
                let _ = self.jobs.send(Job::Settle(id));
            }
        }
    }

    /// The line of `lock` for a settling waiter; on an etcd hiccup, looks
    /// again shortly (the lease guard covers a longer outage).
    fn read_line(&self, id: ClientId, lock: &[u8]) -> Option<(i64, Vec<KeyValue>)> {
        match self.client.range(&Range::prefix(lock, Order::Created)) {
            Ok(line) => Some(line),
            Err(_) => {
                std::thread::sleep(std::time::Duration::from_millis(50));
                let _ = self.jobs.send(Job::Settle(id));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key created at `created` and last written at `written`.
    fn kv(claim: Claim, created: i64, written: i64) -> KeyValue {
        KeyValue {
            key: format!("k{created}").into_bytes(),
            value: keys::claim_value(claim, b"c"),
            create_revision: created,
            mod_revision: written,
            lease: 1,
        }
    }

    use Claim::{Read as R, Upgrade as U, Write as W};
    use Status::{Read, Upgrading, Waiting, Write};

    #[test]
    fn a_writer_holds_first_and_readers_hold_up_to_the_first_writer() {
        let line = [kv(W, 1, 1), kv(R, 2, 2), kv(R, 3, 3)];
        assert_eq!(statuses(&line), vec![Write, Waiting, Waiting]);
        let line = [kv(R, 1, 1), kv(R, 2, 2), kv(W, 3, 3), kv(R, 4, 4)];
        assert_eq!(statuses(&line), vec![Read, Read, Waiting, Waiting]);
        assert_eq!(readers(&statuses(&line)), 2);
        assert_eq!(blocker(&line, 3), Some(&b"k3"[..]));
    }

    #[test]
    fn a_reader_that_came_after_an_upgrade_request_waits_behind_it() {
        // Reader 1 asked to upgrade at revision 5: reader 2 (before) keeps
        // its read, reader 6 (after) waits, behind the upgrading key.
        let line = [kv(U, 1, 5), kv(R, 2, 2), kv(R, 6, 6)];
        assert_eq!(statuses(&line), vec![Upgrading, Read, Waiting]);
        assert!(!alone(&statuses(&line), 0));
        assert_eq!(blocker(&line, 2), Some(&b"k1"[..]));
        // Once reader 2 is gone the upgrader is alone: it may write.
        let line = [kv(U, 1, 5), kv(R, 6, 6)];
        assert!(alone(&statuses(&line), 0));
        // Unmarked again (a timed-out upgrade), reader 6 holds.
        let line = [kv(R, 1, 7), kv(R, 6, 6)];
        assert_eq!(statuses(&line), vec![Read, Read]);
    }

    #[test]
    fn only_a_lone_reader_at_the_head_may_write() {
        assert!(alone(&statuses(&[kv(R, 1, 1)]), 0));
        assert!(alone(&statuses(&[kv(R, 1, 1), kv(W, 2, 2)]), 0));
        assert!(!alone(&statuses(&[kv(R, 1, 1), kv(R, 2, 2)]), 1));
        assert!(!alone(&statuses(&[kv(W, 1, 1)]), 0));
    }
}
