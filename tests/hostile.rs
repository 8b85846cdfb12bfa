//! Issue 14's hostile clients, one test per row of its table at a size
//! that fits CI. Each asserts bounds on memory and correctness, never a
//! time (latencies are measured by `examples/hostile_bench.rs`).
//!
//! Rows tested elsewhere, not repeated here:
//! - many distinct locks past a cap: `tests/caps.rs`;
//! - a TLS ClientHello on the plain port, and a line trickled past its
//!   10 s: `tests/bad_input.rs` (`a_line_that_never_completes_is_cut_off`);
//! - trickling clients beside a good one: `tests/faults.rs`;
//! - no secret in any log: `tests/cli.rs`
//!   (`no_spelling_of_a_secret_reaches_the_log_and_guessing_is_cut_short`),
//!   `tests/events.rs`, `tests/http.rs`; the auth file's whitespace:
//!   `tests/lockctl.rs`;
//! - token recovery after a full disk: `src/token.rs`
//!   (`grants_resume_by_themselves_once_the_mark_can_be_saved_again`);
//! - SIGHUP, SIGUSR1, SIGQUIT: `tests/cli.rs`;
//! - a connection burst past the limits: `tests/faults.rs`
//!   (`connection_flood_is_refused_cleanly`), `tests/bad_input.rs`
//!   (`flood_past_max_connections`);
//! - FIFO among 2,000+ waiters: `tests/rwlock.rs`;
//! - paging a big table while it changes: the store's unit tests.

mod common;

use common::{assert_bytes, check, poll_until, wait_until, Conn, TestServer};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;
use tungstenite::{Message, WebSocket};

/// The tests of this file run one at a time: they count this process's
/// memory and threads, which the others would disturb.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// A field of /proc/self/status, in kB (or a count).
fn proc_status(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// `n` connections to `server`, the `i`th of which has sent `line(i)`.
fn connections_sending(
    server: &TestServer,
    n: usize,
    line: impl Fn(usize) -> String,
) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut stream = TcpStream::connect(server.addr).expect("connect");
            stream.write_all(line(i).as_bytes()).expect("send");
            stream
        })
        .collect()
}

/// Takes `n` locks named `prefix` + a number on `conn`, pipelined.
fn take_locks(conn: &mut Conn, prefix: &str, n: usize) -> Vec<String> {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i:06}")).collect();
    for chunk in names.chunks(1000) {
        let batch: String = chunk.iter().map(|name| format!("g {name}\n")).collect();
        conn.send(batch.as_bytes());
        for name in chunk {
            let reply = String::from_utf8(conn.line()).expect("utf-8");
            assert_eq!(reply, format!("1 Lock Get Success: {name}\n"));
        }
    }
    names
}

#[test]
fn listings_in_tiny_pieces_are_byte_for_byte_whole() {
    let _turn = one_at_a_time();
    // Pieces of 100 bytes, and more names than a page of the store.
    let server = TestServer::with_config(|c| c.max_output = 100);
    let mut holder = server.connect();
    let me = holder.name();
    let mut names = take_locks(&mut holder, "n", 2500);
    names.sort();
    for name in &names[..3] {
        assert!(holder.cmd(&format!("sg {name}")).starts_with("1 "));
    }
    assert_eq!(holder.cmd("iam holder"), "1 ok\n");

    let mut other = server.connect();
    let dump = format!(
        "map[{}]\n",
        names
            .iter()
            .map(|n| format!("{n}:{me}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert_eq!(
        String::from_utf8(other.cmd_bytes(b"dump")).expect("utf-8"),
        dump
    );
    let shared = format!(
        "map[{}]\n",
        names[..3]
            .iter()
            .map(|n| format!("{n}:[{me}]"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert_eq!(
        String::from_utf8(other.cmd_bytes(b"dump shared")).expect("utf-8"),
        shared
    );

    let json = String::from_utf8(other.cmd_bytes(b"dj")).expect("utf-8");
    let value: serde_json::Value = serde_json::from_str(&json).expect("dj is JSON");
    let exclusive = value["exclusive"].as_object().expect("exclusive");
    assert_eq!(
        exclusive.keys().collect::<Vec<_>>(),
        names.iter().collect::<Vec<_>>()
    );
    assert_eq!(exclusive[&names[7]]["name"], "holder");
    assert_eq!(value["shared"].as_object().expect("shared").len(), 3);

    // Protocol 2: line blocks end with their empty line, after the last
    // piece.
    other.hello2();
    other.send(b"d\n");
    let lines = other.block();
    let expected: Vec<String> = names.iter().map(|n| format!("{n}: holder\n")).collect();
    assert!(
        lines == expected,
        "d: {:?}...",
        &lines[..lines.len().min(3)]
    );
    other.send(b"who\n");
    assert_eq!(other.block(), [format!("{me}: holder\n")]);
    other.send(b"sd\n");
    assert_eq!(other.block().len(), 3);
    assert_eq!(other.cmd("ping"), "1 pong\n", "the stream is in step");
}

#[test]
fn clients_that_never_read_a_listing_cost_a_piece_each_and_are_dropped() {
    let _turn = one_at_a_time();
    let server = TestServer::with_config(|c| {
        c.max_output = 64 * 1024;
        c.write_timeout = Duration::from_secs(2);
    });
    let mut holder = server.connect();
    take_locks(
        &mut holder,
        "a-rather-long-lock-name-to-make-the-listing-big-",
        40_000,
    );
    let before = proc_status("VmRSS:");

    // Each asks for its listing many times over (some 80 MB of replies)
    // and never reads a byte; each holds a lock of its own.
    let silent: Vec<TcpStream> = (0..20)
        .map(|i| {
            let mut stream = TcpStream::connect(server.addr).expect("connect");
            stream
                .write_all(format!("g silent{i}\n").as_bytes())
                .expect("g");
            stream.write_all(&b"dj\n".repeat(20)).expect("dj");
            stream
        })
        .collect();
    // Meanwhile the others are served, and memory stays bounded: a whole
    // dj here is about 3 MB, and each of the twenty asked for twenty, so
    // replies built whole would pass the bound many times over.
    let mut bystander = server.connect();
    let mut peak = before;
    for round in 0..20 {
        assert_eq!(
            bystander.cmd("g bystander"),
            "1 Lock Get Success: bystander\n"
        );
        assert_eq!(
            bystander.cmd("r bystander"),
            "1 Lock Release Success: bystander\n"
        );
        assert!(bystander
            .cmd(&format!("i silent{}", round % 20))
            .starts_with("1 "));
        peak = peak.max(proc_status("VmRSS:"));
        thread::sleep(Duration::from_millis(50));
    }
    let grown_mb = peak.saturating_sub(before) / 1024;
    assert!(grown_mb < 100, "the server grew by {grown_mb} MB");

    // After --write-timeout they are closed, orphaned: their locks go.
    wait_until("the silent clients' locks to be released", || {
        (0..20).all(|i| bystander.cmd(&format!("i silent{i}")).starts_with("0 "))
    });
    wait_until("the silent connections to close", || {
        server.live_connections() == 2
    });
    for mut stream in silent {
        // What they got is a prefix of the replies, then the close.
        let mut got = Vec::new();
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.read_to_end(&mut got);
        assert!(got.starts_with(b"1 Lock Get Success: silent"));
    }
    let first = "i a-rather-long-lock-name-to-make-the-listing-big-000000";
    assert!(
        holder.cmd(first).starts_with("1 "),
        "the holder kept its locks"
    );
}

#[test]
fn a_client_that_reads_a_trickle_is_closed_within_the_write_timeout() {
    let _turn = one_at_a_time();
    let server = TestServer::with_config(|c| {
        c.max_output = 64 * 1024;
        c.write_timeout = Duration::from_secs(2);
    });
    let mut holder = server.connect();
    take_locks(
        &mut holder,
        "a-rather-long-lock-name-to-make-the-listing-big-",
        5_000,
    );

    // It holds a lock, asks for some 30 MB of listings, and reads them a
    // KiB every 100 ms: every write makes some progress within the write
    // timeout, but no block of output drains within it.
    let mut drip = server.connect();
    assert_eq!(drip.cmd("g drip"), "1 Lock Get Success: drip\n");
    let mut stream = drip.tcp_stream().try_clone().expect("clone");
    stream.write_all(&b"dj\n".repeat(80)).expect("dj");
    let hurry = Arc::new(AtomicBool::new(false));
    let reader = thread::spawn({
        let hurry = Arc::clone(&hurry);
        move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let started = std::time::Instant::now();
            let mut buf = [0u8; 1024];
            let mut total = 0usize;
            while started.elapsed() < Duration::from_secs(30) {
                match stream.read(&mut buf) {
                    Ok(0) => return (total, true),
                    Ok(n) => total += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return (total, true),
                }
                // Once told, it reads what reached it before the close
                // (what the kernels held then: a few MB).
                if !hurry.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(100));
                }
            }
            (total, false)
        }
    });

    // It is closed and orphaned long before it could read what it asked
    // for (at this pace, over an hour).
    let mut bystander = server.connect();
    poll_until(Duration::from_secs(20), || {
        check(bystander.cmd("i drip").starts_with("0 "), || {
            "the trickling client still holds its lock".into()
        })
    });
    hurry.store(true, Ordering::Relaxed);
    let (read, closed) = reader.join().expect("reader");
    assert!(closed, "the connection stayed open ({read} bytes read)");
    assert!(read < 20 << 20, "it read {read} bytes");
    assert_eq!(bystander.stat("orphans"), 1);
    assert!(holder.cmd("ping").starts_with("1 "), "the holder stays");
}

#[test]
fn slowloris_connections_then_closed_leave_no_thread_and_no_lock() {
    let _turn = one_at_a_time();
    // Threads wait this long for a next connection before they end.
    let server = TestServer::with_config(|c| c.thread_linger = Duration::from_millis(100));
    let threads_before = proc_status("Threads:");
    let mut slow = connections_sending(&server, 200, |i| format!("g slow{i}\ng"));
    server.wait_for_stat("locks", 200);
    // A byte more each, a line never finished.
    for stream in &mut slow {
        stream.write_all(b" ").expect("trickle");
    }
    drop(slow);
    server.wait_for_stat("locks", 0);
    wait_until("the connections' threads to end", || {
        server.live_connections() == 0 && proc_status("Threads:") <= threads_before + 2
    });
    let mut after = server.connect();
    assert_eq!(after.cmd("g slow7"), "1 Lock Get Success: slow7\n");
}

/// The threads of this process, by id.
fn thread_ids() -> Vec<u64> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// A connection's thread serves the next connection once its own has
/// ended (`ServerConfig::thread_linger`): clients that connect one after
/// another start no new threads (issue 17's mass close: thread exits were
/// most of its cost).
#[test]
fn connections_one_after_another_reuse_their_thread() {
    let _turn = one_at_a_time();
    let server = TestServer::start();
    let mut first = server.connect();
    assert_eq!(first.cmd("g reuse"), "1 Lock Get Success: reuse\n");
    drop(first);
    server.wait_for_connections(0);
    let before = thread_ids();
    for i in 0..100 {
        let mut conn = server.connect();
        let reply = conn.cmd(&format!("g reuse{i}"));
        assert_eq!(reply, format!("1 Lock Get Success: reuse{i}\n"));
        drop(conn);
        server.wait_for_connections(0);
    }
    let new = thread_ids()
        .into_iter()
        .filter(|id| !before.contains(id))
        .count();
    // A connection may come before its predecessor's thread is back.
    assert!(new <= 5, "{new} new threads for 100 connections in turn");
}

/// Issue 17's mass close at a size that fits CI: 1,000 connections, each
/// holding a lock and with part of a line sent, close at once. Every lock
/// is released (as an orphan, once), a bystander is answered throughout,
/// and every connection's thread ends. The times are measured by
/// `examples/mass_close.rs`.
#[test]
fn a_mass_close_with_partial_lines_releases_every_lock_once() {
    let _turn = one_at_a_time();
    let server = TestServer::start();
    let holders = connections_sending(&server, 1000, |i| format!("g mass{i}\n"));
    server.wait_for_stat("locks", 1000);
    let holders: Vec<TcpStream> = holders
        .into_iter()
        .map(|mut stream| {
            let mut reply = [0u8; 64];
            let n = stream.read(&mut reply).expect("grant");
            assert!(reply[..n].starts_with(b"1 "), "not granted");
            stream.write_all(b"i part").expect("partial line");
            stream
        })
        .collect();
    let mut bystander = server.connect();
    assert_eq!(bystander.cmd("g mine"), "1 Lock Get Success: mine\n");
    let closing = thread::spawn(move || drop(holders));
    // Served while the others close: the count of locks only goes down.
    let mut last = bystander.stat("locks");
    poll_until(Duration::from_secs(20), || {
        let now = bystander.stat("locks");
        assert!(now <= last, "locks went from {last} up to {now}");
        last = now;
        check(now == 1, || format!("{now} locks still held"))
    });
    closing.join().expect("closing");
    assert_eq!(bystander.stat("orphans"), 1000);
    assert_eq!(bystander.cmd("i mass999"), "0 Lock Not Locked: mass999\n");
    assert_eq!(bystander.cmd("i mine"), "1 Lock Is Locked: mine\n");
    wait_until("the connections' threads to end", || {
        server.live_connections() == 1
    });
}

#[test]
fn a_trickled_websocket_upgrade_is_dropped_and_others_are_served() {
    let _turn = one_at_a_time();
    let server = TestServer::with_config(|c| c.websocket = vec!["127.0.0.1:0".into()]);
    let ws = server
        .handle
        .as_ref()
        .expect("running")
        .websocket_addrs()
        .into_iter()
        .next()
        .expect("a WebSocket listener");
    let mut trickler = TcpStream::connect(ws).expect("connect");
    trickler
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let request = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n";
    let mut closed = false;
    // A byte every 500 ms: without a total deadline this would take 25 s
    // and be held the whole time; the server drops it after 10.
    for &byte in request.iter() {
        if trickler.write_all(&[byte]).is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        match trickler.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => panic!("an answer to half a request"),
            Err(_) => {}
        }
        // Meanwhile a plain client is served.
        if byte == b'\n' {
            assert_eq!(server.connect().cmd("ping"), "1 pong\n");
        }
    }
    assert!(
        closed,
        "the trickled upgrade was held for the whole request"
    );
}

/// A WebSocket client of `server`'s first WebSocket listener.
fn ws_connect(server: &TestServer) -> WebSocket<TcpStream> {
    let addr = server.handle.as_ref().expect("running").websocket_addrs()[0];
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let (ws, _) = tungstenite::client(format!("ws://{addr}/"), tcp).expect("handshake");
    ws
}

/// Sends `command` and returns the one message that answers it: its bytes
/// and whether it was text.
fn ws_cmd(ws: &mut WebSocket<TcpStream>, command: &str) -> (Vec<u8>, bool) {
    ws.send(Message::text(command)).expect("send");
    loop {
        match ws.read().expect("read reply") {
            Message::Text(t) => return (t.as_bytes().to_vec(), true),
            Message::Binary(b) => return (b.to_vec(), false),
            _ => continue,
        }
    }
}

#[test]
fn a_websocket_listing_in_fragments_is_one_message_byte_for_byte() {
    let _turn = one_at_a_time();
    // Fragments of 4 KiB: the listings below span dozens of them.
    let server = TestServer::with_config(|c| {
        c.max_output = 4096;
        c.websocket = vec!["127.0.0.1:0".into()];
    });
    let mut holder = server.connect();
    let names = take_locks(&mut holder, "n", 2500);
    for name in &names[..3] {
        assert!(holder.cmd(&format!("sg {name}")).starts_with("1 "));
    }
    assert_eq!(holder.cmd("iam holder"), "1 ok\n");

    let mut ws = ws_connect(&server);
    let mut tcp = server.connect();
    for command in ["dump", "dump shared", "dj"] {
        let (reply, text) = ws_cmd(&mut ws, command);
        assert!(text, "{command}: not a text message");
        assert_bytes(&reply, tcp.cmd_bytes(command.as_bytes()));
        assert!(reply.len() > 4096 || command == "dump shared");
    }
    // Protocol 2 on both: a block ends with its empty line.
    assert_eq!(ws_cmd(&mut ws, "hello 2").0, tcp.cmd_bytes(b"hello 2"));
    for command in ["d", "sd", "who"] {
        let (reply, text) = ws_cmd(&mut ws, command);
        assert!(text, "{command}: not a text message");
        tcp.send(format!("{command}\n").as_bytes());
        let mut expected = tcp.block().concat().into_bytes();
        expected.push(b'\n');
        assert_bytes(&reply, expected);
    }
    assert_eq!(ws_cmd(&mut ws, "ping").0, b"1 pong\n", "in step");

    // The one change: a text message cannot carry bytes that are not
    // UTF-8, so a name with them, in a fragment after the first, shows
    // U+FFFD for them (as dj always does).
    assert!(holder
        .cmd_bytes(b"g \xffz")
        .starts_with(b"1 Lock Get Success"));
    let (reply, text) = ws_cmd(&mut ws, "d");
    assert!(text);
    let raw = server.connect().multi(b"d");
    assert!(raw.ends_with(b"\xffz: holder\n"));
    assert_bytes(&reply, format!("{}\n", String::from_utf8_lossy(&raw)));
}

#[test]
fn websocket_clients_that_never_read_a_listing_cost_a_piece_each() {
    let _turn = one_at_a_time();
    let server = TestServer::with_config(|c| {
        c.max_output = 64 * 1024;
        c.write_timeout = Duration::from_secs(2);
        c.websocket = vec!["127.0.0.1:0".into()];
    });
    let mut holder = server.connect();
    take_locks(
        &mut holder,
        "a-rather-long-lock-name-to-make-the-listing-big-",
        20_000,
    );
    let listing = holder.cmd_bytes(b"dj").len();
    let clients = 10;
    let mut silent: Vec<WebSocket<TcpStream>> = (0..clients)
        .map(|i| {
            let mut ws = ws_connect(&server);
            let (reply, _) = ws_cmd(&mut ws, &format!("g ws{i}"));
            assert_eq!(reply, format!("1 Lock Get Success: ws{i}\n").as_bytes());
            ws
        })
        .collect();
    let before = proc_status("VmRSS:");

    // Each asks for its listing (some 2 MB) four times over and never
    // reads: more than the kernel's buffers hold (about 3 MB), so the
    // server blocks on each. Built whole, each would hold a listing or two
    // here.
    for ws in &mut silent {
        for _ in 0..4 {
            ws.send(Message::text("dj")).expect("dj");
        }
    }
    // Until --write-timeout closes them (orphaned), once each has made
    // enough of its listings to fill the kernel's buffers (seconds of CPU
    // in a debug build), others are served and memory stays bounded.
    let mut bystander = server.connect();
    let mut peak = before;
    poll_until(Duration::from_secs(20), || {
        assert_eq!(bystander.cmd("ping"), "1 pong\n");
        peak = peak.max(proc_status("VmRSS:"));
        let gone = (0..clients).all(|i| bystander.cmd(&format!("i ws{i}")).starts_with("0 "));
        check(gone, || "the silent clients still hold their locks".into())
    });
    let grown = (peak.saturating_sub(before) * 1024) as usize;
    assert!(
        grown < clients * listing / 2,
        "the server grew by {} MB for {clients} listings of {} MB",
        grown >> 20,
        listing >> 20
    );
    drop(silent);
}
