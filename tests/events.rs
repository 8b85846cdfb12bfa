//! Events in the log at the default level (issue 13): one line per
//! orphaned lock, with its holder and hold time, and one per refused
//! deadlock; `--log-format json` writes one object per line with a
//! timestamp; no secret ever reaches the log.

mod common;

use common::{Conn, Daemon, TempDir};
use std::net::SocketAddr;

/// `lockd ARGS` on a free loopback port, without `--verbose`.
fn daemon(args: &[&str]) -> (Daemon, SocketAddr) {
    let mut all = vec!["--listen", "127.0.0.1:0", "--no-state"];
    all.extend_from_slice(args);
    let mut daemon = Daemon::start(&all, 0);
    let line = daemon.wait_line(|l| l.contains("listening on "));
    let addr = line
        .rsplit("listening on ")
        .next()
        .and_then(|a| a.trim_end_matches(['"', '}']).parse().ok())
        .expect("a listen address in the log");
    (daemon, addr)
}

/// A holder with a registered name takes an exclusive and a shared lock
/// and vanishes; two clients then close a cycle. Returns the holder's
/// default name and the name of the client refused.
fn orphan_and_deadlock(addr: SocketAddr) -> (String, String) {
    let mut holder = Conn::tcp(addr);
    assert_eq!(holder.cmd("iam nightly builder"), "1 ok\n");
    assert_eq!(holder.cmd("g deploy"), "1 Lock Get Success: deploy\n");
    assert_eq!(holder.cmd("sg pool"), "1 Shared Lock Get Success: pool\n");
    let holder_name = holder.name();
    drop(holder);

    let mut a = Conn::tcp(addr);
    let mut b = Conn::tcp(addr);
    a.hello2();
    b.hello2();
    assert_eq!(a.cmd("g x"), "1 Lock Get Success: x\n");
    assert_eq!(b.cmd("g y"), "1 Lock Get Success: y\n");
    a.send(b"wg 10000 y\n");
    let mut probe = Conn::tcp(addr);
    probe.hello2();
    probe.wait_for_stat("waiting", 1);
    assert_eq!(b.cmd("wg 10000 x"), "0 Lock Get Deadlock: x\n");
    let refused = b.name();
    drop((a, b));
    (holder_name, refused)
}

#[test]
fn orphans_and_deadlocks_are_logged_at_the_default_level() {
    let (mut daemon, addr) = daemon(&[]);
    let (holder, refused) = orphan_and_deadlock(addr);
    // The lines come in any order (a hang-up is noticed on another thread).
    let wanted = [
        "orphaned exclusive lock \"deploy\"",
        "orphaned shared lock \"pool\"",
        "deadlock refused",
    ];
    let find = |log: &[String], what: &str| log.iter().find(|l| l.contains(what)).cloned();
    while wanted.iter().any(|w| find(&daemon.log, w).is_none()) {
        daemon.wait_line(|_| true);
    }
    let line = find(&daemon.log, wanted[0]).expect("an orphan line");
    let prefix = "lockd: orphaned exclusive lock \"deploy\" held ";
    assert!(line.starts_with(prefix), "{line}");
    let by = format!("s by {holder} (nightly builder): its connection ended");
    assert!(line.ends_with(&by), "{line}");
    let seconds: f64 = line[prefix.len()..line.len() - by.len()]
        .parse()
        .expect("a hold time in seconds");
    assert!(seconds >= 0.0, "{line}");
    let line = find(&daemon.log, wanted[1]).expect("a shared orphan line");
    assert!(
        line.starts_with("lockd: orphaned shared lock \"pool\" held "),
        "{line}"
    );
    assert!(line.contains(&holder), "{line}");
    let line = find(&daemon.log, wanted[2]).expect("a deadlock line");
    assert!(
        line.starts_with(&format!(
            "lockd: deadlock refused: {refused} asked to wait for exclusive lock \"x\" (held by "
        )),
        "{line}"
    );
    assert!(
        line.ends_with("), which would close a cycle of waiters"),
        "{line}"
    );
}

/// `{"ts":"YYYY-MM-DDTHH:MM:SS.mmmZ","level":"...","msg":"...",...}`.
fn assert_json_line(line: &str) {
    let ts = line
        .strip_prefix("{\"ts\":\"")
        .and_then(|rest| rest.get(..24))
        .unwrap_or_else(|| panic!("not a JSON log line: {line}"));
    let shape = ts.bytes().enumerate().all(|(i, b)| match i {
        4 | 7 => b == b'-',
        10 => b == b'T',
        13 | 16 => b == b':',
        19 => b == b'.',
        23 => b == b'Z',
        _ => b.is_ascii_digit(),
    });
    assert!(shape, "timestamp {ts:?} in {line}");
    assert!(line[31..].starts_with("\",\"level\":\""), "{line}");
    assert!(line.contains("\",\"msg\":\""), "{line}");
    assert!(line.ends_with('}'), "{line}");
}

#[test]
fn json_lines_carry_a_timestamp_and_the_event_and_never_a_secret() {
    let dir = TempDir::new("events-json");
    let secret = "Tr0ub4dor-and-3";
    let file = dir.path.join("secret");
    std::fs::write(&file, format!("{secret}\n")).expect("secret file");
    let file = file.to_str().expect("utf-8 path");
    let (mut daemon, addr) = daemon(&[
        "--log-format",
        "json",
        "--verbose",
        "--auth-file",
        file,
        "--http",
        "127.0.0.1:0",
    ]);
    // A wrong guess, then the secret: both only as `auth <secret redacted>`.
    let mut conn = Conn::tcp(addr);
    assert_eq!(conn.cmd("auth guess-Xyzzy-77"), "0 Auth Failure\n");
    assert_eq!(conn.cmd(&format!("auth {secret}")), "1 Auth Ok\n");
    assert_eq!(conn.cmd("iam nightly builder"), "1 ok\n");
    assert_eq!(conn.cmd("g deploy"), "1 Lock Get Success: deploy\n");
    let holder = conn.name();
    drop(conn);
    let line = daemon.wait_line(|l| l.contains("\"event\":\"orphaned\""));
    assert_json_line(&line);
    let fields = format!(
        "\"event\":\"orphaned\",\"kind\":\"exclusive\",\"lock\":\"deploy\",\"client\":\"{holder}\",\"name\":\"nightly builder\",\"held_ms\":"
    );
    assert!(line.contains(&fields), "{line}\n{fields}");
    assert!(line.contains("\"level\":\"info\""), "{line}");
    daemon.signal(libc::SIGTERM);
    daemon.wait_line(|l| l.contains("\"msg\":\"stopped\""));
    for line in &daemon.log {
        assert_json_line(line);
        assert!(!line.contains(secret), "the secret was logged: {line}");
        assert!(!line.contains("guess-Xyzzy"), "a guess was logged: {line}");
    }
    assert!(
        daemon
            .log
            .iter()
            .any(|l| l.contains("auth <secret redacted>")),
        "{:?}",
        daemon.log
    );
}
