//! Part 2 of PROTOCOL.md over real sockets (issue 5): `hello 2` framing,
//! waiting in line, deadlocks, fencing tokens, liveness, `dj`, auth, limits.
//!
//! No test sleeps and hopes: a state another connection must reach is
//! polled with `q` (`TestServer::wait_for_stat2`) under a deadline, and
//! silence is checked by sending `ping` behind the commands
//! (`Conn::before_pong`).

mod common;

use common::{Conn, Daemon, Kind, TempDir, TestServer};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

on_both!(
    hello_2_names_the_protocol_and_version,
    multi_line_replies_end_with_an_empty_line,
    disabled_multi_line_replies_are_terminated,
    unknown_verbs_and_bad_arguments_get_errors_on_protocol_2,
    extended_q_has_every_key_sorted,
    classic_connections_see_part_1_replies_only,
    fifty_waiters_are_served_in_queue_order,
    release_hands_the_lock_to_the_next_waiter,
    an_orphaned_lock_goes_to_the_first_waiter,
    waits_time_out_and_are_counted,
    a_waiter_that_closes_after_earlier_waits_is_skipped,
    pipelined_commands_wait_behind_a_wait,
    wsg_newcomers_queue_behind_waiters,
    a_two_connection_cycle_is_refused,
    a_five_connection_cycle_is_refused,
    a_chain_without_a_cycle_just_waits,
    tokens_strictly_increase_across_grants,
    ra_releases_everything_and_hands_over,
    ping_pongs_on_any_connection,
    ttl_lease_is_renewed_by_traffic_and_expires_in_silence,
    a_waiting_connection_does_not_expire,
    dj_dumps_json,
    auth_gates_every_recognised_verb,
    a_line_too_long_is_an_error_on_protocol_2,
    an_idle_connection_is_closed_and_orphans_its_locks,
    past_the_connection_limit_a_newcomer_is_told_and_closed,
);

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A read timeout for waiting on a server-side timer: a hang detector far
/// above the timer, so a loaded machine cannot make the test flake.
const LONG_READ: Duration = Duration::from_secs(30);

/// The fencing token of a `wg` success reply for `name` (also checks the
/// rest of the reply byte for byte).
/// The token in a `t NAME` reply.
fn token_in_t(reply: &str, name: &str) -> u64 {
    let (number, rest) = reply
        .split_once(' ')
        .unwrap_or_else(|| panic!("not a status reply: {reply:?}"));
    assert_eq!(rest, format!("Lock Token: {name}\n"), "{reply:?}");
    number.parse().expect("numeric token")
}

/// The tokens of one server, in grant order: exactly 1, 2, ... on a
/// single server; in cluster mode they are etcd revisions, only growing.
struct Tokens {
    kind: Kind,
    last: u64,
}

impl Tokens {
    fn new(kind: Kind) -> Tokens {
        Tokens { kind, last: 0 }
    }

    /// Checks the next token: `single` is its value on a single server.
    #[track_caller]
    fn next(&mut self, got: u64, single: u64) -> u64 {
        if self.kind.is_cluster() {
            assert!(got > self.last, "token {got} after {}", self.last);
        } else {
            assert_eq!(got, single);
        }
        self.last = got;
        got
    }
}

fn token(reply: &str, name: &str) -> u64 {
    let (number, rest) = reply
        .split_once(' ')
        .unwrap_or_else(|| panic!("not a status reply: {reply:?}"));
    assert_eq!(rest, format!("Lock Get Success: {name}\n"), "{reply:?}");
    let token: u64 = number.parse().expect("numeric token");
    assert!(token >= 1, "tokens start at 1: {reply:?}");
    token
}

/// The token `t NAME` reports for a held lock.
fn held_token(conn: &mut Conn, name: &str) -> u64 {
    let reply = conn.cmd(&format!("t {name}"));
    let (number, rest) = reply.split_once(' ').expect("status reply");
    assert_eq!(rest, format!("Lock Token: {name}\n"), "{reply:?}");
    number.parse().expect("numeric token")
}

// ---------------------------------------------------------------- framing

fn hello_2_names_the_protocol_and_version(kind: Kind) {
    let server = kind.start();
    let mut conn = server.connect();
    assert_eq!(conn.cmd("hello 2"), format!("2 lockd {VERSION}\n"));
    // Asking again, or for a later version, still says 2.
    assert_eq!(conn.cmd("hello 7"), format!("2 lockd {VERSION}\n"));
}

fn multi_line_replies_end_with_an_empty_line(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect2();
    let me = a.name();
    // Empty replies are still terminated.
    a.send(b"d\n");
    assert_eq!(a.block(), Vec::<String>::new());
    a.send(b"sd\n");
    assert_eq!(a.block(), Vec::<String>::new());
    a.send(b"who\n");
    assert_eq!(a.block(), Vec::<String>::new());
    assert_eq!(a.cmd("g x"), "1 Lock Get Success: x\n");
    assert_eq!(a.cmd("sg y"), "1 Shared Lock Get Success: y\n");
    assert_eq!(a.cmd("iam alice"), "1 ok\n");
    a.send(b"d\n");
    assert_eq!(a.block(), vec!["x: alice\n".to_string()]);
    a.send(b"d x\n");
    assert_eq!(a.block(), vec!["x: alice\n".to_string()]);
    a.send(b"d nope\n");
    assert_eq!(a.block(), Vec::<String>::new());
    a.send(b"sd\n");
    assert_eq!(a.block(), vec!["y: alice\n".to_string()]);
    a.send(b"who\n");
    assert_eq!(a.block(), vec![format!("{me}: alice\n")]);
    a.send(b"q\n");
    let q = a.block();
    assert!(q.iter().any(|l| l == "locks: 1\n"), "{q:?}");
    // Pipelined blocks stay in step.
    assert_eq!(a.before_pong("d\nsd\n"), "x: alice\n\ny: alice\n\n");
}

fn disabled_multi_line_replies_are_terminated(kind: Kind) {
    let server = kind.with_config(|c| {
        c.dump = false;
        c.registry = false;
    });
    let mut a = server.connect2();
    for verb in ["d", "sd", "who", "d x"] {
        a.send(format!("{verb}\n").as_bytes());
        assert_eq!(a.block(), vec!["0 disabled\n".to_string()], "{verb}");
    }
    // Single-line `0 disabled` replies get no terminator.
    assert_eq!(a.before_pong("dump\ndj\niam x\n"), "0 disabled\n".repeat(3));
}

fn unknown_verbs_and_bad_arguments_get_errors_on_protocol_2(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect2();
    assert_eq!(a.cmd("xyz"), "0 Error: unknown command\n");
    assert_eq!(a.cmd("g\tfoo"), "0 Error: unknown command\n");
    assert_eq!(
        a.cmd("wg x y"),
        "0 Error: wg needs a timeout in milliseconds: wg MS NAME\n"
    );
    assert_eq!(
        a.cmd("wsg 10 x y"),
        "0 Error: wsg needs a limit (0 for none): wsg MS LIMIT NAME\n"
    );
    assert_eq!(
        a.cmd("wsg -1 1 y"),
        "0 Error: wsg needs a timeout in milliseconds: wsg MS LIMIT NAME\n"
    );
    assert_eq!(
        a.cmd("ttl soon"),
        "0 Error: ttl needs a number of seconds (0 turns the lease off): ttl SECONDS\n"
    );
    assert_eq!(
        a.cmd("hello two"),
        "0 Error: hello needs a protocol version: hello 2\n"
    );
    // Every one of them counts as invalid, and none took a lock.
    assert_eq!(a.stat("invalid_commands"), 7);
    assert_eq!(a.stat("locks"), 0);
    assert_eq!(a.stat("waiting"), 0);
}

fn extended_q_has_every_key_sorted(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect2();
    a.send(b"q\n");
    let lines = a.block();
    let keys: Vec<&str> = lines
        .iter()
        .map(|l| l.split_once(": ").expect("key: value").0)
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "keys sorted bytewise");
    sorted.dedup();
    assert_eq!(keys.len(), sorted.len(), "no duplicate key");
    let verbs = [
        "auth", "d", "dj", "dump", "g", "hello", "i", "iam", "me", "ping", "q", "r", "ra", "sd",
        "sg", "si", "sr", "t", "ttl", "who", "wg", "wsg",
    ];
    for verb in verbs {
        let key = format!("command_{verb}");
        assert!(keys.contains(&key.as_str()), "missing {key}: {keys:?}");
    }
    for key in [
        "connections",
        "invalid_commands",
        "locks",
        "orphans",
        "shared_locks",
        "shared_orphans",
        "waiting",
        "wait_timeouts",
        "deadlocks",
        "grants",
        "uptime_seconds",
        "max_connections",
        "rejected_connections",
        "lines_too_long",
        "ttl_expirations",
    ] {
        assert!(keys.contains(&key), "missing {key}: {keys:?}");
    }
    assert!(lines.contains(&"max_connections: 10000\n".to_string()));
    // `hello` itself was counted; the `q` being answered was not.
    assert!(lines.contains(&"command_hello: 1\n".to_string()));
    assert!(lines.contains(&"command_q: 0\n".to_string()));
}

fn classic_connections_see_part_1_replies_only(kind: Kind) {
    let server = kind.start();
    let mut c = server.connect();
    // Unknown verbs, malformed arguments, over-long hello: silence; empty
    // multi-line replies: nothing at all, no terminator.
    assert_eq!(c.before_pong("xyz\nwg x y\nhello two\nd\nsd\nwho\n"), "");
    // Classic q: exactly the 19 keys and no terminator.
    c.send(b"q\n");
    let q = c.read_stats_block();
    assert_eq!(q.lines().count(), 19, "{q}");
    assert!(q.contains("invalid_commands: 3\n"), "{q}");
    assert_eq!(c.before_pong(""), "");
    // New verbs work on a classic connection too, with their own replies.
    assert_eq!(c.cmd("g a"), "1 Lock Get Success: a\n");
    assert_eq!(c.cmd("g a"), "1 Lock Get Success: a\n");
    let t = held_token(&mut c, "a");
    assert_eq!(token(&c.cmd("wg 0 a"), "a"), t);
    let me = c.name();
    assert_eq!(c.before_pong("d\n"), format!("a: {me}\n"));
    assert_eq!(c.cmd("ra"), "1 Released\n");
}

// ------------------------------------------------------- waiting in line

fn fifty_waiters_are_served_in_queue_order(kind: Kind) {
    let server = kind.start();
    let mut poll = server.connect2();
    let mut holder = server.connect();
    let first = token(&holder.cmd("wg 0 L"), "L");
    let mut waiters: Vec<Conn> = Vec::new();
    for k in 1..=50u64 {
        let mut w = server.connect();
        w.send(b"wg 10000 L\n");
        // The server has queued it once `waiting` counts it: the next
        // waiter's wg cannot overtake.
        poll.wait_for_stat("waiting", k);
        waiters.push(w);
    }
    assert_eq!(holder.cmd("r L"), "1 Lock Release Success: L\n");
    let mut last = first;
    for (i, w) in waiters.iter_mut().enumerate() {
        // If anyone but waiter i had been handed the lock, waiter i would
        // hear nothing and this read would time out.
        let got = token(&w.line_string(), "L");
        assert!(got > last, "waiter {i}: token {got} after {last}");
        last = got;
        assert_eq!(w.cmd("r L"), "1 Lock Release Success: L\n");
    }
    assert_eq!(poll.stat("waiting"), 0);
    assert_eq!(poll.stat("locks"), 0);
    assert_eq!(poll.stat("grants"), 51);
}

fn release_hands_the_lock_to_the_next_waiter(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    let mut other = server.connect();
    let t1 = token(&a.cmd("wg 0 L"), "L");
    b.send(b"wg 5000 L\n");
    server.wait_for_stat2("waiting", 1);
    // Release and a third party's `g` race; the waiter must win, always.
    a.send(b"r L\n");
    assert_eq!(other.cmd("g L"), "0 Lock Get Failure: L\n");
    assert_eq!(a.line_string(), "1 Lock Release Success: L\n");
    let t2 = token(&b.line_string(), "L");
    assert!(t2 > t1);
    assert_eq!(held_token(&mut b, "L"), t2);
    assert_eq!(a.cmd("t L"), "0 Lock Not Held: L\n");
}

fn an_orphaned_lock_goes_to_the_first_waiter(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    let mut c = server.connect();
    let t1 = token(&a.cmd("wg 0 L"), "L");
    b.send(b"wg 5000 L\n");
    server.wait_for_stat2("waiting", 1);
    c.send(b"wg 5000 L\n");
    server.wait_for_stat2("waiting", 2);
    drop(a);
    let t2 = token(&b.line_string(), "L");
    assert!(t2 > t1, "{t2} > {t1}");
    server.wait_for_stat2("orphans", 1);
    // B leaves too: its lock goes on to C.
    b.shutdown_write();
    let t3 = token(&c.line_string(), "L");
    assert!(t3 > t2, "{t3} > {t2}");
    server.wait_for_stat2("orphans", 2);
    server.wait_for_stat2("waiting", 0);
}

fn waits_time_out_and_are_counted(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect2();
    assert_eq!(a.cmd("g L"), "1 Lock Get Success: L\n");
    assert_eq!(a.cmd("sg S"), "1 Shared Lock Get Success: S\n");
    let start = Instant::now();
    assert_eq!(b.cmd("wg 50 L"), "0 Lock Get Timeout: L\n");
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert_eq!(b.stat("wait_timeouts"), 1);
    // MS 0: try once, no wait, still a timeout.
    assert_eq!(b.cmd("wg 0 L"), "0 Lock Get Timeout: L\n");
    assert_eq!(b.cmd("wsg 0 1 S"), "0 Shared Lock Get Timeout: S\n");
    assert_eq!(b.cmd("wsg 30 1 S"), "0 Shared Lock Get Timeout: S\n");
    assert_eq!(b.stat("wait_timeouts"), 4);
    assert_eq!(b.stat("waiting"), 0);
    // A free lock is granted at once, also with MS 0.
    let mut tokens = Tokens::new(kind);
    tokens.next(held_token(&mut a, "L"), 1);
    tokens.next(token(&b.cmd("wg 0 free"), "free"), 2);
    assert_eq!(b.cmd("wsg 0 2 S"), "2 Shared Lock Get Success: S\n");
    assert_eq!(b.cmd("wsg 0 0 S"), "2 Shared Lock Get Success: S\n");
    assert_eq!(b.stat("wait_timeouts"), 4);
    // After its timeout B is no longer in line: A's release frees the lock.
    assert_eq!(a.cmd("r L"), "1 Lock Release Success: L\n");
    assert_eq!(a.cmd("i L"), "0 Lock Not Locked: L\n");
}

fn waiter_that_leaves_is_skipped(reset: bool) {
    let server = TestServer::start();
    let mut a = server.connect();
    let mut b = server.connect();
    let mut c = server.connect();
    assert_eq!(a.cmd("g L"), "1 Lock Get Success: L\n");
    // B would wait a minute, far past any poll's patience.
    b.send(b"wg 60000 L\n");
    server.wait_for_stat2("waiting", 1);
    c.send(b"wg 60000 L\n");
    server.wait_for_stat2("waiting", 2);
    if reset {
        b.reset();
    } else {
        drop(b);
    }
    // Noticed while B waits, not at the end of its wait: no timeout.
    server.wait_for_stat2("waiting", 1);
    assert_eq!(server.connect2().stat("wait_timeouts"), 0);
    server.wait_for_stat2("connections", 3); // a, c and the poller
    assert_eq!(a.cmd("r L"), "1 Lock Release Success: L\n");
    token(&c.line_string(), "L");
}

#[test]
fn a_waiter_that_closes_is_skipped() {
    waiter_that_leaves_is_skipped(false);
}

#[test]
fn a_waiter_that_resets_is_skipped() {
    waiter_that_leaves_is_skipped(true);
}

/// The close watcher keeps a connection's socket from its first wait to
/// its end (issue 8): a hang-up during a later wait, after grants and
/// timeouts, is still noticed at once.
fn a_waiter_that_closes_after_earlier_waits_is_skipped(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    let mut c = server.connect();
    for _ in 0..3 {
        assert_eq!(a.cmd("g L"), "1 Lock Get Success: L\n");
        b.send(b"wg 10000 L\n");
        server.wait_for_stat2("waiting", 1);
        assert_eq!(a.cmd("r L"), "1 Lock Release Success: L\n");
        token(&b.line_string(), "L");
        assert_eq!(b.cmd("r L"), "1 Lock Release Success: L\n");
    }
    assert_eq!(a.cmd("g L"), "1 Lock Get Success: L\n");
    assert_eq!(b.cmd("wg 20 L"), "0 Lock Get Timeout: L\n");
    b.send(b"wg 60000 L\n");
    server.wait_for_stat2("waiting", 1);
    c.send(b"wg 60000 L\n");
    server.wait_for_stat2("waiting", 2);
    drop(b);
    // Noticed while B waits, not at the end of its minute: the one timeout
    // is the `wg 20` above.
    server.wait_for_stat2("waiting", 1);
    assert_eq!(server.connect2().stat("wait_timeouts"), 1);
    assert_eq!(a.cmd("r L"), "1 Lock Release Success: L\n");
    token(&c.line_string(), "L");
}

/// `lockd-protocol(7)` NOTES: after a half-close, commands that do not
/// wait are answered, and a wait leaves the line without a reply, also
/// when the connection waited before and its socket is already watched.
#[test]
fn a_half_close_ends_a_later_wait_without_a_reply() {
    for waited_before in [false, true] {
        let server = TestServer::start();
        let mut a = server.connect();
        let mut b = server.connect();
        if waited_before {
            assert_eq!(a.cmd("g L"), "1 Lock Get Success: L\n");
            b.send(b"wg 10000 L\n");
            server.wait_for_stat2("waiting", 1);
            assert_eq!(a.cmd("r L"), "1 Lock Release Success: L\n");
            token(&b.line_string(), "L");
            assert_eq!(b.cmd("r L"), "1 Lock Release Success: L\n");
        }
        assert_eq!(a.cmd("g L"), "1 Lock Get Success: L\n");
        // A minute's wait: were the half-close missed, this read would time
        // out long before the wait did.
        b.send(b"i L\ng M\nwg 60000 L\nping\n");
        b.shutdown_write();
        let rest = String::from_utf8(b.read_to_end()).expect("utf-8");
        let lines: Vec<&str> = rest.lines().collect();
        assert_eq!(lines.len(), 2, "{rest:?} (waited before: {waited_before})");
        assert!(lines[0].ends_with(" Lock Is Locked: L"), "{rest:?}");
        assert_eq!(lines[1], "1 Lock Get Success: M", "{rest:?}");
        server.wait_for_stat2("waiting", 0);
        assert_eq!(server.connect2().stat("wait_timeouts"), 0);
        // B's locks went with it; the line behind A is empty.
        assert_eq!(a.cmd("i M"), "0 Lock Not Locked: M\n");
        assert_eq!(a.cmd("r L"), "1 Lock Release Success: L\n");
        assert_eq!(a.cmd("i L"), "0 Lock Not Locked: L\n");
    }
}

fn pipelined_commands_wait_behind_a_wait(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    assert_eq!(a.cmd("g L"), "1 Lock Get Success: L\n");
    b.send(b"wg 5000 L\nping\ni L\n");
    server.wait_for_stat2("waiting", 1);
    // B's ping was received but must not be answered before its wg.
    assert_eq!(server.connect2().stat("command_ping"), 0);
    assert_eq!(a.cmd("r L"), "1 Lock Release Success: L\n");
    token(&b.line_string(), "L");
    assert_eq!(b.line_string(), "1 pong\n");
    assert_eq!(b.line_string(), "1 Lock Is Locked: L\n");
}

#[test]
fn semaphore_limit_holds_under_32_threads() {
    const LIMIT: usize = 3;
    let server = TestServer::start();
    let inside = Arc::new(AtomicUsize::new(0));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let mut conn = server.connect();
            let inside = Arc::clone(&inside);
            let max_seen = Arc::clone(&max_seen);
            std::thread::spawn(move || {
                for _ in 0..4 {
                    let reply = conn.cmd(&format!("wsg 10000 {LIMIT} S"));
                    let (n, rest) = reply.split_once(' ').expect("status");
                    assert_eq!(rest, "Shared Lock Get Success: S\n", "{reply:?}");
                    let holders: usize = n.parse().expect("count");
                    assert!((1..=LIMIT).contains(&holders), "{reply:?}");
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    assert!(now <= LIMIT, "{now} holders inside a limit of {LIMIT}");
                    max_seen.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(1));
                    inside.fetch_sub(1, Ordering::SeqCst);
                    assert_eq!(conn.cmd("sr S"), "1 Shared Lock Release Success: S\n");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("worker");
    }
    assert!(max_seen.load(Ordering::SeqCst) >= 1);
    let mut poll = server.connect2();
    assert_eq!(poll.stat("shared_locks"), 0);
    assert_eq!(poll.stat("waiting"), 0);
    assert_eq!(poll.stat("wait_timeouts"), 0);
}

fn wsg_newcomers_queue_behind_waiters(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    let mut c = server.connect();
    let mut d = server.connect();
    assert_eq!(a.cmd("wsg 0 1 S"), "1 Shared Lock Get Success: S\n");
    b.send(b"wsg 5000 1 S\n");
    server.wait_for_stat2("waiting", 1);
    // C would fit under its own limit of 2, but B is in line first.
    c.send(b"wsg 5000 2 S\n");
    server.wait_for_stat2("waiting", 2);
    assert_eq!(d.cmd("wsg 0 5 S"), "0 Shared Lock Get Timeout: S\n");
    // A plain sg (no limit, Part 1) is not a waiter and is not held back.
    assert_eq!(d.cmd("sg S"), "2 Shared Lock Get Success: S\n");
    assert_eq!(d.cmd("sr S"), "1 Shared Lock Release Success: S\n");
    assert_eq!(a.cmd("sr S"), "1 Shared Lock Release Success: S\n");
    assert_eq!(b.line_string(), "1 Shared Lock Get Success: S\n");
    assert_eq!(c.line_string(), "2 Shared Lock Get Success: S\n");
    server.wait_for_stat2("waiting", 0);
}

// -------------------------------------------------------------- deadlocks

fn a_two_connection_cycle_is_refused(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    assert_eq!(a.cmd("g x"), "1 Lock Get Success: x\n");
    assert_eq!(b.cmd("g y"), "1 Lock Get Success: y\n");
    a.send(b"wg 5000 y\n");
    server.wait_for_stat2("waiting", 1);
    assert_eq!(b.cmd("wg 5000 x"), "0 Lock Get Deadlock: x\n");
    let mut poll = server.connect2();
    assert_eq!(poll.stat("deadlocks"), 1);
    assert_eq!(poll.stat("waiting"), 1);
    // B backs off; A's wait completes.
    assert_eq!(b.cmd("r y"), "1 Lock Release Success: y\n");
    token(&a.line_string(), "y");
}

fn a_five_connection_cycle_is_refused(kind: Kind) {
    let server = kind.start();
    let mut conns: Vec<Conn> = (0..5).map(|_| server.connect()).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        assert_eq!(
            c.cmd(&format!("g k{i}")),
            format!("1 Lock Get Success: k{i}\n")
        );
    }
    for (i, c) in conns.iter_mut().enumerate().take(4) {
        c.send(format!("wg 5000 k{}\n", i + 1).as_bytes());
        server.wait_for_stat2("waiting", i as u64 + 1);
    }
    assert_eq!(conns[4].cmd("wg 5000 k0"), "0 Lock Get Deadlock: k0\n");
    assert_eq!(server.connect2().stat("deadlocks"), 1);
    // Unwind from the end of the chain: each release completes one wait.
    assert_eq!(conns[4].cmd("ra"), "1 Released\n");
    for i in (0..4).rev() {
        token(&conns[i].line_string(), &format!("k{}", i + 1));
        assert_eq!(conns[i].cmd("ra"), "2 Released\n");
    }
}

fn a_chain_without_a_cycle_just_waits(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    let mut c = server.connect();
    assert_eq!(a.cmd("g a"), "1 Lock Get Success: a\n");
    assert_eq!(b.cmd("g b"), "1 Lock Get Success: b\n");
    assert_eq!(c.cmd("g c"), "1 Lock Get Success: c\n");
    a.send(b"wg 5000 b\n");
    server.wait_for_stat2("waiting", 1);
    b.send(b"wg 5000 c\n");
    server.wait_for_stat2("waiting", 2);
    // C holds c and waits for nothing: no cycle, A and B just wait, and C
    // can still take other locks in line.
    token(&c.cmd("wg 100 d"), "d");
    let mut poll = server.connect2();
    assert_eq!(poll.stat("deadlocks"), 0);
    assert_eq!(poll.stat("waiting"), 2);
    assert_eq!(c.cmd("r c"), "1 Lock Release Success: c\n");
    token(&b.line_string(), "c");
    assert_eq!(b.cmd("r b"), "1 Lock Release Success: b\n");
    token(&a.line_string(), "b");
    assert_eq!(server.connect2().stat("waiting"), 0);
}

// --------------------------------------------------------- fencing tokens

fn tokens_strictly_increase_across_grants(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    let mut last = 0;
    for i in 0..10 {
        let (conn, other) = if i % 2 == 0 {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        let t = if i % 3 == 0 {
            assert_eq!(conn.cmd("g L"), "1 Lock Get Success: L\n");
            held_token(conn, "L")
        } else {
            token(&conn.cmd("wg 100 L"), "L")
        };
        assert!(t > last, "{t} > {last}");
        assert_eq!(other.cmd("t L"), "0 Lock Not Held: L\n");
        // Getting it again is no new grant.
        assert_eq!(token(&conn.cmd("wg 0 L"), "L"), t);
        assert_eq!(conn.cmd("g L"), "1 Lock Get Success: L\n");
        assert_eq!(held_token(conn, "L"), t);
        assert_eq!(conn.cmd("r L"), "1 Lock Release Success: L\n");
        last = t;
    }
    assert_eq!(a.cmd("t nothing"), "0 Lock Not Held: nothing\n");
    assert_eq!(server.connect2().stat("grants"), 10);
}

#[test]
fn tokens_increase_across_a_restart_of_an_embedded_server() {
    // Restarted at once, on the same address and state directory, while
    // clients are still connected (a holder and a waiter): a stopped
    // server must have let go of both. Regression: connection threads used
    // to hold the server state (its listeners, its state-dir lock) a moment
    // after the handle's stop returned, so the rebind failed with "state
    // directory in use" now and then.
    let dir = TempDir::new("state");
    let state = dir.path.join("state");
    let mut addr: Option<std::net::SocketAddr> = None;
    let mut last = 0;
    for _ in 0..20 {
        let server = TestServer::with_config(|c| {
            c.state_dir = Some(state.clone());
            if let Some(addr) = addr {
                c.listen = vec![addr.to_string()];
            }
        });
        addr = Some(server.addr);
        let mut a = server.connect();
        let mut b = server.connect();
        for _ in 0..2 {
            let t = token(&a.cmd("wg 0 L"), "L");
            assert!(t > last, "{t} > {last}");
            last = t;
            assert_eq!(a.cmd("r L"), "1 Lock Release Success: L\n");
        }
        assert_eq!(a.cmd("g L"), "1 Lock Get Success: L\n");
        b.send(b"wg 10000 L\n");
        server.wait_for_stat2("waiting", 1);
        drop(server);
        assert_eq!(a.read_to_end(), b"");
        // As A's connection ends first, B may be handed the lock just
        // before its own end: then its token counts too.
        let tail = String::from_utf8(b.read_to_end()).expect("utf-8");
        if !tail.is_empty() {
            let t = token(&tail, "L");
            assert!(t > last, "{t} > {last}");
            last = t;
        }
    }
}

#[test]
fn tokens_increase_across_kill_9_of_the_daemon() {
    let dir = TempDir::new("kill9");
    let state = dir.path.join("state");
    let state = state.to_str().expect("utf-8 temp path");
    let mut last = 0;
    for _ in 0..2 {
        let mut daemon = Daemon::start(&["--listen", "127.0.0.1:0", "--state-dir", state], 1);
        let mut a = Conn::tcp(daemon.tcp_addr());
        for _ in 0..3 {
            let t = token(&a.cmd("wg 0 L"), "L");
            assert!(t > last, "{t} > {last}");
            last = t;
            assert_eq!(a.cmd("r L"), "1 Lock Release Success: L\n");
        }
        // SIGKILL: no chance to write anything on the way out.
        daemon.kill_9();
    }
}

#[test]
fn a_corrupt_state_file_stops_the_daemon() {
    let dir = TempDir::new("corrupt");
    let file = dir.path.join("fencing-token");
    std::fs::write(&file, "12x\n").expect("write state");
    let out = Command::new(env!("CARGO_BIN_EXE_lockd"))
        .args(["--listen", "127.0.0.1:0", "--state-dir"])
        .arg(&dir.path)
        .stdin(Stdio::null())
        .output()
        .expect("run lockd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is corrupt"), "{stderr}");
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
    // Never a silent reset: the file is left as it was.
    assert_eq!(std::fs::read_to_string(&file).expect("read"), "12x\n");
}

// ------------------------------------------------------------ other verbs

fn ra_releases_everything_and_hands_over(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    let mut c = server.connect();
    assert_eq!(a.cmd("ra"), "0 Released\n");
    assert_eq!(a.cmd("g x"), "1 Lock Get Success: x\n");
    assert_eq!(a.cmd("g y"), "1 Lock Get Success: y\n");
    assert_eq!(a.cmd("sg s"), "1 Shared Lock Get Success: s\n");
    b.send(b"wg 5000 x\n");
    server.wait_for_stat2("waiting", 1);
    c.send(b"wsg 5000 1 s\n");
    server.wait_for_stat2("waiting", 2);
    assert_eq!(a.cmd("ra"), "3 Released\n");
    token(&b.line_string(), "x");
    assert_eq!(c.line_string(), "1 Shared Lock Get Success: s\n");
    assert_eq!(a.cmd("i y"), "0 Lock Not Locked: y\n");
    assert_eq!(a.cmd("ra"), "0 Released\n");
    let mut poll = server.connect2();
    assert_eq!(poll.stat("orphans"), 0);
    assert_eq!(poll.stat("command_ra"), 3);
}

fn ping_pongs_on_any_connection(kind: Kind) {
    let server = kind.start();
    assert_eq!(server.connect().cmd("ping"), "1 pong\n");
    assert_eq!(server.connect2().cmd("ping"), "1 pong\n");
    assert_eq!(server.connect_unix().cmd("ping"), "1 pong\n");
}

fn ttl_lease_is_renewed_by_traffic_and_expires_in_silence(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    assert_eq!(a.cmd("ttl 1"), "1 ttl 1\n");
    assert_eq!(a.cmd("g L"), "1 Lock Get Success: L\n");
    // 1.2 s of life, never 1 s of silence.
    let mut start = Instant::now();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(400));
        // Before the server sees the ping: its lease runs from later.
        start = Instant::now();
        assert_eq!(a.cmd("ping"), "1 pong\n");
    }
    // Far longer than the lease: a close well before this is the lease's.
    a.reader.get_ref().set_read_timeout(Some(LONG_READ));
    assert_eq!(a.read_to_end(), b"", "closed without a word");
    let silent = start.elapsed();
    assert!(
        silent >= Duration::from_millis(900) && silent < LONG_READ / 3,
        "{silent:?}"
    );
    let mut poll = server.connect2();
    assert_eq!(poll.stat("ttl_expirations"), 1);
    assert_eq!(poll.stat("orphans"), 1);
    assert_eq!(poll.cmd("i L"), "0 Lock Not Locked: L\n");
    // ttl 0 turns the lease off again.
    let mut b = server.connect();
    assert_eq!(b.cmd("ttl 1"), "1 ttl 1\n");
    assert_eq!(b.cmd("ttl 0"), "1 ttl 0\n");
    assert_eq!(b.read_for(Duration::from_millis(1200)), b"");
    assert_eq!(b.cmd("ping"), "1 pong\n");
}

fn a_waiting_connection_does_not_expire(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    assert_eq!(a.cmd("g L"), "1 Lock Get Success: L\n");
    assert_eq!(b.cmd("ttl 1"), "1 ttl 1\n");
    // 1.5 s in line without a byte from B: still there to hear the answer.
    assert_eq!(b.cmd("wg 1500 L"), "0 Lock Get Timeout: L\n");
    assert_eq!(b.cmd("ping"), "1 pong\n");
    assert_eq!(server.connect2().stat("ttl_expirations"), 0);
}

fn dj_dumps_json(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    let mut c = server.connect();
    let (na, nb, nc) = (a.name(), b.name(), c.name());
    assert_eq!(a.cmd("dj"), "{\"exclusive\":{},\"shared\":{}}\n");
    assert_eq!(a.cmd("iam alice"), "1 ok\n");
    let mut tokens = Tokens::new(kind);
    let t1 = tokens.next(token(&a.cmd("wg 0 a"), "a"), 1);
    a.send(b"g b\xffc\n");
    assert_eq!(a.line(), b"1 Lock Get Success: b\xffc\n");
    a.send(b"t b\xffc\n");
    let t2 = String::from_utf8_lossy(&a.line()).into_owned();
    let t2 = tokens.next(token_in_t(&t2, "b\u{fffd}c"), 2);
    assert_eq!(b.cmd("sg s"), "1 Shared Lock Get Success: s\n");
    b.send(b"wg 5000 a\n");
    server.wait_for_stat2("waiting", 1);
    c.send(b"wsg 5000 1 s\n");
    server.wait_for_stat2("waiting", 2);
    let expected = format!(
        "{{\"exclusive\":{{\
         \"a\":{{\"holder\":\"{na}\",\"name\":\"alice\",\"token\":{t1},\"waiters\":[\"{nb}\"]}},\
         \"b\u{fffd}c\":{{\"holder\":\"{na}\",\"name\":\"alice\",\"token\":{t2},\"waiters\":[]}}}},\
         \"shared\":{{\"s\":{{\"holders\":[\"{nb}\"],\
         \"waiters\":[{{\"client\":\"{nc}\",\"limit\":1}}]}}}}}}\n"
    );
    let mut poll = server.connect();
    assert_eq!(poll.cmd("dj"), expected);
    drop(a);
    token(&b.line_string(), "a");
    // One U+FFFD per bad byte (as Go's encoding/json), also for a
    // truncated multi-byte sequence.
    let mut d = server.connect();
    d.send(b"g x\xe2\x82\xffy\n");
    assert_eq!(d.line(), b"1 Lock Get Success: x\xe2\x82\xffy\n");
    let json = poll.cmd("dj");
    assert!(json.contains("\"x\u{fffd}\u{fffd}\u{fffd}y\":{"), "{json}");
    let off = kind.with_config(|c| c.dump = false);
    assert_eq!(off.connect2().cmd("dj"), "0 disabled\n");
}

fn auth_gates_every_recognised_verb(kind: Kind) {
    let server = kind.with_config(|c| c.auth_secret = Some(lockd::Secret::new("s3cret")));
    let mut a = server.connect();
    // Classic: recognised verbs are refused, unknown ones stay silent.
    let me = a.name();
    a.send(b"g L\nxx\nhello 1\n");
    assert_eq!(a.line_string(), "0 Auth Required\n");
    assert_eq!(
        a.line_string(),
        format!("1 lockd {VERSION}\n"),
        "xx is silent"
    );
    assert_eq!(a.cmd("hello 2"), format!("2 lockd {VERSION}\n"));
    let single = [
        "g L",
        "r L",
        "i L",
        "dump",
        "sg S",
        "sr S",
        "si S",
        "me",
        "iam x",
        "wg 0 L",
        "wsg 0 0 S",
        "t L",
        "ra",
        "ping",
        "ttl 1",
        "dj",
    ];
    for verb in single {
        assert_eq!(a.cmd(verb), "0 Auth Required\n", "{verb}");
    }
    for verb in ["d", "sd", "who", "q"] {
        a.send(format!("{verb}\n").as_bytes());
        assert_eq!(a.block(), vec!["0 Auth Required\n".to_string()], "{verb}");
    }
    assert_eq!(a.cmd("auth wrong"), "0 Auth Failure\n");
    assert_eq!(a.cmd("g L"), "0 Auth Required\n");
    assert_eq!(a.cmd("auth s3cret"), "1 Auth Ok\n");
    // Nothing refused above took effect.
    assert_eq!(a.cmd("i L"), "0 Lock Not Locked: L\n");
    assert_eq!(a.cmd("si S"), "0 Shared Lock Not Locked: S\n");
    assert_eq!(a.cmd("me"), format!("1 {me} {me}\n"));
    assert_eq!(a.cmd("g L"), "1 Lock Get Success: L\n");
    // The refused commands still counted as commands.
    assert_eq!(a.stat("command_g"), 4);
    // Another connection is on its own.
    let mut b = server.connect();
    assert_eq!(b.cmd("i L"), "0 Auth Required\n");
    assert_eq!(b.cmd("auth s3cret"), "1 Auth Ok\n");
    assert_eq!(b.cmd("i L"), "1 Lock Is Locked: L\n");
}

fn a_line_too_long_is_an_error_on_protocol_2(kind: Kind) {
    let server = kind.with_config(|c| c.max_line = 64);
    let mut a = server.connect2();
    assert_eq!(a.cmd("g L"), "1 Lock Get Success: L\n");
    let long = format!("g {}\n", "x".repeat(5000));
    a.send(long.as_bytes());
    assert_eq!(a.line_string(), "0 Error: line too long\n");
    // Exactly at the limit is fine.
    let name = "y".repeat(62);
    assert_eq!(
        a.cmd(&format!("g {name}")),
        format!("1 Lock Get Success: {name}\n")
    );
    Tokens::new(kind).next(held_token(&mut a, "L"), 1);
    assert_eq!(a.stat("lines_too_long"), 1);
    assert_eq!(a.stat("invalid_commands"), 1);
    assert_eq!(a.stat("locks"), 2);
    // Classic: the same line is dropped in silence.
    let mut c = server.connect();
    assert_eq!(c.before_pong(&long), "");
    assert_eq!(a.stat("lines_too_long"), 2);
}

fn an_idle_connection_is_closed_and_orphans_its_locks(kind: Kind) {
    let server = kind.with_config(|c| c.idle_timeout = Some(Duration::from_millis(200)));
    let mut a = server.connect();
    // Far longer than the idle timeout: a close well before this is its.
    a.reader.get_ref().set_read_timeout(Some(LONG_READ));
    let start = Instant::now();
    assert_eq!(a.cmd("g L"), "1 Lock Get Success: L\n");
    assert_eq!(a.read_to_end(), b"");
    let idle = start.elapsed();
    assert!(
        idle >= Duration::from_millis(200) && idle < LONG_READ / 3,
        "{idle:?}"
    );
    server.wait_for_stat2("orphans", 1);
    // Idleness is not a ttl lease.
    let mut poll = server.connect2();
    assert_eq!(poll.stat("ttl_expirations"), 0);
}

fn past_the_connection_limit_a_newcomer_is_told_and_closed(kind: Kind) {
    let server = kind.with_config(|c| c.max_connections = 2);
    let mut a = server.connect2();
    let mut b = server.connect();
    assert_eq!(b.cmd("g L"), "1 Lock Get Success: L\n");
    let mut c = server.connect();
    assert_eq!(c.read_to_end(), b"0 Too Many Connections\n");
    assert_eq!(a.stat("rejected_connections"), 1);
    assert_eq!(a.stat("max_connections"), 2);
    Tokens::new(kind).next(held_token(&mut b, "L"), 1);
}

// -------------------------------------------------------------- keepalive

/// TCP keepalive drops a peer that vanished without a FIN.
///
/// Needs root and `ip` (iproute2): the client lives in its own network
/// namespace behind a veth pair, and its link is taken down, so the
/// server's keepalive probes go unanswered and nothing ever reaches it. The
/// test is skipped (with a note on stderr) where that is not possible.
///
/// Manual check elsewhere: start `lockd --tcp-keepalive 5`, connect from a
/// second machine (or VM), `g x`, then pull that machine's cable or drop its
/// traffic (`iptables -A INPUT -s SERVER -j DROP` on the client). Within
/// about 5 + 3 * 1 s plus TCP_USER_TIMEOUT rounding, `q` on the server shows
/// `orphans` up by one and `i x` says `0 Lock Not Locked: x`.
#[test]
fn keepalive_drops_a_peer_that_vanished() {
    let Some(net) = NetNs::create() else {
        eprintln!("skipped: needs root and `ip netns` (see the doc comment for a manual check)");
        return;
    };
    let server = TestServer::with_config(|c| {
        c.listen = vec!["127.0.0.1:0".into(), format!("{}:0", net.host_ip)];
        c.tcp_keepalive = Some(Duration::from_secs(1));
    });
    let handle = server.handle.as_ref().expect("running");
    let far = handle.local_addrs()[1];
    let mut holder = Conn::from_tcp(net.connect(far));
    let mut waiter = Conn::from_tcp(net.connect(far));
    let mut near = server.connect();
    assert_eq!(holder.cmd("g far"), "1 Lock Get Success: far\n");
    // A lease far longer than the test: keepalive, not the lease, ends it.
    assert_eq!(holder.cmd("ttl 60"), "1 ttl 60\n");
    assert_eq!(near.cmd("g near"), "1 Lock Get Success: near\n");
    waiter.send(b"wg 60000 near\n");
    server.wait_for_stat2("waiting", 1);
    let start = Instant::now();
    net.cut();
    // Idle 1 s, 3 probes 1 s apart, user timeout 4 s: both are gone well
    // within 30 s (the waiter's wait is a minute), the waiter and the idle
    // holder alike.
    let mut poll = server.connect2();
    common::poll_until(Duration::from_secs(30), || {
        let (orphans, waiting) = (poll.stat("orphans"), poll.stat("waiting"));
        common::check(orphans >= 1 && waiting == 0, || {
            format!("vanished peers still there: orphans {orphans}, waiting {waiting}")
        })
    });
    eprintln!("vanished peers dropped after {:?}", start.elapsed());
    assert_eq!(poll.cmd("i far"), "0 Lock Not Locked: far\n");
    assert_eq!(poll.stat("connections"), 2);
    assert_eq!(
        poll.stat("ttl_expirations"),
        0,
        "keepalive is no ttl expiry"
    );
    assert_eq!(near.cmd("r near"), "1 Lock Release Success: near\n");
    drop((holder, waiter));
}

/// A network namespace joined to this one by a veth pair; removed on drop.
struct NetNs {
    name: String,
    host_if: String,
    /// In a /30 of 10.231.0.0/16 chosen by process id, so that test runs in
    /// parallel (several checkouts, say) do not share addresses.
    host_ip: String,
}

impl NetNs {
    fn create() -> Option<NetNs> {
        if !rustix::process::geteuid().is_root() {
            return None;
        }
        let id = std::process::id() % 100_000;
        let ns = NetNs {
            name: format!("lockd-ka-{id}"),
            host_if: format!("lkh{id}"),
            host_ip: format!("10.231.{}.{}", id % 256, (id / 256 % 64) * 4 + 1),
        };
        let peer_ip = format!("10.231.{}.{}", id % 256, (id / 256 % 64) * 4 + 2);
        let peer_if = format!("lkp{id}");
        ip(&["netns", "add", &ns.name]).ok()?;
        let (name, host_if) = (ns.name.as_str(), ns.host_if.as_str());
        let host_cidr = format!("{}/30", ns.host_ip);
        let peer_cidr = format!("{peer_ip}/30");
        let setup: [&[&str]; 7] = [
            &[
                "link", "add", host_if, "type", "veth", "peer", "name", &peer_if,
            ],
            &["link", "set", &peer_if, "netns", name],
            &["addr", "add", &host_cidr, "dev", host_if],
            &["link", "set", host_if, "up"],
            &["-n", name, "addr", "add", &peer_cidr, "dev", &peer_if],
            &["-n", name, "link", "set", &peer_if, "up"],
            &["-n", name, "link", "set", "lo", "up"],
        ];
        for args in setup {
            if let Err(e) = ip(args) {
                eprintln!("ip {args:?}: {e}");
                return None; // drop cleans up
            }
        }
        Some(ns)
    }

    /// A TCP connection made from inside the namespace (only the thread
    /// that makes it enters the namespace; the socket stays there).
    fn connect(&self, addr: std::net::SocketAddr) -> std::net::TcpStream {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
            use std::os::fd::AsFd;
            let file = std::fs::File::open(&path).expect("open netns");
            // Only this thread moves.
            move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))
                .expect("setns");
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .expect("connect from the namespace")
        })
        .join()
        .expect("netns thread")
    }

    /// The peer vanishes: its link goes down, nothing is sent, no FIN.
    fn cut(&self) {
        let peer = self.host_if.replacen("lkh", "lkp", 1);
        ip(&["-n", &self.name, "link", "set", &peer, "down"]).expect("link down");
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}
