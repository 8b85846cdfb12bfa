//! Reader/writer locks on the exclusive namespace (PROTOCOL.md Part 2,
//! issue 11) over real sockets: one test per bullet of the section, whole
//! reply bytes; the line shared by writers and readers under load; and
//! deadlock cycles through read holds and full semaphores (issue 11), with
//! a long line of waiters served in exact arrival order (issue 14).
//!
//! A state another connection must reach is polled with `q` under a
//! deadline; silence is checked by sending `ping` behind the commands.
//!
//! Every test runs twice: against a single server, and against a node of
//! a cluster on a real three-member etcd (issue 15), where readers and
//! writers share the lock's line of keys.

mod common;
#[path = "../bin/common/nofile.rs"]
mod nofile;

use common::etcd::EtcdCluster;
use common::{Conn, Daemon, TestServer};
use std::time::{Duration, Instant};

/// Where a test runs.
enum Server {
    /// A single server, in this process.
    Single(TestServer),
    /// One `lockd --cluster` node (stopped before its etcd).
    Node { node: Daemon, _etcd: EtcdCluster },
}

impl Server {
    fn single() -> Server {
        Server::Single(TestServer::start())
    }

    fn node() -> Server {
        let etcd = EtcdCluster::start();
        let url = etcd.url();
        let args = ["--listen", "127.0.0.1:0", "--no-state", "--cluster", &url];
        Server::Node {
            node: Daemon::start(&args, 1),
            _etcd: etcd,
        }
    }

    fn connect(&self) -> Conn {
        match self {
            Server::Single(server) => server.connect(),
            Server::Node { node, .. } => Conn::tcp(node.tcp_addr()),
        }
    }

    fn connect2(&self) -> Conn {
        let mut conn = self.connect();
        conn.hello2();
        conn
    }

    fn wait_for_stat2(&self, key: &str, value: u64) {
        self.connect2().wait_for_stat(key, value);
    }

    /// Waits until the server counts `n` connections besides a probe.
    fn wait_for_connections(&self, n: usize) {
        match self {
            Server::Single(server) => server.wait_for_connections(n),
            Server::Node { .. } => self.connect().wait_for_stat("connections", n as u64 + 1),
        }
    }

    /// `single` on a single server, `cluster` through a cluster node (where
    /// each grant costs etcd round trips).
    fn scale(&self, single: usize, cluster: usize) -> usize {
        match self {
            Server::Single(_) => single,
            Server::Node { .. } => cluster,
        }
    }
}

/// Each test, once on a single server and once through a cluster node.
macro_rules! on_both {
    ($($test:ident),* $(,)?) => {
        mod single {
            $(#[test]
            fn $test() {
                super::$test(&super::Server::single());
            })*
        }
        mod cluster {
            $(#[test]
            fn $test() {
                super::$test(&super::Server::node());
            })*
        }
    };
}

on_both!(
    readers_share_a_name_and_classic_clients_see_it_held,
    the_empty_name_and_odd_bytes_can_be_read_held,
    a_writer_makes_readers_wait,
    malformed_wr_is_an_error_on_protocol_2_and_silent_on_classic,
    one_line_serves_a_writer_or_every_reader_up_to_the_next_writer,
    a_reader_upgrades_once_it_is_the_only_one_and_two_upgraders_deadlock,
    read_holds_are_orphaned_and_released_by_ra,
    dj_lists_readers_and_their_line,
    extended_q_counts_read_locks_and_the_new_verbs,
    a_two_cycle_through_a_read_hold_is_refused,
    a_three_cycle_through_a_full_semaphore_and_a_read_hold_is_refused,
    chains_through_read_holds_and_semaphores_just_wait,
    two_thousand_waiters_are_served_in_arrival_order_three_times,
    a_long_mixed_line_is_served_in_order,
);

/// The fencing token of a `wg`/`g` success reply for `name`, checking the
/// rest of the reply byte for byte.
fn token(reply: &str, name: &str) -> u64 {
    let (number, rest) = reply
        .split_once(' ')
        .unwrap_or_else(|| panic!("not a status reply: {reply:?}"));
    assert_eq!(rest, format!("Lock Get Success: {name}\n"), "{reply:?}");
    number.parse().expect("numeric token")
}

/// Queues `conn` with `line` and waits until the server counts `waiting`
/// waiters, so the next one cannot overtake it.
fn queue(poll: &mut Conn, conn: &mut Conn, line: &str, waiting: u64) {
    conn.send(format!("{line}\n").as_bytes());
    poll.wait_for_stat("waiting", waiting);
}

// ------------------------------------------------------------- the verbs

fn readers_share_a_name_and_classic_clients_see_it_held(server: &Server) {
    let (mut a, mut b, mut c) = (server.connect(), server.connect(), server.connect2());
    assert_eq!(a.cmd("wr 0 x y"), "1 Read Lock Get Success: x y\n");
    assert_eq!(b.cmd("wr 100 x  y"), "2 Read Lock Get Success: x y\n");
    // Taking it twice does not count twice.
    assert_eq!(a.cmd("wr 0 x y"), "2 Read Lock Get Success: x y\n");
    // While read-held: g fails, wg waits (here: times out), i says locked.
    assert_eq!(c.cmd("g x y"), "0 Lock Get Failure: x y\n");
    assert_eq!(c.cmd("wg 0 x y"), "0 Lock Get Timeout: x y\n");
    assert_eq!(c.cmd("wg 30 x y"), "0 Lock Get Timeout: x y\n");
    assert_eq!(c.cmd("i x y"), "1 Lock Is Locked: x y\n");
    // The shared namespace is another one.
    assert_eq!(c.cmd("si x y"), "0 Shared Lock Not Locked: x y\n");
    // d and dump list writers only; no token for a read hold.
    assert_eq!(c.before_pong("d\n"), "\n");
    assert_eq!(c.cmd("dump"), "map[]\n");
    assert_eq!(a.cmd("t x y"), "0 Lock Not Held: x y\n");
    assert_eq!(c.stat("read_locks"), 1);
    assert_eq!(c.stat("locks"), 0);
    assert_eq!(c.stat("grants"), 0, "a read grant draws no token");
    assert_eq!(c.cmd("rr x y"), "0 Read Lock Release Failure: x y\n");
    assert_eq!(a.cmd("rr x y"), "1 Read Lock Release Success: x y\n");
    assert_eq!(a.cmd("rr x y"), "0 Read Lock Release Failure: x y\n");
    assert_eq!(c.cmd("i x y"), "1 Lock Is Locked: x y\n");
    assert_eq!(b.cmd("rr x y"), "1 Read Lock Release Success: x y\n");
    assert_eq!(c.cmd("i x y"), "0 Lock Not Locked: x y\n");
    assert_eq!(c.stat("read_locks"), 0);
    assert_eq!(c.stat("command_wr"), 3);
    assert_eq!(c.stat("command_rr"), 4);
}

fn the_empty_name_and_odd_bytes_can_be_read_held(server: &Server) {
    let mut a = server.connect();
    assert_eq!(a.cmd("wr 0"), "1 Read Lock Get Success: \n");
    a.send(b"wr 0 n\0\xff\n");
    assert_eq!(a.line(), b"1 Read Lock Get Success: n\0\xff\n");
    assert_eq!(a.cmd("rr"), "1 Read Lock Release Success: \n");
    a.send(b"rr n\0\xff\n");
    assert_eq!(a.line(), b"1 Read Lock Release Success: n\0\xff\n");
}

fn a_writer_makes_readers_wait(server: &Server) {
    let (mut w, mut r, mut poll) = (server.connect(), server.connect(), server.connect2());
    let t = token(&w.cmd("g x"), "x");
    assert_eq!(r.cmd("wr 0 x"), "0 Read Lock Get Timeout: x\n");
    assert_eq!(r.cmd("wr 20 x"), "0 Read Lock Get Timeout: x\n");
    queue(&mut poll, &mut r, "wr 5000 x", 1);
    assert_eq!(w.cmd("r x"), "1 Lock Release Success: x\n");
    assert_eq!(r.line_string(), "1 Read Lock Get Success: x\n");
    assert_eq!(poll.stat("grants"), 1);
    assert_eq!(poll.stat("wait_timeouts"), 2);
    // A writer asking to read its own lock would wait for itself.
    assert_eq!(r.cmd("rr x"), "1 Read Lock Release Success: x\n");
    assert!(token(&w.cmd("wg 0 x"), "x") > t);
    assert_eq!(w.cmd("wr 5000 x"), "0 Lock Get Deadlock: x\n");
    assert_eq!(w.cmd("wr 0 x"), "0 Read Lock Get Timeout: x\n");
}

fn malformed_wr_is_an_error_on_protocol_2_and_silent_on_classic(server: &Server) {
    let mut c = server.connect();
    assert_eq!(c.before_pong("wr x y\nwr\n"), "");
    let mut p = server.connect2();
    assert_eq!(
        p.cmd("wr x y"),
        "0 Error: wr needs a timeout in milliseconds: wr MS NAME\n"
    );
    assert_eq!(p.stat("invalid_commands"), 3);
}

fn one_line_serves_a_writer_or_every_reader_up_to_the_next_writer(server: &Server) {
    let mut poll = server.connect2();
    let mut w0 = server.connect();
    let t0 = token(&w0.cmd("wg 0 L"), "L");
    let mut r1 = server.connect();
    let mut r2 = server.connect();
    let mut w3 = server.connect();
    let mut r4 = server.connect();
    queue(&mut poll, &mut r1, "wr 10000 L", 1);
    queue(&mut poll, &mut r2, "wr 10000 L", 2);
    queue(&mut poll, &mut w3, "wg 10000 L", 3);
    queue(&mut poll, &mut r4, "wr 10000 L", 4);
    // Nobody jumps the line: a newcomer reader waits behind the writer.
    let mut r5 = server.connect();
    assert_eq!(r5.cmd("wr 0 L"), "0 Read Lock Get Timeout: L\n");
    assert_eq!(w0.cmd("r L"), "1 Lock Release Success: L\n");
    // Both readers at the head, at once; the writer behind them waits.
    assert_eq!(r1.line_string(), "1 Read Lock Get Success: L\n");
    assert_eq!(r2.line_string(), "2 Read Lock Get Success: L\n");
    poll.wait_for_stat("waiting", 2);
    assert_eq!(r5.cmd("wr 0 L"), "0 Read Lock Get Timeout: L\n");
    assert_eq!(r1.cmd("rr L"), "1 Read Lock Release Success: L\n");
    // The writer still waits: one reader is left.
    assert_eq!(poll.stat("waiting"), 2);
    assert_eq!(r2.cmd("rr L"), "1 Read Lock Release Success: L\n");
    let t3 = token(&w3.line_string(), "L");
    assert!(t3 > t0, "token {t3} after {t0}");
    assert_eq!(w3.cmd("r L"), "1 Lock Release Success: L\n");
    assert_eq!(r4.line_string(), "1 Read Lock Get Success: L\n");
    assert_eq!(r5.cmd("wr 0 L"), "2 Read Lock Get Success: L\n");
    assert_eq!(poll.stat("waiting"), 0);
    assert_eq!(poll.stat("grants"), 2);
}

fn a_reader_upgrades_once_it_is_the_only_one_and_two_upgraders_deadlock(server: &Server) {
    let mut poll = server.connect2();
    let (mut a, mut b, mut w) = (server.connect(), server.connect(), server.connect());
    // The only reader upgrades at once, even with g.
    assert_eq!(a.cmd("wr 0 x"), "1 Read Lock Get Success: x\n");
    assert_eq!(a.cmd("g x"), "1 Lock Get Success: x\n");
    let t1 = token(&a.cmd("wg 0 x"), "x");
    assert_eq!(a.cmd("rr x"), "0 Read Lock Release Failure: x\n");
    assert_eq!(poll.stat("read_locks"), 0);
    assert_eq!(a.cmd("r x"), "1 Lock Release Success: x\n");
    // With another reader, the upgrader waits (ahead of a waiting writer).
    assert_eq!(a.cmd("wr 0 x"), "1 Read Lock Get Success: x\n");
    assert_eq!(b.cmd("wr 0 x"), "2 Read Lock Get Success: x\n");
    queue(&mut poll, &mut w, "wg 10000 x", 1);
    queue(&mut poll, &mut a, "wg 10000 x", 2);
    assert_eq!(b.cmd("wg 10000 x"), "0 Lock Get Deadlock: x\n");
    assert_eq!(poll.stat("deadlocks"), 1);
    assert_eq!(b.cmd("rr x"), "1 Read Lock Release Success: x\n");
    let t2 = token(&a.line_string(), "x");
    assert!(t2 > t1);
    let na = a.name();
    assert_eq!(poll.before_pong("d x\n"), format!("x: {na}\n\n"));
    assert_eq!(a.cmd("r x"), "1 Lock Release Success: x\n");
    assert!(token(&w.line_string(), "x") > t2);
}

fn read_holds_are_orphaned_and_released_by_ra(server: &Server) {
    let mut a = server.connect();
    assert_eq!(a.cmd("wr 0 x"), "1 Read Lock Get Success: x\n");
    assert_eq!(a.cmd("wr 0 y"), "1 Read Lock Get Success: y\n");
    assert_eq!(a.cmd("g z"), "1 Lock Get Success: z\n");
    assert_eq!(a.cmd("sg s"), "1 Shared Lock Get Success: s\n");
    assert_eq!(a.cmd("ra"), "4 Released\n");
    assert_eq!(a.cmd("wr 0 x"), "1 Read Lock Get Success: x\n");
    assert_eq!(a.cmd("wr 0 y"), "1 Read Lock Get Success: y\n");
    let mut poll = server.connect();
    let mut w = server.connect();
    w.send(b"wg 10000 x\n");
    server.wait_for_stat2("waiting", 1);
    drop(a);
    token(&w.line_string(), "x");
    // Each read hold counts in orphans.
    poll.wait_for_stat("orphans", 2);
    assert_eq!(poll.stat("shared_orphans"), 0);
    assert_eq!(server.connect2().stat("read_locks"), 0);
}

fn dj_lists_readers_and_their_line(server: &Server) {
    let (mut a, mut b, mut c) = (server.connect(), server.connect(), server.connect());
    let (na, nb, nc) = (a.name(), b.name(), c.name());
    assert_eq!(a.cmd("wr 0 x"), "1 Read Lock Get Success: x\n");
    assert_eq!(b.cmd("wr 0 x"), "2 Read Lock Get Success: x\n");
    c.send(b"wg 10000 x\n");
    server.wait_for_stat2("waiting", 1);
    let mut poll = server.connect();
    assert_eq!(
        poll.cmd("dj"),
        format!(
            "{{\"exclusive\":{{}},\"shared\":{{}},\
             \"readers\":{{\"x\":{{\"holders\":[\"{na}\",\"{nb}\"],\"waiters\":[\"{nc}\"]}}}}}}\n"
        )
    );
    drop(a);
    drop(b);
    let t = token(&c.line_string(), "x");
    assert_eq!(
        poll.cmd("dj"),
        format!(
            "{{\"exclusive\":{{\"x\":{{\"holder\":\"{nc}\",\"name\":null,\"token\":{t},\
             \"waiters\":[]}}}},\"shared\":{{}}}}\n"
        )
    );
}

fn extended_q_counts_read_locks_and_the_new_verbs(server: &Server) {
    let mut a = server.connect2();
    a.send(b"q\n");
    let keys: Vec<String> = a
        .block()
        .into_iter()
        .map(|l| l.split_once(": ").expect("key: value").0.to_string())
        .collect();
    for key in ["command_rr", "command_wr", "read_locks"] {
        assert!(keys.iter().any(|k| k == key), "missing {key}: {keys:?}");
    }
    // A classic q keeps its 19 keys.
    let mut c = server.connect();
    c.send(b"q\n");
    assert_eq!(c.read_stats_block().lines().count(), 19);
}

// -------------------------------------------------------------- deadlocks

fn a_two_cycle_through_a_read_hold_is_refused(server: &Server) {
    let (mut a, mut b) = (server.connect(), server.connect());
    assert_eq!(a.cmd("wr 0 x"), "1 Read Lock Get Success: x\n");
    assert_eq!(b.cmd("g y"), "1 Lock Get Success: y\n");
    a.send(b"wg 10000 y\n");
    server.wait_for_stat2("waiting", 1);
    assert_eq!(b.cmd("wg 10000 x"), "0 Lock Get Deadlock: x\n");
    assert_eq!(b.cmd("r y"), "1 Lock Release Success: y\n");
    token(&a.line_string(), "y");
}

fn a_three_cycle_through_a_full_semaphore_and_a_read_hold_is_refused(server: &Server) {
    let (mut a, mut b, mut c) = (server.connect(), server.connect(), server.connect());
    // a reads x and waits for the semaphore s, full with b.
    assert_eq!(a.cmd("wr 0 x"), "1 Read Lock Get Success: x\n");
    assert_eq!(b.cmd("wsg 0 1 s"), "1 Shared Lock Get Success: s\n");
    a.send(b"wsg 10000 1 s\n");
    server.wait_for_stat2("waiting", 1);
    // b waits for y, held by c.
    assert_eq!(c.cmd("g y"), "1 Lock Get Success: y\n");
    b.send(b"wr 10000 y\n");
    server.wait_for_stat2("waiting", 2);
    // c asking to write x closes c -> a -> b -> c.
    assert_eq!(c.cmd("wg 10000 x"), "0 Lock Get Deadlock: x\n");
    // c asking for the semaphore closes c -> b -> c.
    assert_eq!(c.cmd("wsg 10000 1 s"), "0 Shared Lock Get Deadlock: s\n");
    assert_eq!(server.connect2().stat("deadlocks"), 2);
    // A reader of x is no cycle (no writer, nobody in x's line): granted.
    assert_eq!(c.cmd("wr 10000 x"), "2 Read Lock Get Success: x\n");
    assert_eq!(c.cmd("ra"), "2 Released\n");
    assert_eq!(b.line_string(), "1 Read Lock Get Success: y\n");
    assert_eq!(b.cmd("ra"), "2 Released\n");
    assert_eq!(a.line_string(), "1 Shared Lock Get Success: s\n");
}

fn chains_through_read_holds_and_semaphores_just_wait(server: &Server) {
    let (mut a, mut b, mut c) = (server.connect(), server.connect(), server.connect());
    // c -> b (semaphore) -> a (read hold): a chain, not a cycle.
    assert_eq!(a.cmd("wr 0 x"), "1 Read Lock Get Success: x\n");
    assert_eq!(b.cmd("wsg 0 1 s"), "1 Shared Lock Get Success: s\n");
    b.send(b"wg 10000 x\n");
    server.wait_for_stat2("waiting", 1);
    c.send(b"wsg 10000 1 s\n");
    server.wait_for_stat2("waiting", 2);
    assert_eq!(server.connect2().stat("deadlocks"), 0);
    assert_eq!(a.cmd("rr x"), "1 Read Lock Release Success: x\n");
    token(&b.line_string(), "x");
    assert_eq!(b.cmd("sr s"), "1 Shared Lock Release Success: s\n");
    assert_eq!(c.line_string(), "1 Shared Lock Get Success: s\n");
}

// -------------------------------------------------------------- under load

/// Waiters to queue on one lock: 2,000, or fewer when this process may not
/// open two descriptors each (its own end and the embedded server's).
fn waiters_allowed(wanted: usize) -> usize {
    const HEADROOM: u64 = 200;
    let limit = nofile::raise_nofile_limit();
    let fit = usize::try_from(limit.saturating_sub(HEADROOM) / 2).unwrap_or(usize::MAX);
    let n = fit.min(wanted);
    println!("open-files limit {limit}: {n} of {wanted} waiters");
    n
}

/// Polls `waiting` more tightly than [`Conn::wait_for_stat`] (6,000 polls
/// at 5 ms would dominate the test), with the same patience.
fn until_waiting(poll: &mut Conn, n: u64) {
    let deadline = Instant::now() + common::PATIENCE;
    while poll.stat("waiting") != n {
        assert!(Instant::now() < deadline, "waiting never reached {n}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Issue 14: thousands of waiters on one lock, each handed the lock in
/// turn, get it in exactly the order they arrived, each with a token above
/// the one before. Three rounds on the same connections (40 waiters
/// through a cluster node, where each hand-over is etcd round trips).
fn two_thousand_waiters_are_served_in_arrival_order_three_times(server: &Server) {
    let n = waiters_allowed(server.scale(2000, 40));
    let mut poll = server.connect2();
    let mut holder = server.connect();
    let mut waiters: Vec<Conn> = Vec::with_capacity(n);
    for k in 0..n {
        waiters.push(server.connect());
        if k % 64 == 63 {
            // Let accept catch up: a full listen backlog makes a connect
            // wait for a SYN retransmit (a second or more).
            server.wait_for_connections(k + 3);
        }
    }
    let mut last = 0;
    for round in 0..3 {
        last = last.max(token(&holder.cmd("wg 0 L"), "L"));
        for (k, w) in waiters.iter_mut().enumerate() {
            w.send(b"wg 60000 L\n");
            // Queued once `waiting` counts it: the next cannot overtake.
            until_waiting(&mut poll, k as u64 + 1);
        }
        assert_eq!(holder.cmd("r L"), "1 Lock Release Success: L\n");
        for (i, w) in waiters.iter_mut().enumerate() {
            // Had anyone but waiter i been handed the lock, waiter i would
            // hear nothing and this read would time out.
            let got = token(&w.line_string(), "L");
            assert!(
                got > last,
                "round {round}, waiter {i}: token {got} after {last}"
            );
            last = got;
            assert_eq!(w.cmd("r L"), "1 Lock Release Success: L\n");
        }
        assert_eq!(poll.stat("waiting"), 0);
        assert_eq!(poll.stat("locks"), 0);
    }
}

/// Readers and writers mixed in one long line: each writer alone, each run
/// of readers together, in arrival order.
fn a_long_mixed_line_is_served_in_order(server: &Server) {
    let mut poll = server.connect2();
    let mut holder = server.connect();
    token(&holder.cmd("g M"), "M");
    // Pattern of 40: runs of 1, 2 and 3 readers between writers.
    let kinds: Vec<bool> = (0..40)
        .map(|i| [0, 2, 5, 6, 9].contains(&(i % 10)))
        .collect();
    let mut conns: Vec<Conn> = Vec::new();
    for (k, &writer) in kinds.iter().enumerate() {
        let mut c = server.connect();
        let line = if writer { "wg 30000 M" } else { "wr 30000 M" };
        queue(&mut poll, &mut c, line, k as u64 + 1);
        conns.push(c);
    }
    assert_eq!(holder.cmd("r M"), "1 Lock Release Success: M\n");
    let mut i = 0;
    while i < kinds.len() {
        if kinds[i] {
            token(&conns[i].line_string(), "M");
            assert_eq!(conns[i].cmd("r M"), "1 Lock Release Success: M\n");
            i += 1;
            continue;
        }
        let run_end = (i..kinds.len()).find(|&j| kinds[j]).unwrap_or(kinds.len());
        for (n, c) in conns[i..run_end].iter_mut().enumerate() {
            assert_eq!(
                c.line_string(),
                format!("{} Read Lock Get Success: M\n", n + 1)
            );
        }
        for c in &mut conns[i..run_end] {
            assert_eq!(c.cmd("rr M"), "1 Read Lock Release Success: M\n");
        }
        i = run_end;
    }
    assert_eq!(poll.stat("waiting"), 0);
    assert_eq!(poll.stat("read_locks"), 0);
}
