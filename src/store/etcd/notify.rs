//! `watch PATTERN` in cluster mode (`PROTOCOL.md` Part 2): the watchers of
//! a node see the locks taken through every node, in the same lines as a
//! single server sends.
//!
//! While the node has watchers, its notify thread follows every change
//! under the store's prefix on one etcd watch stream and keeps a mirror of
//! the lock lines (the keys of each lock, in create order). Each change of
//! the mirror becomes the events the in-memory table would emit:
//! - the first key of an exclusive line holds the write lock once granted:
//!   created first (its token is its create revision), or written when
//!   handed over or upgraded (that write's revision);
//! - readers share the exclusive line and hold as `rw::statuses` says; an
//!   upgrade is its read `released`, then the write `locked`;
//! - a shared key holds a place when the etcd store's holding rule says so; places
//!   that a release frees are `locked` in line order after the `released`.
//!
//! Events go to the watchers through the table's own [`Watchers`]: the same
//! bounded queues, with the same drop rule.
//!
//! **Snapshot and stream line up.** A new watcher writes the node's marker
//! key, waits until the mirror has applied that write's revision, and takes
//! its snapshot from the mirror under the lock that registers it. The
//! snapshot is thus at least as new as the `watch` command, and each later
//! change reaches the watcher exactly once. The mirror itself starts from a
//! read at revision R and a watch from R + 1, and a broken stream resumes
//! after the last revision applied; if etcd compacted that away, the
//! watchers are cut off (as a watcher too slow is).
//!
//! **Released or orphaned.** A connection's end writes `PREFIX/e/<owner>`
//! in each transaction that deletes its keys (`EtcdStore::end_client`),
//! and the node's lease takes `PREFIX/e/<node>.<lease>` with its keys when
//! it ends. Deletes in a revision with either are `orphaned`, other deletes
//! `released`. The per-connection markers are deleted again in the
//! background; the lease marker is written once per lease, on each
//! `watch`, and each minute while the node has watchers (so the revision a
//! resumed stream starts from stays recent on a quiet prefix: one older
//! than etcd's compaction cuts the watchers off).
//!
//! Not covered yet: a node whose lease was renewed and that dies before its notify thread has
//! written the new lease's marker (a few seconds at most): its deletes read
//! `released`.

use super::client::{Client, Event as Change, KeyValue, Op, Order, Range, WatchMessage};
use super::keys::{self, Family, Layout};
use super::lease::Lease;
use super::rw::{self, Status};
use super::{EtcdStore, StoreError, MAX_TXN_OPS};
use crate::name::LockName;
use crate::store::memory::Watchers;
use crate::store::{ClientId, Event, HoldKind, WatchEvent, Watcher};
use parking_lot::{Condvar, Mutex};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a `watch` waits for the mirror to catch up with its marker
/// write before it gives up.
const CATCH_UP: Duration = Duration::from_secs(5);

/// How often the marker duties run (and an idle thread looks for
/// watchers).
const DUTY: Duration = Duration::from_millis(500);

/// How often a node with watchers writes its lease marker again, so the
/// revision its stream resumes from stays recent when the prefix is quiet
/// (etcd may compact older ones away).
const REFRESH: Duration = Duration::from_secs(60);

/// How soon a broken watch stream is started again.
const RESTART: Duration = Duration::from_millis(100);

/// The watchers of this node and the mirror that feeds them.
pub struct Notify {
    state: Mutex<State>,
    moved: Condvar,
    /// Per-connection markers to delete again.
    ended: Mutex<Vec<Vec<u8>>>,
}

#[derive(Default)]
struct State {
    /// The mirror reflects every revision up to this one.
    seen: i64,
    /// Whether the mirror is built and follows the stream.
    live: bool,
    locks: BTreeMap<LockName, Lines>,
    watchers: Watchers,
    /// `watch` calls under way (they keep the thread following).
    starting: usize,
}

/// The keys of one lock name.
#[derive(Default)]
struct Lines {
    /// Exclusive holder and waiters, oldest first.
    exclusive: Vec<KeyValue>,
    /// The token of `exclusive[0]` once it is granted the write lock.
    token: Option<u64>,
    /// Where each of `exclusive` stands (see [`rw::statuses`]).
    statuses: Vec<Status>,
    /// Shared holders and waiters, oldest first.
    shared: Vec<KeyValue>,
    /// Which of `shared` hold a place.
    holds: Vec<bool>,
}

impl Lines {
    fn is_empty(&self) -> bool {
        self.exclusive.is_empty() && self.shared.is_empty()
    }
}

/// `PREFIX/e/`: the markers.
fn markers(layout: &Layout) -> Vec<u8> {
    let mut key = layout.root().to_vec();
    key.extend_from_slice(b"e/");
    key
}

/// The marker of one lease of a node: `PREFIX/e/<node>.<lease hex>`.
pub(super) fn lease_marker(layout: &Layout, node: &str, lease: i64) -> Vec<u8> {
    let mut key = markers(layout);
    key.extend_from_slice(format!("{node}.{lease:x}").as_bytes());
    key
}

/// The default name in a lock key's value.
fn holder(kv: &KeyValue) -> Box<[u8]> {
    keys::parse_value(&kv.value).map_or_else(Box::default, |(_, name)| name.into())
}

impl Notify {
    /// No watchers yet.
    pub fn new() -> Notify {
        Notify {
            state: Mutex::new(State::default()),
            moved: Condvar::new(),
            ended: Mutex::new(Vec::new()),
        }
    }

    /// Client `id` watches no more (it left).
    pub fn forget(&self, id: ClientId) {
        self.state.lock().watchers.remove(id);
    }

    /// The notify thread: keeps the lease marker and deletes spent
    /// connection markers; follows the store while there are watchers.
    /// Returns once `stop` is set.
    pub fn run(
        &self,
        client: &Client,
        layout: &Layout,
        node: &str,
        lease: &Lease,
        stop: &AtomicBool,
    ) {
        let mut duties = Duties {
            marked: 0,
            written: Instant::now(),
        };
        while !stop.load(Ordering::Relaxed) {
            duties.run(self, client, layout, node, lease);
            let wanted = {
                let mut state = self.state.lock();
                if !state.wanted() {
                    self.moved.wait_for(&mut state, DUTY);
                }
                state.wanted()
            };
            if wanted {
                self.follow(client, layout, stop, &mut || {
                    duties.run(self, client, layout, node, lease);
                });
            }
        }
    }

    /// Builds the mirror if needed, then applies the stream to it until the
    /// stream breaks, nobody watches, or `stop`. `tick` runs now and then.
    fn follow(&self, client: &Client, layout: &Layout, stop: &AtomicBool, tick: &mut dyn FnMut()) {
        if !self.state.lock().live {
            match read_mirror(client, layout) {
                Ok((revision, locks)) => {
                    let mut state = self.state.lock();
                    state.locks = locks;
                    state.seen = revision;
                    state.live = true;
                    self.moved.notify_all();
                }
                Err(_) => {
                    std::thread::sleep(RESTART);
                    return;
                }
            }
        }
        let from = self.state.lock().seen + 1;
        let Ok(mut watch) = client.watch_prefix(layout.root(), from) else {
            std::thread::sleep(RESTART);
            return;
        };
        let mut last_tick = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            match watch.next_message() {
                Ok(WatchMessage::Created { .. }) => {}
                Ok(WatchMessage::Events { events, .. }) => self.apply(layout, &events),
                Ok(WatchMessage::Cancelled { .. }) => {
                    // Compacted past what the mirror has seen: events
                    // were lost, so its watchers cannot be told the truth.
                    self.cut_off();
                    return;
                }
                // Idle past the bound, a dead member, or a closed stream:
                // resume after the last revision applied.
                Err(_) => return,
            }
            if last_tick.elapsed() >= DUTY {
                tick();
                last_tick = Instant::now();
            }
            let mut state = self.state.lock();
            if !state.wanted() {
                state.live = false;
                state.locks.clear();
                return;
            }
        }
    }

    /// Applies one message's changes, a revision at a time.
    fn apply(&self, layout: &Layout, changes: &[Change]) {
        let markers = markers(layout);
        let mut state = self.state.lock();
        let mut rest = changes;
        while let Some(first) = rest.first() {
            let revision = revision_of(first);
            let n = rest
                .iter()
                .take_while(|c| revision_of(c) == revision)
                .count();
            let (group, after) = rest.split_at(n);
            state.apply_revision(layout, &markers, group);
            state.seen = state.seen.max(revision);
            rest = after;
        }
        self.moved.notify_all();
    }

    /// Drops every watcher, marked overflowed, and forgets the mirror.
    fn cut_off(&self) {
        let mut state = self.state.lock();
        state.watchers.cut_off();
        state.live = false;
        state.locks.clear();
    }

    /// Registers `pattern` for client `id` once the mirror has applied
    /// `revision`; returns what the pattern matches then, sorted by name,
    /// and the queue on the client's first pattern.
    pub(super) fn register(
        &self,
        id: ClientId,
        pattern: &[u8],
        revision: i64,
    ) -> Option<(Vec<WatchEvent>, Option<Watcher>)> {
        let deadline = Instant::now() + CATCH_UP;
        let mut state = self.state.lock();
        while !(state.live && state.seen >= revision) {
            if self.moved.wait_until(&mut state, deadline).timed_out() {
                return None;
            }
        }
        let held = state.snapshot(pattern);
        Some((held, state.watchers.add(id, pattern)))
    }

    pub(super) fn starting(&self, by: isize) {
        let mut state = self.state.lock();
        state.starting = state.starting.saturating_add_signed(by);
        self.moved.notify_all();
    }
}

impl Default for Notify {
    fn default() -> Notify {
        Notify::new()
    }
}

/// The revision of one change.
fn revision_of(change: &Change) -> i64 {
    match change {
        Change::Put(kv) => kv.mod_revision,
        Change::Delete { revision, .. } => *revision,
    }
}

/// The background writes of the notify thread.
struct Duties {
    /// The lease epoch whose marker is written.
    marked: u64,
    /// When the marker was last written.
    written: Instant,
}

impl Duties {
    fn run(
        &mut self,
        notify: &Notify,
        client: &Client,
        layout: &Layout,
        node: &str,
        lease: &Lease,
    ) {
        if let Some((id, epoch)) = lease.current() {
            let stale = self.written.elapsed() >= REFRESH && notify.state.lock().wanted();
            if (epoch != self.marked || stale)
                && client.put(&lease_marker(layout, node, id), b"", id).is_ok()
            {
                self.marked = epoch;
                self.written = Instant::now();
            }
        }
        let spent = std::mem::take(&mut *notify.ended.lock());
        for batch in spent.chunks(MAX_TXN_OPS) {
            let deletes: Vec<Op> = batch
                .iter()
                .map(|key| Op::Delete {
                    key: key.clone(),
                    range_end: None,
                })
                .collect();
            // A failed delete leaves the marker to the lease.
            let _ = client.txn(&[], &deletes, &[]);
        }
    }
}

/// Reads every lock line at one revision and works out who holds.
fn read_mirror(
    client: &Client,
    layout: &Layout,
) -> Result<(i64, BTreeMap<LockName, Lines>), StoreError> {
    let lines = |family| Op::Range(Range::prefix(&layout.family(family), Order::Created));
    let txn = client.txn(&[], &[lines(Family::Exclusive), lines(Family::Shared)], &[])?;
    let mut locks: BTreeMap<LockName, Lines> = BTreeMap::new();
    for (index, family) in [(0, Family::Exclusive), (1, Family::Shared)] {
        for kv in super::ranged(&txn.results, index) {
            let Some((name, _)) = layout.parse_entry(family, &kv.key) else {
                continue;
            };
            let lines = locks.entry(name).or_default();
            match family {
                Family::Exclusive => lines.exclusive.push(kv),
                Family::Shared => lines.shared.push(kv),
            }
        }
    }
    for (name, lines) in &mut locks {
        lines.holds = super::holding(&lines.shared);
        lines.statuses = rw::statuses(&lines.exclusive);
        let Some(head) = lines.exclusive.first() else {
            continue;
        };
        if lines.statuses[0] != Status::Write {
            continue;
        }
        lines.token = if head.mod_revision > head.create_revision {
            // Stamped at hand-over, or written by an upgrade.
            Some(keys::held_token(head))
        } else {
            // Granted at once if it was first when it was created; else a
            // waiter whose stamp is still to come.
            let lock = layout.lock(Family::Exclusive, name.as_bytes());
            let line = Range {
                limit: 1,
                ..Range::prefix(&lock, Order::Created)
            };
            match client.range_at(&line, head.create_revision) {
                Ok(then) if then.first().is_some_and(|kv| kv.key != head.key) => None,
                // First then, or history compacted: count it as held.
                _ => Some(keys::held_token(head)),
            }
        };
    }
    Ok((txn.revision, locks))
}

impl State {
    fn wanted(&self) -> bool {
        self.starting > 0 || !self.watchers.is_empty()
    }

    /// One revision's changes: the writes of one transaction, or a
    /// lease's end.
    fn apply_revision(&mut self, layout: &Layout, markers: &[u8], changes: &[Change]) {
        let mut ending: HashSet<&[u8]> = HashSet::new();
        let mut lease_ended = false;
        // Keys written in this revision: a write lock's head written here
        // is granted here (created first, or stamped at hand-over, before
        // or after its predecessor's delete in the same transaction).
        let mut written = Written::default();
        for change in changes {
            match change {
                Change::Put(kv) => {
                    if let Some(owner) = kv.key.strip_prefix(markers) {
                        ending.insert(owner);
                    }
                    written.keys.insert(&kv.key, keys::slot(&kv.value));
                    written.revision = kv.mod_revision;
                }
                Change::Delete { key, .. } => lease_ended |= key.starts_with(markers),
            }
        }
        for change in changes {
            let key = match change {
                Change::Put(kv) => &kv.key,
                Change::Delete { key, .. } => key,
            };
            let Some((family, name, owner)) = [Family::Exclusive, Family::Shared]
                .into_iter()
                .find_map(|f| layout.parse_entry(f, key).map(|(n, o)| (f, n, o)))
            else {
                continue;
            };
            match change {
                Change::Put(kv) => self.put(family, name, kv, &written),
                Change::Delete { .. } => {
                    let why = if lease_ended || ending.contains(owner) {
                        Event::Orphaned
                    } else {
                        Event::Released
                    };
                    self.delete(family, name, key, why, &written);
                }
            }
        }
    }

    fn put(&mut self, family: Family, name: LockName, kv: &KeyValue, written: &Written) {
        let lines = self.locks.entry(name.clone()).or_default();
        let mut events = Vec::new();
        match family {
            Family::Exclusive => {
                let old = match lines.exclusive.iter().position(|e| e.key == kv.key) {
                    // A stamp of a hand-over, an upgrade's write, or a
                    // reader's mark.
                    Some(i) => {
                        let old = lines.statuses.clone();
                        lines.exclusive[i] = kv.clone();
                        old
                    }
                    None => {
                        lines.exclusive.push(kv.clone());
                        lines.statuses.push(Status::Waiting);
                        lines.statuses.clone()
                    }
                };
                exclusive_changed(lines, &old, written, &mut events);
            }
            Family::Shared => {
                if !lines.shared.iter().any(|e| e.key == kv.key) {
                    lines.shared.push(kv.clone());
                    lines.holds.push(false);
                    admit(lines, &mut events);
                }
            }
        }
        self.emit(&name, events);
    }

    fn delete(
        &mut self,
        family: Family,
        name: LockName,
        key: &[u8],
        why: Event,
        written: &Written,
    ) {
        let Some(lines) = self.locks.get_mut(&name) else {
            return;
        };
        let mut events = Vec::new();
        match family {
            Family::Exclusive => {
                if let Some(i) = lines.exclusive.iter().position(|e| e.key == key) {
                    let kv = lines.exclusive.remove(i);
                    let was = lines.statuses.remove(i);
                    if i == 0 && was == Status::Write {
                        if let Some(token) = lines.token.take() {
                            events.push((why, HoldKind::Exclusive, token, holder(&kv)));
                        }
                    } else if reading(was) {
                        let count = lines.statuses.iter().filter(|s| reading(**s)).count();
                        events.push((why, HoldKind::Read, count as u64, holder(&kv)));
                    }
                    if i == 0 {
                        lines.token = None;
                    }
                    let old = lines.statuses.clone();
                    exclusive_changed(lines, &old, written, &mut events);
                }
            }
            Family::Shared => {
                if let Some(i) = lines.shared.iter().position(|e| e.key == key) {
                    let kv = lines.shared.remove(i);
                    if lines.holds.remove(i) {
                        let count = lines.holds.iter().filter(|h| **h).count() as u64;
                        events.push((why, HoldKind::Shared, count, holder(&kv)));
                    }
                    admit(lines, &mut events);
                }
            }
        }
        if lines.is_empty() {
            self.locks.remove(&name);
        }
        self.emit(&name, events);
    }

    /// Sends events of lock `name` to every watcher whose patterns match;
    /// a watcher whose queue is full is cut off.
    fn emit(&mut self, name: &LockName, events: Vec<(Event, HoldKind, u64, Box<[u8]>)>) {
        if events.is_empty() || !self.watchers.want(name.as_bytes()) {
            return;
        }
        for (event, kind, n, holder) in events {
            self.watchers.send(&WatchEvent {
                event,
                kind,
                n,
                holder,
                name: name.clone(),
            });
        }
    }

    /// What `pattern` matches now: per name, the write holder, then the
    /// shared places in line order.
    fn snapshot(&self, pattern: &[u8]) -> Vec<WatchEvent> {
        let mut held = Vec::new();
        let locks: Box<dyn Iterator<Item = (&LockName, &Lines)>> = match pattern.strip_suffix(b"*")
        {
            Some(prefix) => Box::new(
                self.locks
                    .range::<[u8], _>((
                        std::ops::Bound::Included(prefix),
                        std::ops::Bound::Unbounded,
                    ))
                    .take_while(move |(n, _)| n.as_bytes().starts_with(prefix)),
            ),
            None => Box::new(self.locks.get_key_value(pattern).into_iter()),
        };
        for (name, lines) in locks {
            let mut add = |kind, n: u64, kv: &KeyValue| {
                held.push(WatchEvent {
                    event: Event::Held,
                    kind,
                    n,
                    holder: holder(kv),
                    name: name.clone(),
                });
            };
            if let (Some(token), Some(head)) = (lines.token, lines.exclusive.first()) {
                add(HoldKind::Exclusive, token, head);
            }
            let reads = lines.exclusive.iter().zip(&lines.statuses);
            for (i, (kv, _)) in reads.filter(|(_, s)| reading(**s)).enumerate() {
                add(HoldKind::Read, i as u64 + 1, kv);
            }
            let holding = lines.shared.iter().zip(&lines.holds).filter(|(_, h)| **h);
            for (i, (kv, _)) in holding.enumerate() {
                add(HoldKind::Shared, i as u64 + 1, kv);
            }
        }
        held
    }
}

/// The keys one revision wrote, and that revision.
#[derive(Default)]
struct Written<'k> {
    /// Each key written, with the token slot its value carries.
    keys: HashMap<&'k [u8], u64>,
    revision: i64,
}

/// Whether a key of an exclusive line holds a read.
fn reading(status: Status) -> bool {
    matches!(status, Status::Read | Status::Upgrading)
}

/// An exclusive line changed (`old`: where its keys stood before, aligned
/// with them): reads that went (an upgrade), the head's write grant when
/// the head claims the write lock, has no token yet and was written in this
/// revision (created first, stamped at hand-over, or upgraded: its token is
/// this revision), then reads that came, in line order, each with the
/// reader count after it.
fn exclusive_changed(
    lines: &mut Lines,
    old: &[Status],
    written: &Written,
    events: &mut Vec<(Event, HoldKind, u64, Box<[u8]>)>,
) {
    let now = rw::statuses(&lines.exclusive);
    let mut count = old.iter().filter(|s| reading(**s)).count() as u64;
    for (i, kv) in lines.exclusive.iter().enumerate() {
        if reading(old[i]) && !reading(now[i]) {
            count -= 1;
            events.push((Event::Released, HoldKind::Read, count, holder(kv)));
        }
    }
    let head_slot = lines
        .exclusive
        .first()
        .and_then(|head| written.keys.get(&head.key[..]));
    if let (Some(Status::Write), None, Some(&slot)) = (now.first(), lines.token, head_slot) {
        let token = keys::token(written.revision, slot);
        lines.token = Some(token);
        events.push((
            Event::Locked,
            HoldKind::Exclusive,
            token,
            holder(&lines.exclusive[0]),
        ));
    }
    for (i, kv) in lines.exclusive.iter().enumerate() {
        if reading(now[i]) && !reading(old[i]) {
            count += 1;
            events.push((Event::Locked, HoldKind::Read, count, holder(kv)));
        }
    }
    lines.statuses = now;
}

/// The shared places that now hold and did not: `locked` in line order,
/// each with the holder count after it.
fn admit(lines: &mut Lines, events: &mut Vec<(Event, HoldKind, u64, Box<[u8]>)>) {
    let now = super::holding(&lines.shared);
    let mut count = lines.holds.iter().filter(|h| **h).count() as u64;
    for (i, kv) in lines.shared.iter().enumerate() {
        if now[i] && !lines.holds[i] {
            count += 1;
            events.push((Event::Locked, HoldKind::Shared, count, holder(kv)));
        }
    }
    lines.holds = now;
}

impl EtcdStore {
    /// Deletes the keys of a client that ended, with its marker, so that
    /// watchers report them `orphaned`.
    ///
    /// # Errors
    /// etcd failed.
    pub(super) fn end_client(
        &self,
        keys: &[Vec<u8>],
        owner: &[u8],
        lease: i64,
    ) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let s = &self.shared;
        let mut marker = markers(&s.layout);
        marker.extend_from_slice(owner);
        for batch in keys.chunks(MAX_TXN_OPS - 1) {
            let mut ops = vec![Op::Put {
                key: marker.clone(),
                value: Vec::new(),
                lease,
            }];
            ops.extend(batch.iter().map(|key| Op::Delete {
                key: key.clone(),
                range_end: None,
            }));
            s.client.txn(&[], &ops, &[])?;
        }
        s.notify.ended.lock().push(marker);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &[u8] = b"a b";

    fn layout() -> Layout {
        Layout::new(b"/p")
    }

    /// A lock key of client `conn` of node `n` under lease 1.
    fn key(family: Family, conn: u64) -> Vec<u8> {
        layout().entry(family, NAME, &keys::owner("n", 1, conn), conn)
    }

    fn put(family: Family, conn: u64, create: i64, revision: i64, limit: u32) -> Change {
        Change::Put(KeyValue {
            key: key(family, conn),
            value: keys::value(limit, format!("c{conn}").as_bytes()),
            create_revision: create,
            mod_revision: revision,
            lease: 1,
        })
    }

    fn delete(family: Family, conn: u64, revision: i64) -> Change {
        Change::Delete {
            key: key(family, conn),
            revision,
        }
    }

    fn ending(conn: u64, revision: i64) -> Change {
        let mut key = markers(&layout());
        key.extend_from_slice(&keys::owner("n", 1, conn));
        Change::Put(KeyValue {
            key,
            value: Vec::new(),
            create_revision: revision,
            mod_revision: revision,
            lease: 1,
        })
    }

    /// A state with one watcher of every lock; returns its queue.
    fn watched() -> (State, Watcher) {
        let mut state = State::default();
        let watcher = state.watchers.add(1, b"*").expect("a first pattern");
        (state, watcher)
    }

    /// Applies each revision's changes; returns the event lines.
    fn run(state: &mut State, watcher: &Watcher, revisions: &[Vec<Change>]) -> Vec<String> {
        let layout = layout();
        for changes in revisions {
            state.apply_revision(&layout, &markers(&layout), changes);
        }
        watcher
            .events
            .try_iter()
            .map(|e| {
                let holder = String::from_utf8_lossy(&e.holder).into_owned();
                format!("{:?} {:?} {} {holder}", e.event, e.kind, e.n)
            })
            .collect()
    }

    #[test]
    fn a_hand_over_is_locked_at_its_stamp_and_a_waiter_cancel_is_silent() {
        use Family::Exclusive as X;
        let (mut state, watcher) = watched();
        let lines = run(
            &mut state,
            &watcher,
            &[
                vec![put(X, 1, 10, 10, 0)],
                vec![put(X, 2, 11, 11, 0)],
                vec![put(X, 3, 12, 12, 0)],
                vec![delete(X, 3, 13)],
                vec![delete(X, 1, 14)],
                vec![put(X, 2, 11, 15, 0)],
                vec![ending(2, 16), delete(X, 2, 16)],
            ],
        );
        let (t10, t15) = (keys::token(10, 0), keys::token(15, 0));
        assert_eq!(
            lines,
            [
                format!("Locked Exclusive {t10} c1"),
                format!("Released Exclusive {t10} c1"),
                format!("Locked Exclusive {t15} c2"),
                format!("Orphaned Exclusive {t15} c2"),
            ]
        );
        assert!(state.locks.is_empty());
    }

    #[test]
    fn a_hand_over_in_one_transaction_is_granted_in_either_op_order() {
        use Family::Exclusive as X;
        for stamp_first in [false, true] {
            let (mut state, watcher) = watched();
            // The stamp was the fourth grant of its batch.
            let mut stamp = put(X, 2, 11, 12, 0);
            if let Change::Put(kv) = &mut stamp {
                kv.value = keys::with_slot(&kv.value, 3);
            }
            let mut hand_over = vec![delete(X, 1, 12), stamp];
            if stamp_first {
                hand_over.reverse();
            }
            let lines = run(
                &mut state,
                &watcher,
                &[
                    vec![put(X, 1, 10, 10, 0)],
                    vec![put(X, 2, 11, 11, 0)],
                    hand_over,
                ],
            );
            let (t10, t12) = (keys::token(10, 0), keys::token(12, 3));
            assert_eq!(
                lines,
                [
                    format!("Locked Exclusive {t10} c1"),
                    format!("Released Exclusive {t10} c1"),
                    format!("Locked Exclusive {t12} c2"),
                ],
                "stamp first: {stamp_first}"
            );
        }
    }

    #[test]
    fn shared_places_free_up_in_line_order_and_a_lease_end_orphans() {
        use Family::Shared as S;
        let (mut state, watcher) = watched();
        let mut lease_end = vec![delete(S, 2, 25), delete(S, 3, 25)];
        lease_end.push(Change::Delete {
            key: lease_marker(&layout(), "n", 1),
            revision: 25,
        });
        let lines = run(
            &mut state,
            &watcher,
            &[
                vec![put(S, 1, 20, 20, 1)],
                vec![put(S, 2, 21, 21, 1)],
                vec![put(S, 3, 22, 22, 2)],
                vec![delete(S, 1, 23)],
                lease_end,
            ],
        );
        assert_eq!(
            lines,
            [
                "Locked Shared 1 c1",
                "Released Shared 0 c1",
                "Locked Shared 1 c2",
                "Locked Shared 2 c3",
                "Orphaned Shared 1 c2",
                "Orphaned Shared 0 c3",
            ]
        );
    }

    fn claim(conn: u64, create: i64, revision: i64, claim: keys::Claim) -> Change {
        Change::Put(KeyValue {
            key: key(Family::Exclusive, conn),
            value: keys::claim_value(claim, format!("c{conn}").as_bytes()),
            create_revision: create,
            mod_revision: revision,
            lease: 1,
        })
    }

    #[test]
    fn readers_share_the_line_and_an_upgrade_is_a_read_gone_then_a_write() {
        use keys::Claim::{Read, Upgrade, Write};
        let (mut state, watcher) = watched();
        let lines = run(
            &mut state,
            &watcher,
            &[
                vec![claim(1, 40, 40, Read)],
                vec![claim(2, 41, 41, Read)],
                vec![claim(3, 42, 42, Write)],
                vec![claim(4, 43, 43, Read)],
                vec![delete(Family::Exclusive, 1, 44)],
                vec![claim(2, 41, 45, Upgrade)],
                vec![claim(2, 41, 46, Write)],
            ],
        );
        assert_eq!(
            lines,
            [
                "Locked Read 1 c1",
                "Locked Read 2 c2",
                "Released Read 1 c1",
                "Released Read 0 c2",
                &format!("Locked Exclusive {} c2", keys::token(46, 0)),
            ]
        );
        let held = state.snapshot(b"*");
        assert_eq!(held.len(), 1);
        assert_eq!(
            (held[0].kind, held[0].n),
            (HoldKind::Exclusive, keys::token(46, 0))
        );
    }

    #[test]
    fn the_snapshot_lists_the_write_holder_then_shared_places_by_name() {
        let (mut state, watcher) = watched();
        run(
            &mut state,
            &watcher,
            &[
                vec![put(Family::Shared, 1, 30, 30, 0)],
                vec![put(Family::Exclusive, 2, 31, 31, 0)],
                vec![put(Family::Exclusive, 3, 32, 32, 0)],
            ],
        );
        let held: Vec<(HoldKind, u64)> = state
            .snapshot(b"a*")
            .iter()
            .map(|e| (e.kind, e.n))
            .collect();
        assert_eq!(
            held,
            [
                (HoldKind::Exclusive, keys::token(31, 0)),
                (HoldKind::Shared, 1)
            ]
        );
        assert!(state.snapshot(b"a").is_empty());
        assert_eq!(state.snapshot(b"a b").len(), 2);
    }
}
