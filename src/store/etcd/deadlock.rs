//! Deadlock detection across nodes.
//!
//! The waits-for graph is already in etcd: a client waits for the lock of
//! its one key that does not hold (or of its read key marked for an
//! upgrade), and depends on that lock's other holders (the writer or the
//! readers of an exclusive line; the holding keys of a shared one). A client
//! that has just queued reads every line at one revision after its own
//! put, and looks for a cycle through itself.
//!
//! Two clients may close one cycle at the same moment, on two nodes. The
//! rule that keeps both from waiting forever, without a conditional write:
//! only the client whose waiting key is the newest on the cycle gives up.
//! Its read comes after its own put, so it sees every older key of the
//! cycle; the others, whose keys are older, keep waiting. A handed-over
//! lock cannot close a cycle: its new holder waits for nothing.

use super::client::KeyValue;
use super::keys::{Family, Layout};
use super::rw::{self, Status};
use std::collections::{HashMap, HashSet};

/// Whether `me`, which has just queued with `my_key`, closes a cycle of
/// waiters in which its key is the newest. `exclusive` and `shared` are
/// every key of the two families, grouped by lock ([`by_lock`]), each
/// lock's keys in create order.
pub fn closes_cycle(
    layout: &Layout,
    exclusive: &[KeyValue],
    shared: &[KeyValue],
    me: &[u8],
    my_key: &[u8],
) -> bool {
    let mut graph = Graph::default();
    graph.add(layout, Family::Exclusive, exclusive);
    graph.add(layout, Family::Shared, shared);
    let Some(&(_, mine)) = graph.waits.get(me) else {
        return false;
    };
    if graph.keys.get(my_key) != Some(&mine) {
        return false;
    }
    // Follow only wait edges older than mine: a cycle reached that way has
    // my key as its newest.
    let mut seen: HashSet<&[u8]> = HashSet::new();
    let mut stack: Vec<&[u8]> = vec![me];
    while let Some(waiter) = stack.pop() {
        let Some((lock, revision)) = graph.waits.get(waiter) else {
            continue;
        };
        if waiter != me && *revision >= mine {
            continue;
        }
        // An upgrading reader holds what it waits for: not its own edge.
        let others = graph.holders.get(lock).into_iter().flatten();
        for holder in others.filter(|h| **h != waiter) {
            if *holder == me {
                return true;
            }
            if seen.insert(holder) {
                stack.push(holder);
            }
        }
    }
    false
}

/// Groups keys in create order by lock, keeping create order in each.
pub fn by_lock(kvs: &mut [KeyValue]) {
    kvs.sort_by(|a, b| Layout::lock_of(&a.key).cmp(&Layout::lock_of(&b.key)));
}

#[derive(Default)]
struct Graph<'k> {
    /// Owner → (the lock it waits for, when it began to: its waiting key's
    /// create revision, or an upgrading reader's mark).
    waits: HashMap<&'k [u8], (&'k [u8], i64)>,
    /// Lock → owners holding it.
    holders: HashMap<&'k [u8], Vec<&'k [u8]>>,
    /// Waiting key → its create revision.
    keys: HashMap<&'k [u8], i64>,
}

impl<'k> Graph<'k> {
    fn add(&mut self, layout: &Layout, family: Family, kvs: &'k [KeyValue]) {
        let mut start = 0;
        while start < kvs.len() {
            let lock = Layout::lock_of(&kvs[start].key).unwrap_or(&[]);
            let len = kvs[start..]
                .iter()
                .take_while(|kv| Layout::lock_of(&kv.key).unwrap_or(&[]) == lock)
                .count();
            let line = &kvs[start..start + len];
            // Whether each key holds, and since when it waits, if it does.
            let states: Vec<(bool, Option<i64>)> = match family {
                Family::Exclusive => (rw::statuses(line).into_iter().zip(line))
                    .map(|(status, kv)| match status {
                        Status::Write | Status::Read => (true, None),
                        Status::Upgrading => (true, Some(kv.mod_revision)),
                        Status::Waiting => (false, Some(kv.create_revision)),
                    })
                    .collect(),
                Family::Shared => (super::holding(line).into_iter().zip(line))
                    .map(|(held, kv)| (held, (!held).then_some(kv.create_revision)))
                    .collect(),
            };
            for (kv, (held, since)) in line.iter().zip(states) {
                let Some((_, owner)) = layout.parse_entry(family, &kv.key) else {
                    continue;
                };
                if held {
                    self.holders.entry(lock).or_default().push(owner);
                }
                if let Some(since) = since {
                    self.waits.insert(owner, (lock, since));
                    self.keys.insert(&kv.key, since);
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

    struct Lines {
        layout: Layout,
        exclusive: Vec<KeyValue>,
        shared: Vec<KeyValue>,
        revision: i64,
    }

    impl Lines {
        fn new() -> Lines {
            Lines {
                layout: Layout::new(b"/p"),
                exclusive: Vec::new(),
                shared: Vec::new(),
                revision: 0,
            }
        }

        /// `who` queues for exclusive `name`; returns the key.
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
            self.revision += 1;
            let key = self
                .layout
                .entry(Family::Exclusive, name.as_bytes(), who.as_bytes(), 0);
            let mut kv = kv(&key, 0, self.revision);
            kv.value = keys::claim_value(keys::Claim::Read, b"c");
            self.exclusive.push(kv);
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

        fn closes(&self, who: &str, key: &[u8]) -> bool {
            let mut x = self.exclusive.clone();
            let mut s = self.shared.clone();
            by_lock(&mut x);
            by_lock(&mut s);
            closes_cycle(&self.layout, &x, &s, who.as_bytes(), key)
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
    fn the_newest_edge_of_a_two_client_cycle_gives_up_and_only_it() {
        let mut l = Lines::new();
        l.x("a", "x");
        l.x("b", "y");
        let a_waits = l.x("a", "y");
        let b_waits = l.x("b", "x");
        assert!(l.closes("b", &b_waits));
        assert!(!l.closes("a", &a_waits), "the older edge keeps waiting");
    }

    #[test]
    fn no_cycle_no_refusal_and_a_three_client_cycle_is_seen() {
        let mut l = Lines::new();
        l.x("a", "x");
        l.x("b", "y");
        l.x("c", "z");
        let a = l.x("a", "y");
        assert!(!l.closes("a", &a));
        let b = l.x("b", "z");
        assert!(!l.closes("b", &b));
        let c = l.x("c", "x");
        assert!(l.closes("c", &c));
    }

    #[test]
    fn two_readers_asking_to_upgrade_make_a_cycle_and_the_later_gives_up() {
        let mut l = Lines::new();
        let a = l.read("a", "x");
        let b = l.read("b", "x");
        l.x("w", "x");
        l.mark(&a);
        assert!(!l.closes("a", &a), "a waits for b, who waits for nothing");
        l.mark(&b);
        assert!(l.closes("b", &b));
        assert!(!l.closes("a", &a), "the older upgrade keeps waiting");
    }

    #[test]
    fn a_cycle_through_a_read_hold_is_seen() {
        let mut l = Lines::new();
        l.read("a", "x");
        l.x("b", "y");
        let a = l.x("a", "y");
        assert!(!l.closes("a", &a));
        let b = l.x("b", "x");
        assert!(l.closes("b", &b));
    }

    #[test]
    fn a_full_semaphore_makes_its_holders_the_ones_waited_for() {
        let mut l = Lines::new();
        l.s("a", "pool", 1);
        l.x("b", "x");
        let b = l.s("b", "pool", 1);
        assert!(!l.closes("b", &b));
        let a = l.x("a", "x");
        assert!(l.closes("a", &a));
    }
}
