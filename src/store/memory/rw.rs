//! The exclusive namespace: one writer (`g`, `wg`) or many readers (`wr`)
//! per name, and one first-come-first-served line of `wg` and `wr` waiters.
//!
//! When the name frees, the head of the line is served: one writer, or
//! every reader up to the next writer. A reader is admitted at once only
//! when no writer holds the name and nobody waits, so writers never
//! starve. A reader asking to write (an upgrade) goes to the head of the
//! line and is granted once it is the only reader left.

use super::watch::{Event, HoldKind};
use super::{ClientId, ExclusiveView, Grant, Held, Holders, Inner, ReadView, WaitStart, Waiting};
use crate::name::LockName;
use hashbrown::hash_map::RawEntryMut;
use std::collections::VecDeque;
use std::hash::BuildHasher;

/// The holder of the write lock.
#[derive(Clone, Copy)]
pub(super) struct Writer {
    pub(super) id: ClientId,
    pub(super) token: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Write,
    Read,
}

#[derive(Clone, Copy)]
struct Waiter {
    id: ClientId,
    mode: Mode,
}

/// One name of the exclusive namespace. Present while anyone holds it or
/// waits for it.
pub(super) struct Lock {
    /// The map's own key: what clients' `Held` sets point at.
    name: LockName,
    pub(super) writer: Option<Writer>,
    pub(super) readers: Holders,
    line: VecDeque<Waiter>,
}

impl Lock {
    fn new(name: LockName) -> Lock {
        Lock {
            name,
            writer: None,
            readers: Holders::default(),
            line: VecDeque::new(),
        }
    }

    /// Held by a writer or a reader (`i` answers locked).
    pub(super) fn held(&self) -> bool {
        self.writer.is_some() || !self.readers.is_empty()
    }

    /// Could `id` take the write lock now? Nobody else holds it, and
    /// nobody waits ahead of it (an upgrading reader skips the line).
    fn writable_by(&self, id: ClientId, skip_line: bool) -> bool {
        self.writer.is_none()
            && self.readers.iter().all(|r| r == id)
            && (skip_line || self.line.is_empty())
    }

    /// Who `waiter` depends on while it waits here: every current holder
    /// but itself.
    pub(super) fn holders_except(&self, waiter: ClientId) -> impl Iterator<Item = ClientId> + '_ {
        self.writer
            .map(|w| w.id)
            .into_iter()
            .chain(self.readers.iter())
            .filter(move |&h| h != waiter)
    }

    /// `self` depends on itself when it holds what it asks for.
    fn held_by(&self, id: ClientId) -> bool {
        self.writer.is_some_and(|w| w.id == id) || self.readers.contains(id)
    }
}

impl Inner {
    /// The hash of `name` in [`Inner::locks`], computed once for a lookup
    /// and the insert or removal that follows.
    fn name_hash(&self, name: &[u8]) -> u64 {
        self.locks.hasher().hash_one(name)
    }

    /// The lock named `name`, created (with the one copy of the name) if
    /// there is none.
    fn lock_entry(&mut self, name: &[u8]) -> &mut Lock {
        if !self.locks.contains_key(name) {
            let key = LockName::from(name);
            self.locks.insert(key.clone(), Lock::new(key.clone()));
            self.lock_index.inserted(&self.locks, &key);
        }
        // Just inserted if it was missing.
        self.locks.get_mut(name).expect("present")
    }

    /// `g` and `wg`.
    pub(super) fn lock(&mut self, id: ClientId, name: &[u8], queue: bool) -> WaitStart {
        let hash = self.name_hash(name);
        let found = self.locks.raw_entry().from_key_hashed_nocheck(hash, name);
        let Some((_, lock)) = found else {
            return self.lock_free_name(id, name, hash);
        };
        if let Some(writer) = lock.writer.filter(|w| w.id == id) {
            return WaitStart::Granted(Grant::Exclusive {
                token: writer.token,
            });
        }
        let upgrade = lock.readers.contains(id);
        if !lock.writable_by(id, upgrade) {
            if !queue {
                return WaitStart::Busy;
            }
            if self.closes_cycle(id, lock.holders_except(id)) {
                return WaitStart::Deadlock;
            }
            if let Err(error) = self.may_queue(id, lock.line.len(), upgrade) {
                return WaitStart::Limit(error);
            }
            let key = lock.name.clone();
            let waiter = Waiter {
                id,
                mode: Mode::Write,
            };
            if let Some(lock) = self.locks.get_mut(name) {
                if upgrade {
                    lock.line.push_front(waiter);
                } else {
                    lock.line.push_back(waiter);
                }
            }
            self.set_waiting(id, Waiting::Write(key));
            return WaitStart::Queued;
        }
        let upgrade = lock.readers.contains(id);
        if !upgrade {
            if let Err(error) = self.may_hold(id, false) {
                return WaitStart::Limit(error);
            }
        }
        // Free for `id`. No token can be issued safely (the state cannot
        // be saved): no grant, as if the lock were busy.
        let Some(token) = self.tokens.draw() else {
            return WaitStart::Busy;
        };
        self.grant_write(id, name, token);
        WaitStart::Granted(Grant::Exclusive { token })
    }

    /// `g`/`wg` of a name nobody holds or waits for, the common case: one
    /// lookup (already done) and one insert, which makes the name's only
    /// copy.
    fn lock_free_name(&mut self, id: ClientId, name: &[u8], hash: u64) -> WaitStart {
        if let Err(error) = self.may_hold(id, true) {
            return WaitStart::Limit(error);
        }
        let Some(token) = self.tokens.draw() else {
            return WaitStart::Busy;
        };
        let key = match self.spare_name.take() {
            Some(mut spare) => {
                if spare.refill(name) {
                    spare
                } else {
                    LockName::from(name)
                }
            }
            None => LockName::from(name),
        };
        let mut lock = Lock::new(key.clone());
        lock.writer = Some(Writer { id, token });
        // Vacant: the lookup in `lock` found nothing.
        let entry = (self.locks.raw_entry_mut()).from_key_hashed_nocheck(hash, name);
        if let RawEntryMut::Vacant(free) = entry {
            free.insert_hashed_nocheck(hash, key.clone(), lock);
        }
        self.lock_index.inserted(&self.locks, &key);
        self.grants += 1;
        self.write_held += 1;
        self.emit(Event::Locked, HoldKind::Exclusive, token, id, &key);
        if let Some(client) = self.clients.get_mut(&id) {
            client.exclusive.insert(Held(key));
        }
        WaitStart::Granted(Grant::Exclusive { token })
    }

    /// Makes `id` the writer of `name` (its read hold, if any, becomes the
    /// write hold).
    fn grant_write(&mut self, id: ClientId, name: &[u8], token: u64) {
        self.grants += 1;
        self.write_held += 1;
        let lock = self.lock_entry(name);
        lock.writer = Some(Writer { id, token });
        let upgraded = lock.readers.remove(id);
        let readers = lock.readers.len() as u64;
        let held = Held(lock.name.clone());
        if upgraded && readers == 0 {
            self.read_held -= 1;
        }
        if upgraded {
            self.emit(Event::Released, HoldKind::Read, readers, id, &held.0);
        }
        self.emit(Event::Locked, HoldKind::Exclusive, token, id, &held.0);
        if let Some(client) = self.clients.get_mut(&id) {
            if upgraded {
                client.read.remove(&held);
            }
            client.exclusive.insert(held);
        }
    }

    /// Adds `id` to the readers of `name`; returns the reader count.
    fn grant_read(&mut self, id: ClientId, name: &[u8]) -> usize {
        let lock = self.lock_entry(name);
        let first = lock.readers.is_empty();
        lock.readers.insert(id);
        let readers = lock.readers.len();
        let held = Held(lock.name.clone());
        if first {
            self.read_held += 1;
        }
        self.emit(Event::Locked, HoldKind::Read, readers as u64, id, &held.0);
        if let Some(client) = self.clients.get_mut(&id) {
            client.read.insert(held);
        }
        readers
    }

    /// `wr`.
    pub(super) fn read(&mut self, id: ClientId, name: &[u8], queue: bool) -> WaitStart {
        if let Some(lock) = self.locks.get(name) {
            if lock.readers.contains(id) {
                let readers = lock.readers.len();
                return WaitStart::Granted(Grant::Read { readers });
            }
            if lock.writer.is_some() || !lock.line.is_empty() {
                if !queue {
                    return WaitStart::Busy;
                }
                // A writer asking to read its own lock waits for itself.
                if lock.held_by(id) || self.closes_cycle(id, lock.holders_except(id)) {
                    return WaitStart::Deadlock;
                }
                if let Err(error) = self.may_queue(id, lock.line.len(), false) {
                    return WaitStart::Limit(error);
                }
                let key = lock.name.clone();
                if let Some(lock) = self.locks.get_mut(name) {
                    lock.line.push_back(Waiter {
                        id,
                        mode: Mode::Read,
                    });
                }
                self.set_waiting(id, Waiting::Read(key));
                return WaitStart::Queued;
            }
        }
        if let Err(error) = self.may_hold(id, !self.locks.contains_key(name)) {
            return WaitStart::Limit(error);
        }
        let readers = self.grant_read(id, name);
        WaitStart::Granted(Grant::Read { readers })
    }

    /// `r` (and orphaning): releases the write lock if `id` holds it.
    pub(super) fn release_write(&mut self, id: ClientId, name: &[u8], cause: Event) -> bool {
        let hash = self.name_hash(name);
        let RawEntryMut::Occupied(mut entry) =
            (self.locks.raw_entry_mut()).from_key_hashed_nocheck(hash, name)
        else {
            return false;
        };
        let lock = entry.get_mut();
        let Some(writer) = lock.writer.filter(|w| w.id == id) else {
            return false;
        };
        lock.writer = None;
        self.write_held -= 1;
        let free = lock.readers.is_empty() && lock.line.is_empty();
        let held = if free {
            // Nobody to serve: drop the entry with no further lookup, and
            // keep the map's own key (no new reference to count).
            let (key, _) = entry.remove_entry();
            Held(key)
        } else {
            Held(lock.name.clone())
        };
        self.emit(cause, HoldKind::Exclusive, writer.token, id, &held.0);
        if free {
            self.lock_index.removed(&self.locks, name);
            if let Some(client) = self.clients.get_mut(&id) {
                client.exclusive.remove(&held);
            }
            self.spare_name = Some(held.0);
            return true;
        }
        if let Some(client) = self.clients.get_mut(&id) {
            client.exclusive.remove(&held);
        }
        self.serve(name);
        true
    }

    /// `rr` (and orphaning): gives up `id`'s read hold.
    pub(super) fn release_read(&mut self, id: ClientId, name: &[u8], cause: Event) -> bool {
        let Some(lock) = self.locks.get_mut(name) else {
            return false;
        };
        if !lock.readers.remove(id) {
            return false;
        }
        let held = Held(lock.name.clone());
        let readers = lock.readers.len() as u64;
        if readers == 0 {
            self.read_held -= 1;
        }
        self.emit(cause, HoldKind::Read, readers, id, &held.0);
        if let Some(client) = self.clients.get_mut(&id) {
            client.read.remove(&held);
        }
        self.serve(name);
        true
    }

    /// A waiter gave up: take it out of the line and serve those it held
    /// back (a writer at the head keeps the readers behind it waiting).
    pub(super) fn leave_line(&mut self, id: ClientId, name: &[u8]) {
        if let Some(lock) = self.locks.get_mut(name) {
            lock.line.retain(|w| w.id != id);
            self.serve(name);
        }
    }

    /// Serves the head of the line while it can be served: one writer, or
    /// readers up to the next writer. Drops the entry when nobody holds or
    /// waits for the name any more.
    fn serve(&mut self, name: &[u8]) {
        loop {
            let Some(lock) = self.locks.get(name) else {
                return;
            };
            let Some(&head) = lock.line.front() else {
                break;
            };
            match head.mode {
                Mode::Write => {
                    if !lock.writable_by(head.id, true) {
                        break;
                    }
                    // No token can be issued safely: nobody gets the lock,
                    // and those in line time out.
                    let Some(token) = self.tokens.draw() else {
                        break;
                    };
                    self.pop_head(name);
                    self.grant_write(head.id, name, token);
                    if let Some(client) = self.granted(head.id) {
                        let _ = client.notify.try_send(Grant::Exclusive { token });
                    }
                    break;
                }
                Mode::Read => {
                    if lock.writer.is_some() {
                        break;
                    }
                    self.pop_head(name);
                    let readers = self.grant_read(head.id, name);
                    if let Some(client) = self.granted(head.id) {
                        let _ = client.notify.try_send(Grant::Read { readers });
                    }
                }
            }
        }
        if let Some(lock) = self.locks.get(name) {
            if !lock.held() && lock.line.is_empty() {
                self.locks.remove(name);
                self.lock_index.removed(&self.locks, name);
            }
        }
    }

    fn pop_head(&mut self, name: &[u8]) {
        if let Some(lock) = self.locks.get_mut(name) {
            lock.line.pop_front();
        }
    }

    pub(super) fn exclusive_view(&self, lock: &Lock) -> Option<ExclusiveView> {
        let writer = lock.writer?;
        Some(ExclusiveView {
            name: lock.name.clone(),
            holder: self.client_names(writer.id),
            token: writer.token,
            waiters: lock.line.iter().map(|w| self.default_name(w.id)).collect(),
        })
    }

    pub(super) fn read_view(&self, lock: &Lock) -> Option<ReadView> {
        if lock.readers.is_empty() {
            return None;
        }
        Some(ReadView {
            name: lock.name.clone(),
            readers: lock.readers.iter().map(|r| self.default_name(r)).collect(),
            waiters: lock.line.iter().map(|w| self.default_name(w.id)).collect(),
        })
    }
}
