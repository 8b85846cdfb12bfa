//! One watch stream per node over the whole prefix, and the local waiters
//! it wakes.
//!
//! A waiter for an exclusive lock waits for the key just before its own
//! to be deleted; a waiter for a shared place (or an upgrade of a read
//! hold) waits for any delete under its lock; a waiting reader waits for
//! the writer (or upgrading reader) ahead of it to change or go. Changes
//! reach them through this node's single watch, so a release wakes one
//! waiter, not every node's.
//!
//! A waiter registers with the revision of the read that told it what to
//! wait for. If the delete it waits for went by after that read but
//! before it registered, it looks again at once: the node remembers the
//! deletes it dispatched lately, so a waiter looks again only when its
//! delete did go by (or when the remembered ones do not reach back to its
//! read), not whenever anything else changed meanwhile.
//!
//! The stream runs only while the node has waiters (and for [`GRACE`]
//! after the last one): it costs etcd and this node one JSON event per
//! write under the prefix, which a node whose locks are all granted at
//! once does not need. A waiter that finds it stopped restarts it from
//! the revision of its own read, so nothing it waits for can go by
//! unseen.

use super::client::{Client, Event, WatchMessage};
use parking_lot::{Condvar, Mutex};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Client ids, as the store knows them.
type Id = u64;

/// Deletes remembered for waiters that register late.
const REMEMBERED: usize = 4096;

/// How soon a broken watch is started again.
const RESTART: Duration = Duration::from_millis(100);

/// How long the stream runs on without waiters.
pub const GRACE: Duration = Duration::from_secs(2);

/// How often a stopped stream looks whether the node is stopping.
const IDLE: Duration = Duration::from_millis(200);

/// What one waiter waits for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Target {
    /// The delete of this key.
    Key(Vec<u8>),
    /// Any delete of a key under this lock prefix.
    Lock(Vec<u8>),
    /// A write or the delete of this key.
    Change(Vec<u8>),
}

/// The waiters of this node, by what they wait for.
pub struct Waiters {
    inner: Mutex<Inner>,
    /// Signalled when a waiter registers while the stream is stopped.
    wanted: Condvar,
}

struct Inner {
    /// Every revision up to this one has been dispatched.
    seen: i64,
    by_target: HashMap<Target, Vec<Id>>,
    by_id: HashMap<Id, Target>,
    /// Deletes dispatched lately: revision and key, oldest first.
    deleted: VecDeque<(i64, Vec<u8>)>,
    /// Deletes up to this revision may be missing from `deleted`.
    forgotten: i64,
    /// The stream runs (or is being started): `seen` follows it.
    streaming: bool,
}

impl Waiters {
    /// No waiters; the watch starts after `revision`.
    pub fn new(revision: i64) -> Waiters {
        Waiters {
            inner: Mutex::new(Inner {
                seen: revision,
                by_target: HashMap::new(),
                by_id: HashMap::new(),
                deleted: VecDeque::new(),
                forgotten: revision,
                streaming: false,
            }),
            wanted: Condvar::new(),
        }
    }

    /// `id` waits for `key` to be deleted, as read at revision `read_at`.
    /// Returns whether it must look again now: the delete may have gone by
    /// already (see the module docs).
    pub fn wait_for_key(&self, id: Id, key: &[u8], read_at: i64) -> bool {
        self.register(id, Target::Key(key.to_vec()), read_at)
    }

    /// `id` waits for `key` to be written or deleted, as read at
    /// `read_at`. Returns whether it must look again now. Writes are not
    /// remembered: it looks again whenever the watch went past its read.
    pub fn wait_for_change(&self, id: Id, key: &[u8], read_at: i64) -> bool {
        self.register(id, Target::Change(key.to_vec()), read_at)
    }

    /// `id` waits for any delete under `lock`, as read at `read_at`.
    /// Returns whether it must look again now.
    pub fn wait_for_lock(&self, id: Id, lock: &[u8], read_at: i64) -> bool {
        self.register(id, Target::Lock(lock.to_vec()), read_at)
    }

    fn register(&self, id: Id, target: Target, read_at: i64) -> bool {
        let mut inner = self.inner.lock();
        inner.remove(id);
        if !inner.streaming && inner.by_id.is_empty() {
            // The stream is stopped and nobody waits: it starts again
            // right after this read, so this waiter misses nothing; older
            // reads of waiters that come before it starts count as missed.
            inner.seen = read_at;
            inner.forgotten = read_at;
            inner.deleted.clear();
            self.wanted.notify_one();
        }
        let wrote = matches!(target, Target::Change(_)) && read_at < inner.seen;
        let missed = wrote
            || read_at < inner.forgotten
            || inner
                .deleted
                .iter()
                .rev()
                .take_while(|(revision, _)| *revision > read_at)
                .any(|(_, key)| target.matches(key));
        inner.by_target.entry(target.clone()).or_default().push(id);
        inner.by_id.insert(id, target);
        missed
    }

    /// The waiters waiting for the delete of `key`.
    pub fn waiting_for_key(&self, key: &[u8]) -> Vec<Id> {
        let inner = self.inner.lock();
        inner
            .by_target
            .get(&Target::Key(key.to_vec()))
            .cloned()
            .unwrap_or_default()
    }

    /// `id` waits for nothing any more.
    pub fn forget(&self, id: Id) {
        self.inner.lock().remove(id);
    }

    /// Waiters this node has now.
    pub fn len(&self) -> usize {
        self.inner.lock().by_id.len()
    }

    /// Whether this node has no waiters.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Dispatches one message's events; returns the waiters to wake (each
    /// taken out of its registration: it registers again if it still
    /// waits).
    fn dispatch(&self, revision: i64, events: &[Event]) -> Vec<Id> {
        let mut inner = self.inner.lock();
        let mut wake = Vec::new();
        for event in events {
            let targets = match event {
                Event::Put(kv) => vec![Target::Change(kv.key.clone())],
                Event::Delete { key, revision } => {
                    if inner.deleted.len() == REMEMBERED {
                        if let Some((gone, _)) = inner.deleted.pop_front() {
                            inner.forgotten = inner.forgotten.max(gone);
                        }
                    }
                    inner.deleted.push_back((*revision, key.clone()));
                    let mut targets = vec![Target::Key(key.clone()), Target::Change(key.clone())];
                    if let Some(lock) = super::keys::Layout::lock_of(key) {
                        targets.push(Target::Lock(lock.to_vec()));
                    }
                    targets
                }
            };
            for target in targets {
                if let Some(ids) = inner.by_target.remove(&target) {
                    for id in &ids {
                        inner.by_id.remove(id);
                    }
                    wake.extend(ids);
                }
            }
        }
        inner.seen = inner.seen.max(revision);
        wake
    }

    /// Every waiter, taken out (the watch lost events: all look again).
    fn everyone(&self, revision: i64) -> Vec<Id> {
        let mut inner = self.inner.lock();
        inner.by_target.clear();
        inner.seen = inner.seen.max(revision);
        inner.deleted.clear();
        inner.forgotten = inner.forgotten.max(revision);
        inner.by_id.drain().map(|(id, _)| id).collect()
    }

    #[cfg(test)]
    fn seen(&self) -> i64 {
        self.inner.lock().seen
    }

    /// Blocks while nobody waits (the stream stopped), then marks the
    /// stream running and returns the revision to start it from; `None`
    /// once `stop` is set.
    fn start(&self, stop: &AtomicBool) -> Option<i64> {
        let mut inner = self.inner.lock();
        while inner.by_id.is_empty() {
            inner.streaming = false;
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            self.wanted.wait_for(&mut inner, IDLE);
        }
        inner.streaming = true;
        Some(inner.seen + 1)
    }

    /// Whether the stream may stop: nobody has waited since `idle_since`
    /// (set here when the last waiter left) for [`GRACE`].
    fn idle(&self, idle_since: &mut Option<Instant>) -> bool {
        if !self.is_empty() {
            *idle_since = None;
            return false;
        }
        idle_since.get_or_insert_with(Instant::now).elapsed() >= GRACE
    }
}

impl Target {
    /// Whether the delete of `key` is what this waits for.
    fn matches(&self, key: &[u8]) -> bool {
        match self {
            Target::Key(k) | Target::Change(k) => k == key,
            Target::Lock(lock) => super::keys::Layout::lock_of(key) == Some(&lock[..]),
        }
    }
}

impl Inner {
    fn remove(&mut self, id: Id) {
        if let Some(target) = self.by_id.remove(&id) {
            if let Some(ids) = self.by_target.get_mut(&target) {
                ids.retain(|other| *other != id);
                if ids.is_empty() {
                    self.by_target.remove(&target);
                }
            }
        }
    }
}

/// Follows every change under `prefix` while this node has waiters, until
/// `stop` is set, handing the waiters each delete wakes to `wake`. A broken
/// or idle stream is started again from the next revision; if etcd
/// compacted that away, every waiter is woken to look again.
pub fn follow(
    client: &Client,
    prefix: &[u8],
    waiters: &Waiters,
    stop: &AtomicBool,
    wake: &dyn Fn(Vec<Id>),
) {
    while let Some(from) = waiters.start(stop) {
        let mut watch = match client.watch_prefix(prefix, from) {
            Ok(watch) => watch,
            Err(_) => {
                std::thread::sleep(RESTART);
                continue;
            }
        };
        let mut idle_since = None;
        while !stop.load(Ordering::Relaxed) && !waiters.idle(&mut idle_since) {
            match watch.next_message() {
                Ok(WatchMessage::Created { .. }) => {}
                Ok(WatchMessage::Events { revision, events }) => {
                    let ids = waiters.dispatch(revision, &events);
                    if !ids.is_empty() {
                        wake(ids);
                    }
                }
                Ok(WatchMessage::Cancelled { compact_revision }) => {
                    let ids = waiters.everyone(compact_revision.max(1) - 1);
                    wake(ids);
                    break;
                }
                // Idle past the bound, a dead member, or a closed stream.
                Err(_) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waiters whose stream runs, having seen up to `revision`.
    fn running(revision: i64) -> Waiters {
        let w = Waiters::new(revision);
        w.inner.lock().streaming = true;
        w
    }

    fn delete(key: &[u8], revision: i64) -> Event {
        Event::Delete {
            key: key.to_vec(),
            revision,
        }
    }

    #[test]
    fn a_delete_wakes_the_waiter_on_that_key_and_the_lock_waiters_once() {
        let w = running(10);
        assert!(!w.wait_for_key(1, b"/p/x/61/a.1", 10));
        assert!(!w.wait_for_key(2, b"/p/x/61/b.2", 10));
        assert!(!w.wait_for_lock(3, b"/p/x/61/", 10));
        let mut woken = w.dispatch(12, &[delete(b"/p/x/61/a.1", 12)]);
        woken.sort();
        assert_eq!(woken, vec![1, 3]);
        assert_eq!(w.seen(), 12);
        assert!(w.dispatch(13, &[delete(b"/p/x/61/a.1", 13)]).is_empty());
        assert_eq!(w.len(), 1);
        assert_eq!(w.waiting_for_key(b"/p/x/61/b.2"), vec![2]);
        w.forget(2);
        assert!(w.is_empty());
        assert!(w.waiting_for_key(b"/p/x/61/b.2").is_empty());
    }

    #[test]
    fn a_change_waiter_wakes_on_a_write_or_the_delete_of_its_key() {
        let w = running(0);
        assert!(!w.wait_for_change(1, b"/p/x/61/w.1", 0));
        w.wait_for_change(2, b"/p/x/61/w.1", 0);
        let put = Event::Put(crate::store::etcd::client::KeyValue {
            key: b"/p/x/61/w.1".to_vec(),
            value: Vec::new(),
            create_revision: 1,
            mod_revision: 2,
            lease: 0,
        });
        let mut woken = w.dispatch(2, &[put]);
        woken.sort();
        assert_eq!(woken, vec![1, 2]);
        assert!(
            w.wait_for_change(1, b"/p/x/61/w.1", 1),
            "a write went by since the read: look again"
        );
        assert_eq!(w.dispatch(3, &[delete(b"/p/x/61/w.1", 3)]), vec![1]);
    }

    #[test]
    fn registering_again_replaces_the_old_target() {
        let w = running(0);
        w.wait_for_key(1, b"k1", 0);
        w.wait_for_key(1, b"k2", 0);
        assert!(w.dispatch(1, &[delete(b"k1", 1)]).is_empty());
        assert_eq!(w.dispatch(2, &[delete(b"k2", 2)]), vec![1]);
    }

    #[test]
    fn a_late_waiter_looks_again_only_when_its_delete_went_by_after_its_read() {
        let w = running(10);
        w.dispatch(
            14,
            &[
                delete(b"/p/x/63/c.1", 11),
                delete(b"/p/x/61/a.1", 12),
                delete(b"/p/x/62/b.1", 14),
            ],
        );
        assert!(
            w.wait_for_key(1, b"/p/x/61/a.1", 11),
            "gone at 12, read at 11"
        );
        assert!(
            !w.wait_for_key(2, b"/p/x/61/a.1", 12),
            "gone before the read"
        );
        assert!(
            !w.wait_for_key(3, b"/p/x/61/z.9", 11),
            "other writes do not count"
        );
        assert!(w.wait_for_lock(4, b"/p/x/62/", 13));
        assert!(!w.wait_for_lock(5, b"/p/x/64/", 10));
        assert!(
            w.wait_for_key(6, b"/p/x/61/z.9", 9),
            "older than what is remembered"
        );
    }

    #[test]
    fn a_stopped_stream_starts_again_from_the_first_waiters_read() {
        let w = Waiters::new(5);
        let stop = AtomicBool::new(false);
        // Nobody waits and the stream is stopped: the first waiter's read
        // sets where it starts, whatever went by before.
        assert!(!w.wait_for_key(1, b"/p/x/61/a.1", 40));
        assert!(
            w.wait_for_key(2, b"/p/x/61/b.1", 39),
            "read before the start"
        );
        assert!(!w.wait_for_key(3, b"/p/x/61/c.1", 41));
        assert_eq!(w.start(&stop), Some(41));
        // Running: a new first waiter does not move it.
        w.forget(1);
        w.forget(2);
        w.forget(3);
        assert!(
            w.wait_for_key(4, b"/p/x/61/d.1", 30),
            "older than the stream"
        );
        assert_eq!(w.dispatch(45, &[delete(b"/p/x/61/d.1", 45)]), vec![4]);
        // Idle for the grace period, it stops; the next waiter restarts it.
        let mut since = Some(Instant::now() - GRACE);
        assert!(w.idle(&mut since));
        stop.store(true, Ordering::Relaxed);
        assert_eq!(w.start(&stop), None);
        assert!(!w.wait_for_key(5, b"/p/x/61/e.1", 60));
        assert_eq!(w.start(&stop), Some(61));
    }

    #[test]
    fn what_is_no_longer_remembered_counts_as_missed() {
        let w = running(0);
        for revision in 1..=(REMEMBERED as i64 + 10) {
            w.dispatch(revision, &[delete(b"/p/x/61/k", revision)]);
        }
        assert!(w.wait_for_key(1, b"/p/x/62/other", 5));
        assert!(!w.wait_for_key(2, b"/p/x/62/other", 20));
    }
}
