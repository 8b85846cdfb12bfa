//! Watching locks (PROTOCOL.md Part 2, issue 11) over real sockets: the
//! snapshot, `synced` and every kind of event in whole bytes, over TCP,
//! Unix and WebSocket; a watcher that never reads is cut off without
//! slowing anyone; watchers whose snapshots race with grants still add up
//! to the truth. The cases run against a single server and a cluster node.

mod common;

use common::{Conn, Kind, TestServer};
use std::collections::BTreeMap;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

/// The fencing token of a `wg` success reply for `name`.
fn token(reply: &str, name: &str) -> u64 {
    let (number, rest) = reply.split_once(' ').expect("status reply");
    assert_eq!(rest, format!("Lock Get Success: {name}\n"), "{reply:?}");
    number.parse().expect("numeric token")
}

on_both!(
    snapshot_synced_and_every_event_in_whole_bytes,
    protocol_2_watchers_get_errors_and_their_own_locks_stay,
    watching_over_unix_and_websocket,
    snapshots_racing_with_grants_add_up_to_the_truth,
);

fn snapshot_synced_and_every_event_in_whole_bytes(kind: Kind) {
    let server = kind.start();
    let (mut a, mut b, mut c) = (server.connect(), server.connect(), server.connect());
    let (na, nb, nc) = (a.name(), b.name(), c.name());
    let t1 = token(&a.cmd("wg 0 a1"), "a1");
    assert_eq!(b.cmd("wr 0 a 2"), "1 Read Lock Get Success: a 2\n");
    assert_eq!(b.cmd("sg a3"), "1 Shared Lock Get Success: a3\n");
    assert_eq!(c.cmd("sg a3"), "2 Shared Lock Get Success: a3\n");
    assert_eq!(c.cmd("g other"), "1 Lock Get Success: other\n");
    let mut w = server.connect();
    w.send(b"watch a*\n");
    assert_eq!(w.line_string(), "1 Watching: a*\n");
    // Sorted by name, bytewise: "a 2" before "a1".
    assert_eq!(w.line_string(), format!("held rd 1 {nb} a 2\n"));
    assert_eq!(w.line_string(), format!("held x {t1} {na} a1\n"));
    assert_eq!(w.line_string(), format!("held s 1 {nb} a3\n"));
    assert_eq!(w.line_string(), format!("held s 2 {nc} a3\n"));
    assert_eq!(w.line_string(), "synced\n");
    assert_eq!(a.cmd("r a1"), "1 Lock Release Success: a1\n");
    assert_eq!(w.line_string(), format!("released x {t1} {na} a1\n"));
    assert_eq!(c.cmd("r other"), "1 Lock Release Success: other\n");
    assert_eq!(c.cmd("wr 0 a 2"), "2 Read Lock Get Success: a 2\n");
    assert_eq!(w.line_string(), format!("locked rd 2 {nc} a 2\n"));
    assert_eq!(b.cmd("rr a 2"), "1 Read Lock Release Success: a 2\n");
    assert_eq!(w.line_string(), format!("released rd 1 {nb} a 2\n"));
    // An upgrade: the read hold goes, the write hold comes.
    let t2 = token(&c.cmd("wg 0 a 2"), "a 2");
    assert_eq!(w.line_string(), format!("released rd 0 {nc} a 2\n"));
    assert_eq!(w.line_string(), format!("locked x {t2} {nc} a 2\n"));
    assert_eq!(c.cmd("sr a3"), "1 Shared Lock Release Success: a3\n");
    assert_eq!(w.line_string(), format!("released s 1 {nc} a3\n"));
    drop(b);
    assert_eq!(w.line_string(), format!("orphaned s 0 {nb} a3\n"));
    assert_eq!(c.cmd("ra"), "1 Released\n");
    assert_eq!(w.line_string(), format!("released x {t2} {nc} a 2\n"));
    // Other verbs are silent on a classic watcher; another watch adds a
    // pattern (an exact name here).
    w.send(b"g x\nping\nwatch other\n");
    assert_eq!(w.line_string(), "1 Watching: other\n");
    assert_eq!(w.line_string(), "synced\n");
    let t3 = token(&c.cmd("wg 0 other"), "other");
    assert_eq!(w.line_string(), format!("locked x {t3} {nc} other\n"));
    assert_eq!(a.cmd("i x"), "0 Lock Not Locked: x\n");
}

fn protocol_2_watchers_get_errors_and_their_own_locks_stay(kind: Kind) {
    let server = kind.start();
    let mut w = server.connect2();
    let me = w.name();
    assert_eq!(w.cmd("g mine"), "1 Lock Get Success: mine\n");
    w.send(b"watch mine\n");
    assert_eq!(w.line_string(), "1 Watching: mine\n");
    let held = w.line_string();
    assert!(held.starts_with("held x ") && held.ends_with(&format!(" {me} mine\n")));
    assert_eq!(w.line_string(), "synced\n");
    assert_eq!(w.cmd("r mine"), "0 Error: watching\n");
    assert_eq!(w.cmd("bogus"), "0 Error: unknown command\n");
    let mut other = server.connect();
    assert_eq!(other.cmd("i mine"), "1 Lock Is Locked: mine\n");
    drop(w);
    server.wait_for_stat("locks", 0);
    let off = kind.with_config(|c| c.dump = false);
    assert_eq!(off.connect2().cmd("watch *"), "0 disabled\n");
}

fn watching_over_unix_and_websocket(kind: Kind) {
    let server = kind.with_config(|c| c.websocket = vec!["127.0.0.1:0".into()]);
    let mut u = server.connect_unix();
    assert_eq!(u.cmd("watch u*"), "1 Watching: u*\n");
    assert_eq!(u.line_string(), "synced\n");
    let addr = server.handle.as_ref().expect("running").websocket_addrs()[0];
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let request = format!("ws://{addr}/")
        .into_client_request()
        .expect("request");
    let (mut ws, _) = tungstenite::client(request, tcp).expect("handshake");
    ws.send(Message::text("watch u*")).expect("send");
    let text = |ws: &mut tungstenite::WebSocket<TcpStream>| loop {
        match ws.read().expect("read") {
            Message::Text(t) => return t.to_string(),
            _ => continue,
        }
    };
    assert_eq!(text(&mut ws), "1 Watching: u*\nsynced\n");
    let mut c = server.connect();
    let nc = c.name();
    let t = token(&c.cmd("wg 0 u1"), "u1");
    let event = format!("locked x {t} {nc} u1\n");
    assert_eq!(u.line_string(), event);
    assert_eq!(text(&mut ws), event);
}

/// A watcher that reads nothing falls behind; the server cuts it off once
/// its queue is full, and meanwhile nobody else waits for it. (Single
/// server only: the 60,000 grants and releases it takes would be as many
/// etcd transactions. A node uses the same queue and rule.)
#[test]
fn a_watcher_that_never_reads_is_cut_off_and_slows_nobody() {
    let server = TestServer::with_config(|c| c.write_timeout = Duration::from_secs(1));
    let mut w = server.connect();
    w.send(b"watch *\n");
    // Synced before any lock is taken, so the snapshot is empty; then it
    // reads no more.
    assert_eq!(w.line_string(), "1 Watching: *\n");
    assert_eq!(w.line_string(), "synced\n");
    let mut busy = server.connect();
    let mut poll = server.connect2();
    // 30,000 events of about 1 kB: far past the socket buffers (a few
    // MB) and the queue (10,000 events).
    let name = "x".repeat(1000);
    let pair = format!("g {name}\nr {name}\n");
    let batch: String = (0..500).map(|_| pair.as_str()).collect();
    for _ in 0..30 {
        busy.send(batch.as_bytes());
        for _ in 0..500 {
            assert_eq!(busy.line_string(), format!("1 Lock Get Success: {name}\n"));
            assert_eq!(
                busy.line_string(),
                format!("1 Lock Release Success: {name}\n")
            );
        }
        assert_eq!(poll.cmd("ping"), "1 pong\n");
    }
    // Cut off: the watcher's connection ends.
    poll.wait_for_stat("connections", 2);
    let got = w.read_to_end();
    assert!(
        got.starts_with(b"locked x "),
        "{:?}",
        &got[..got.len().min(100)]
    );
    assert!(got.len() < 30_000 * 1000, "{} bytes", got.len());
}

/// Watchers start while grants and releases race; each applies its
/// snapshot and events, and must never see a lock taken twice or freed
/// while free, and must end with the true state: nothing held.
fn snapshots_racing_with_grants_add_up_to_the_truth(kind: Kind) {
    let server = kind.start();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let addr = server.addr;
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut c = Conn::tcp(addr);
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let name = format!("k{}", (n + i) % 5);
                    n += 1;
                    let reply = c.cmd(&format!("wg 0 {name}"));
                    if reply.ends_with(&format!("Lock Get Success: {name}\n")) {
                        assert_eq!(
                            c.cmd(&format!("r {name}")),
                            format!("1 Lock Release Success: {name}\n")
                        );
                    }
                    let reply = c.cmd(&format!("wr 0 {name}"));
                    if reply.ends_with(&format!("Read Lock Get Success: {name}\n")) {
                        assert_eq!(
                            c.cmd(&format!("rr {name}")),
                            format!("1 Read Lock Release Success: {name}\n")
                        );
                    }
                }
            })
        })
        .collect();
    let mut watchers = Vec::new();
    for _ in 0..6 {
        thread::sleep(Duration::from_millis(30));
        let mut w = server.connect();
        w.send(b"watch k*\n");
        assert_eq!(w.line_string(), "1 Watching: k*\n");
        watchers.push(w);
    }
    thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.join().expect("worker");
    }
    // The end marker: a grant after everything else.
    let mut marker = server.connect();
    let t = token(&marker.cmd("wg 0 kz"), "kz");
    let end = format!("locked x {t} {} kz\n", marker.name());
    for (i, w) in watchers.iter_mut().enumerate() {
        // name -> (writer, readers)
        let mut state: BTreeMap<String, (Option<String>, Vec<String>)> = BTreeMap::new();
        let mut synced = false;
        loop {
            let line = w.line_string();
            if line == end {
                break;
            }
            if line == "synced\n" {
                synced = true;
                continue;
            }
            let fields: Vec<&str> = line.trim_end().splitn(5, ' ').collect();
            let [event, kind, n, holder, name] = fields[..] else {
                panic!("watcher {i}: {line:?}");
            };
            assert_eq!(synced, event != "held", "watcher {i}: {line:?}");
            let (writer, readers) = state.entry(name.to_string()).or_default();
            match (event, kind) {
                ("held" | "locked", "x") => {
                    assert!(
                        writer.is_none() && readers.is_empty(),
                        "watcher {i}: {line:?} over {writer:?} {readers:?}"
                    );
                    *writer = Some(holder.to_string());
                }
                ("released" | "orphaned", "x") => {
                    assert_eq!(
                        writer.take().as_deref(),
                        Some(holder),
                        "watcher {i}: {line:?}"
                    );
                }
                ("held" | "locked", "rd") => {
                    assert!(writer.is_none(), "watcher {i}: {line:?} over {writer:?}");
                    readers.push(holder.to_string());
                    assert_eq!(n, readers.len().to_string(), "watcher {i}: {line:?}");
                }
                ("released" | "orphaned", "rd") => {
                    let at = readers.iter().position(|r| r == holder);
                    assert!(at.is_some(), "watcher {i}: {line:?} not among {readers:?}");
                    readers.retain(|r| r != holder);
                    assert_eq!(n, readers.len().to_string(), "watcher {i}: {line:?}");
                }
                _ => panic!("watcher {i}: {line:?}"),
            }
        }
        assert!(synced, "watcher {i} never synced");
        let held: Vec<_> = state
            .iter()
            .filter(|(_, (w, r))| w.is_some() || !r.is_empty())
            .collect();
        assert!(held.is_empty(), "watcher {i} ends with {held:?} held");
    }
}
