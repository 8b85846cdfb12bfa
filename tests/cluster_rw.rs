//! Reader/writer locks across two `lockd --cluster` nodes on a real
//! three-member etcd (issue 15): one line per name, whichever node each
//! reader and writer talks to.

mod common;

use common::etcd::EtcdCluster;
use common::{Conn, Daemon, PATIENCE};

fn node(etcd: &EtcdCluster) -> Daemon {
    let url = etcd.url();
    Daemon::start(
        &["--listen", "127.0.0.1:0", "--no-state", "--cluster", &url],
        1,
    )
}

fn token(reply: &str, name: &str) -> u64 {
    let (number, rest) = reply
        .split_once(' ')
        .unwrap_or_else(|| panic!("not a status reply: {reply:?}"));
    assert_eq!(rest, format!("Lock Get Success: {name}\n"), "{reply:?}");
    number.parse().expect("numeric token")
}

/// Polls `dj` until `name`'s readers list `waiters` waiters.
fn wait_for_read_waiters(poll: &mut Conn, name: &str, waiters: usize) {
    common::poll_until(PATIENCE, || {
        let dj = poll.cmd("dj");
        let count = dj
            .split("\"readers\":")
            .nth(1)
            .and_then(|r| r.split(&format!("\"{name}\":")).nth(1))
            .and_then(|r| r.split("\"waiters\":[").nth(1))
            .and_then(|r| r.split(']').next())
            .map_or(0, |list| list.matches(':').count());
        common::check(count == waiters, || format!("{waiters} waiters in {dj}"))
    });
}

#[test]
fn readers_on_two_nodes_share_and_a_writer_through_either_waits_its_turn() {
    let etcd = EtcdCluster::start();
    let (a, b) = (node(&etcd), node(&etcd));
    let mut ra = Conn::tcp(a.tcp_addr());
    let mut rb = Conn::tcp(b.tcp_addr());
    let mut w = Conn::tcp(b.tcp_addr());
    let mut late = Conn::tcp(a.tcp_addr());
    let mut poll = Conn::tcp(a.tcp_addr());
    assert_eq!(ra.cmd("wr 0 doc"), "1 Read Lock Get Success: doc\n");
    assert_eq!(rb.cmd("wr 0 doc"), "2 Read Lock Get Success: doc\n");
    assert_eq!(w.cmd("g doc"), "0 Lock Get Failure: doc\n");
    assert_eq!(poll.cmd("i doc"), "1 Lock Is Locked: doc\n");
    w.send(b"wg 15000 doc\n");
    wait_for_read_waiters(&mut poll, "doc", 1);
    // A reader that comes after a waiting writer waits behind it.
    assert_eq!(late.cmd("wr 0 doc"), "0 Read Lock Get Timeout: doc\n");
    late.send(b"wr 15000 doc\n");
    wait_for_read_waiters(&mut poll, "doc", 2);
    assert_eq!(ra.cmd("rr doc"), "1 Read Lock Release Success: doc\n");
    assert_eq!(rb.cmd("rr doc"), "1 Read Lock Release Success: doc\n");
    let t = token(&w.line_string(), "doc");
    assert_eq!(w.cmd("t doc"), format!("{t} Lock Token: doc\n"));
    assert_eq!(w.cmd("r doc"), "1 Lock Release Success: doc\n");
    assert_eq!(late.line_string(), "1 Read Lock Get Success: doc\n");
}

#[test]
fn a_reader_upgrades_across_nodes_once_the_other_reader_leaves() {
    let etcd = EtcdCluster::start();
    let (a, b) = (node(&etcd), node(&etcd));
    let mut up = Conn::tcp(a.tcp_addr());
    let mut other = Conn::tcp(b.tcp_addr());
    let mut newcomer = Conn::tcp(b.tcp_addr());
    let mut poll = Conn::tcp(b.tcp_addr());
    assert_eq!(up.cmd("wr 0 cfg"), "1 Read Lock Get Success: cfg\n");
    assert_eq!(other.cmd("wr 0 cfg"), "2 Read Lock Get Success: cfg\n");
    // An upgrade that times out leaves the read hold as it was, and lets
    // newcomers read again.
    assert_eq!(up.cmd("wg 200 cfg"), "0 Lock Get Timeout: cfg\n");
    common::poll_until(PATIENCE, || {
        let reply = newcomer.cmd("wr 0 cfg");
        common::check(reply == "3 Read Lock Get Success: cfg\n", || reply)
    });
    assert_eq!(newcomer.cmd("rr cfg"), "1 Read Lock Release Success: cfg\n");
    up.send(b"wg 15000 cfg\n");
    wait_for_read_waiters(&mut poll, "cfg", 1);
    // The other reader asking to upgrade too would wait for the first.
    assert_eq!(other.cmd("wg 15000 cfg"), "0 Lock Get Deadlock: cfg\n");
    // A reader that came after the upgrade request waits behind it.
    assert_eq!(newcomer.cmd("wr 0 cfg"), "0 Read Lock Get Timeout: cfg\n");
    assert_eq!(other.cmd("rr cfg"), "1 Read Lock Release Success: cfg\n");
    let t = token(&up.line_string(), "cfg");
    assert_eq!(poll.cmd("d cfg"), format!("cfg: {}\n", up.name()));
    assert_eq!(up.cmd("rr cfg"), "0 Read Lock Release Failure: cfg\n");
    drop(up);
    // Orphaned: the name is free for anyone, through the other node.
    common::poll_until(PATIENCE, || {
        let reply = newcomer.cmd("wg 0 cfg");
        common::check(reply.ends_with(" Lock Get Success: cfg\n"), || reply)
    });
    assert!(token(&newcomer.cmd("wg 0 cfg"), "cfg") > t);
}
