//! The etcd lock store with two nodes on one real three-member etcd
//! (issue 15): what one node does, the other sees.

mod common;

use common::etcd::EtcdCluster;
use common::PATIENCE;
use crossbeam_channel::{Receiver, Sender};
use lockd::store::etcd::{EtcdConfig, EtcdStore};
use lockd::store::{Grant, LockStore, WaitStart};
use std::time::{Duration, Instant};

/// The lease TTL of the nodes of expiry tests: short, so they are quick.
const TTL: Duration = Duration::from_secs(2);

/// A node with the default 5 s lease, which a loaded machine's slow etcd
/// answers do not endanger.
fn node(etcd: &EtcdCluster, name: &str) -> EtcdStore {
    node_ttl(etcd, name, Duration::from_secs(5))
}

fn node_ttl(etcd: &EtcdCluster, name: &str, ttl: Duration) -> EtcdStore {
    let mut config = EtcdConfig::new(etcd.endpoints());
    config.node = name.into();
    config.lease_ttl = ttl;
    EtcdStore::open(&config).expect("node opens")
}

/// A client of a node, with its grant channel.
struct Client {
    id: u64,
    grants: Receiver<Grant>,
}

fn connect(store: &EtcdStore, id: u64, default: &str) -> Client {
    let (tx, rx): (Sender<Grant>, Receiver<Grant>) = crossbeam_channel::bounded(1);
    store
        .connect(id, default.as_bytes().into(), tx)
        .expect("connect");
    Client { id, grants: rx }
}

fn exclusive_grant(client: &Client) -> u64 {
    match client.grants.recv_timeout(PATIENCE) {
        Ok(Grant::Exclusive { token }) => token,
        other => panic!("client {} got no exclusive grant: {other:?}", client.id),
    }
}

#[test]
fn a_lock_taken_through_one_node_is_held_for_the_other() {
    let etcd = EtcdCluster::start();
    let (a, b) = (node(&etcd, "a"), node(&etcd, "b"));
    let a1 = connect(&a, 1, "10.0.0.1:1");
    let b1 = connect(&b, 1, "10.0.0.2:1");
    let first = a.try_lock(a1.id, b"x y").expect("g").expect("granted");
    assert_eq!(
        a.try_lock(a1.id, b"x y").expect("g"),
        Some(first),
        "again: same grant"
    );
    assert_eq!(b.try_lock(b1.id, b"x y").expect("g"), None);
    assert!(b.is_locked(b"x y").expect("i"));
    assert!(
        !b.is_locked(b"x").expect("i"),
        "no name is a prefix of another"
    );
    assert!(
        !b.release(b1.id, b"x y").expect("r"),
        "only the holder releases"
    );
    assert!(a.release(a1.id, b"x y").expect("r"));
    assert!(!b.is_locked(b"x y").expect("i"));
    let second = b.try_lock(b1.id, b"x y").expect("g").expect("granted");
    assert!(
        second > first,
        "tokens grow across nodes: {first} then {second}"
    );
    assert_eq!(b.token(b1.id, b"x y").expect("t"), Some(second));
    assert_eq!(a.token(a1.id, b"x y").expect("t"), None);
}

#[test]
fn waiters_on_two_nodes_are_served_first_come_first_served() {
    let etcd = EtcdCluster::start();
    let (a, b) = (node(&etcd, "a"), node(&etcd, "b"));
    let holder = connect(&a, 1, "a:1");
    let w1 = connect(&b, 2, "b:2");
    let w2 = connect(&a, 3, "a:3");
    let w3 = connect(&b, 4, "b:4");
    let first = a.try_lock(holder.id, b"job").expect("g").expect("granted");
    assert_eq!(
        b.lock_or_queue(w1.id, b"job", true).expect("wg"),
        WaitStart::Queued
    );
    assert_eq!(
        a.lock_or_queue(w2.id, b"job", true).expect("wg"),
        WaitStart::Queued
    );
    assert_eq!(
        b.lock_or_queue(w3.id, b"job", true).expect("wg"),
        WaitStart::Queued
    );
    let line = b.exclusive_locks(b"job").expect("d");
    assert_eq!(line.len(), 1);
    assert_eq!(&*line[0].holder.default, b"a:1");
    assert_eq!(line[0].token, first);
    let waiters: Vec<&[u8]> = line[0].waiters.iter().map(|w| &w[..]).collect();
    assert_eq!(waiters, [&b"b:2"[..], b"a:3", b"b:4"]);

    assert!(a.release(holder.id, b"job").expect("r"));
    let t1 = exclusive_grant(&w1);
    assert!(t1 > first);
    // While w1 holds, the others still wait, in order.
    let line = a.exclusive_locks(b"job").expect("d");
    assert_eq!(&*line[0].holder.default, b"b:2");
    assert_eq!(
        line[0].token, t1,
        "a handed-over grant's token is its stamp"
    );
    assert!(w2.grants.is_empty() && w3.grants.is_empty());
    assert!(b.release(w1.id, b"job").expect("r"));
    let t2 = exclusive_grant(&w2);
    assert!(w3.grants.is_empty());
    assert!(a.release(w2.id, b"job").expect("r"));
    let t3 = exclusive_grant(&w3);
    assert!(first < t1 && t1 < t2 && t2 < t3, "{first} {t1} {t2} {t3}");
    assert_eq!(b.token(w3.id, b"job").expect("t"), Some(t3));
}

/// A node's watch runs only while it has waiters: after a quiet spell
/// longer than its grace period, a new waiter starts it again and still
/// sees the release it waits for, including one made before the stream
/// is up.
#[test]
fn a_waiter_after_a_quiet_spell_is_woken_by_the_release() {
    let etcd = EtcdCluster::start();
    let (a, b) = (node(&etcd, "a"), node(&etcd, "b"));
    let holder = connect(&a, 1, "10.0.0.1:1");
    let waiter = connect(&b, 1, "10.0.0.2:1");
    for round in 0..3 {
        // Nobody waits through b, longer than its grace period.
        std::thread::sleep(lockd::store::etcd::watch::GRACE + Duration::from_millis(300));
        let name = format!("quiet-{round}");
        assert!(a.try_lock(holder.id, name.as_bytes()).expect("g").is_some());
        assert!(matches!(
            b.lock_or_queue(waiter.id, name.as_bytes(), true)
                .expect("wg"),
            WaitStart::Queued
        ));
        if round == 2 {
            // Released before b's stream can be up.
            assert!(a.release(holder.id, name.as_bytes()).expect("r"));
        } else {
            std::thread::sleep(Duration::from_millis(300));
            assert!(a.release(holder.id, name.as_bytes()).expect("r"));
        }
        exclusive_grant(&waiter);
        assert!(b.release(waiter.id, name.as_bytes()).expect("r"));
    }
}

#[test]
fn a_closed_connection_releases_its_locks_for_the_other_node_at_once() {
    let etcd = EtcdCluster::start();
    let (a, b) = (node(&etcd, "a"), node(&etcd, "b"));
    let gone = connect(&a, 1, "a:1");
    let waiter = connect(&b, 1, "b:1");
    a.try_lock(gone.id, b"one").expect("g").expect("granted");
    a.try_lock(gone.id, b"two").expect("g").expect("granted");
    assert_eq!(a.lock_shared(gone.id, b"s").expect("sg"), 1);
    assert_eq!(
        b.lock_or_queue(waiter.id, b"one", true).expect("wg"),
        WaitStart::Queued
    );
    let released = a.disconnect(gone.id);
    assert_eq!((released.exclusive, released.shared), (2, 1));
    // The keys went in one transaction before disconnect returned.
    assert!(!b.is_locked(b"two").expect("i"));
    assert_eq!(b.shared_count(b"s").expect("si"), 0);
    exclusive_grant(&waiter);
}

#[test]
fn a_timed_out_waiter_leaves_the_line_and_the_lock_stays_with_its_holder() {
    let etcd = EtcdCluster::start();
    let (a, b) = (node(&etcd, "a"), node(&etcd, "b"));
    let holder = connect(&a, 1, "a:1");
    let quitter = connect(&b, 1, "b:1");
    let next = connect(&b, 2, "b:2");
    a.try_lock(holder.id, b"q").expect("g").expect("granted");
    assert_eq!(
        b.lock_or_queue(quitter.id, b"q", true).expect("wg"),
        WaitStart::Queued
    );
    assert_eq!(
        b.lock_or_queue(next.id, b"q", true).expect("wg"),
        WaitStart::Queued
    );
    assert!(b.cancel_wait(quitter.id), "still waiting: cancelled");
    assert!(!b.cancel_wait(quitter.id), "nothing left to cancel");
    let line = a.exclusive_locks(b"q").expect("d");
    assert_eq!(line[0].waiters.len(), 1);
    assert_eq!(&*line[0].waiters[0], b"b:2");
    // The one behind the quitter now waits for the holder, not for a gone key.
    assert!(a.release(holder.id, b"q").expect("r"));
    exclusive_grant(&next);
    assert!(quitter.grants.is_empty());
    assert_eq!(b.try_lock(quitter.id, b"q").expect("g"), None);
}

#[test]
fn wg_zero_and_g_never_queue() {
    let etcd = EtcdCluster::start();
    let (a, b) = (node(&etcd, "a"), node(&etcd, "b"));
    let holder = connect(&a, 1, "a:1");
    let other = connect(&b, 1, "b:1");
    a.try_lock(holder.id, b"n").expect("g").expect("granted");
    assert_eq!(
        b.lock_or_queue(other.id, b"n", false).expect("wg 0"),
        WaitStart::Busy
    );
    let line = b.exclusive_locks(b"n").expect("d");
    assert!(line[0].waiters.is_empty(), "a failed try leaves no key");
}

#[test]
fn shared_places_count_across_nodes_and_a_limit_queues_in_order() {
    let etcd = EtcdCluster::start();
    let (a, b) = (node(&etcd, "a"), node(&etcd, "b"));
    let s1 = connect(&a, 1, "a:1");
    let s2 = connect(&b, 2, "b:2");
    let s3 = connect(&a, 3, "a:3");
    let s4 = connect(&b, 4, "b:4");
    let granted = |n| WaitStart::Granted(Grant::Shared { holders: n });
    assert_eq!(
        a.lock_shared_or_queue(s1.id, b"pool", 2, true)
            .expect("wsg"),
        granted(1)
    );
    assert_eq!(
        b.lock_shared_or_queue(s2.id, b"pool", 2, true)
            .expect("wsg"),
        granted(2)
    );
    assert_eq!(
        a.lock_shared_or_queue(s3.id, b"pool", 2, false)
            .expect("wsg 0"),
        WaitStart::Busy
    );
    assert_eq!(
        a.lock_shared_or_queue(s3.id, b"pool", 2, true)
            .expect("wsg"),
        WaitStart::Queued
    );
    // An unlimited sg always gets in.
    assert_eq!(b.lock_shared(s4.id, b"pool").expect("sg"), 3);
    assert_eq!(a.shared_count(b"pool").expect("si"), 3);
    let view = b.shared_locks(b"pool").expect("sd");
    let holders: Vec<&[u8]> = view[0].holders.iter().map(|h| &h.default[..]).collect();
    assert_eq!(holders, [&b"a:1"[..], b"b:2", b"b:4"]);
    assert_eq!(view[0].waiters, vec![(b"a:3"[..].into(), 2)]);
    assert!(b.release_shared(s2.id, b"pool").expect("sr"));
    match s3.grants.recv_timeout(PATIENCE) {
        Ok(Grant::Shared { holders }) => assert!(holders >= 2, "{holders}"),
        other => panic!("no shared grant: {other:?}"),
    }
    assert!(!b.release_shared(s2.id, b"pool").expect("sr"));
    assert_eq!(a.release_all(s3.id).expect("ra").shared, 1);
    assert_eq!(b.shared_count(b"pool").expect("si"), 2);
}

#[test]
fn registered_names_show_on_every_node_latest_last() {
    let etcd = EtcdCluster::start();
    let (a, b) = (node(&etcd, "a"), node(&etcd, "b"));
    let c1 = connect(&a, 1, "a:1");
    let c2 = connect(&b, 1, "b:1");
    a.register(c1.id, b"first").expect("iam");
    b.register(c2.id, b"second").expect("iam");
    a.register(c1.id, b"third").expect("iam");
    let who = b.registered(b"").expect("who");
    let shown: Vec<(&[u8], &[u8])> = who
        .iter()
        .map(|n| (&n.default[..], n.registered.as_deref().unwrap_or(b"")))
        .collect();
    assert_eq!(shown, [(&b"b:1"[..], &b"second"[..]), (b"a:1", b"third")]);
    assert_eq!(b.registered(b"third").expect("who").len(), 1);
    a.try_lock(c1.id, b"r").expect("g").expect("granted");
    let d = b.exclusive_locks(b"").expect("d");
    assert_eq!(d[0].holder.display(), b"third");
    a.register(c1.id, b"").expect("iam");
    assert_eq!(b.registered(b"").expect("who").len(), 1);
    let counts = b.counts().expect("q");
    assert_eq!((counts.locks, counts.shared_locks), (1, 0));
}

#[test]
fn a_node_that_vanishes_keeps_its_locks_until_its_lease_expires() {
    let etcd = EtcdCluster::start();
    let a = node_ttl(&etcd, "a", TTL);
    let b = node(&etcd, "b");
    let holder = connect(&a, 1, "a:1");
    let waiter = connect(&b, 1, "b:1");
    a.try_lock(holder.id, b"v").expect("g").expect("granted");
    assert_eq!(
        b.lock_or_queue(waiter.id, b"v", true).expect("wg"),
        WaitStart::Queued
    );
    // Dropping the store stops its keeper without revoking: as a crash.
    drop(a);
    assert!(
        b.is_locked(b"v").expect("i"),
        "not freed before the lease expires"
    );
    let token = exclusive_grant(&waiter);
    assert!(token > 0);
}

#[test]
fn a_node_cut_off_from_etcd_gives_up_its_clients_before_the_lease_can_expire() {
    let etcd = EtcdCluster::start();
    let a = node_ttl(&etcd, "a", TTL);
    let lost = a.lease_lost();
    let c = connect(&a, 1, "a:1");
    a.try_lock(c.id, b"cut").expect("g").expect("granted");
    for i in 0..common::etcd::MEMBERS {
        etcd.signal(i, libc::SIGSTOP);
    }
    // Every proof the node had when etcd stopped answering.
    let proven = a.vouch_until().expect("serving");
    lost.recv_timeout(PATIENCE).expect("lease declared lost");
    let declared = Instant::now();
    for i in 0..common::etcd::MEMBERS {
        etcd.signal(i, libc::SIGCONT);
    }
    // The node gave up no later than its last proof allowed; the lease
    // itself could not have expired before proof + margin.
    let margin = lockd::store::etcd::lease::margin(TTL);
    assert!(
        declared < proven + margin + Duration::from_millis(1),
        "declared {:?} after the vouched-for instant",
        declared.saturating_duration_since(proven)
    );
    let err = a.token(c.id, b"cut").expect_err("locks are gone");
    assert!(err.locks_lost(), "{err}");
    // Once etcd answers again the node takes a fresh lease and new clients.
    common::poll_until(PATIENCE, || {
        common::check(a.is_serving(), || "no fresh lease".into())
    });
    let fresh = connect(&a, 2, "a:2");
    assert!(a.try_lock(fresh.id, b"again").expect("g").is_some());
}

#[test]
fn shutdown_frees_every_lock_of_the_node_at_once() {
    let etcd = EtcdCluster::start();
    let a = node(&etcd, "a");
    let b = node(&etcd, "b");
    let c = connect(&a, 1, "a:1");
    a.try_lock(c.id, b"s1").expect("g").expect("granted");
    a.lock_shared(c.id, b"s2").expect("sg");
    a.shutdown().expect("revoke");
    assert!(!b.is_locked(b"s1").expect("i"));
    assert_eq!(b.shared_count(b"s2").expect("si"), 0);
    let err = a.connect(9, b"x".to_vec().into(), crossbeam_channel::bounded(1).0);
    assert!(err.is_err(), "a stopped node takes no clients");
}

#[test]
fn the_store_serves_through_the_sessions_seam() {
    let etcd = EtcdCluster::start();
    let (a, b) = (node(&etcd, "a"), node(&etcd, "b"));
    let (a, b): (&dyn LockStore, &dyn LockStore) = (&a, &b);
    let name = &b"seam"[..];
    let g = |store: &dyn LockStore, id| match store.lock_or_queue(id, name, false) {
        Ok(WaitStart::Granted(Grant::Exclusive { token })) => Some(token),
        _ => None,
    };
    let (tx1, _rx1) = crossbeam_channel::bounded(1);
    let (tx2, rx2) = crossbeam_channel::bounded(1);
    a.connect(1, b"a:1"[..].into(), tx1);
    b.connect(2, b"b:2"[..].into(), tx2);
    let token = g(a, 1).expect("granted");
    assert_eq!(g(b, 2), None);
    assert_eq!(
        b.lock_or_queue(2, name, true).expect("wg"),
        WaitStart::Queued
    );
    assert_eq!(b.counts().expect("q").locks, 1);
    assert_eq!(b.counts().expect("q").waiting, 1);
    let released = a.disconnect(1);
    assert_eq!(released.exclusive, 1);
    match rx2.recv_timeout(PATIENCE) {
        Ok(Grant::Exclusive { token: next }) => assert!(next > token),
        other => panic!("no grant: {other:?}"),
    }
    assert_eq!(
        b.exclusive_locks(b"").expect("d")[0].holder.default[..],
        b"b:2"[..]
    );
    assert_eq!(b.release_all(2).expect("ra").exclusive, 1);
    assert!(!a.is_locked(b"seam").expect("i"));
}

/// Issue 15: an outage is an error, never an answer; once the lease is
/// lost, every call of the old clients says their locks are gone.
#[test]
fn through_the_seam_an_etcd_outage_is_an_error_and_grants_nothing() {
    let etcd = EtcdCluster::start();
    let store = node_ttl(&etcd, "a", TTL);
    let lost = store.lease_lost();
    let a: &dyn LockStore = &store;
    let (tx, _rx) = crossbeam_channel::bounded(1);
    a.connect(1, b"a:1"[..].into(), tx);
    let g = |id, name: &[u8]| match a.lock_or_queue(id, name, false) {
        Ok(WaitStart::Granted(Grant::Exclusive { token })) => Some(token),
        _ => None,
    };
    g(1, b"held").expect("granted");
    for i in 0..common::etcd::MEMBERS {
        etcd.signal(i, libc::SIGSTOP);
    }
    assert_eq!(g(1, b"new"), None);
    let i = a.is_locked(b"held");
    assert!(
        matches!(i, Err(ref e) if !e.locks_lost()),
        "no answer is neither yes nor no: {i:?}"
    );
    lost.recv_timeout(PATIENCE).expect("lease lost");
    let t = a.token(1, b"held");
    assert!(
        matches!(t, Err(ref e) if e.locks_lost()),
        "a lost lease vouches for nothing: {t:?}"
    );
    for i in 0..common::etcd::MEMBERS {
        etcd.signal(i, libc::SIGCONT);
    }
    // The old client stays unserved; a new one is served once the node
    // has a fresh lease.
    common::poll_until(PATIENCE, || {
        common::check(store.is_serving(), || "no fresh lease".into())
    });
    assert_eq!(g(1, b"new"), None);
    let (tx, _rx) = crossbeam_channel::bounded(1);
    a.connect(2, b"a:2"[..].into(), tx);
    assert!(g(2, b"held").is_some(), "the old lease's key was revoked");
}

#[test]
fn a_wait_that_closes_a_cycle_across_nodes_is_refused_and_the_other_keeps_waiting() {
    let etcd = EtcdCluster::start();
    let (a, b) = (node(&etcd, "a"), node(&etcd, "b"));
    let c1 = connect(&a, 1, "a:1");
    let c2 = connect(&b, 1, "b:1");
    a.try_lock(c1.id, b"x").expect("g").expect("granted");
    b.try_lock(c2.id, b"y").expect("g").expect("granted");
    assert_eq!(
        a.lock_or_queue(c1.id, b"y", true).expect("wg"),
        WaitStart::Queued
    );
    assert_eq!(
        b.lock_or_queue(c2.id, b"x", true).expect("wg"),
        WaitStart::Deadlock
    );
    let line = a.exclusive_locks(b"x").expect("d");
    assert!(line[0].waiters.is_empty(), "the refused wait left no key");
    // The first waiter is served once the refused one gives up y.
    assert!(b.release(c2.id, b"y").expect("r"));
    exclusive_grant(&c1);
}

/// Two clients close one cycle at the same moment, round after round:
/// exactly one of the two waits is refused each time. Both refused would
/// refuse a wait that closes no cycle; neither would leave both waiting
/// forever. By round, the two are on two nodes or on one (whose checks
/// may share a batch), and the cycle goes through write locks, a full
/// semaphore, a read hold, or two readers of one lock both asking to
/// upgrade.
#[test]
fn two_clients_closing_one_cycle_at_the_same_moment_refuse_exactly_one_wait() {
    const ROUNDS: usize = 24;
    let etcd = EtcdCluster::start();
    let (a, b) = (node(&etcd, "a"), node(&etcd, "b"));
    let c1 = connect(&a, 1, "a:1");
    let on_b = connect(&b, 1, "b:1");
    let on_a = connect(&a, 2, "a:2");
    let start = std::sync::Barrier::new(2);
    let granted = |start: WaitStart| assert!(matches!(start, WaitStart::Granted(_)), "{start:?}");
    let mut refused = [0; 2];
    for round in 0..ROUNDS {
        let (b, c2) = if round % 2 == 0 {
            (&b, &on_b)
        } else {
            (&a, &on_a)
        };
        let kind = round / 2 % 4;
        let x = format!("x{round}").into_bytes();
        let y = if kind == 3 {
            x.clone()
        } else {
            format!("y{round}").into_bytes()
        };
        // c1 holds x and asks for y; c2 holds y and asks for x.
        let (c1_asks, c2_asks): (WaitStart, WaitStart) = std::thread::scope(|s| {
            let one = s.spawn(|| {
                match kind {
                    3 => granted(a.read_or_queue(c1.id, &x, false).expect("wr")),
                    _ => assert!(a.try_lock(c1.id, &x).expect("g").is_some()),
                }
                start.wait();
                match kind {
                    1 => a.lock_shared_or_queue(c1.id, &y, 1, true).expect("wsg"),
                    _ => a.lock_or_queue(c1.id, &y, true).expect("wg"),
                }
            });
            let two = s.spawn(|| {
                match kind {
                    0 => assert!(b.try_lock(c2.id, &y).expect("g").is_some()),
                    1 => granted(b.lock_shared_or_queue(c2.id, &y, 1, false).expect("sg")),
                    _ => granted(b.read_or_queue(c2.id, &y, false).expect("wr")),
                }
                start.wait();
                match kind {
                    2 => b.read_or_queue(c2.id, &x, true).expect("wr"),
                    _ => b.lock_or_queue(c2.id, &x, true).expect("wg"),
                }
            });
            (
                one.join().expect("c1's thread"),
                two.join().expect("c2's thread"),
            )
        });
        // The refused one lets go of what it holds: the other is served.
        let (loser, (winner, winners_node), which) = match (&c1_asks, &c2_asks) {
            (WaitStart::Queued, WaitStart::Deadlock) => ((b, c2), (&c1, &a), 1),
            (WaitStart::Deadlock, WaitStart::Queued) => ((&a, &c1), (c2, b), 0),
            other => panic!("round {round}: exactly one wait must be refused: {other:?}"),
        };
        refused[which] += 1;
        loser.0.release_all(loser.1.id).expect("ra");
        assert!(
            winner.grants.recv_timeout(PATIENCE).is_ok(),
            "round {round}: the wait left is served"
        );
        winners_node.release_all(winner.id).expect("ra");
    }
    println!("refused: c1 {} times, c2 {} times", refused[0], refused[1]);
}

/// Only a waiter that holds a lock writes a waits-for edge (nobody waits
/// for a client that holds nothing, so no cycle goes through it), and the
/// edge goes with its client, not before: a granted wait leaves it stale.
#[test]
fn only_waiters_that_hold_a_lock_write_an_edge_and_their_end_deletes_it() {
    use lockd::store::etcd::client::{Client as Etcd, ClientConfig, Order, Range};
    let etcd = EtcdCluster::start();
    let (a, b) = (node(&etcd, "a"), node(&etcd, "b"));
    let raw = Etcd::new(&ClientConfig {
        endpoints: etcd.endpoints(),
        request_timeout: PATIENCE,
        watch_idle: PATIENCE,
    });
    let edges = || {
        let (_, kvs) = raw
            .range(&Range::prefix(b"/lockd/w/", Order::Key))
            .expect("range");
        kvs.len()
    };
    let holder = connect(&a, 1, "a:1");
    let empty = connect(&b, 2, "b:2");
    let nested = connect(&b, 3, "b:3");
    a.try_lock(holder.id, b"x").expect("g").expect("granted");
    b.try_lock(nested.id, b"mine").expect("g").expect("granted");
    assert_eq!(
        b.lock_or_queue(empty.id, b"x", true).expect("wg"),
        WaitStart::Queued
    );
    assert_eq!(edges(), 0, "a waiter that holds nothing writes no edge");
    assert_eq!(
        b.lock_or_queue(nested.id, b"x", true).expect("wg"),
        WaitStart::Queued
    );
    assert_eq!(edges(), 1, "a waiter that holds a lock writes its edge");
    assert!(a.release(holder.id, b"x").expect("r"));
    exclusive_grant(&empty);
    assert!(b.release(empty.id, b"x").expect("r"));
    exclusive_grant(&nested);
    assert_eq!(edges(), 1, "a stale edge stays until its client ends");
    b.disconnect(nested.id);
    assert_eq!(edges(), 0, "the client's end deleted its edge");
}

/// A ring of clients on two nodes, each holding a lock and all asking at
/// once for the next one's: exactly one wait is refused (the one that
/// would close the ring), whatever batches the checks of one node share;
/// then the ring unwinds from the refused one.
#[test]
fn a_ring_of_waits_started_at_once_refuses_exactly_one() {
    const RING: usize = 8;
    const ROUNDS: usize = 6;
    let etcd = EtcdCluster::start();
    let nodes = [node(&etcd, "a"), node(&etcd, "b")];
    let clients: Vec<Client> = (0..RING)
        .map(|i| connect(&nodes[i % 2], i as u64, &format!("c:{i}")))
        .collect();
    let start = std::sync::Barrier::new(RING);
    for round in 0..ROUNDS {
        let lock = |i: usize| format!("r{round}.{}", i % RING).into_bytes();
        let starts: Vec<WaitStart> = std::thread::scope(|s| {
            let waits: Vec<_> = (0..RING)
                .map(|i| {
                    let (node, client, start) = (&nodes[i % 2], &clients[i], &start);
                    s.spawn(move || {
                        assert!(node.try_lock(client.id, &lock(i)).expect("g").is_some());
                        start.wait();
                        node.lock_or_queue(client.id, &lock(i + 1), true)
                            .expect("wg")
                    })
                })
                .collect();
            waits
                .into_iter()
                .map(|w| w.join().expect("thread"))
                .collect()
        });
        let refused: Vec<usize> = (0..RING)
            .filter(|&i| starts[i] == WaitStart::Deadlock)
            .collect();
        assert_eq!(refused.len(), 1, "round {round}: {starts:?}");
        assert_eq!(
            starts.iter().filter(|s| **s == WaitStart::Queued).count(),
            RING - 1
        );
        // The refused one lets go; the one waiting for its lock gets it,
        // lets go of both, and so on around the ring.
        let mut next = refused[0];
        nodes[next % 2].release_all(clients[next].id).expect("ra");
        for _ in 1..RING {
            next = (next + RING - 1) % RING;
            exclusive_grant(&clients[next]);
            nodes[next % 2].release_all(clients[next].id).expect("ra");
        }
    }
}
