//! The holders of one lock in the order they got it, with O(1) insert,
//! remove and membership: a linked list threaded through a hash map, so
//! `sr` from the middle of a thousand holders costs one hash, not a search,
//! and `sd`, `dump shared` and `dj` still list holders in arrival order.

use super::{ById, ClientId};
use std::collections::HashMap;

#[derive(Clone, Copy)]
struct Link {
    prev: Option<ClientId>,
    next: Option<ClientId>,
}

/// An insertion-ordered set of clients. See the module docs.
#[derive(Default)]
pub(super) struct Holders {
    links: HashMap<ClientId, Link, ById>,
    head: Option<ClientId>,
    tail: Option<ClientId>,
}

impl Holders {
    pub(super) fn len(&self) -> usize {
        self.links.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    pub(super) fn contains(&self, id: ClientId) -> bool {
        self.links.contains_key(&id)
    }

    /// Adds `id` last; `false` (and no change) if it is already in.
    pub(super) fn insert(&mut self, id: ClientId) -> bool {
        if self.links.contains_key(&id) {
            return false;
        }
        let link = Link {
            prev: self.tail,
            next: None,
        };
        match self.tail.and_then(|t| self.links.get_mut(&t)) {
            Some(tail) => tail.next = Some(id),
            None => self.head = Some(id),
        }
        self.tail = Some(id);
        self.links.insert(id, link);
        true
    }

    /// Takes `id` out; `false` if it was not in.
    pub(super) fn remove(&mut self, id: ClientId) -> bool {
        let Some(link) = self.links.remove(&id) else {
            return false;
        };
        match link.prev.and_then(|p| self.links.get_mut(&p)) {
            Some(prev) => prev.next = link.next,
            None => self.head = link.next,
        }
        match link.next.and_then(|n| self.links.get_mut(&n)) {
            Some(next) => next.prev = link.prev,
            None => self.tail = link.prev,
        }
        if self.links.is_empty() {
            // Give the buckets back: a lock that once had many holders
            // should not keep their memory.
            self.links = HashMap::default();
        }
        true
    }

    /// Holders, first to get the lock first.
    pub(super) fn iter(&self) -> impl Iterator<Item = ClientId> + '_ {
        std::iter::successors(self.head, move |id| {
            self.links.get(id).and_then(|link| link.next)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_arrival_order_through_removals() {
        let mut h = Holders::default();
        for id in [5, 3, 9, 1] {
            assert!(h.insert(id));
        }
        assert!(!h.insert(3));
        assert_eq!(h.iter().collect::<Vec<_>>(), [5, 3, 9, 1]);
        assert!(h.remove(9));
        assert!(!h.remove(9));
        assert_eq!(h.iter().collect::<Vec<_>>(), [5, 3, 1]);
        assert!(h.remove(5));
        assert!(h.remove(1));
        assert_eq!(h.iter().collect::<Vec<_>>(), [3]);
        assert!(h.insert(7));
        assert_eq!(h.iter().collect::<Vec<_>>(), [3, 7]);
        assert!(h.remove(3) && h.remove(7));
        assert!(h.is_empty());
        assert_eq!(h.iter().count(), 0);
        assert!(h.insert(2));
        assert_eq!((h.len(), h.contains(2)), (1, true));
    }
}
