//! Watching locks (`watch PATTERN`, PROTOCOL.md Part 2): a watcher gets a
//! snapshot of what its patterns match, then every change to those locks.
//!
//! Events are made under the table's write lock, in the order the changes
//! happen, and the snapshot is taken under the same lock as the watcher is
//! registered, so snapshot plus events add up to each lock's true state.
//! The table never waits for a watcher: each has a bounded queue, and one
//! that falls [`QUEUE`] events behind is marked overflowed and dropped
//! from the table; its connection then says so and closes.

use super::{ClientId, Inner};
use crate::name::LockName;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Events a watcher may fall behind by before it is cut off.
pub const QUEUE: usize = 10_000;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Held when the watch began (the snapshot).
    Held,
    /// Granted.
    Locked,
    /// Released by `r`, `rr`, `sr` or `ra`.
    Released,
    /// Released by the end of its connection.
    Orphaned,
}

/// Which kind of hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldKind {
    /// The exclusive (write) lock; the number is its fencing token.
    Exclusive,
    /// A place in a shared lock; the number is the holder count after.
    Shared,
    /// A read hold; the number is the reader count after.
    Read,
}

/// One line of a watcher's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// What happened.
    pub event: Event,
    /// To which kind of hold.
    pub kind: HoldKind,
    /// The token (exclusive) or the holder count after the event.
    pub n: u64,
    /// The holder's default name.
    pub holder: Box<[u8]>,
    /// The lock.
    pub name: LockName,
}

/// A watching connection's end of its queue.
pub struct Watcher {
    /// Events, in the order they happened.
    pub events: Receiver<WatchEvent>,
    overflowed: Arc<AtomicBool>,
}

impl Watcher {
    /// True once the queue was full when an event came: the watcher has
    /// been dropped from the table and must be cut off.
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::SeqCst)
    }
}

/// The watchers of a store (the table, or a cluster node's mirror): each
/// watching client's patterns and the sending end of its queue.
#[derive(Default)]
pub(crate) struct Watchers(Vec<Watching>);

struct Watching {
    id: ClientId,
    patterns: Vec<Box<[u8]>>,
    tx: Sender<WatchEvent>,
    overflowed: Arc<AtomicBool>,
}

impl Watching {
    fn wants(&self, name: &[u8]) -> bool {
        self.patterns.iter().any(|p| matches(p, name))
    }
}

impl Watchers {
    /// Nobody watches.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Some watcher's patterns match lock `name`.
    pub(crate) fn want(&self, name: &[u8]) -> bool {
        self.0.iter().any(|w| w.wants(name))
    }

    /// Adds `pattern` to client `id`'s watch; returns the watcher's end of
    /// a new queue of [`QUEUE`] events on the client's first pattern.
    pub(crate) fn add(&mut self, id: ClientId, pattern: &[u8]) -> Option<Watcher> {
        if let Some(w) = self.0.iter_mut().find(|w| w.id == id) {
            w.patterns.push(pattern.into());
            return None;
        }
        let (tx, events) = bounded(QUEUE);
        let overflowed = Arc::new(AtomicBool::new(false));
        self.0.push(Watching {
            id,
            patterns: vec![pattern.into()],
            tx,
            overflowed: Arc::clone(&overflowed),
        });
        Some(Watcher { events, overflowed })
    }

    /// Forgets client `id`'s patterns (it left).
    pub(crate) fn remove(&mut self, id: ClientId) {
        self.0.retain(|w| w.id != id);
    }

    /// Queues `line` for every watcher whose patterns match its lock; a
    /// watcher whose queue is full is dropped and marked overflowed.
    pub(crate) fn send(&mut self, line: &WatchEvent) {
        self.0.retain(|w| {
            if !w.wants(line.name.as_bytes()) {
                return true;
            }
            match w.tx.try_send(line.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    w.overflowed.store(true, Ordering::SeqCst);
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
    }

    /// Drops every watcher, marked overflowed (the store can no longer
    /// tell them the truth).
    pub(crate) fn cut_off(&mut self) {
        for w in self.0.drain(..) {
            w.overflowed.store(true, Ordering::SeqCst);
        }
    }
}

/// A lock name, or a prefix ending in `*` (`*` alone matches every lock).
fn matches(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.strip_suffix(b"*") {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

impl Inner {
    /// Sends an event to every watcher whose patterns match; cheap when
    /// nobody watches.
    pub(super) fn emit(
        &mut self,
        event: Event,
        kind: HoldKind,
        n: u64,
        holder: ClientId,
        name: &LockName,
    ) {
        if !self.watchers.want(name.as_bytes()) {
            return;
        }
        let line = WatchEvent {
            event,
            kind,
            n,
            holder: self.default_name(holder),
            name: name.clone(),
        };
        self.watchers.send(&line);
    }

    /// Registers `pattern` for client `id` and returns what it matches now
    /// (unsorted), plus the queue if this is the client's first pattern.
    pub(super) fn watch(
        &mut self,
        id: ClientId,
        pattern: &[u8],
    ) -> (Vec<WatchEvent>, Option<Watcher>) {
        let mut held = Vec::new();
        let mut add = |kind, n: u64, holder: ClientId, name: &LockName| {
            held.push(WatchEvent {
                event: Event::Held,
                kind,
                n,
                holder: self.default_name(holder),
                name: name.clone(),
            });
        };
        let exact = !pattern.ends_with(b"*");
        let locks: Box<dyn Iterator<Item = (&LockName, &super::rw::Lock)>> = if exact {
            Box::new(self.locks.get_key_value(pattern).into_iter())
        } else {
            Box::new(self.locks.iter())
        };
        for (name, lock) in locks.filter(|(n, _)| matches(pattern, n.as_bytes())) {
            if let Some(writer) = lock.writer {
                add(HoldKind::Exclusive, writer.token, writer.id, name);
            }
            for (i, reader) in lock.readers.iter().enumerate() {
                add(HoldKind::Read, i as u64 + 1, reader, name);
            }
        }
        let shared: Box<dyn Iterator<Item = (&LockName, &super::shared::Shared)>> = if exact {
            Box::new(self.shared.get_key_value(pattern).into_iter())
        } else {
            Box::new(self.shared.iter())
        };
        for (name, lock) in shared.filter(|(n, _)| matches(pattern, n.as_bytes())) {
            for (i, holder) in lock.holders.iter().enumerate() {
                add(HoldKind::Shared, i as u64 + 1, holder, name);
            }
        }
        (held, self.watchers.add(id, pattern))
    }

    /// Forgets a client's patterns (it left).
    pub(super) fn unwatch(&mut self, id: ClientId) {
        self.watchers.remove(id);
    }
}
