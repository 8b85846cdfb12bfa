//! Deadlock detection across nodes (`PROTOCOL.md` Part 2, `CLUSTER.md`).
//!
//! The waits-for graph lives in etcd. A client that waits depends on every
//! current holder of the lock it waits for (the writer or the readers of an
//! exclusive line, the holding keys of a shared one), which the lines say.
//! That it waits is its edge, `PREFIX/w/<owner>`, whose value is the key it
//! waits with (its waiting key, or an upgrading reader's marked read key).
//! An edge counts while that key still waits in its line: a granted or
//! cancelled wait leaves a stale edge, which the client's next wait
//! overwrites and its end deletes. A waiting key without an edge is no
//! wait in the graph: its client is still checking, or needs no edge.
//!
//! A client that holds no lock needs no edge: nobody waits for it, and it
//! takes nothing while it waits, so no cycle goes through it during this
//! wait (most waits are such; edges are for clients that nest locks). A
//! client that holds one and whose key waits starts to wait thus
//! ([`Shared::begin_wait`]):
//! 1. read the edges and every line in one transaction, at revision R;
//! 2. look for a cycle through itself ([`check`]); if there is one, refuse;
//! 3. insert its edge in a transaction that fails if any edge was written
//!    after R ([`Compare::unchanged_since`] on the edge prefix); when it
//!    fails, pause a little (at random) and go back to step 1, a bounded
//!    number of times ([`EtcdError::Contended`] after that).
//!
//! So two clients that close one cycle at the same moment, on two nodes,
//! cannot both get in: of their inserts, the later one either read after
//! the earlier went in, and its check saw the cycle, or read before it,
//! and then its compare fails and its next read sees the cycle. Nor are
//! both refused: a client is refused only for edges already in. Only edge
//! writes need failing the compare: a client waits for one lock at a time
//! and a grant ends its wait, so a new hold is a client's that waits for
//! nothing and closes no cycle by itself (the edge of its next wait is
//! checked in turn); deletes only take dependencies away. The price: any
//! edge that goes in fails the checks in flight everywhere, which then
//! read again (after a short random pause, so that they spread out); each
//! failed try thus means that some other wait went in.
//!
//! A node checks its clients' waits a batch at a time: the clients that
//! start to wait while a batch runs make the next one. A batch reads the
//! graph once, checks its clients in arrival order, each seeing the edges
//! of those before it that closed no cycle ([`check_in_turn`]), and inserts
//! those edges in one transaction under the one compare: they go in
//! together, as if one after the other, or none does (and then the whole
//! batch tries again: a refusal may count on edges of its batch, so it is
//! answered only once they are in). So a node's waits
//! never fail one another's compares (each failed try costs etcd a write),
//! and a burst of them costs a few round trips, not one each; retries are
//! left to races between nodes.
//!
//! Group commit ([`super::commit`]) does not carry the inserts: a batch's
//! compares all see the store as it was before the batch, so two edge
//! inserts in two of its commands would both pass one compare, each
//! unchecked against the other, and could close a cycle together. They go
//! to etcd directly (the committer would have sent each alone anyway, and
//! held back the commands behind it: a compare over a range that is not
//! one lock's line does not share a batch). The reads go through it.

use super::client::{Compare, EtcdError, KeyValue, Op, Order, Range};
use super::commit::MAX_TXN_OPS;
use super::keys::{Family, Layout};
use super::rw;
use super::{ranged, Caller, Shared, Wait};
use crate::store::{ClientId, StoreError, WaitStart};
use crossbeam_channel::{Sender, TryRecvError};
use parking_lot::Mutex;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Reads and inserts of one wait's edge before it gives up (see the
/// module docs: each failed try is another wait's success).
const TRIES: usize = 64;

/// The longest random pause between two tries.
const MAX_PAUSE: Duration = Duration::from_millis(32);

/// What a client whose key is in a line finds in the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// It waits, and closes no cycle: its edge may go in.
    Clear,
    /// Its wait would close a cycle: refused.
    Cycle,
    /// Its key holds already (its turn came) or is gone: no edge.
    NotWaiting,
}

/// `PREFIX/w/`: the waits-for edges.
pub fn edges(layout: &Layout) -> Vec<u8> {
    let mut key = layout.root().to_vec();
    key.extend_from_slice(b"w/");
    key
}

/// One client's edge: `PREFIX/w/<owner>`.
pub fn edge(layout: &Layout, owner: &[u8]) -> Vec<u8> {
    let mut key = edges(layout);
    key.extend_from_slice(owner);
    key
}

impl Shared {
    /// A queued request whose key (`wait.key`, just put in its line) does
    /// not hold: it waits, unless that closes a cycle, in which case its
    /// key is deleted and it is refused. `watch` then starts watching for
    /// its turn.
    pub(super) fn wait_in_line(
        &self,
        id: ClientId,
        caller: &Caller,
        wait: Wait,
        watch: impl FnOnce(&Shared),
    ) -> Result<WaitStart, StoreError> {
        let refused = self.begin_wait(id, caller, &wait.key);
        if !matches!(refused, Ok(false)) {
            self.delete_or_later(vec![wait.key], caller.epoch)?;
            return refused.map(|_| WaitStart::Deadlock);
        }
        self.queue(id, caller, wait)?;
        watch(self);
        Ok(WaitStart::Queued)
    }

    /// Starts the caller's wait with `key` (see the module docs): `true`
    /// when it would close a cycle (its edge is then not written), `false`
    /// when its edge is in, or when it needs none (the client holds no
    /// lock, or `key` holds already, or is gone).
    ///
    /// # Errors
    /// etcd failed, or other clients' edges went in on every try
    /// ([`EtcdError::Contended`]); the client's connection went away or
    /// its lease ended ([`StoreError::LocksLost`]). The caller undoes
    /// what its key asked for.
    pub(super) fn begin_wait(
        &self,
        id: ClientId,
        caller: &Caller,
        key: &[u8],
    ) -> Result<bool, StoreError> {
        if !self.holds_any(id) {
            return Ok(false);
        }
        let mine = edge(&self.layout, &caller.owner);
        // From here on the edge may be in etcd (even when an answer is
        // lost): the client's end deletes it.
        self.record(id, caller, &mine, |conn| conn.edge = true)?;
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.checks.pending.lock().push_back(Ask {
            owner: caller.owner.clone(),
            key: key.to_vec(),
            lease: caller.lease,
            reply,
        });
        // Whoever runs the checks next takes this ask along, or this very
        // thread does.
        let closes = loop {
            match answer.try_recv() {
                Ok(closes) => break closes?,
                Err(TryRecvError::Disconnected) => {
                    return Err(StoreError::Etcd(EtcdError::Protocol(
                        "the deadlock check stopped".into(),
                    )))
                }
                Err(TryRecvError::Empty) => {}
            }
            let _running = self.checks.running.lock();
            let asks: Vec<Ask> = {
                let mut pending = self.checks.pending.lock();
                let n = pending.len().min(MAX_TXN_OPS);
                pending.drain(..n).collect()
            };
            self.check_all(asks);
        };
        if !closes {
            // A disconnect since the flag was set may have deleted the
            // edge before it went in: it is deleted here then.
            self.record(id, caller, &mine, |_| ())?;
        }
        Ok(closes)
    }

    /// Checks `asks` (in arrival order) and inserts the edges of those
    /// that close no cycle, together, in one conditional transaction;
    /// answers each.
    fn check_all(&self, mut asks: Vec<Ask>) {
        let prefix = edges(&self.layout);
        let lines = |family| Op::Range(Range::prefix(&self.layout.family(family), Order::Created));
        let graph = [
            Op::Range(Range::prefix(&prefix, Order::Key)),
            lines(Family::Exclusive),
            lines(Family::Shared),
        ];
        for tries in 0..TRIES {
            if asks.is_empty() {
                return;
            }
            if tries > 0 {
                pause(tries);
            }
            // The read may share a batch: no edge is put in one (a client's
            // end may delete one there), so it sees every edge put up to
            // its batch's revision, which the compare then starts from.
            let read = match self.commit.txn(&self.client, &[], &graph, &[]) {
                Ok(read) => read,
                Err(e) => {
                    for ask in asks {
                        ask.answer(Err(e.clone()));
                    }
                    return;
                }
            };
            let mut edges = ranged(&read.results, 0);
            let mut exclusive = ranged(&read.results, 1);
            let mut shared = ranged(&read.results, 2);
            by_lock(&mut exclusive);
            by_lock(&mut shared);
            let turns = asks.iter().map(|ask| (&ask.owner[..], &ask.key[..]));
            let checks = check_in_turn(&self.layout, &mut edges, &exclusive, &shared, turns);
            // A refusal may count on the edges of clear ones before it: it
            // is answered once they are in.
            let mut checked = Vec::new();
            for (ask, check) in asks.into_iter().zip(checks) {
                match check {
                    Check::NotWaiting => ask.answer(Ok(false)),
                    Check::Clear => checked.push((ask, false)),
                    Check::Cycle => checked.push((ask, true)),
                }
            }
            let puts: Vec<Op> = (checked.iter())
                .filter(|(_, closes)| !closes)
                .map(|(ask, _)| Op::Put {
                    key: edge(&self.layout, &ask.owner),
                    value: ask.key.clone(),
                    lease: ask.lease,
                })
                .collect();
            let inserted = if puts.is_empty() {
                Ok(true)
            } else {
                let unchanged = Compare::unchanged_since(&prefix, read.revision);
                (self.client.txn(&[unchanged], &puts, &[])).map(|txn| txn.succeeded)
            };
            match inserted {
                Ok(true) => {
                    for (ask, closes) in checked {
                        ask.answer(Ok(closes));
                    }
                    return;
                }
                Ok(false) => asks = checked.into_iter().map(|(ask, _)| ask).collect(),
                Err(e) => {
                    for (ask, _) in checked {
                        ask.answer(Err(e.clone()));
                    }
                    return;
                }
            }
        }
        for ask in asks {
            ask.answer(Err(EtcdError::Contended {
                what: "the waits-for graph",
                tries: TRIES,
            }));
        }
    }
}

/// One client's request to start waiting, for the node's checks.
pub struct Ask {
    owner: Vec<u8>,
    /// The key it waits with.
    key: Vec<u8>,
    /// The lease its edge hangs on.
    lease: i64,
    /// Whether its wait closes a cycle (else its edge is in, or it needs
    /// none).
    reply: Sender<Result<bool, EtcdError>>,
}

/// A node's deadlock checks: asks wait here while one thread runs a batch
/// (see the module docs).
#[derive(Default)]
pub struct Checks {
    pending: Mutex<VecDeque<Ask>>,
    /// Held by the thread that runs a batch.
    running: Mutex<()>,
}

impl Ask {
    fn answer(self, closes: Result<bool, EtcdError>) {
        let _ = self.reply.send(closes);
    }
}

impl Shared {
    /// Whether the client holds any lock (a read hold included).
    fn holds_any(&self, id: ClientId) -> bool {
        self.clients.lock().get(&id).is_some_and(|conn| {
            !(conn.exclusive.is_empty() && conn.read.is_empty() && conn.shared.is_empty())
        })
    }
}

/// A pause before try `tries` (1 or more) of a check and insert: random,
/// up to twice as long as the one before, at most [`MAX_PAUSE`], so that
/// waits that keep failing one another's compares spread out.
fn pause(tries: usize) {
    let bound = (1u64 << tries.min(16)).min(MAX_PAUSE.as_millis() as u64);
    let random = RandomState::new().build_hasher().finish();
    std::thread::sleep(Duration::from_millis(random % (bound + 1)));
}

/// [`check`] for several clients, in turn: each sees the edges of those
/// before it that closed no cycle, as if they were in already (they go in
/// together, or none does). Their edges are added to `edges`.
pub fn check_in_turn<'a>(
    layout: &Layout,
    edges: &mut Vec<KeyValue>,
    exclusive: &[KeyValue],
    shared: &[KeyValue],
    asks: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Vec<Check> {
    let mut checks = Vec::new();
    for (owner, key) in asks {
        let found = check(layout, edges, exclusive, shared, owner, key);
        if found == Check::Clear {
            let mine = edge(layout, owner);
            edges.retain(|kv| kv.key != mine);
            edges.push(KeyValue {
                key: mine,
                value: key.to_vec(),
                create_revision: 0,
                mod_revision: 0,
                lease: 0,
            });
        }
        checks.push(found);
    }
    checks
}

/// Whether `me`, whose key `my_key` is in its line, waits, and whether
/// its wait would close a cycle of waits. `edges` are the waits-for edges;
/// `exclusive` and `shared` every key of the two families, grouped by
/// lock ([`by_lock`]), each lock's keys in create order.
pub fn check(
    layout: &Layout,
    edges: &[KeyValue],
    exclusive: &[KeyValue],
    shared: &[KeyValue],
    me: &[u8],
    my_key: &[u8],
) -> Check {
    let mut lines = Lines::default();
    lines.add(layout, Family::Exclusive, exclusive);
    lines.add(layout, Family::Shared, shared);
    let Some(&(mine, _)) = lines.waiting.get(my_key) else {
        return Check::NotWaiting;
    };
    // Owner → the lock it waits for: the edges whose keys still wait, and
    // this very wait (over a stale edge of the caller's).
    let mut waits: HashMap<&[u8], &[u8]> = edges
        .iter()
        .filter_map(|edge| lines.waiting.get(&edge.value[..]))
        .map(|&(lock, owner)| (owner, lock))
        .collect();
    waits.insert(me, mine);
    let mut seen: HashSet<&[u8]> = HashSet::new();
    let mut stack: Vec<&[u8]> = vec![me];
    while let Some(waiter) = stack.pop() {
        let Some(lock) = waits.get(waiter) else {
            continue;
        };
        // An upgrading reader holds what it waits for: not its own edge.
        let others = lines.holders.get(lock).into_iter().flatten();
        for holder in others.filter(|h| **h != waiter) {
            if *holder == me {
                return Check::Cycle;
            }
            if seen.insert(holder) {
                stack.push(holder);
            }
        }
    }
    Check::Clear
}

/// Groups keys in create order by lock, keeping create order in each.
pub fn by_lock(kvs: &mut [KeyValue]) {
    kvs.sort_by(|a, b| Layout::lock_of(&a.key).cmp(&Layout::lock_of(&b.key)));
}

/// Who holds what, and which keys wait, as the lines say.
#[derive(Default)]
struct Lines<'k> {
    /// Lock → owners holding it.
    holders: HashMap<&'k [u8], Vec<&'k [u8]>>,
    /// A key that waits in its line (or an upgrading reader's) → its lock
    /// and its owner.
    waiting: HashMap<&'k [u8], (&'k [u8], &'k [u8])>,
}

impl<'k> Lines<'k> {
    fn add(&mut self, layout: &Layout, family: Family, kvs: &'k [KeyValue]) {
        let mut start = 0;
        while start < kvs.len() {
            let lock = Layout::lock_of(&kvs[start].key).unwrap_or(&[]);
            let len = kvs[start..]
                .iter()
                .take_while(|kv| Layout::lock_of(&kv.key).unwrap_or(&[]) == lock)
                .count();
            let line = &kvs[start..start + len];
            // Whether each key holds, and whether it waits.
            let states: Vec<(bool, bool)> = match family {
                Family::Exclusive => rw::statuses(line)
                    .into_iter()
                    .map(|status| (status.holds(), status.waits()))
                    .collect(),
                Family::Shared => super::holding(line)
                    .into_iter()
                    .map(|held| (held, !held))
                    .collect(),
            };
            for (kv, (held, waits)) in line.iter().zip(states) {
                let Some((_, owner)) = layout.parse_entry(family, &kv.key) else {
                    continue;
                };
                if held {
                    self.holders.entry(lock).or_default().push(owner);
                }
                if waits {
                    self.waiting.insert(&kv.key, (lock, owner));
                }
            }
            start += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::etcd::keys;

    /// A graph built step by step, as clients would build it.
    struct Graph {
        layout: Layout,
        edges: Vec<KeyValue>,
        exclusive: Vec<KeyValue>,
        shared: Vec<KeyValue>,
        revision: i64,
    }

    impl Graph {
        fn new() -> Graph {
            Graph {
                layout: Layout::new(b"/p"),
                edges: Vec::new(),
                exclusive: Vec::new(),
                shared: Vec::new(),
                revision: 0,
            }
        }

        /// `who` puts a key in the exclusive line of `name` (it holds
        /// when it comes first); returns the key.
        fn x(&mut self, who: &str, name: &str) -> Vec<u8> {
            self.revision += 1;
            let key = self
                .layout
                .entry(Family::Exclusive, name.as_bytes(), who.as_bytes(), 0);
            self.exclusive.push(kv(&key, 0, self.revision));
            key
        }

        /// `who` reads exclusive `name`; returns the key.
        fn read(&mut self, who: &str, name: &str) -> Vec<u8> {
            let key = self.x(who, name);
            let kv = self.exclusive.last_mut().expect("just put");
            kv.value = keys::claim_value(keys::Claim::Read, b"c");
            key
        }

        /// The reader of `key` asks to upgrade.
        fn mark(&mut self, key: &[u8]) {
            self.revision += 1;
            let kv = (self.exclusive.iter_mut())
                .find(|kv| kv.key == key)
                .expect("a reader's key");
            kv.value = keys::claim_value(keys::Claim::Upgrade, b"c");
            kv.mod_revision = self.revision;
        }

        fn s(&mut self, who: &str, name: &str, limit: u32) -> Vec<u8> {
            self.revision += 1;
            let key = self
                .layout
                .entry(Family::Shared, name.as_bytes(), who.as_bytes(), 0);
            self.shared.push(kv(&key, limit, self.revision));
            key
        }

        /// `who`, whose `key` is in its line, checks; its edge goes in
        /// when the check is clear, as [`Shared::begin_wait`] does.
        fn wait(&mut self, who: &str, key: &[u8]) -> Check {
            let check = self.check(who, key);
            if check == Check::Clear {
                self.revision += 1;
                let edge = edge(&self.layout, who.as_bytes());
                self.edges.retain(|kv| kv.key != edge);
                let mut kv = kv(&edge, 0, self.revision);
                kv.value = key.to_vec();
                self.edges.push(kv);
            }
            check
        }

        fn check(&self, who: &str, key: &[u8]) -> Check {
            let mut x = self.exclusive.clone();
            let mut s = self.shared.clone();
            by_lock(&mut x);
            by_lock(&mut s);
            check(&self.layout, &self.edges, &x, &s, who.as_bytes(), key)
        }

        /// The key goes (released, cancelled); its edge stays, stale.
        fn delete(&mut self, key: &[u8]) {
            self.exclusive.retain(|kv| kv.key != key);
            self.shared.retain(|kv| kv.key != key);
        }
    }

    fn kv(key: &[u8], limit: u32, revision: i64) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            value: keys::value(limit, b"c"),
            create_revision: revision,
            mod_revision: revision,
            lease: 1,
        }
    }

    #[test]
    fn of_two_clients_closing_a_cycle_the_one_whose_edge_goes_in_second_is_refused() {
        let mut g = Graph::new();
        g.x("a", "x");
        g.x("b", "y");
        let a_waits = g.x("a", "y");
        let b_waits = g.x("b", "x");
        // Both keys are in their lines; neither edge is in yet: each
        // check alone is clear, which is why the insert is conditional.
        assert_eq!(g.check("a", &a_waits), Check::Clear);
        assert_eq!(g.check("b", &b_waits), Check::Clear);
        assert_eq!(g.wait("b", &b_waits), Check::Clear);
        // a's insert fails its compare (b's edge is newer than a's read),
        // and a's check on the new read finds the cycle.
        assert_eq!(g.wait("a", &a_waits), Check::Cycle);
    }

    #[test]
    fn no_cycle_no_refusal_and_a_three_client_cycle_is_seen() {
        let mut g = Graph::new();
        g.x("a", "x");
        g.x("b", "y");
        g.x("c", "z");
        let a = g.x("a", "y");
        assert_eq!(g.wait("a", &a), Check::Clear);
        let b = g.x("b", "z");
        assert_eq!(g.wait("b", &b), Check::Clear);
        let c = g.x("c", "x");
        assert_eq!(g.wait("c", &c), Check::Cycle);
    }

    #[test]
    fn a_stale_edge_is_no_wait() {
        let mut g = Graph::new();
        g.x("a", "x");
        g.x("b", "y");
        let a = g.x("a", "y");
        assert_eq!(g.wait("a", &a), Check::Clear);
        // a's wait times out: its key goes, its edge stays.
        g.delete(&a);
        let b = g.x("b", "x");
        assert_eq!(g.wait("b", &b), Check::Clear);
        // b's wait is granted (a released x): b's edge is stale too.
        let ax = g.exclusive[0].key.clone();
        g.delete(&ax);
        assert_eq!(g.check("b", &b), Check::NotWaiting);
        let a = g.x("a", "y");
        assert_eq!(g.wait("a", &a), Check::Clear, "b waits for nothing now");
    }

    #[test]
    fn two_readers_asking_to_upgrade_make_a_cycle_and_the_later_gives_up() {
        let mut g = Graph::new();
        let a = g.read("a", "x");
        let b = g.read("b", "x");
        g.x("w", "x");
        g.mark(&a);
        assert_eq!(g.wait("a", &a), Check::Clear, "b waits for nothing");
        g.mark(&b);
        assert_eq!(g.wait("b", &b), Check::Cycle);
    }

    #[test]
    fn a_cycle_through_a_read_hold_is_seen() {
        let mut g = Graph::new();
        g.read("a", "x");
        g.x("b", "y");
        let a = g.x("a", "y");
        assert_eq!(g.wait("a", &a), Check::Clear);
        let b = g.x("b", "x");
        assert_eq!(g.wait("b", &b), Check::Cycle);
    }

    #[test]
    fn a_full_semaphore_makes_its_holders_the_ones_waited_for() {
        let mut g = Graph::new();
        g.s("a", "pool", 1);
        g.x("b", "x");
        let b = g.s("b", "pool", 1);
        assert_eq!(g.wait("b", &b), Check::Clear);
        let a = g.x("a", "x");
        assert_eq!(g.wait("a", &a), Check::Cycle);
    }

    #[test]
    fn a_batch_checks_in_turn_each_seeing_the_clear_edges_before_it() {
        let mut g = Graph::new();
        g.x("a", "x");
        g.x("b", "y");
        g.x("c", "z");
        let a = g.x("a", "y");
        let b = g.x("b", "x");
        let c = g.x("c", "y");
        let mut x = g.exclusive.clone();
        by_lock(&mut x);
        let asks = [(&b"a"[..], &a[..]), (b"b", &b[..]), (b"c", &c[..])];
        let checks = check_in_turn(&g.layout, &mut g.edges, &x, &[], asks.into_iter());
        // b would close a cycle with a's edge, which is not in etcd yet but
        // goes in with the batch; c closes none.
        assert_eq!(checks, [Check::Clear, Check::Cycle, Check::Clear]);
        let values: Vec<&[u8]> = g.edges.iter().map(|kv| &kv.value[..]).collect();
        assert_eq!(values, [&a[..], &c[..]], "the clear ones' edges");
    }

    #[test]
    fn a_key_at_the_head_of_its_line_waits_for_nothing() {
        let mut g = Graph::new();
        let a = g.x("a", "x");
        assert_eq!(g.check("a", &a), Check::NotWaiting);
        assert_eq!(g.check("a", b"/p/x/78/gone.0"), Check::NotWaiting);
    }
}
