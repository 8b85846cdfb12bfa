//! Counted shared locks (`sg`, `sr`) and semaphores (`wsg`): a separate
//! namespace from the exclusive one, with its own line of waiters, each
//! waiting for a place among at most its own limit of holders.

use super::watch::{Event, HoldKind};
use super::{ClientId, Grant, Held, Holders, Inner, LimitError, SharedView, WaitStart, Waiting};
use crate::name::LockName;
use std::collections::VecDeque;

/// One shared lock. Present while anyone holds it or waits for it.
pub(super) struct Shared {
    /// The map's own key: what clients' `Held` sets point at.
    name: LockName,
    pub(super) holders: Holders,
    waiters: VecDeque<(ClientId, u32)>,
}

fn fits(holders: usize, limit: u32) -> bool {
    limit == 0 || holders < limit as usize
}

impl Inner {
    /// `sg`: joins the holders; returns how many hold it now.
    pub(super) fn add_shared_holder(
        &mut self,
        id: ClientId,
        name: &[u8],
    ) -> Result<usize, LimitError> {
        let lock = self.shared.get(name);
        if let Some(lock) = lock.filter(|l| l.holders.contains(id)) {
            return Ok(lock.holders.len());
        }
        self.may_hold(id, lock.is_none())?;
        if !self.shared.contains_key(name) {
            let key = LockName::from(name);
            let lock = Shared {
                name: key.clone(),
                holders: Holders::default(),
                waiters: VecDeque::new(),
            };
            self.shared.insert(key.clone(), lock);
            self.shared_index.inserted(&self.shared, &key);
        }
        let Some(lock) = self.shared.get_mut(name) else {
            return Ok(0);
        };
        let holders = lock.holders.len();
        if !lock.holders.insert(id) {
            return Ok(holders);
        }
        let held = Held(lock.name.clone());
        self.emit(
            Event::Locked,
            HoldKind::Shared,
            holders as u64 + 1,
            id,
            &held.0,
        );
        if let Some(client) = self.clients.get_mut(&id) {
            client.shared.insert(held);
        }
        Ok(holders + 1)
    }

    /// `wsg`.
    pub(super) fn lock_shared(
        &mut self,
        id: ClientId,
        name: &[u8],
        limit: u32,
        queue: bool,
    ) -> WaitStart {
        if let Some(lock) = self.shared.get(name) {
            if lock.holders.contains(id) {
                let holders = lock.holders.len();
                return WaitStart::Granted(Grant::Shared { holders });
            }
            if !lock.waiters.is_empty() || !fits(lock.holders.len(), limit) {
                if !queue {
                    return WaitStart::Busy;
                }
                if self.closes_cycle(id, lock.holders.iter()) {
                    return WaitStart::Deadlock;
                }
                if let Err(error) = self.may_queue(id, lock.waiters.len(), false) {
                    return WaitStart::Limit(error);
                }
                let key = lock.name.clone();
                if let Some(lock) = self.shared.get_mut(name) {
                    lock.waiters.push_back((id, limit));
                }
                self.set_waiting(id, Waiting::Shared(key));
                return WaitStart::Queued;
            }
        }
        match self.add_shared_holder(id, name) {
            Ok(holders) => WaitStart::Granted(Grant::Shared { holders }),
            Err(error) => WaitStart::Limit(error),
        }
    }

    /// `sr` (and orphaning).
    pub(super) fn release_shared(&mut self, id: ClientId, name: &[u8], cause: Event) -> bool {
        let Some(lock) = self.shared.get_mut(name) else {
            return false;
        };
        if !lock.holders.remove(id) {
            return false;
        }
        let held = Held(lock.name.clone());
        let holders = lock.holders.len() as u64;
        self.emit(cause, HoldKind::Shared, holders, id, &held.0);
        if let Some(client) = self.clients.get_mut(&id) {
            client.shared.remove(&held);
        }
        self.admit_shared_waiters(name);
        true
    }

    /// A waiter gave up; the one that left may have been holding back
    /// others.
    pub(super) fn leave_shared_line(&mut self, id: ClientId, name: &[u8]) {
        if let Some(lock) = self.shared.get_mut(name) {
            lock.waiters.retain(|(w, _)| *w != id);
        }
        self.admit_shared_waiters(name);
    }

    /// Admits waiters in order while the first in line fits; drops the
    /// entry when nobody holds the lock or waits for it.
    fn admit_shared_waiters(&mut self, name: &[u8]) {
        let Some(lock) = self.shared.get_mut(name) else {
            return;
        };
        let key = lock.name.clone();
        let mut admitted = Vec::new();
        while let Some(&(next, limit)) = lock.waiters.front() {
            if !fits(lock.holders.len(), limit) {
                break;
            }
            lock.waiters.pop_front();
            let Some(client) = self.clients.get_mut(&next) else {
                continue;
            };
            lock.holders.insert(next);
            if client.waiting.take().is_some() {
                self.waiting -= 1;
            }
            client.shared.insert(Held(key.clone()));
            let holders = lock.holders.len();
            let _ = client.notify.try_send(Grant::Shared { holders });
            admitted.push((next, holders as u64));
        }
        if lock.holders.is_empty() && lock.waiters.is_empty() {
            self.shared.remove(name);
            self.shared_index.removed(&self.shared, name);
        }
        for (id, holders) in admitted {
            self.emit(Event::Locked, HoldKind::Shared, holders, id, &key);
        }
    }

    pub(super) fn shared_view(&self, lock: &Shared) -> SharedView {
        SharedView {
            name: lock.name.clone(),
            holders: lock.holders.iter().map(|h| self.client_names(h)).collect(),
            waiters: lock
                .waiters
                .iter()
                .map(|&(w, limit)| (self.default_name(w), limit))
                .collect(),
        }
    }
}
