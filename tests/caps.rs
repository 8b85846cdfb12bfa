//! Caps on locks and waiters (issue 14) over real sockets: past a cap the
//! request gets the classic refusal, or `0 Error: limit reached: ...` on
//! protocol 2, the refusal is counted in `q`, and nothing else changes.

mod common;

use common::TestServer;
use lockd::store::Limits;

fn small() -> TestServer {
    TestServer::with_config(|c| {
        let mut limits = Limits::default();
        limits.max_locks = 4;
        limits.max_locks_per_connection = 2;
        limits.max_waiters = 1;
        c.limits = limits;
    })
}

/// Locks of clients that have just closed count against `max_locks` no
/// more: the next `g` is granted, and nothing is counted as refused.
#[test]
fn locks_of_clients_that_just_closed_leave_room_under_the_cap() {
    let server = small();
    let mut c = server.connect2();
    for round in 0..10 {
        let mut holders = [server.connect(), server.connect()];
        for (i, h) in holders.iter_mut().enumerate() {
            for n in 0..2 {
                let name = format!("r{round}-{i}-{n}");
                assert_eq!(
                    h.cmd(&format!("g {name}")),
                    format!("1 Lock Get Success: {name}\n")
                );
            }
        }
        drop(holders);
        assert_eq!(c.cmd("g a"), "1 Lock Get Success: a\n", "round {round}");
        assert_eq!(c.cmd("r a"), "1 Lock Release Success: a\n");
    }
    assert_eq!(c.stat("refused_max_locks"), 0);
}

#[test]
fn past_the_per_connection_cap_requests_are_refused_in_both_protocols() {
    let server = small();
    let mut c = server.connect();
    assert_eq!(c.cmd("g a"), "1 Lock Get Success: a\n");
    assert_eq!(c.cmd("wr 0 b"), "1 Read Lock Get Success: b\n");
    assert_eq!(c.cmd("g c"), "0 Lock Get Failure: c\n");
    assert_eq!(c.cmd("wg 100 c"), "0 Lock Get Timeout: c\n");
    assert_eq!(c.cmd("wr 100 c"), "0 Read Lock Get Timeout: c\n");
    assert_eq!(c.cmd("wsg 100 0 c"), "0 Shared Lock Get Timeout: c\n");
    assert_eq!(c.cmd("sg c"), "0 Shared Lock Get Failure: c\n");
    // What it holds already is no new lock.
    assert_eq!(c.cmd("g a"), "1 Lock Get Success: a\n");
    assert_eq!(c.cmd("i c"), "0 Lock Not Locked: c\n");
    assert_eq!(c.cmd("si c"), "0 Shared Lock Not Locked: c\n");
    let mut p = server.connect2();
    assert_eq!(p.cmd("sg x"), "1 Shared Lock Get Success: x\n");
    assert_eq!(p.cmd("g y"), "1 Lock Get Success: y\n");
    let refusal = "0 Error: limit reached: max-locks-per-connection (2)\n";
    assert_eq!(p.cmd("g z"), refusal);
    assert_eq!(p.cmd("wg 100 z"), refusal);
    assert_eq!(p.cmd("wr 0 z"), refusal);
    assert_eq!(p.cmd("sg z"), refusal);
    assert_eq!(p.stat("refused_max_locks_per_connection"), 9);
    // Refusals are neither timeouts nor state.
    assert_eq!(p.stat("wait_timeouts"), 0);
    assert_eq!(p.stat("locks"), 2);
    assert_eq!(p.cmd("ra"), "2 Released\n");
    assert_eq!(p.cmd("g z"), "1 Lock Get Success: z\n");
}

#[test]
fn past_the_table_and_waiter_caps_requests_are_refused() {
    let server = small();
    let (mut a, mut b, mut w1, mut w2) = (
        server.connect2(),
        server.connect2(),
        server.connect(),
        server.connect2(),
    );
    assert_eq!(a.cmd("g n1"), "1 Lock Get Success: n1\n");
    assert_eq!(a.cmd("sg n2"), "1 Shared Lock Get Success: n2\n");
    assert_eq!(b.cmd("wr 0 n3"), "1 Read Lock Get Success: n3\n");
    assert_eq!(b.cmd("g n4"), "1 Lock Get Success: n4\n");
    assert_eq!(w2.cmd("g n5"), "0 Error: limit reached: max-locks (4)\n");
    assert_eq!(w1.cmd("g n5"), "0 Lock Get Failure: n5\n");
    // Joining those held is fine.
    assert_eq!(w2.cmd("sg n2"), "2 Shared Lock Get Success: n2\n");
    assert_eq!(w2.cmd("sr n2"), "1 Shared Lock Release Success: n2\n");
    // One waiter per line.
    w1.send(b"wg 10000 n1\n");
    server.wait_for_stat2("waiting", 1);
    assert_eq!(
        w2.cmd("wg 10000 n1"),
        "0 Error: limit reached: max-waiters (1)\n"
    );
    assert_eq!(a.stat("refused_max_waiters"), 1);
    assert_eq!(a.stat("refused_max_locks"), 2);
    assert_eq!(a.cmd("r n1"), "1 Lock Release Success: n1\n");
    let reply = w1.line_string();
    assert!(reply.ends_with(" Lock Get Success: n1\n"), "{reply:?}");
}
