//! The `lockd` binary as an operator meets it: flags, `--help` against the
//! man page, exit statuses, the pidfile, Unix sockets, signals, logging.
//! Every daemon here listens on port 0 (the port comes from its
//! `listening on` log line) and has its own state directory or none.

mod common;

use common::{wait_for_exit, without_warnings, Conn, Daemon, TempDir, LOCKD};
use std::collections::BTreeSet;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// Runs `lockd ARGS` to its exit: (status, stdout, stderr).
fn run(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = Command::new(LOCKD)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lockd");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_for_exit(&mut child);
    (
        status,
        out.join().expect("stdout reader"),
        err.join().expect("stderr reader"),
    )
}

/// Asserts a failed start: `code`, and exactly one error line on stderr
/// holding every one of `words`. A usage error (2) comes before anything
/// else, so it is all of stderr; a failure to start (1) may follow start-up
/// warnings about this machine (`lockd: warning: ...`, e.g. an open-files
/// limit below `--max-connections`).
fn assert_fails(args: &[&str], code: i32, words: &[&str]) {
    let (status, stdout, stderr) = run(args);
    assert_eq!(status.code(), Some(code), "{args:?}: {stderr}");
    assert_eq!(stdout, "", "{args:?}");
    let errors = if code == 2 {
        stderr.lines().collect()
    } else {
        without_warnings(&stderr)
    };
    assert_eq!(errors.len(), 1, "{args:?}: {stderr}");
    let error = errors[0];
    assert!(error.starts_with("lockd: "), "{args:?}: {stderr}");
    assert!(!error.starts_with("lockd: warning: "), "{args:?}: {stderr}");
    for word in words {
        assert!(error.contains(word), "{args:?}: {word:?} not in {stderr}");
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

// --- --help, --version, the man page -------------------------------------

/// Flags written in `text`: (long names, single-dash names). Roff's `\-`
/// and font escapes are undone first, so the page and `--help` compare.
fn flags_in(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let text = common::roff_plain(text);
    let bytes = text.as_bytes();
    let (mut long, mut short) = (BTreeSet::new(), BTreeSet::new());
    let mut i = 0;
    while i < bytes.len() {
        let starts = bytes[i] == b'-'
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'-'));
        if !starts {
            i += 1;
            continue;
        }
        let dashes = if bytes.get(i + 1) == Some(&b'-') {
            2
        } else {
            1
        };
        let start = i + dashes;
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase() || (dashes == 2 && bytes[end] == b'-'))
        {
            end += 1;
        }
        if end > start {
            let name = text[start..end].trim_end_matches('-').to_string();
            if dashes == 2 { &mut long } else { &mut short }.insert(name);
        }
        i = end.max(i + 1);
    }
    (long, short)
}

#[test]
fn help_and_man_page_name_the_same_flags() {
    let (status, help, _) = run(&["--help"]);
    assert!(status.success());
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/lockd.8"))
        .expect("man/lockd.8");
    let (help_long, help_short) = flags_in(&help);
    let (page_long, page_short) = flags_in(&page);
    assert!(help_long.contains("listen") && help_long.contains("pid-file"));
    assert!(help_short.contains("port") && help_short.contains("registry"));
    assert_eq!(help_long, page_long, "--flags of --help vs man/lockd.8");
    assert_eq!(help_short, page_short, "-flags of --help vs man/lockd.8");
}

#[test]
fn version_and_short_help() {
    let (status, out, err) = run(&["--version"]);
    assert!(status.success());
    assert_eq!(out, format!("lockd {}\n", env!("CARGO_PKG_VERSION")));
    assert_eq!(err, "");
    let (status, out, err) = run(&["-h"]);
    assert!(status.success());
    assert!(out.contains("Usage: lockd [OPTIONS]"), "{out}");
    assert!(out.contains("--listen ADDR:PORT"), "{out}");
    assert_eq!(err, "");
}

#[test]
fn bad_command_lines_exit_2_with_one_line() {
    let dir = TempDir::new("cli-bad");
    let state = path_str(&dir.path);
    // `--no-state` first, so nothing here could touch the default state.
    assert_fails(&["--no-state", "--bogus"], 2, &["bogus", "--help"]);
    assert_fails(&["--no-state", "--listen"], 2, &["listen"]);
    assert_fails(
        &["--no-state", "--max-connections", "lots"],
        2,
        &["--max-connections", "lots"],
    );
    assert_fails(&["--no-state", "--max-line", "0"], 2, &["--max-line"]);
    assert_fails(
        &["--no-state", "--unix-mode", "999"],
        2,
        &["--unix-mode", "octal"],
    );
    assert_fails(
        &["--no-state", "--tcp-keepalive", "-1"],
        2,
        &["--tcp-keepalive"],
    );
    assert_fails(&["--no-state", "-port", "x"], 2, &["-port"]);
    assert_fails(&["--no-state", "-port", "70000"], 2, &["-port"]);
    assert_fails(&["--no-state", "-dump=maybe"], 2, &["-dump", "maybe"]);
    assert_fails(&["--no-state", "-port", "0"], 2, &["nothing to listen on"]);
    assert_fails(&["--no-state", "extra"], 2, &["extra"]);
    assert_fails(
        &["--no-state", "--state-dir", state],
        2,
        &["--state-dir", "--no-state"],
    );
    assert_fails(
        &["--no-state", "--auth-file", "/nonexistent/lockd-secret"],
        2,
        &["--auth-file", "/nonexistent/lockd-secret"],
    );
    assert_fails(&["--no-state", "--listen", "nonsense"], 2, &["nonsense"]);
    assert_fails(
        &["--no-state", "--listen", "127.0.0.1:99999"],
        2,
        &["127.0.0.1:99999"],
    );
    assert_fails(&["--no-state", "--tcp", "99999"], 2, &["99999"]);
}

#[test]
fn port_in_use_exits_1() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    assert_fails(
        &["--no-state", "--listen", &addr],
        1,
        &[&addr, "already in use"],
    );
}

// --- pidfile --------------------------------------------------------------

#[test]
fn pidfile_written_after_bind_held_and_removed() {
    let dir = TempDir::new("cli-pid");
    let pidfile = dir.path.join("lockd.pid");
    let pid = path_str(&pidfile);
    let mut first = Daemon::start(
        &["--listen", "127.0.0.1:0", "--no-state", "--pidfile", pid],
        1,
    );
    let written = std::fs::read_to_string(&pidfile).expect("pidfile");
    assert_eq!(written, format!("{}\n", first.child.id()));

    // A second instance on another port, same pidfile: refused, file kept.
    assert_fails(
        &["--listen", "127.0.0.1:0", "--no-state", "--pid-file", pid],
        1,
        &["pidfile", pid, &first.child.id().to_string()],
    );
    assert_eq!(std::fs::read_to_string(&pidfile).expect("pidfile"), written);

    first.signal(libc::SIGTERM);
    assert_eq!(first.wait_exit().code(), Some(0), "{:?}", first.log);
    assert!(!pidfile.exists(), "pidfile left behind");
}

#[test]
fn bind_failure_leaves_no_pidfile() {
    let dir = TempDir::new("cli-pid-bind");
    let pidfile = dir.path.join("lockd.pid");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let pid = path_str(&pidfile);
    assert_fails(
        &["--no-state", "--listen", &addr, "--pidfile", pid],
        1,
        &["already in use"],
    );
    assert!(!pidfile.exists(), "pidfile written before binding");
}

// --- Unix sockets ---------------------------------------------------------

#[test]
fn unix_socket_serves_with_its_mode_and_is_removed() {
    let dir = TempDir::new("cli-unix");
    let sock = dir.path.join("lockd.sock");
    let path = path_str(&sock);
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--unix",
        path,
        "--unix-mode",
        "600",
        "--no-state",
    ];
    let mut daemon = Daemon::start(&args, 2);
    assert!(daemon
        .log
        .contains(&format!("lockd: listening on unix:{path}")));
    let mode = std::fs::metadata(&sock)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let mut conn = Conn::unix(&sock);
    assert_eq!(conn.cmd("g foo"), "1 Lock Get Success: foo\n");
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    assert!(!sock.exists(), "socket file left behind");
}

#[test]
fn stale_unix_socket_is_replaced() {
    let dir = TempDir::new("cli-stale");
    let sock = dir.path.join("lockd.sock");
    drop(UnixListener::bind(&sock).expect("bind"));
    assert!(sock.exists(), "a dropped listener leaves its file");
    let path = path_str(&sock);
    let _daemon = Daemon::start(
        &["--listen", "127.0.0.1:0", "--unix", path, "--no-state"],
        2,
    );
    let mut conn = Conn::unix(&sock);
    assert_eq!(conn.cmd("g foo"), "1 Lock Get Success: foo\n");
}

#[test]
fn live_unix_socket_is_never_stolen() {
    let dir = TempDir::new("cli-live");
    let sock = dir.path.join("lockd.sock");
    let live = UnixListener::bind(&sock).expect("bind");
    let inode = std::fs::metadata(&sock).expect("socket").ino();
    let path = path_str(&sock);
    assert_fails(
        &["--listen", "127.0.0.1:0", "--unix", path, "--no-state"],
        1,
        &[path, "in use"],
    );
    assert_eq!(std::fs::metadata(&sock).expect("still there").ino(), inode);
    // And its owner still gets connections.
    let _client = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
    live.accept().expect("the live listener still accepts");
}

#[test]
fn a_file_that_is_not_a_socket_is_kept() {
    let dir = TempDir::new("cli-notsock");
    let file = dir.path.join("lockd.sock");
    std::fs::write(&file, "precious").expect("write");
    let path = path_str(&file);
    assert_fails(
        &["--listen", "127.0.0.1:0", "--unix", path, "--no-state"],
        1,
        &[path, "not a socket"],
    );
    assert_eq!(std::fs::read_to_string(&file).expect("kept"), "precious");
}

// --- signals --------------------------------------------------------------

fn signal_stops_cleanly(signal: libc::c_int) {
    let dir = TempDir::new("cli-signal");
    let sock = dir.path.join("lockd.sock");
    let pidfile = dir.path.join("lockd.pid");
    let state = dir.path.join("state");
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--unix",
        path_str(&sock),
        "--pidfile",
        path_str(&pidfile),
        "--state-dir",
        path_str(&state),
    ];
    let mut daemon = Daemon::start(&args, 2);
    let mut tcp = Conn::tcp(daemon.tcp_addr());
    let mut unix = Conn::unix(&sock);
    assert_eq!(tcp.cmd("g foo"), "1 Lock Get Success: foo\n");
    assert_eq!(unix.cmd("sg bar"), "1 Shared Lock Get Success: bar\n");
    daemon.signal(signal);
    assert_eq!(tcp.read_to_end(), b"", "the TCP client sees EOF");
    assert_eq!(unix.read_to_end(), b"", "the Unix client sees EOF");
    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "{:?}", daemon.log);
    assert!(!pidfile.exists(), "pidfile left behind");
    assert!(!sock.exists(), "socket file left behind");
    assert_eq!(
        daemon.log.last().map(String::as_str),
        Some("lockd: stopped")
    );
}

#[test]
fn sigterm_closes_clients_and_exits_0() {
    signal_stops_cleanly(libc::SIGTERM);
}

#[test]
fn sigint_closes_clients_and_exits_0() {
    signal_stops_cleanly(libc::SIGINT);
}

#[test]
fn sigquit_stops_cleanly_like_sigterm() {
    signal_stops_cleanly(libc::SIGQUIT);
}

/// Issue 14: SIGHUP, SIGUSR1 and SIGUSR2 killed the daemon and left its
/// pidfile and socket file behind.
#[test]
fn sighup_and_sigusr_are_logged_and_ignored() {
    let dir = TempDir::new("cli-sighup");
    let pidfile = dir.path.join("lockd.pid");
    let mut daemon = Daemon::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--no-state",
            "--pidfile",
            path_str(&pidfile),
        ],
        1,
    );
    let mut holder = Conn::tcp(daemon.tcp_addr());
    assert_eq!(holder.cmd("g kept"), "1 Lock Get Success: kept\n");
    for signal in [libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2] {
        daemon.signal(signal);
        daemon.wait_line(|l| l.contains(&format!("signal {signal} ignored")));
    }
    assert_eq!(holder.cmd("i kept"), "1 Lock Is Locked: kept\n");
    assert!(pidfile.exists());
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0), "{:?}", daemon.log);
    assert!(!pidfile.exists(), "pidfile left behind");
}

/// Issue 14: a fatal signal leaves the pidfile, but its lock died with the
/// process, so the next start takes the file over.
#[test]
fn a_pidfile_left_by_a_killed_daemon_does_not_block_the_next_start() {
    let dir = TempDir::new("cli-pid-stale");
    let pidfile = dir.path.join("lockd.pid");
    let sock = dir.path.join("lockd.sock");
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--no-state",
        "--pidfile",
        path_str(&pidfile),
        "--unix",
        path_str(&sock),
    ];
    for signal in [libc::SIGKILL, libc::SIGABRT] {
        let mut daemon = Daemon::start(&args, 2);
        daemon.signal(signal);
        let status = daemon.wait_exit();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(signal),
            "{:?}",
            daemon.log
        );
        assert!(
            pidfile.exists() && sock.exists(),
            "left behind by signal {signal}"
        );
    }
    let mut next = Daemon::start(&args, 2);
    let written = std::fs::read_to_string(&pidfile).expect("pidfile");
    assert_eq!(written, format!("{}\n", next.child.id()));
    let mut conn = Conn::unix(&sock);
    assert_eq!(conn.cmd("ping"), "1 pong\n");
    next.signal(libc::SIGTERM);
    assert_eq!(next.wait_exit().code(), Some(0), "{:?}", next.log);
}

#[test]
fn two_quick_signals_end_the_process() {
    let daemon_dir = TempDir::new("cli-signal2");
    let sock = daemon_dir.path.join("lockd.sock");
    let mut daemon = Daemon::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--unix",
            path_str(&sock),
            "--no-state",
        ],
        2,
    );
    let mut conn = Conn::tcp(daemon.tcp_addr());
    assert_eq!(conn.cmd("g foo"), "1 Lock Get Success: foo\n");
    daemon.signal(libc::SIGTERM);
    daemon.signal(libc::SIGTERM);
    // Whether the first stop finished before the second signal was seen
    // is a race; either way the process ends, with 0 or 1.
    let code = daemon.wait_exit().code();
    assert!(matches!(code, Some(0 | 1)), "{code:?}: {:?}", daemon.log);
}

// --- compatibility spellings ----------------------------------------------

#[test]
fn glockd_flags_start_lockd() {
    let dir = TempDir::new("cli-glockd");
    let sock = dir.path.join("glockd.sock");
    let path = path_str(&sock);
    let mut daemon = Daemon::spawn(&[
        "-port",
        "0",
        "-unix",
        path,
        "-dump=false",
        "-registry=false",
        // glockd's WebSocket port; 0 turns it off, as -port 0 does TCP.
        "-ws",
        "0",
        "--no-state",
    ]);
    daemon.wait_line(|l| l == format!("lockd: listening on unix:{path}"));
    let listening: Vec<_> = daemon
        .log
        .iter()
        .filter(|l| l.starts_with("lockd: listening on "))
        .collect();
    assert_eq!(
        listening.len(),
        1,
        "-port 0 and -ws 0 turn TCP and WebSocket off: {:?}",
        daemon.log
    );
    let mut conn = Conn::unix(&sock);
    assert_eq!(conn.cmd("d"), "0 disabled\n");
    assert_eq!(conn.cmd("iam worker"), "0 disabled\n");
    assert_eq!(conn.cmd("g foo"), "1 Lock Get Success: foo\n");
}

#[test]
fn node_lockd_flags_start_lockd() {
    let dir = TempDir::new("cli-node");
    let pidfile = dir.path.join("node.pid");
    let mut daemon = Daemon::start(
        &[
            "--tcp",
            "127.0.0.1:0",
            "--disable-dump",
            "--pid-file",
            path_str(&pidfile),
            "--no-state",
        ],
        1,
    );
    let mut conn = Conn::tcp(daemon.tcp_addr());
    assert_eq!(conn.cmd("d"), "0 disabled\n");
    assert_eq!(conn.cmd("iam worker"), "1 ok\n");
    assert!(pidfile.exists());
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    assert!(!pidfile.exists());
}

// --- logging --------------------------------------------------------------

#[test]
fn auth_secret_never_reaches_the_log() {
    let dir = TempDir::new("cli-auth");
    let secret_file = dir.path.join("secret");
    std::fs::write(&secret_file, "xyzzy-s3cret\n").expect("write secret");
    let mut daemon = Daemon::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--no-state",
            "-v",
            "--auth-file",
            path_str(&secret_file),
        ],
        1,
    );
    let mut conn = Conn::tcp(daemon.tcp_addr());
    assert_eq!(conn.cmd("g foo"), "0 Auth Required\n");
    assert_eq!(conn.cmd("auth xyzzy-guess"), "0 Auth Failure\n");
    assert_eq!(conn.cmd("auth xyzzy-s3cret"), "1 Auth Ok\n");
    assert_eq!(conn.cmd("  auth   xyzzy-s3cret \r"), "1 Auth Ok\n");
    assert_eq!(conn.cmd("g foo"), "1 Lock Get Success: foo\n");
    drop(conn);
    daemon.wait_line(|l| l.ends_with(": closed by peer"));
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    let log = daemon.log.join("\n");
    assert!(
        !log.contains("xyzzy"),
        "a secret or guess in the log:\n{log}"
    );
    assert_eq!(log.matches("auth <secret redacted>").count(), 3, "{log}");
}

/// Issue 14: no secret in the log however it is spelled (any case of
/// `auth`, a bare secret as an unknown verb, lines after a failed `auth`);
/// failed attempts are counted and end the connection after five.
#[test]
fn no_spelling_of_a_secret_reaches_the_log_and_guessing_is_cut_short() {
    let dir = TempDir::new("cli-auth-spellings");
    let secret_file = dir.path.join("secret");
    std::fs::write(&secret_file, "plugh-s3cret\n").expect("write secret");
    let mut daemon = Daemon::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--no-state",
            "-v",
            "--auth-file",
            path_str(&secret_file),
        ],
        1,
    );
    let mut conn = Conn::tcp(daemon.tcp_addr());
    assert_eq!(conn.cmd("hello 2"), "2 lockd 0.1.0\n");
    for line in ["AUTH plugh-s3cret", "Auth plugh-s3cret", "plugh-s3cret"] {
        assert_eq!(conn.cmd(line), "0 Error: unknown command\n", "{line}");
    }
    for attempt in 1..=5 {
        assert_eq!(
            conn.cmd("auth plugh-wrong"),
            "0 Auth Failure\n",
            "{attempt}"
        );
        if attempt < 5 {
            // After a failure, until a success, no line is logged whole.
            assert_eq!(conn.cmd("i plugh-s3cret"), "0 Auth Required\n");
        }
    }
    assert!(conn.read_to_end().is_empty(), "closed after five failures");
    let mut other = Conn::tcp(daemon.tcp_addr());
    assert_eq!(other.cmd("hello 2"), "2 lockd 0.1.0\n");
    assert_eq!(other.cmd("auth plugh-s3cret"), "1 Auth Ok\n");
    assert_eq!(other.stat("auth_failures"), 5);
    drop(other);
    daemon.wait_line(|l| l.contains("failed auth (1 on this connection"));
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    let log = daemon.log.join("\n");
    assert!(
        !log.contains("plugh"),
        "a secret or guess in the log:\n{log}"
    );
    assert_eq!(
        log.matches("unknown command of 12 bytes").count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches("a line of 14 bytes").count(), 4, "{log}");
    assert!(
        log.contains("closed: too many failed auth attempts"),
        "{log}"
    );
}

#[test]
fn verbose_logs_one_line_per_command() {
    let mut daemon = Daemon::start(&["--listen", "127.0.0.1:0", "--no-state", "-v"], 1);
    let mut conn = Conn::tcp(daemon.tcp_addr());
    let name = conn.name();
    assert_eq!(conn.cmd("g a"), "1 Lock Get Success: a\n");
    assert_eq!(conn.cmd("i a"), "1 Lock Is Locked: a\n");
    assert_eq!(conn.cmd("r a"), "1 Lock Release Success: a\n");
    conn.send(b"\n"); // empty: not a command, not logged
    drop(conn);
    let closed = format!("lockd: {name}: closed by peer");
    daemon.wait_line(|l| l == closed);
    let prefix = format!("lockd: {name}: ");
    let commands: Vec<&str> = daemon
        .log
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix))
        .collect();
    assert_eq!(commands, ["g a", "i a", "r a", "closed by peer"]);
}

#[test]
fn quiet_by_default() {
    let mut daemon = Daemon::start(&["--listen", "127.0.0.1:0", "--no-state"], 1);
    let mut conn = Conn::tcp(daemon.tcp_addr());
    assert_eq!(conn.cmd("g a"), "1 Lock Get Success: a\n");
    drop(conn);
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    assert!(
        !daemon.log.iter().any(|l| l.contains(" g a")),
        "{:?}",
        daemon.log
    );
}

#[test]
fn state_dir_holds_the_token_file() {
    let dir = TempDir::new("cli-state");
    let state: PathBuf = dir.path.join("nested/state");
    let mut daemon = Daemon::start(
        &["--listen", "127.0.0.1:0", "--state-dir", path_str(&state)],
        1,
    );
    assert!(state.join("fencing-token").is_file());
    assert!(state.join("lock").is_file());
    // A second server on the same state directory is refused.
    assert_fails(
        &["--listen", "127.0.0.1:0", "--state-dir", path_str(&state)],
        1,
        &["in use", "--state-dir"],
    );
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

#[test]
fn held_pidfile_leaves_no_socket_file() {
    let dir = TempDir::new("cli-pid-sock");
    let pidfile = dir.path.join("lockd.pid");
    let pid = path_str(&pidfile);
    let _first = Daemon::start(
        &["--listen", "127.0.0.1:0", "--no-state", "--pidfile", pid],
        1,
    );
    let sock = dir.path.join("second.sock");
    assert_fails(
        &[
            "--listen",
            "127.0.0.1:0",
            "--unix",
            path_str(&sock),
            "--no-state",
            "--pidfile",
            pid,
        ],
        1,
        &["pidfile"],
    );
    assert!(!sock.exists(), "the refused instance left its socket file");
}
