//! Group commit: the transactions of a node's clients go to etcd together.
//!
//! Connection threads hand their transactions to [`Committer::txn`] and
//! block; a committer thread ([`run`]) takes every transaction pending
//! when it is free, nests them in one outer transaction
//! ([`Client::txns`]), and hands each caller its own answer. A node's
//! throughput is thus not one etcd round trip per command. [`COMMITTERS`]
//! threads share the queue, so a command never waits for a whole round
//! trip of another batch when a committer is free (a release, say, behind
//! a queued `wg` on the same lock).
//!
//! Each nested transaction keeps its own compares and branches, so a
//! compare that fails fails only its own command. Two rules keep each
//! command's meaning:
//! - **One command per lock per batch.** A batch is applied at one etcd
//!   revision, and its compares all see the store as it was before it. Two
//!   keys of one lock written in one batch would share a create revision
//!   (so the line's order would tie), and two try-locks of one lock would
//!   both see it free. A command that writes or compares under a lock
//!   another command of the batch touches waits for the next batch, and so
//!   does every later command on that lock (first come, first served).
//! - **A slot per grant.** A batch is applied at one revision, so the
//!   commands of a batch that write an exclusive lock's key (`g`, `wg`, a
//!   hand-over: those that may draw a fencing token) are numbered, and
//!   each one's number is written into its keys' values and returned as
//!   [`TxnResult::slot`]. A token is `revision × SLOTS + slot`
//!   ([`keys::token`]), unique and growing.
//!
//! etcd refuses a whole request (for a duplicate key, an unknown lease, a
//! request too large): the batch's commands are then sent one by one, so
//! one bad command fails alone.

use super::client::{Client, Compare, EtcdError, Op, Txn, TxnResult};
use super::keys::{self, Layout};
use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// etcd's default limit on the operations of one transaction
/// (`--max-txn-ops`); it applies to each level of nesting.
pub const MAX_TXN_OPS: usize = 128;

/// A bound on one batch's request body, well inside etcd's default 1.5 MiB
/// request limit.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// Committer threads per node: batches in flight at once. A few keep the
/// commands of a busy node in few batches (etcd's cost per request is what
/// group commit saves), while a command that must wait for the next batch
/// (a second grant, a second command on one lock) goes as soon as one
/// committer is free. Commands on one lock may then be
/// in flight in two batches: etcd applies the batches one after the other,
/// and such commands were asked for at the same time, so either order is
/// one a single server could have chosen.
pub const COMMITTERS: usize = 4;

/// How often an idle committer looks whether the node is stopping.
const IDLE: Duration = Duration::from_millis(200);

/// What one command is waiting for.
struct Pending {
    txn: Txn,
    /// The locks (or other keys) it writes or compares.
    units: Vec<Vec<u8>>,
    /// It writes a range of keys that cannot be named: it goes alone.
    alone: bool,
    /// Where it writes an exclusive lock's key (`true` for a success op,
    /// and the op's index), so it may draw a token: its batch gives it a
    /// slot, written into these values.
    stamps: Vec<(bool, usize)>,
    /// The slot its batch gave it.
    slot: u64,
    /// Estimated bytes on the wire.
    bytes: usize,
    reply: Sender<Result<TxnResult, EtcdError>>,
}

/// Counts of what the committer sent, for the benchmark and `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Round trips (outer transactions) sent.
    pub transactions: u64,
    /// Commands (nested transactions) they carried.
    pub commands: u64,
    /// The most commands one round trip carried.
    pub largest: u64,
}

#[derive(Default)]
struct Counters {
    transactions: AtomicU64,
    commands: AtomicU64,
    largest: AtomicU64,
}

/// The connection threads' side of group commit. Cheap to share.
pub struct Committer {
    queue: Queue,
    root: Vec<u8>,
    exclusive: Vec<u8>,
    registry: Vec<u8>,
}

/// The committer threads' side: where pending commands wait. Clones are
/// one queue.
#[derive(Clone)]
pub struct Queue(Arc<Inner>);

struct Inner {
    state: Mutex<State>,
    /// Signalled when a command arrives or is left for the next batch.
    ready: Condvar,
    counters: Counters,
}

struct State {
    /// Arrived and not yet sent, in arrival order.
    held: VecDeque<Pending>,
    /// Batches sent and not yet answered.
    in_flight: usize,
    /// The committers stopped: nothing is taken any more.
    closed: bool,
}

impl Committer {
    /// A committer for keys laid out by `layout`, and the queue its
    /// thread serves with [`run`].
    pub fn new(layout: &Layout) -> (Committer, Queue) {
        let queue = Queue(Arc::new(Inner {
            state: Mutex::new(State {
                held: VecDeque::new(),
                in_flight: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            counters: Counters::default(),
        }));
        let committer = Committer {
            queue: queue.clone(),
            root: layout.root().to_vec(),
            exclusive: layout.family(super::keys::Family::Exclusive),
            registry: layout.registry(),
        };
        (committer, queue)
    }

    /// Runs one transaction as part of the next batch; blocks until it
    /// was applied (or failed) and returns its own answer, as
    /// [`Client::txn`] does.
    ///
    /// When nothing is waiting and nothing is in flight, there is no batch
    /// to join: the caller sends its transaction itself, through `client`,
    /// as a batch of one, instead of handing it to a committer thread and
    /// waiting to be handed the answer (two thread wake-ups, and the
    /// caller's spinning while it waits). Anything that arrives meanwhile
    /// queues for the committers as before, so a busy node still batches.
    ///
    /// # Errors
    /// See [`EtcdError`]; the committer thread stopped.
    pub fn txn(
        &self,
        client: &Client,
        compares: &[Compare],
        success: &[Op],
        failure: &[Op],
    ) -> Result<TxnResult, EtcdError> {
        let txn = Txn {
            compares: compares.to_vec(),
            success: success.to_vec(),
            failure: failure.to_vec(),
        };
        let (reply, answer) = crossbeam_channel::bounded(1);
        let mut pending = self.pending(txn, reply);
        let stopped = || EtcdError::Protocol("the node's etcd committer has stopped".into());
        let inner = &self.queue.0;
        let mut state = inner.state.lock();
        if state.closed {
            return Err(stopped());
        }
        if state.held.is_empty() && state.in_flight == 0 {
            // No batch to join: a batch of one, from this thread.
            state.in_flight += 1;
            drop(state);
            if !pending.stamps.is_empty() {
                pending.stamp(0);
            }
            send(client, vec![pending], &inner.counters);
            inner.state.lock().in_flight -= 1;
        } else {
            state.held.push_back(pending);
            drop(state);
            inner.ready.notify_one();
        }
        answer.recv().map_err(|_| stopped())?
    }

    /// What the committer sent so far.
    pub fn stats(&self) -> CommitStats {
        let c = &self.queue.0.counters;
        CommitStats {
            transactions: c.transactions.load(Ordering::Relaxed),
            commands: c.commands.load(Ordering::Relaxed),
            largest: c.largest.load(Ordering::Relaxed),
        }
    }

    /// `txn` waiting to be sent, its answer to go to `reply`.
    fn pending(&self, txn: Txn, reply: Sender<Result<TxnResult, EtcdError>>) -> Pending {
        let (units, alone) = self.units(&txn);
        Pending {
            stamps: self.stamps(&txn),
            slot: 0,
            bytes: estimate(&txn),
            txn,
            units,
            alone,
            reply,
        }
    }

    /// The locks a transaction writes or compares (reads conflict with
    /// nothing: a read after a write of its batch sees it, as if later).
    fn units(&self, txn: &Txn) -> (Vec<Vec<u8>>, bool) {
        let mut units = Vec::new();
        let mut alone = false;
        let mut add = |key: &[u8], ranged: bool| {
            // A range that is not one lock's line may span locks.
            alone |= ranged && !self.is_line(key);
            units.push(self.unit(key).to_vec());
        };
        for c in &txn.compares {
            add(&c.key, c.range_end.is_some());
        }
        for op in txn.success.iter().chain(&txn.failure) {
            match op {
                Op::Range(_) => {}
                Op::Put { key, .. } => add(key, false),
                Op::Delete { key, range_end } => add(key, range_end.is_some()),
            }
        }
        units.sort();
        units.dedup();
        (units, alone)
    }

    /// Where a transaction writes an exclusive lock's key.
    fn stamps(&self, txn: &Txn) -> Vec<(bool, usize)> {
        let exclusive =
            |op: &Op| matches!(op, Op::Put { key, .. } if key.starts_with(&self.exclusive));
        let success = txn.success.iter().enumerate().map(|(i, op)| (true, i, op));
        let failure = txn.failure.iter().enumerate().map(|(i, op)| (false, i, op));
        success
            .chain(failure)
            .filter(|(_, _, op)| exclusive(op))
            .map(|(branch, i, _)| (branch, i))
            .collect()
    }

    /// Whether `key` is the prefix of one lock's keys,
    /// `PREFIX/<family>/<hex name>/`.
    fn is_line(&self, key: &[u8]) -> bool {
        key.strip_prefix(&self.root[..]).is_some_and(|rest| {
            rest.last() == Some(&b'/') && rest.iter().filter(|&&b| b == b'/').count() == 2
        })
    }

    /// The lock a key belongs to; a registration is its own unit.
    fn unit<'k>(&self, key: &'k [u8]) -> &'k [u8] {
        if key.starts_with(&self.registry) {
            return key;
        }
        Layout::lock_of(key).unwrap_or(key)
    }
}

/// Serves `queue` until `stop` is set:
/// takes every pending command that fits the rules of the module docs,
/// sends them as one transaction, answers each. [`COMMITTERS`] threads
/// serve one queue, so that many batches can be in flight: what arrives
/// while they all wait for etcd goes in the next batch.
pub fn run(client: &Client, queue: &Queue, stop: &AtomicBool) {
    let inner = &queue.0;
    loop {
        let batch = {
            let mut state = inner.state.lock();
            loop {
                if stop.load(Ordering::Relaxed) {
                    // Dropping the commands answers their callers: stopped.
                    state.closed = true;
                    state.held.clear();
                    return;
                }
                if !state.held.is_empty() {
                    break;
                }
                inner.ready.wait_for(&mut state, IDLE);
            }
            let batch = pick(&mut state.held);
            state.in_flight += 1;
            if !state.held.is_empty() {
                // Left for the next batch: another committer may be idle.
                inner.ready.notify_one();
            }
            batch
        };
        send(client, batch, &inner.counters);
        inner.state.lock().in_flight -= 1;
    }
}

/// Takes the next batch out of `held`, in arrival order; what is left
/// keeps its order.
fn pick(held: &mut VecDeque<Pending>) -> Vec<Pending> {
    let mut batch: Vec<Pending> = Vec::new();
    let mut rest = VecDeque::new();
    let mut taken: HashSet<Vec<u8>> = HashSet::new();
    let mut blocked: HashSet<Vec<u8>> = HashSet::new();
    let mut bytes = 0;
    let mut closed = false;
    let mut slots = 0;
    for mut pending in held.drain(..) {
        let grants = !pending.stamps.is_empty();
        let fits = !closed
            && (!grants || slots < keys::SLOTS)
            && batch.len() < MAX_TXN_OPS
            && (batch.is_empty() || bytes + pending.bytes <= MAX_BATCH_BYTES)
            && (batch.is_empty() || !pending.alone)
            && pending
                .units
                .iter()
                .all(|u| !taken.contains(u) && !blocked.contains(u));
        if fits {
            bytes += pending.bytes;
            if grants {
                pending.stamp(slots);
                slots += 1;
            }
            taken.extend(pending.units.iter().cloned());
            closed = pending.alone;
            batch.push(pending);
        } else {
            // Later commands on its locks must not overtake it.
            blocked.extend(pending.units.iter().cloned());
            closed |= pending.alone;
            rest.push_back(pending);
        }
    }
    *held = rest;
    batch
}

impl Pending {
    /// Gives the command `slot`: written into the values of its exclusive
    /// keys, and returned with its result.
    fn stamp(&mut self, slot: u64) {
        self.slot = slot;
        for &(success, i) in &self.stamps {
            let ops = if success {
                &mut self.txn.success
            } else {
                &mut self.txn.failure
            };
            if let Some(Op::Put { value, .. }) = ops.get_mut(i) {
                *value = keys::with_slot(value, slot);
            }
        }
    }
}

/// Sends a batch and answers each of its commands.
fn send(client: &Client, batch: Vec<Pending>, counters: &Counters) {
    let mut txns = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for pending in batch {
        txns.push(pending.txn);
        replies.push((pending.reply, pending.slot));
    }
    counters.transactions.fetch_add(1, Ordering::Relaxed);
    counters
        .commands
        .fetch_add(txns.len() as u64, Ordering::Relaxed);
    counters
        .largest
        .fetch_max(txns.len() as u64, Ordering::Relaxed);
    // The slot is in the values written, so it goes with the result
    // however the command was sent.
    let answer = |(reply, slot): &(Sender<_>, u64), result: Result<TxnResult, EtcdError>| {
        let _ = reply.send(result.map(|r| TxnResult { slot: *slot, ..r }));
    };
    match client.txns(&txns) {
        Ok(results) => {
            for (reply, result) in replies.iter().zip(results) {
                answer(reply, Ok(result));
            }
        }
        Err(e) if txns.len() > 1 && refused(&e) => {
            // etcd applied nothing: one by one, so the bad one fails alone.
            for (txn, reply) in txns.iter().zip(&replies) {
                counters.transactions.fetch_add(1, Ordering::Relaxed);
                answer(reply, client.txn(&txn.compares, &txn.success, &txn.failure));
            }
        }
        Err(e) => {
            for reply in &replies {
                answer(reply, Err(e.clone()));
            }
        }
    }
}

/// Whether etcd refused the request before applying any of it: a bad
/// argument (a key written twice, too many ops), an unknown lease, a
/// request too large. Not a timeout: that one may have been applied.
fn refused(e: &EtcdError) -> bool {
    // gRPC codes: 3 InvalidArgument, 5 NotFound, 8 ResourceExhausted,
    // 9 FailedPrecondition, 11 OutOfRange.
    matches!(
        e,
        EtcdError::Status {
            code: 3 | 5 | 8 | 9 | 11,
            ..
        }
    )
}

/// Bytes a transaction takes in the request, roughly (base64 and JSON).
fn estimate(txn: &Txn) -> usize {
    let op = |op: &Op| match op {
        Op::Range(r) => r.key.len() + r.range_end.as_ref().map_or(0, Vec::len),
        Op::Put { key, value, .. } => key.len() + value.len(),
        Op::Delete { key, range_end } => key.len() + range_end.as_ref().map_or(0, Vec::len),
    };
    let raw: usize = txn
        .compares
        .iter()
        .map(|c| c.key.len() + c.range_end.as_ref().map_or(0, Vec::len))
        .chain(txn.success.iter().chain(&txn.failure).map(op))
        .sum();
    let ops = txn.compares.len() + txn.success.len() + txn.failure.len();
    raw * 4 / 3 + 100 * ops + 64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::etcd::client::{Range, Relation, Target};
    use crate::store::etcd::keys::Family;

    fn committer() -> (Committer, Queue, Layout) {
        let layout = Layout::new(b"/p");
        let (c, q) = Committer::new(&layout);
        (c, q, layout)
    }

    /// A command as `g` sends it (in `family`): put the key if the lock's
    /// line is empty.
    fn put_if_free(
        c: &Committer,
        layout: &Layout,
        family: Family,
        name: &[u8],
        seq: u64,
    ) -> Pending {
        let lock = layout.lock(family, name);
        let txn = Txn {
            compares: vec![Compare {
                key: lock.clone(),
                range_end: Some(super::super::client::prefix_end(&lock)),
                relation: Relation::Equal,
                target: Target::CreateRevision(0),
            }],
            success: vec![Op::Put {
                key: layout.entry(family, name, b"o", seq),
                value: Vec::new(),
                lease: 0,
            }],
            failure: vec![Op::Range(Range::prefix(&lock, Order::Created))],
        };
        pending(c, txn)
    }

    /// A command that takes a shared place: it draws no token.
    fn try_lock(c: &Committer, layout: &Layout, name: &[u8], seq: u64) -> Pending {
        put_if_free(c, layout, Family::Shared, name, seq)
    }

    #[test]
    fn grants_share_a_batch_each_with_its_own_slot_in_its_value() {
        let (c, _q, layout) = committer();
        let grant = |name: &[u8], seq| {
            let mut p = put_if_free(&c, &layout, Family::Exclusive, name, seq);
            if let Op::Put { value, .. } = &mut p.txn.success[0] {
                *value = keys::claim_value(keys::Claim::Write, b"me");
            }
            p
        };
        let mut held: VecDeque<Pending> = [
            grant(b"a", 1),
            try_lock(&c, &layout, b"b", 2),
            grant(b"c", 3),
            try_lock(&c, &layout, b"d", 4),
        ]
        .into();
        let batch = pick(&mut held);
        assert_eq!(seqs(&batch), vec![1, 2, 3, 4]);
        let slots: Vec<(u64, Option<u64>)> = batch
            .iter()
            .map(|p| match &p.txn.success[0] {
                Op::Put { value, .. } if !p.stamps.is_empty() => (p.slot, Some(keys::slot(value))),
                _ => (p.slot, None),
            })
            .collect();
        assert_eq!(
            slots,
            vec![(0, Some(0)), (0, None), (1, Some(1)), (0, None)]
        );
    }

    #[test]
    fn a_batch_carries_at_most_slots_grants() {
        let (c, _q, layout) = committer();
        let mut held: VecDeque<Pending> = (0..keys::SLOTS + 3)
            .map(|i| {
                put_if_free(
                    &c,
                    &layout,
                    Family::Exclusive,
                    format!("n{i}").as_bytes(),
                    i,
                )
            })
            .collect();
        assert_eq!(
            pick(&mut held).len() as u64,
            keys::SLOTS.min(MAX_TXN_OPS as u64)
        );
        assert_eq!(pick(&mut held).len(), 3);
    }

    fn pending(c: &Committer, txn: Txn) -> Pending {
        c.pending(txn, crossbeam_channel::bounded(1).0)
    }

    use crate::store::etcd::client::Order;

    fn seqs(batch: &[Pending]) -> Vec<u64> {
        batch
            .iter()
            .map(|p| match &p.txn.success[0] {
                Op::Put { key, .. } | Op::Delete { key, .. } => {
                    let dot = key.iter().rposition(|&b| b == b'.').unwrap_or(0);
                    std::str::from_utf8(&key[dot + 1..])
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(u64::MAX)
                }
                Op::Range(_) => u64::MAX,
            })
            .collect()
    }

    #[test]
    fn one_command_per_lock_per_batch_in_arrival_order() {
        let (c, _q, layout) = committer();
        let mut held: VecDeque<Pending> = [
            try_lock(&c, &layout, b"a", 1),
            try_lock(&c, &layout, b"b", 2),
            try_lock(&c, &layout, b"a", 3),
            try_lock(&c, &layout, b"c", 4),
            try_lock(&c, &layout, b"a", 5),
        ]
        .into();
        assert_eq!(seqs(&pick(&mut held)), vec![1, 2, 4]);
        assert_eq!(seqs(&pick(&mut held)), vec![3]);
        assert_eq!(seqs(&pick(&mut held)), vec![5]);
        assert!(held.is_empty());
    }

    #[test]
    fn a_held_command_is_not_overtaken_on_any_of_its_locks() {
        let (c, _q, layout) = committer();
        // Seq 2 releases a and b together (as `ra` does); a is taken by 1,
        // so 2 waits, and 3 (on b) must wait behind it.
        let release = Txn {
            success: vec![
                Op::Delete {
                    key: layout.entry(Family::Shared, b"a", b"o", 2),
                    range_end: None,
                },
                Op::Delete {
                    key: layout.entry(Family::Shared, b"b", b"o", 9),
                    range_end: None,
                },
            ],
            ..Txn::default()
        };
        let mut held: VecDeque<Pending> = [
            try_lock(&c, &layout, b"a", 1),
            pending(&c, release),
            try_lock(&c, &layout, b"b", 3),
            try_lock(&c, &layout, b"d", 4),
        ]
        .into();
        assert_eq!(seqs(&pick(&mut held)), vec![1, 4]);
        assert_eq!(seqs(&pick(&mut held)), vec![2]);
        assert_eq!(seqs(&pick(&mut held)), vec![3]);
    }

    #[test]
    fn batches_stop_at_etcds_op_limit_and_reads_conflict_with_nothing() {
        let (c, _q, layout) = committer();
        let mut held: VecDeque<Pending> = (0..MAX_TXN_OPS as u64 + 5)
            .map(|i| try_lock(&c, &layout, format!("n{i}").as_bytes(), i))
            .collect();
        assert_eq!(pick(&mut held).len(), MAX_TXN_OPS);
        assert_eq!(pick(&mut held).len(), 5);
        let read = Txn {
            success: vec![Op::Range(Range::prefix(
                &layout.family(Family::Exclusive),
                Order::Created,
            ))],
            ..Txn::default()
        };
        let (units, alone) = c.units(&read);
        assert!(units.is_empty() && !alone);
    }

    /// A client of an address where nothing listens, and a put.
    fn unreachable(layout: &Layout) -> (Client, Op) {
        let client = Client::new(&super::super::client::ClientConfig {
            endpoints: vec!["127.0.0.1:9".into()],
            request_timeout: Duration::from_millis(100),
            watch_idle: Duration::from_millis(100),
        });
        let put = Op::Put {
            key: layout.entry(Family::Exclusive, b"a", b"o", 1),
            value: Vec::new(),
            lease: 0,
        };
        (client, put)
    }

    #[test]
    fn once_the_committers_stop_every_command_fails_instead_of_waiting() {
        let (c, q, layout) = committer();
        let (client, put) = unreachable(&layout);
        // A batch in flight: the next command queues for a committer.
        q.0.state.lock().in_flight = 1;
        // A command queued before the stop is answered too.
        std::thread::scope(|scope| {
            let waiting = scope.spawn(|| c.txn(&client, &[], std::slice::from_ref(&put), &[]));
            while q.0.state.lock().held.is_empty() {
                std::thread::yield_now();
            }
            run(&client, &q, &AtomicBool::new(true));
            assert!(matches!(waiting.join(), Ok(Err(EtcdError::Protocol(_)))));
        });
        assert!(matches!(
            c.txn(&client, &[], &[put], &[]),
            Err(EtcdError::Protocol(_))
        ));
    }

    #[test]
    fn with_nothing_in_flight_the_caller_sends_its_command_itself() {
        // No committer thread runs: a command handed to one would wait.
        let (c, q, layout) = committer();
        let (client, put) = unreachable(&layout);
        let (done, result) = crossbeam_channel::bounded(1);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let _ = done.send(c.txn(&client, &[], std::slice::from_ref(&put), &[]));
            });
            let result = result
                .recv_timeout(Duration::from_secs(10))
                .expect("sent by the caller, not queued");
            // Sent, and refused: nothing listens there.
            assert!(
                matches!(result, Err(EtcdError::Unreachable { .. })),
                "{result:?}"
            );
        });
        let state = q.0.state.lock();
        assert!(state.held.is_empty());
        assert_eq!(state.in_flight, 0);
        drop(state);
        assert_eq!(c.stats().transactions, 1);
    }

    #[test]
    fn a_range_delete_across_locks_goes_alone() {
        let (c, _q, layout) = committer();
        let wipe = Txn {
            success: vec![Op::Delete {
                key: layout.family(Family::Exclusive),
                range_end: Some(super::super::client::prefix_end(
                    &layout.family(Family::Exclusive),
                )),
            }],
            ..Txn::default()
        };
        let mut held: VecDeque<Pending> = [
            try_lock(&c, &layout, b"a", 1),
            pending(&c, wipe),
            try_lock(&c, &layout, b"b", 3),
        ]
        .into();
        assert_eq!(pick(&mut held).len(), 1);
        assert_eq!(pick(&mut held).len(), 1);
        assert_eq!(seqs(&pick(&mut held)), vec![3]);
    }
}
