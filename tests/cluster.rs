//! Cluster mode end to end (issue 15): `lockd --cluster` nodes on a real
//! three-member etcd, driven over TCP with the wire protocol. Tests that
//! leave etcd itself alone share one etcd, each under a prefix of its own;
//! those that stop or kill members start their own.

mod common;

use common::etcd::{EtcdCluster, MEMBERS};
use common::proxy::Proxy;
use common::{Conn, Daemon, PATIENCE};
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a test's nodes keep their keys: an etcd and a prefix.
trait Place {
    /// `etcd://...` for `--cluster`.
    fn cluster_url(&self) -> String;
    /// `--cluster-prefix`.
    fn prefix(&self) -> String;
}

impl Place for EtcdCluster {
    fn cluster_url(&self) -> String {
        self.url()
    }
    fn prefix(&self) -> String {
        "/lockd".into()
    }
}

/// A prefix of its own on the etcd this test binary shares.
struct Space {
    etcd: Arc<EtcdCluster>,
    prefix: String,
}

impl Space {
    fn new() -> Space {
        let etcd = common::etcd::shared();
        let prefix =
            String::from_utf8(common::etcd::node_config(&etcd).prefix).expect("utf-8 prefix");
        Space { etcd, prefix }
    }
}

impl Deref for Space {
    type Target = EtcdCluster;
    fn deref(&self) -> &EtcdCluster {
        &self.etcd
    }
}

impl Place for Space {
    fn cluster_url(&self) -> String {
        self.etcd.url()
    }
    fn prefix(&self) -> String {
        self.prefix.clone()
    }
}

/// The lease TTL of the nodes of expiry tests: short, so they are quick.
const TTL_SECS: u64 = 2;

/// A node with the default 5 s lease, which a loaded machine's slow etcd
/// answers do not endanger.
fn lockd_node(place: &impl Place, name: &str) -> Daemon {
    lockd_node_ttl(place, name, 5)
}

fn lockd_node_ttl(place: &impl Place, name: &str, ttl_secs: u64) -> Daemon {
    lockd_node_at(&place.cluster_url(), &place.prefix(), name, ttl_secs)
}

/// A node of the etcd at `url` (`etcd://...`) under `prefix`.
fn lockd_node_at(url: &str, prefix: &str, name: &str, ttl_secs: u64) -> Daemon {
    let ttl = format!("{ttl_secs}s");
    Daemon::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--no-state",
            "--cluster",
            url,
            "--cluster-prefix",
            prefix,
            "--cluster-lease-ttl",
            &ttl,
            "--node-name",
            name,
        ],
        1,
    )
}

fn token_of(reply: &str) -> u64 {
    reply
        .split(' ')
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no token in {reply:?}"))
}

/// Polls `dj` through `conn` until the exclusive lock `name` lists
/// `waiters` waiters.
fn wait_for_waiters(conn: &mut Conn, name: &str, waiters: usize) {
    common::poll_until(PATIENCE, || {
        let dj = conn.cmd("dj");
        let count = dj
            .split(&format!("\"{name}\":"))
            .nth(1)
            .and_then(|rest| rest.split("\"waiters\":[").nth(1))
            .and_then(|rest| rest.split(']').next())
            .map_or(0, |list| list.matches(':').count());
        common::check(count == waiters, || format!("{waiters} waiters in {dj}"))
    });
}

#[test]
fn a_lock_held_through_one_node_is_held_through_the_other_and_tokens_grow() {
    let etcd = Space::new();
    let (a, b) = (lockd_node(&etcd, "a"), lockd_node(&etcd, "b"));
    let mut c1 = Conn::tcp(a.tcp_addr());
    let mut c2 = Conn::tcp(b.tcp_addr());
    assert_eq!(c1.cmd("g x y"), "1 Lock Get Success: x y\n");
    assert_eq!(c2.cmd("g x y"), "0 Lock Get Failure: x y\n");
    assert_eq!(c2.cmd("i x y"), "1 Lock Is Locked: x y\n");
    assert_eq!(c2.cmd("wg 0 x y"), "0 Lock Get Timeout: x y\n");
    let first = token_of(&c1.cmd("t x y"));
    assert_eq!(c2.cmd("d x y"), format!("x y: {}\n", c1.name()));
    assert_eq!(c1.cmd("r x y"), "1 Lock Release Success: x y\n");
    let second = token_of(&c2.cmd("wg 0 x y"));
    assert!(
        second > first,
        "tokens grow across nodes: {first} then {second}"
    );
    assert_eq!(c1.cmd("sg s"), "1 Shared Lock Get Success: s\n");
    assert_eq!(c2.cmd("sg s"), "2 Shared Lock Get Success: s\n");
    assert_eq!(c1.cmd("si s"), "2 Shared Lock Is Locked: s\n");
    assert_eq!(c1.cmd("iam alice"), "1 ok\n");
    assert_eq!(c2.cmd("who"), format!("{}: alice\n", c1.name()));
}

#[test]
fn waiters_through_two_nodes_are_served_in_order_and_a_close_orphans_at_once() {
    let etcd = Space::new();
    let (a, b) = (lockd_node(&etcd, "a"), lockd_node(&etcd, "b"));
    let mut holder = Conn::tcp(a.tcp_addr());
    let mut probe = Conn::tcp(b.tcp_addr());
    assert_eq!(holder.cmd("g job"), "1 Lock Get Success: job\n");
    let mut w1 = Conn::tcp(b.tcp_addr());
    let mut w2 = Conn::tcp(a.tcp_addr());
    let mut w3 = Conn::tcp(b.tcp_addr());
    for (n, w) in [&mut w1, &mut w2, &mut w3].into_iter().enumerate() {
        w.send(b"wg 15000 job\n");
        wait_for_waiters(&mut probe, "job", n + 1);
    }
    drop(holder);
    let reply = String::from_utf8(w1.line()).expect("utf-8");
    assert!(reply.ends_with(" Lock Get Success: job\n"), "{reply}");
    assert_eq!(probe.cmd("i job"), "1 Lock Is Locked: job\n");
    wait_for_waiters(&mut probe, "job", 2);
    assert_eq!(w1.cmd("r job"), "1 Lock Release Success: job\n");
    let t2 = token_of(&String::from_utf8(w2.line()).expect("utf-8"));
    drop(w2);
    let t3 = token_of(&String::from_utf8(w3.line()).expect("utf-8"));
    assert!(token_of(&reply) < t2 && t2 < t3);
    // A close is seen through the other node: no lock left.
    drop(w3);
    common::poll_until(PATIENCE, || {
        let i = probe.cmd("i job");
        common::check(i == "0 Lock Not Locked: job\n", || i)
    });
}

#[test]
fn kill_9_of_a_node_frees_its_locks_once_its_lease_expires() {
    let etcd = Space::new();
    let mut a = lockd_node_ttl(&etcd, "a", TTL_SECS);
    let b = lockd_node_ttl(&etcd, "b", TTL_SECS);
    let mut holder = Conn::tcp(a.tcp_addr());
    assert_eq!(holder.cmd("g k"), "1 Lock Get Success: k\n");
    let mut waiter = Conn::tcp(b.tcp_addr());
    waiter.send(b"wg 15000 k\n");
    let mut probe = Conn::tcp(b.tcp_addr());
    wait_for_waiters(&mut probe, "k", 1);
    a.kill_9();
    // The holder's connection is gone with the process...
    assert!(holder.read_to_end().is_empty());
    // ...and its lock goes to the waiter once the node's lease expires.
    let killed = Instant::now();
    let reply = String::from_utf8(waiter.line()).expect("utf-8");
    assert!(reply.ends_with(" Lock Get Success: k\n"), "{reply}");
    eprintln!(
        "lock of a killed node handed over after {:?}",
        killed.elapsed()
    );
}

#[test]
fn a_node_cut_off_from_etcd_closes_its_clients_and_refuses_new_ones_until_etcd_answers() {
    let etcd = EtcdCluster::start();
    let a = lockd_node_ttl(&etcd, "a", TTL_SECS);
    let mut client = Conn::tcp(a.tcp_addr());
    assert_eq!(client.cmd("g cut"), "1 Lock Get Success: cut\n");
    for i in 0..MEMBERS {
        etcd.signal(i, libc::SIGSTOP);
    }
    // Closed by the node, not by a timeout of ours.
    assert!(client.read_to_end().is_empty());
    let mut refused = Conn::tcp(a.tcp_addr());
    let line = String::from_utf8(refused.read_to_end()).expect("utf-8");
    assert!(line.starts_with("0 Error: no cluster lease"), "{line:?}");
    for i in 0..MEMBERS {
        etcd.signal(i, libc::SIGCONT);
    }
    common::poll_until(PATIENCE, || {
        let mut again = Conn::tcp(a.tcp_addr());
        let reply = again.cmd("ping");
        common::check(reply == "1 pong\n", || reply)
    });
    let mut fresh = Conn::tcp(a.tcp_addr());
    // The old lease's key was revoked (or expired): the lock is free.
    common::poll_until(PATIENCE, || {
        let g = fresh.cmd("g cut");
        common::check(g == "1 Lock Get Success: cut\n", || g)
    });
}

/// The network between a node and etcd goes silent (a proxy holds every
/// byte back; nothing is closed or refused): the node closes its clients
/// while etcd still holds their locks, refuses newcomers with a clear line,
/// and serves again once etcd answers.
#[test]
fn a_node_cut_off_by_the_network_closes_its_clients_before_its_lease_can_expire() {
    let etcd = Space::new();
    let proxies: Vec<Proxy> = etcd.endpoints().iter().map(|e| Proxy::start(e)).collect();
    let through: Vec<String> = proxies.iter().map(Proxy::addr).collect();
    let a = lockd_node_at(
        &format!("etcd://{}", through.join(",")),
        &etcd.prefix(),
        "a",
        TTL_SECS,
    );
    let b = lockd_node(&etcd, "b");
    let mut client = Conn::tcp(a.tcp_addr());
    assert_eq!(client.cmd("g cut"), "1 Lock Get Success: cut\n");
    let mut probe = Conn::tcp(b.tcp_addr());
    assert_eq!(probe.cmd("i cut"), "1 Lock Is Locked: cut\n");
    for proxy in &proxies {
        proxy.cut(true);
    }
    let cut = Instant::now();
    // Closed by the node...
    assert!(client.read_to_end().is_empty());
    let closed = cut.elapsed();
    eprintln!("client closed {closed:?} after the cut (lease TTL {TTL_SECS} s)");
    // ...while etcd still holds the lock for it: nobody else can have it
    // yet, so the client never believed in a lock given away.
    assert_eq!(probe.cmd("i cut"), "1 Lock Is Locked: cut\n");
    assert!(
        closed < Duration::from_secs(TTL_SECS),
        "closed {closed:?} after the cut, lease TTL {TTL_SECS} s"
    );
    let mut refused = Conn::tcp(a.tcp_addr());
    let line = String::from_utf8(refused.read_to_end()).expect("utf-8");
    assert!(line.starts_with("0 Error: no cluster lease"), "{line:?}");
    // The lease then expires: the lock is free for the other node.
    common::poll_until(PATIENCE, || {
        let i = probe.cmd("i cut");
        common::check(i == "0 Lock Not Locked: cut\n", || i)
    });
    for proxy in &proxies {
        proxy.cut(false);
    }
    common::poll_until(PATIENCE, || {
        let mut again = Conn::tcp(a.tcp_addr());
        let reply = again.cmd("ping");
        common::check(reply == "1 pong\n", || reply)
    });
    let mut fresh = Conn::tcp(a.tcp_addr());
    assert_eq!(fresh.cmd("g cut"), "1 Lock Get Success: cut\n");
    assert_eq!(probe.cmd("g cut"), "0 Lock Get Failure: cut\n");
}

#[test]
fn etcd_unreachable_at_start_is_one_line_naming_the_endpoints_and_exit_1() {
    // Port 1 on loopback: nobody listens, the connect is refused at once.
    let mut lockd = Daemon::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--no-state",
        "--cluster",
        "etcd://127.0.0.1:1,127.0.0.2:1",
    ]);
    let status = lockd.wait_exit();
    assert_eq!(status.code(), Some(1), "{:?}", lockd.log);
    let errors: Vec<&String> = lockd.log.iter().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{:?}", lockd.log);
    assert!(
        errors[0].contains("127.0.0.1:1,127.0.0.2:1"),
        "{}",
        errors[0]
    );
    assert!(errors[0].contains("is etcd running"), "{}", errors[0]);
}

#[test]
fn a_bad_cluster_url_is_a_usage_error() {
    for args in [
        &["--cluster", "http://127.0.0.1:2379"][..],
        &["--cluster", "etcd://127.0.0.1"],
        &[
            "--cluster",
            "etcd://127.0.0.1:2379",
            "--cluster-lease-ttl",
            "1",
        ],
        &[
            "--cluster",
            "etcd://127.0.0.1:2379",
            "--cluster-prefix",
            "lockd",
        ],
        &["--cluster", "etcd://127.0.0.1:2379", "--node-name", "a/b"],
        &["--node-name", "a"],
    ] {
        let mut lockd = Daemon::spawn(args);
        let status = lockd.wait_exit();
        assert_eq!(status.code(), Some(2), "{args:?}: {:?}", lockd.log);
        assert_eq!(lockd.log.len(), 1, "{args:?}: {:?}", lockd.log);
    }
}

#[test]
fn nodes_share_one_prefix_and_other_prefixes_are_other_clusters() {
    let etcd = Space::new();
    let a = lockd_node(&etcd, "a");
    let url = etcd.url();
    let other = Daemon::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--no-state",
            "--cluster",
            &url,
            "--cluster-prefix",
            "/elsewhere",
        ],
        1,
    );
    let mut c1 = Conn::tcp(a.tcp_addr());
    let mut c2 = Conn::tcp(other.tcp_addr());
    assert_eq!(c1.cmd("g p"), "1 Lock Get Success: p\n");
    assert_eq!(c2.cmd("g p"), "1 Lock Get Success: p\n");
}

#[test]
fn deadlock_across_nodes_is_refused_at_once() {
    let etcd = Space::new();
    let (a, b) = (lockd_node(&etcd, "a"), lockd_node(&etcd, "b"));
    let mut c1 = Conn::tcp(a.tcp_addr());
    let mut c2 = Conn::tcp(b.tcp_addr());
    let mut probe = Conn::tcp(a.tcp_addr());
    assert_eq!(c1.cmd("g x"), "1 Lock Get Success: x\n");
    assert_eq!(c2.cmd("sg pool"), "1 Shared Lock Get Success: pool\n");
    c1.send(b"wsg 15000 1 pool\n");
    common::poll_until(PATIENCE, || {
        let dj = probe.cmd("dj");
        common::check(dj.contains("\"limit\":1"), || dj)
    });
    assert_eq!(c2.cmd("wg 15000 x"), "0 Lock Get Deadlock: x\n");
    assert_eq!(c2.cmd("sr pool"), "1 Shared Lock Release Success: pool\n");
    assert_eq!(c1.line(), b"1 Shared Lock Get Success: pool\n");
}

/// Two clients on two nodes close one cycle with `wg` at the same moment,
/// round after round: exactly one gets `0 Lock Get Deadlock` at once (the
/// check and the insert of a waits-for edge are one conditional
/// transaction), and the other is served once the refused one lets go.
#[test]
fn two_nodes_closing_one_cycle_at_the_same_moment_refuse_exactly_one() {
    let etcd = Space::new();
    let (a, b) = (lockd_node(&etcd, "a"), lockd_node(&etcd, "b"));
    let mut c1 = Conn::tcp(a.tcp_addr());
    let mut c2 = Conn::tcp(b.tcp_addr());
    // Both waiting would show as two timeouts, after this long.
    let wait = PATIENCE;
    for conn in [&c1, &c2] {
        conn.reader
            .get_ref()
            .set_read_timeout(Some(wait + PATIENCE));
    }
    let start = std::sync::Barrier::new(2);
    for round in 0..8 {
        let (x, y) = (format!("x{round}"), format!("y{round}"));
        // Each holds one lock, then asks for the other's; the refused one
        // releases its own, which serves the other.
        let ask = |conn: &mut Conn, held: &str, wanted: &str| {
            let reply = conn.cmd(&format!("g {held}"));
            assert!(
                reply.ends_with(&format!(" Lock Get Success: {held}\n")),
                "{reply}"
            );
            start.wait();
            let reply = conn.cmd(&format!("wg {} {wanted}", wait.as_millis()));
            if reply == format!("0 Lock Get Deadlock: {wanted}\n") {
                assert_eq!(
                    conn.cmd(&format!("r {held}")),
                    format!("1 Lock Release Success: {held}\n")
                );
            }
            reply
        };
        let (one, two) = std::thread::scope(|s| {
            let one = s.spawn(|| ask(&mut c1, &x, &y));
            let two = s.spawn(|| ask(&mut c2, &y, &x));
            (one.join().expect("c1"), two.join().expect("c2"))
        });
        let refused = |reply: &str| reply.starts_with("0 Lock Get Deadlock: ");
        let served = |reply: &str| reply.contains(" Lock Get Success: ");
        let (winner, held, won) = match (&one[..], &two[..]) {
            (one, two) if served(one) && refused(two) => (&mut c1, &x, &y),
            (one, two) if refused(one) && served(two) => (&mut c2, &y, &x),
            other => panic!("round {round}: one refused, the other served: {other:?}"),
        };
        for name in [held, won] {
            assert_eq!(
                winner.cmd(&format!("r {name}")),
                format!("1 Lock Release Success: {name}\n")
            );
        }
    }
}

/// A line client that reports a closed connection instead of failing.
struct Line(std::io::BufReader<std::net::TcpStream>);

impl Line {
    /// Connects, trying again for a while: a node closing its clients
    /// under a heavily loaded machine may be slow to accept.
    fn connect(addr: std::net::SocketAddr) -> Line {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            match std::net::TcpStream::connect(addr) {
                Ok(stream) => return Line(std::io::BufReader::new(stream)),
                Err(e) if std::time::Instant::now() > deadline => {
                    panic!("cannot connect to the node at {addr}: {e}")
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
    }

    /// The reply to `command`, or `None` once the node closed us.
    fn cmd(&mut self, command: &str) -> Option<String> {
        use std::io::{BufRead, Write};
        self.0
            .get_mut()
            .write_all(format!("{command}\n").as_bytes())
            .ok()?;
        let mut reply = String::new();
        match self.0.read_line(&mut reply) {
            Ok(n) if n > 0 => Some(reply),
            _ => None,
        }
    }
}

#[test]
fn killing_the_etcd_leader_under_load_grants_no_lock_twice() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let mut etcd = EtcdCluster::start();
    // The default TTL: a leader election fits well inside it.
    let nodes = [lockd_node(&etcd, "a"), lockd_node(&etcd, "b")];
    let addrs: Vec<_> = nodes.iter().map(Daemon::tcp_addr).collect();
    let held = Arc::new(AtomicBool::new(false));
    let last_token = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let grants = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let addr = addrs[i % 2];
            let (held, last_token, stop, grants) = (
                held.clone(),
                last_token.clone(),
                stop.clone(),
                grants.clone(),
            );
            std::thread::spawn(move || {
                let mut conn = Line::connect(addr);
                while !stop.load(Ordering::Relaxed) {
                    // None: the node closed us (its lease in doubt), so
                    // whatever we held is gone: start over.
                    let Some(reply) = conn.cmd("wg 1000 hot") else {
                        conn = Line::connect(addr);
                        continue;
                    };
                    if !reply.ends_with(" Lock Get Success: hot\n") {
                        continue;
                    }
                    let token = token_of(&reply);
                    assert!(!held.swap(true, Ordering::SeqCst), "granted twice: {reply}");
                    let before = last_token.swap(token, Ordering::SeqCst);
                    assert!(token > before, "token {token} after {before}");
                    grants.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    held.store(false, Ordering::SeqCst);
                    if conn.cmd("r hot").is_none() {
                        conn = Line::connect(addr);
                    }
                }
            })
        })
        .collect();
    common::poll_until(PATIENCE, || {
        let n = grants.load(Ordering::Relaxed);
        common::check(n >= 20, || format!("{n} grants before the kill"))
    });
    let leader = etcd.leader().expect("a leader");
    etcd.kill(leader);
    let after_kill = grants.load(Ordering::Relaxed);
    common::poll_until(PATIENCE, || {
        let n = grants.load(Ordering::Relaxed);
        common::check(n >= after_kill + 20, || {
            format!("{} grants since the kill", n - after_kill)
        })
    });
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("no lock granted twice");
    }
}

#[test]
fn listings_registry_and_counters_through_a_node_show_the_cluster() {
    let etcd = Space::new();
    let (a, b) = (lockd_node(&etcd, "a"), lockd_node(&etcd, "b"));
    let mut c1 = Conn::tcp(a.tcp_addr());
    let mut c2 = Conn::tcp(b.tcp_addr());
    let (n1, n2) = (c1.name(), c2.name());
    assert_eq!(c1.cmd("g x"), "1 Lock Get Success: x\n");
    assert_eq!(c1.cmd("sg s"), "1 Shared Lock Get Success: s\n");
    assert_eq!(c2.cmd("sg s"), "2 Shared Lock Get Success: s\n");
    assert_eq!(c2.cmd("dump"), format!("map[x:{n1}]\n"));
    assert_eq!(c2.cmd("dump shared"), format!("map[s:[{n1} {n2}]]\n"));
    c2.send(b"sd s\n");
    assert_eq!(
        String::from_utf8(c2.lines(2)).expect("utf-8"),
        format!("s: {n1}\ns: {n2}\n")
    );
    assert_eq!(c2.cmd("me"), format!("1 {n2} {n2}\n"));
    assert_eq!(c2.cmd("iam bob"), "1 ok\n");
    assert_eq!(c2.cmd("me"), format!("1 {n2} bob\n"));
    assert_eq!(c1.cmd("d"), format!("x: {n1}\n"));
    c2.send(b"hello 2\n");
    assert!(c2.line().starts_with(b"2 lockd "));
    c2.send(b"q\n");
    let q = c2.block().concat();
    assert!(q.contains("\nlocks: 1\n"), "{q}");
    assert!(q.contains("\nshared_locks: 1\n"), "{q}");
    assert!(
        q.contains("\nconnections: 1\n"),
        "this node's connections: {q}"
    );
    assert_eq!(c1.cmd("ra"), "2 Released\n");
    assert_eq!(c2.cmd("si s"), "1 Shared Lock Is Locked: s\n");
    assert_eq!(c2.cmd("i x"), "0 Lock Not Locked: x\n");
}

#[test]
fn a_watcher_through_one_node_sees_grants_hand_overs_and_ends_through_the_other() {
    let etcd = Space::new();
    let a = lockd_node(&etcd, "a");
    let mut b = lockd_node_ttl(&etcd, "b", TTL_SECS);
    let mut h = Conn::tcp(b.tcp_addr());
    let nh = h.name();
    assert_eq!(h.cmd("g job"), "1 Lock Get Success: job\n");
    let t1 = token_of(&h.cmd("t job"));
    let mut w = Conn::tcp(a.tcp_addr());
    w.send(b"watch *\n");
    assert_eq!(w.line_string(), "1 Watching: *\n");
    assert_eq!(w.line_string(), format!("held x {t1} {nh} job\n"));
    assert_eq!(w.line_string(), "synced\n");
    // A waiter through node a gets the lock node b's client releases: the
    // watcher sees the release, then the grant with the waiter's token.
    let mut q = Conn::tcp(a.tcp_addr());
    let nq = q.name();
    q.send(b"wg 15000 job\n");
    let mut probe = Conn::tcp(a.tcp_addr());
    wait_for_waiters(&mut probe, "job", 1);
    assert_eq!(h.cmd("r job"), "1 Lock Release Success: job\n");
    let t2 = token_of(&String::from_utf8(q.line()).expect("utf-8"));
    assert_eq!(w.line_string(), format!("released x {t1} {nh} job\n"));
    assert_eq!(w.line_string(), format!("locked x {t2} {nq} job\n"));
    assert_eq!(q.cmd("sg s"), "1 Shared Lock Get Success: s\n");
    assert_eq!(w.line_string(), format!("locked s 1 {nq} s\n"));
    // A connection's end orphans its locks.
    drop(q);
    let mut ends = vec![w.line_string(), w.line_string()];
    ends.sort();
    assert_eq!(
        ends,
        [
            format!("orphaned s 0 {nq} s\n"),
            format!("orphaned x {t2} {nq} job\n")
        ]
    );
    // So does the end of a killed node's lease.
    assert_eq!(h.cmd("g k"), "1 Lock Get Success: k\n");
    let t3 = token_of(&h.cmd("t k"));
    assert_eq!(w.line_string(), format!("locked x {t3} {nh} k\n"));
    b.kill_9();
    assert_eq!(w.line_string(), format!("orphaned x {t3} {nh} k\n"));
}
