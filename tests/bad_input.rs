//! Issue 3: bad input and hostile clients (PROTOCOL.md Part 1 "the server
//! never panics or misbehaves on any byte sequence", Part 2 "Limits and bad
//! input"). Seeds are printed; rerun a failure with `LOCKD_TEST_SEED`.

mod common;
use common::{assert_bytes, Conn, Rng, TestServer};
use lockd::protocol::{parse_line, Parsed};

/// Pieces random input is built from: verbs, names, every kind of
/// whitespace, NUL, invalid UTF-8 and cut-off multi-byte characters.
const PIECES: &[&[u8]] = &[
    b"g ",
    b"r ",
    b"i ",
    b"d",
    b"dump",
    b"dump shared",
    b"sg ",
    b"sr ",
    b"si ",
    b"sd",
    b"me",
    b"iam ",
    b"who",
    b"q",
    b"hello 2",
    b"ra",
    b"ping",
    b"foo",
    b"bar",
    b" ",
    b"\t",
    b"\n",
    b"\n",
    b"\n",
    b"\r\n",
    b"\0",
    b"\xff",
    b"\xfe",
    b"\xc2",
    b"\xa0",
    b"\x85",
    b"\xc2\xa0",
    b"\xe3\x80\x80",
    b"\xe3\x80",
    b"\xf0\x9f\x92",
    b"\xf4\x90\x80\x80",
    b"\x0b",
    b"\x0c",
    b"\x1b[2J",
];

fn random_input(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        if rng.percent(20) {
            out.push(rng.below(256) as u8);
        } else {
            out.extend_from_slice(PIECES[rng.below(PIECES.len() as u64) as usize]);
        }
    }
    out
}

/// Any byte sequence: `parse_line` never panics, and what it accepts as a
/// command is stable under re-normalisation of its own trimmed line.
#[test]
fn parse_line_takes_any_bytes() {
    let mut rng = Rng::from_env("parse_line_takes_any_bytes");
    for _ in 0..50_000 {
        let len = rng.below(40) as usize;
        let line = random_input(&mut rng, len);
        let line: Vec<u8> = line.into_iter().filter(|&b| b != b'\n').collect();
        let parsed = parse_line(&line);
        let trimmed = lockd::protocol::trim(&line);
        if trimmed.is_empty() {
            assert_eq!(parsed, Parsed::Empty, "{}", line.escape_ascii());
        } else {
            assert_eq!(parse_line(trimmed), parsed, "{}", line.escape_ascii());
        }
    }
}

/// Any byte sequence sent to a live server (TCP and Unix, in random
/// pieces, ending with a FIN, a reset, or an unread close) never kills it;
/// afterwards every lock has been orphaned and no connection is left.
#[test]
fn random_bytes_never_kill_the_server() {
    let server = TestServer::start();
    let mut rng = Rng::from_env("random_bytes_never_kill_the_server");
    for round in 0..60 {
        let mut conn = if rng.percent(30) {
            server.connect_unix()
        } else {
            server.connect()
        };
        let writes = 1 + rng.below(5);
        for _ in 0..writes {
            let len = rng.below(2000) as usize;
            conn.send(&random_input(&mut rng, len));
        }
        let is_tcp = matches!(conn.reader.get_ref(), common::RawStream::Tcp(_));
        match rng.below(3) {
            0 => {
                conn.shutdown_write();
                let _ = conn.read_to_end();
            }
            1 if is_tcp => conn.reset(),
            _ => drop(conn),
        }
        let mut probe = server.connect();
        assert_eq!(
            probe.cmd("me"),
            format!("1 {0} {0}\n", probe.name()),
            "round {round}"
        );
    }
    server.wait_for_connections(0);
    let mut probe = server.connect();
    let q = probe.q();
    for line in ["connections: 1\n", "locks: 0\n", "shared_locks: 0\n"] {
        assert!(q.contains(line), "{line:?} not in\n{q}");
    }
    assert_eq!(probe.cmd("g foo"), "1 Lock Get Success: foo\n");
}

/// Limits: a 1 MB line is read through to its `\n` and dropped, counted in
/// `invalid_commands`; the connection and its locks stay and the next
/// command works. At EOF without `\n` it is dropped too.
#[test]
fn megabyte_line_is_dropped_and_counted() {
    let server = TestServer::start();
    let mut a = server.connect();
    assert_eq!(a.cmd("g keep"), "1 Lock Get Success: keep\n");
    assert_eq!(a.cmd("sg skeep"), "1 Shared Lock Get Success: skeep\n");
    let mut huge = b"g ".to_vec();
    huge.resize(1 << 20, b'a');
    huge.extend_from_slice(b"\ni keep\n");
    a.send(&huge);
    assert_eq!(a.line(), b"1 Lock Is Locked: keep\n");
    assert_eq!(a.stat("invalid_commands"), 1);
    assert_eq!(a.stat("command_g"), 1);
    assert_eq!(a.stat("locks"), 1);
    assert_eq!(a.stat("shared_locks"), 1);
    assert_eq!(a.cmd("r keep"), "1 Lock Release Success: keep\n");

    let mut b = server.connect();
    b.send(&huge[..1 << 20]);
    b.shutdown_write();
    assert_bytes(b.read_to_end(), b"");
    a.wait_for_stat("invalid_commands", 2);
    assert_eq!(a.stat("locks"), 0);
    drop((a, b));
    server.wait_for_connections(0);
}

/// Limits: lines up to the limit (4096 bytes, `\n` not counted; a `\r`
/// counts) are handled exactly; one byte more is dropped.
#[test]
fn line_limit_is_exact() {
    let server = TestServer::start();
    let mut a = server.connect();
    let name = "n".repeat(4096 - 2);
    assert_eq!(
        a.cmd(&format!("g {name}")),
        format!("1 Lock Get Success: {name}\n")
    );
    a.send(format!("i {name}x\ni {name}\r\ni {name}\n").as_bytes());
    assert_eq!(
        String::from_utf8(a.line()).expect("utf-8"),
        format!("1 Lock Is Locked: {name}\n")
    );
    assert_eq!(a.stat("invalid_commands"), 2);
}

/// Limits: past `max_connections` a new connection gets exactly
/// `0 Too Many Connections\n` and EOF; the admitted ones and their locks
/// are unaffected, a freed place can be taken again, and the count goes
/// back to 0.
#[test]
fn flood_past_max_connections() {
    let server = TestServer::with_config(|c| c.max_connections = 20);
    let mut admitted: Vec<Conn> = (0..20)
        .map(|i| {
            let mut conn = if i % 4 == 0 {
                server.connect_unix()
            } else {
                server.connect()
            };
            assert!(conn.cmd("me").starts_with("1 "));
            conn
        })
        .collect();
    assert_eq!(admitted[1].cmd("g held"), "1 Lock Get Success: held\n");
    let mut flood: Vec<Conn> = (0..30)
        .map(|i| {
            if i % 3 == 0 {
                server.connect_unix()
            } else {
                server.connect()
            }
        })
        .collect();
    for conn in &mut flood {
        assert_bytes(conn.read_to_end(), b"0 Too Many Connections\n");
    }
    // A rejected client that talks first is still told, then closed.
    let mut talker = server.connect();
    talker.send(b"g held\n");
    assert_bytes(talker.read_to_end(), b"0 Too Many Connections\n");
    assert_eq!(admitted[2].cmd("i held"), "1 Lock Is Locked: held\n");
    assert_eq!(admitted[2].cmd("g held"), "0 Lock Get Failure: held\n");
    assert_eq!(admitted[0].stat("connections"), 20);
    for conn in &mut admitted {
        assert!(conn.cmd("me").starts_with("1 "));
    }
    drop(admitted.pop());
    admitted[0].wait_for_stat("connections", 19);
    let mut late = server.connect();
    assert_eq!(late.cmd("i held"), "1 Lock Is Locked: held\n");
    drop((admitted, late, flood, talker));
    server.wait_for_connections(0);
}

/// A client that vanishes mid-line (reset, or FIN without reading its
/// replies) or mid-reply loses its locks; the half line never leaves a
/// lock behind; the server goes on and the count returns to 0.
#[test]
fn clients_vanishing_mid_line_or_mid_reply() {
    let server = TestServer::start();
    let mut probe = server.connect();

    let mut a = server.connect();
    a.cmd("g x");
    a.send(b"g half-reset");
    a.reset();

    let mut b = server.connect_unix();
    b.cmd("sg s");
    b.send(b"g half-fin");
    drop(b);

    let mut c = server.connect();
    c.cmd("g y");
    c.cmd("sg s");
    for i in 0..200 {
        c.cmd(&format!("g many{i}"));
    }
    c.send(&b"d\nsd\ndump\nq\n".repeat(200));
    c.reset();

    // race: see orphan reaping (a connection releases its locks before it
    // leaves the live set, so once only the probe is left all are free)
    server.wait_for_connections(1);
    assert_eq!(probe.stat("locks"), 0);
    assert_eq!(probe.stat("shared_locks"), 0);
    assert_eq!(probe.cmd("i half-reset"), "0 Lock Not Locked: half-reset\n");
    assert_eq!(probe.cmd("i half-fin"), "0 Lock Not Locked: half-fin\n");
    assert_eq!(probe.cmd("g x"), "1 Lock Get Success: x\n");
    assert!(probe.stat("orphans") >= 202);
    assert_eq!(probe.stat("shared_orphans"), 2);
    drop(probe);
    server.wait_for_connections(0);
}

/// Issue 14: bytes that never make a line (a TLS ClientHello sent to the
/// plain port) close the connection after the 10 s line deadline, its
/// locks released; a silent connection with nothing buffered stays.
#[test]
fn a_line_that_never_completes_is_cut_off() {
    let server = TestServer::start();
    let mut silent = server.connect();
    let mut hello = server.connect();
    assert_eq!(hello.cmd("g held"), "1 Lock Get Success: held\n");
    // The start of a TLS 1.2 ClientHello record: no `\n` in it.
    hello.send(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ]);
    let mut other = server.connect();
    common::poll_until(std::time::Duration::from_secs(20), || {
        let reply = other.cmd("i held");
        common::check(reply == "0 Lock Not Locked: held\n", || reply.clone())
    });
    assert_bytes(hello.read_to_end(), b"");
    assert_eq!(silent.cmd("i held"), "0 Lock Not Locked: held\n");
}
