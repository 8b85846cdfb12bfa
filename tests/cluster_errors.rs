//! Cluster mode when etcd fails under a running node (issue 15): an
//! outage is an error, never an answer. Protocol 2 hears `0 Error: ...`; a
//! classic client gets its verb's failure reply where that stays true, and
//! is disconnected where any reply would claim to know; and every
//! connection is closed before the node's lease can have expired.

mod common;

use common::etcd::{EtcdCluster, MEMBERS};
use common::{Conn, Daemon};

fn node(etcd: &EtcdCluster) -> Daemon {
    let url = etcd.url();
    Daemon::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--no-state",
            "--cluster",
            &url,
            "--cluster-lease-ttl",
            "5s",
        ],
        1,
    )
}

#[test]
fn with_etcd_gone_i_is_an_error_not_a_no_and_holders_are_closed() {
    let mut etcd = EtcdCluster::start();
    let a = node(&etcd);
    let mut holder = Conn::tcp(a.tcp_addr());
    holder.hello2();
    assert_eq!(holder.cmd("g x"), "1 Lock Get Success: x\n");
    let mut v2 = Conn::tcp(a.tcp_addr());
    v2.hello2();
    let mut classic = Conn::tcp(a.tcp_addr());
    let mut getter = Conn::tcp(a.tcp_addr());
    assert_eq!(classic.cmd("i x"), "1 Lock Is Locked: x\n");
    // Killed, every member refuses at once: the calls below fail fast,
    // well before the node gives up its lease.
    for i in 0..MEMBERS {
        etcd.kill(i);
    }
    for verb in ["i x", "i free", "si s", "wg 100 y", "g y"] {
        let reply = v2.cmd(verb);
        assert!(
            reply.starts_with("0 Error: cluster store unavailable: "),
            "{verb}: {reply:?}"
        );
    }
    v2.send(b"d\n");
    let block = v2.block();
    assert!(
        block.len() == 1 && block[0].starts_with("0 Error: cluster store unavailable"),
        "d: {block:?}"
    );
    // A classic g may say it did not get the lock: true.
    assert_eq!(getter.cmd("g y"), "0 Lock Get Failure: y\n");
    // Any classic answer to i would claim to know: the connection ends.
    classic.send(b"i x\n");
    assert!(classic.read_to_end().is_empty(), "no classic answer to i");
    // The holder's lock can no longer be vouched for: the node closes it
    // (within the TTL less its margin, after the last renewal).
    for conn in [&holder, &v2] {
        let patience = Some(common::PATIENCE);
        conn.tcp_stream()
            .set_read_timeout(patience)
            .expect("timeout");
    }
    assert!(holder.read_to_end().is_empty(), "the holder is closed");
    assert!(v2.read_to_end().is_empty(), "every connection is closed");
}
