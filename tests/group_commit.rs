//! Group commit keeps each command's meaning (issue 15): many clients of
//! one node, whose commands share etcd transactions, on overlapping and
//! distinct names, against a real three-member etcd.

mod common;

use common::etcd::EtcdCluster;
use common::PATIENCE;
use crossbeam_channel::Receiver;
use lockd::store::etcd::{EtcdConfig, EtcdStore};
use lockd::store::{Grant, LockStore, WaitStart};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Barrier;
use std::thread;

fn node(etcd: &EtcdCluster, name: &str) -> EtcdStore {
    let mut config = EtcdConfig::new(etcd.endpoints());
    config.node = name.into();
    EtcdStore::open(&config).expect("node opens")
}

fn connect(store: &EtcdStore, id: u64) -> Receiver<Grant> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    store
        .connect(id, format!("c{id}").into_bytes().into(), tx)
        .expect("connect");
    rx
}

/// What the clients saw, per name: who holds it now and the last token.
#[derive(Default)]
struct Books {
    holder: HashMap<Vec<u8>, u64>,
    token: HashMap<Vec<u8>, u64>,
    /// Every token granted: tokens are unique across names too.
    all: HashSet<u64>,
}

impl Books {
    /// A grant of `name` to `id`: nobody else may hold it, and its token
    /// must be above every earlier grant's of that name, and unique.
    fn granted(&mut self, id: u64, name: &[u8], token: u64) {
        if let Some(other) = self.holder.insert(name.to_vec(), id) {
            panic!(
                "{} granted to {id} while {other} holds it",
                String::from_utf8_lossy(name)
            );
        }
        assert!(self.all.insert(token), "token {token} granted twice");
        let last = self.token.insert(name.to_vec(), token).unwrap_or(0);
        assert!(
            token > last,
            "{}: token {token} after {last}",
            String::from_utf8_lossy(name)
        );
    }

    fn released(&mut self, name: &[u8]) {
        self.holder.remove(name);
    }
}

#[test]
fn many_clients_of_one_node_on_shared_and_own_names_never_hold_a_lock_twice() {
    let etcd = EtcdCluster::start();
    let store = node(&etcd, "gc");
    const CLIENTS: u64 = 24;
    const ROUNDS: u64 = 12;
    let books = Mutex::new(Books::default());
    let start = Barrier::new(CLIENTS as usize);
    thread::scope(|scope| {
        for id in 1..=CLIENTS {
            let (store, books, start) = (&store, &books, &start);
            scope.spawn(move || {
                let grants = connect(store, id);
                start.wait();
                for round in 0..ROUNDS {
                    // Overlapping names (three shared by all) and one of
                    // the client's own, by `g` and by a queuing `wg`.
                    let name = match (id + round) % 4 {
                        0 => format!("own-{id}"),
                        k => format!("common-{k}"),
                    }
                    .into_bytes();
                    let token = if round % 2 == 0 {
                        match store.try_lock(id, &name).expect("g") {
                            Some(token) => token,
                            None => continue,
                        }
                    } else {
                        match store.lock_or_queue(id, &name, true).expect("wg") {
                            WaitStart::Granted(Grant::Exclusive { token }) => token,
                            WaitStart::Queued => match grants.recv_timeout(PATIENCE) {
                                Ok(Grant::Exclusive { token }) => token,
                                other => panic!("client {id} waited in vain: {other:?}"),
                            },
                            other => panic!("wg: {other:?}"),
                        }
                    };
                    books.lock().granted(id, &name, token);
                    assert_eq!(store.token(id, &name).expect("t"), Some(token));
                    // A listing reads the token back from etcd: the slot
                    // a batch gave the grant is in the key's value.
                    let listed: Vec<u64> = (store.exclusive_locks(&name).expect("dj"))
                        .iter()
                        .map(|view| view.token)
                        .collect();
                    assert_eq!(listed, [token], "the listed token of a held lock");
                    books.lock().released(&name);
                    assert!(store.release(id, &name).expect("r"));
                }
                store.disconnect(id);
            });
        }
    });
    let stats = store.commit_stats();
    assert!(
        stats.largest > 1 && stats.commands > stats.transactions,
        "the clients' commands shared transactions: {stats:?}"
    );
    for k in 1..4 {
        assert!(!store
            .is_locked(format!("common-{k}").as_bytes())
            .expect("i"));
    }
}

#[test]
fn waiters_queued_together_are_served_in_line_order_with_growing_tokens() {
    let etcd = EtcdCluster::start();
    let (a, b) = (node(&etcd, "a"), node(&etcd, "b"));
    let _holder_grants = connect(&a, 1000);
    let first = a.try_lock(1000, b"line").expect("g").expect("granted");
    // Waiters on both nodes queue at once, while other clients of the
    // nodes take and release names of their own, in the same batches.
    const WAITERS: u64 = 12;
    let grants: Vec<(u64, &EtcdStore, Receiver<Grant>)> = (1..=WAITERS)
        .map(|id| {
            let store = if id % 2 == 0 { &a } else { &b };
            (id, store, connect(store, id))
        })
        .collect();
    for id in 100..108 {
        connect(if id % 2 == 0 { &a } else { &b }, id);
    }
    let start = Barrier::new(WAITERS as usize + 8);
    thread::scope(|scope| {
        for (id, store, _) in &grants {
            let (id, store, start) = (*id, *store, &start);
            scope.spawn(move || {
                start.wait();
                assert_eq!(
                    store.lock_or_queue(id, b"line", true).expect("wg"),
                    WaitStart::Queued
                );
            });
        }
        for id in 100..108u64 {
            let (store, start) = (if id % 2 == 0 { &a } else { &b }, &start);
            scope.spawn(move || {
                start.wait();
                for round in 0..4 {
                    let name = format!("busy-{id}-{round}").into_bytes();
                    store.try_lock(id, &name).expect("g").expect("free");
                    assert!(store.release(id, &name).expect("r"));
                }
            });
        }
    });
    let line = a.exclusive_locks(b"line").expect("d");
    let order: Vec<Vec<u8>> = line[0].waiters.iter().map(|w| w.to_vec()).collect();
    assert_eq!(order.len(), WAITERS as usize);

    let served = Mutex::new(Vec::new());
    let tokens = Mutex::new(vec![first]);
    thread::scope(|scope| {
        for (id, store, rx) in &grants {
            let (served, tokens) = (&served, &tokens);
            scope.spawn(move || {
                let token = match rx.recv_timeout(PATIENCE) {
                    Ok(Grant::Exclusive { token }) => token,
                    other => panic!("waiter {id} got no grant: {other:?}"),
                };
                served.lock().push(format!("c{id}").into_bytes());
                tokens.lock().push(token);
                assert!(store.release(*id, b"line").expect("r"));
            });
        }
        assert!(a.release(1000, b"line").expect("r"));
    });
    assert_eq!(
        served.into_inner(),
        order,
        "served first come, first served"
    );
    let tokens = tokens.into_inner();
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens grow along the line: {tokens:?}"
    );
}
