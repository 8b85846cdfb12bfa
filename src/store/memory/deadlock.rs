//! Refusing a wait that would close a cycle (`PROTOCOL.md` Part 2,
//! "Deadlock detection"). A client waits for one lock at a time, and a
//! waiter depends on every current holder of what it waits for: the
//! writer, the readers, or the holders of a semaphore. A new wait is
//! refused when one of the holders it would depend on depends, through any
//! chain of waits, on the newcomer: a cycle of any length. A chain that
//! does not come back to the newcomer just waits.

use super::{ById, ClientId, Inner, Waiting};
use std::collections::HashSet;

impl Inner {
    /// Would `waiter`, waiting on a lock held by `holders`, close a cycle?
    /// A depth-first search of the wait graph, each client visited once.
    pub(super) fn closes_cycle(
        &self,
        waiter: ClientId,
        holders: impl Iterator<Item = ClientId>,
    ) -> bool {
        let mut stack: Vec<ClientId> = holders.collect();
        let mut seen: HashSet<ClientId, ById> = HashSet::default();
        while let Some(client) = stack.pop() {
            if client == waiter {
                return true;
            }
            if !seen.insert(client) {
                continue;
            }
            self.push_blockers(client, &mut stack);
        }
        false
    }

    /// Pushes the holders of what `id` waits for (none if it does not
    /// wait).
    fn push_blockers(&self, id: ClientId, out: &mut Vec<ClientId>) {
        let Some(waiting) = self.clients.get(&id).and_then(|c| c.waiting.as_ref()) else {
            return;
        };
        match waiting {
            Waiting::Write(name) | Waiting::Read(name) => {
                if let Some(lock) = self.locks.get(name.as_bytes()) {
                    out.extend(lock.holders_except(id));
                }
            }
            Waiting::Shared(name) => {
                if let Some(lock) = self.shared.get(name.as_bytes()) {
                    out.extend(lock.holders.iter().filter(|&h| h != id));
                }
            }
        }
    }
}
