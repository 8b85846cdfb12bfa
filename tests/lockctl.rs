//! The `lockctl` binary end to end (issue 6), against a real in-process
//! server: every exit status, the command's environment and descriptors,
//! lock loss, signal forwarding, semaphores, inspection, the shell, a
//! classic server, and `--help` against `man/lockctl.1`.

mod common;

use common::lockctl::{finish, lockctl, spawn, LOCKCTL};
use common::{wait_until, TempDir, TestServer};
use lockd::{Secret, Shutdown};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

fn process_gone(pid: u32) -> bool {
    !common::process_exists(pid)
}

// --- run: the command's environment, status and descriptors ---------------

#[test]
fn run_gives_cmd_name_and_token_but_not_the_socket() {
    let server = TestServer::start();
    let out = lockctl(
        &server,
        &[
            "run",
            "job",
            "--",
            "sh",
            "-c",
            "echo \"$LOCKD_NAME $LOCKD_TOKEN\"; ls -l /proc/self/fd/",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let first = out.stdout.lines().next().unwrap_or_default();
    let (name, token) = first.split_once(' ').expect("name and token");
    assert_eq!(name, "job");
    assert!(token.parse::<u64>().expect("numeric token") >= 1);
    assert!(!out.stdout.contains("socket:"), "{}", out.stdout);
    // Released at the end.
    assert_eq!(server.connect().cmd("i job"), "0 Lock Not Locked: job\n");
}

#[test]
fn run_exits_with_cmds_status_or_its_own() {
    let server = TestServer::start();
    let dir = TempDir::new("lockctl-exec");
    let plain = dir.path.join("not-executable");
    std::fs::write(&plain, "echo hi\n").expect("write file");
    let cases: &[(&[&str], i32)] = &[
        (&["run", "a", "--", "sh", "-c", "exit 3"], 3),
        (&["run", "a", "--", "sh", "-c", "kill -9 $$"], 128 + 9),
        (&["run", "a", "--", "/nonexistent/cmd"], 127),
        (&["run", "a", "--", path_str(&plain)], 126),
        (&["run", "a", "true"], 0),
        (&["run", "a"], 64),
        (&["run", "--", "true"], 64),
        (&["run", "-n", "-w", "1s", "a", "--", "true"], 64),
        (&["run", "-s", "--limit", "2", "a", "--", "true"], 64),
        (&["run", "-w", "soon", "a", "--", "true"], 64),
        (&["frobnicate"], 64),
        (&[], 64),
        (&["status"], 64),
    ];
    for (args, code) in cases {
        let out = lockctl(&server, args);
        assert_eq!(out.code, *code, "{args:?}: {}", out.stderr);
        if *code == 64 {
            assert!(out.stderr.contains("lockctl --help"), "{}", out.stderr);
        }
    }
    let nowhere = dir.path.join("nobody.sock");
    let out = finish(spawn(
        &format!("unix:{}", path_str(&nowhere)),
        &["run", "a", "--", "true"],
    ));
    assert_eq!(out.code, 69, "{}", out.stderr);
    assert!(out.stderr.contains("cannot connect"), "{}", out.stderr);
}

// --- run: a busy lock, waiting, semaphores --------------------------------

#[test]
fn busy_lock_exits_1_or_the_e_code_and_waiting_gets_it() {
    let server = TestServer::start();
    let mut holder = server.connect();
    assert!(holder.cmd("g job").starts_with("1 "));
    let out = lockctl(&server, &["run", "-n", "job", "--", "true"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("busy"), "{}", out.stderr);
    let out = lockctl(
        &server,
        &["run", "--no-wait", "-E", "42", "job", "--", "true"],
    );
    assert_eq!(out.code, 42);
    let start = Instant::now();
    let out = lockctl(&server, &["run", "-w", "200ms", "job", "--", "true"]);
    assert_eq!(out.code, 1);
    assert!(start.elapsed() >= Duration::from_millis(200));
    // Waiting in line: it gets the lock once the holder lets go.
    let waiter = spawn(
        &server.addr.to_string(),
        &[
            "run",
            "--wait",
            "10s",
            "job",
            "--",
            "sh",
            "-c",
            "echo got it",
        ],
    );
    server.wait_for_stat2("waiting", 1);
    assert_eq!(holder.cmd("r job"), "1 Lock Release Success: job\n");
    let out = finish(waiter);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "got it\n"),
        "{}",
        out.stderr
    );
}

#[test]
fn shared_limit_2_lets_two_in_and_holds_the_third() {
    let server = TestServer::start();
    let dir = TempDir::new("lockctl-shared");
    let ready = dir.path.join("ready");
    let script = format!("touch {}; exec sleep 30", path_str(&ready));
    let first = spawn(
        &server.addr.to_string(),
        &[
            "run",
            "--semaphore",
            "--limit",
            "2",
            "-n",
            "pool",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    wait_until("the first holder's command", || ready.exists());
    let mut second = server.connect();
    assert_eq!(
        second.cmd("wsg 0 2 pool"),
        "2 Shared Lock Get Success: pool\n"
    );
    let out = lockctl(
        &server,
        &[
            "run",
            "--semaphore",
            "--limit",
            "2",
            "-n",
            "pool",
            "--",
            "true",
        ],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    let third = spawn(
        &server.addr.to_string(),
        &[
            "run",
            "--semaphore",
            "--limit",
            "2",
            "-w",
            "10s",
            "pool",
            "--",
            "true",
        ],
    );
    server.wait_for_stat2("waiting", 1);
    assert_eq!(
        second.cmd("sr pool"),
        "1 Shared Lock Release Success: pool\n"
    );
    assert_eq!(finish(third).code, 0);
    // SIGTERM reaches the first holder's command through lockctl.
    common::send_signal(first.id(), libc::SIGTERM).expect("SIGTERM");
    assert_eq!(finish(first).code, 128 + libc::SIGTERM);
}

// --- run: lock loss and signals --------------------------------------------

/// Starts `lockctl run ARGS lost -- sh -c 'SETUP; (write pid); BODY'`;
/// returns the child and the shell's pid once the command is running.
fn run_holding(
    server: &TestServer,
    dir: &TempDir,
    args: &[&str],
    setup: &str,
    body: &str,
) -> (Child, u32) {
    let pidfile = dir.path.join("pid");
    let script = format!(
        "{setup} echo $$ > {}.tmp; mv {0}.tmp {0}; {body}",
        path_str(&pidfile)
    );
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["lost", "--", "sh", "-c", &script]);
    let child = spawn(&server.addr.to_string(), &all);
    wait_until("the command's pid file", || pidfile.exists());
    let pid = std::fs::read_to_string(&pidfile).expect("pid file");
    (child, pid.trim().parse().expect("pid"))
}

#[test]
fn lock_lost_terminates_cmd_and_exits_75() {
    let mut server = TestServer::start();
    let dir = TempDir::new("lockctl-lost");
    // SIGKILL would come only after an hour: lockctl exiting within
    // finish's deadline means SIGTERM alone ended the command.
    let (child, pid) = run_holding(&server, &dir, &["--kill-after", "1h"], "", "exec sleep 300");
    server.stop(Shutdown::Immediate);
    let out = finish(child);
    assert_eq!(out.code, 75, "{}", out.stderr);
    assert!(out.stderr.contains("lost lock \"lost\""), "{}", out.stderr);
    wait_until("the command to be gone", || process_gone(pid));
}

#[test]
fn lock_lost_kills_a_cmd_that_ignores_sigterm() {
    let mut server = TestServer::start();
    let dir = TempDir::new("lockctl-kill");
    let (child, pid) = run_holding(
        &server,
        &dir,
        &["--kill-after", "300ms"],
        "trap '' TERM;",
        "while :; do sleep 0.05; done",
    );
    let start = Instant::now();
    server.stop(Shutdown::Immediate);
    let out = finish(child);
    assert_eq!(out.code, 75, "{}", out.stderr);
    assert!(start.elapsed() >= Duration::from_millis(300));
    wait_until("the command to be gone", || process_gone(pid));
}

#[test]
fn sigterm_to_lockctl_reaches_cmd() {
    let server = TestServer::start();
    let dir = TempDir::new("lockctl-signal");
    let marker = dir.path.join("marker");
    let trap = format!("trap 'echo TERM > {}; exit 5' TERM;", path_str(&marker));
    let body = "while :; do sleep 0.05; done";
    let (child, _) = run_holding(&server, &dir, &[], &trap, body);
    common::send_signal(child.id(), libc::SIGTERM).expect("SIGTERM");
    let out = finish(child);
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&marker).expect("marker"), "TERM\n");
    assert_eq!(server.connect().cmd("i lost"), "0 Lock Not Locked: lost\n");
}

// --- inspection --------------------------------------------------------------

#[test]
fn status_locks_clients_stats_ping() {
    let server = TestServer::start();
    let mut holder = server.connect();
    assert_eq!(holder.cmd("iam web-1"), "1 ok\n");
    let token = holder.cmd("wg 0 job");
    assert!(token.ends_with("Lock Get Success: job\n"), "{token}");
    let token = token.split(' ').next().expect("token").to_string();
    let mut waiter = server.connect();
    waiter.send(b"wg 10000 job\n");
    server.wait_for_stat2("waiting", 1);
    assert!(holder.cmd("sg pool").starts_with("1 "));

    let out = lockctl(&server, &["status", "job"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "exclusive: held by {} (web-1), token {token}",
            holder.name()
        )),
        "{}",
        out.stdout
    );
    assert!(out
        .stdout
        .contains(&format!("  waiters: {}", waiter.name())));
    assert!(out.stdout.contains("shared: free"), "{}", out.stdout);
    assert!(out.stdout.contains("since: unknown"), "{}", out.stdout);
    // Like `test`: 0 when held, 1 when free.
    let out = lockctl(&server, &["status", "--json", "job"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let status: serde_json::Value = serde_json::from_str(&out.stdout).expect(&out.stdout);
    assert_eq!(status["held"], true);
    assert_eq!(status["exclusive"]["token"].to_string(), token);
    assert_eq!(status["exclusive"]["waiters"][0], waiter.name());
    assert_eq!(status["shared"], serde_json::Value::Null);
    let out = lockctl(&server, &["status", "nobody-holds-this"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(": free"), "{}", out.stdout);
    let out = lockctl(&server, &["status", "--json", "pool"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let status: serde_json::Value = serde_json::from_str(&out.stdout).expect(&out.stdout);
    assert_eq!(status["shared"]["holders"][0], holder.name());

    let out = lockctl(&server, &["locks"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(
        lines[0].starts_with("TYPE       NAME  HOLDERS"),
        "{}",
        out.stdout
    );
    assert!(lines[1].starts_with("exclusive  job   "), "{}", out.stdout);
    assert!(lines[2].starts_with("shared     pool  "), "{}", out.stdout);
    let out = lockctl(&server, &["locks", "--json"]);
    assert!(
        out.stdout.starts_with("{\"exclusive\":{\"job\":{"),
        "{}",
        out.stdout
    );

    let out = lockctl(&server, &["clients"]);
    assert!(out.stdout.contains("web-1"), "{}", out.stdout);
    let out = lockctl(&server, &["clients", "--json"]);
    let clients: serde_json::Value = serde_json::from_str(&out.stdout).expect(&out.stdout);
    assert_eq!(clients[0]["name"], "web-1", "{}", out.stdout);
    let out = lockctl(&server, &["ping", "--json"]);
    let ping: serde_json::Value = serde_json::from_str(&out.stdout).expect(&out.stdout);
    assert_eq!(ping["protocol"], 2, "{}", out.stdout);
    let out = lockctl(&server, &["stats", "--json"]);
    assert_eq!(out.code, 0);
    let stats = out.stdout.trim();
    assert!(stats.starts_with('{') && stats.ends_with('}'), "{stats}");
    assert!(
        stats.contains("\"locks\":1,") && stats.contains("\"waiting\":1"),
        "{stats}"
    );
    let out = lockctl(&server, &["ping"]);
    assert!(out.stdout.starts_with("pong from "), "{}", out.stdout);
}

#[test]
fn bench_runs_against_the_server() {
    let server = TestServer::start();
    let args = [
        "bench",
        "--workloads",
        "W1",
        "--duration",
        "50ms",
        "--no-echo",
    ];
    let out = lockctl(&server, &args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(&server.addr.to_string()),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("\nW1 "), "{}", out.stdout);
    assert_eq!(lockctl(&server, &["bench", "--workloads", "W9"]).code, 64);
}

#[test]
fn auth_file_is_sent() {
    let server = TestServer::with_config(|c| c.auth_secret = Some(Secret::new("s3cret")));
    let dir = TempDir::new("lockctl-auth");
    let file = dir.path.join("secret");
    std::fs::write(&file, "s3cret\n").expect("write secret");
    let out = lockctl(&server, &["ping"]);
    assert_eq!(out.code, 69);
    assert!(out.stderr.contains("--auth-file"), "{}", out.stderr);
    let out = lockctl(&server, &["run", "-n", "job", "--", "true"]);
    assert_eq!(out.code, 69);
    assert!(out.stderr.contains("--auth-file"), "{}", out.stderr);
    assert!(!out.stderr.contains("ClientConfig"), "{}", out.stderr);
    let out = lockctl(&server, &["--auth-file", path_str(&file), "ping"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn shell_through_a_pipe() {
    let server = TestServer::start();
    let mut child = Command::new(LOCKCTL)
        .args(["-S", &server.addr.to_string(), "shell"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lockctl shell");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(b"g a\n\nd\nbogus\ni a\n")
        .expect("write commands");
    drop(stdin);
    let out = finish(child);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "1 Lock Get Success: a");
    assert!(lines[1].starts_with("a: 127.0.0.1:"), "{}", out.stdout);
    assert_eq!(
        &lines[2..],
        ["", "0 Error: unknown command", "1 Lock Is Locked: a"]
    );
    assert!(!out.stdout.contains("lockd> "), "no prompt on a pipe");
}

// --- a classic server (glockd): no wg, so waiting polls g -----------------

/// A glockd stand-in: silent on `hello`, `g` fails `busy` times, then works.
fn classic_server(busy: u64) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let gets = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&gets);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let counter = Arc::clone(&counter);
            std::thread::spawn(move || {
                let mut out = stream.try_clone().expect("clone");
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    let (verb, arg) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
                    let reply = match verb {
                        "me" => "1 c c".to_string(),
                        "iam" => "1 ok".to_string(),
                        "g" if counter.fetch_add(1, Ordering::SeqCst) < busy => {
                            format!("0 Lock Get Failure: {arg}")
                        }
                        "g" => format!("1 Lock Get Success: {arg}"),
                        "r" => format!("1 Lock Release Success: {arg}"),
                        _ => continue,
                    };
                    let _ = out.write_all(format!("{reply}\n").as_bytes());
                }
            });
        }
    });
    (addr, gets)
}

#[test]
fn classic_server_no_wait_and_polled_wait() {
    let (addr, gets) = classic_server(3);
    let out = finish(spawn(&addr, &["run", "-n", "job", "--", "true"]));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let out = finish(spawn(
        &addr,
        &[
            "run",
            "-w",
            "5s",
            "job",
            "--",
            "sh",
            "-c",
            "echo \"[${LOCKD_TOKEN-unset}]\"",
        ],
    ));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "[unset]\n", "no token from a classic server");
    assert_eq!(gets.load(Ordering::SeqCst), 4);
    // No wr on a classic server: -s takes the exclusive lock, and says so.
    let out = finish(spawn(
        &addr,
        &["run", "-s", "-w", "5s", "job", "--", "true"],
    ));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("a classic server has no read holds"),
        "{}",
        out.stderr
    );
    assert_eq!(gets.load(Ordering::SeqCst), 5);
}

// --- --help against the man page -----------------------------------------

/// Flags written in `text` (roff escapes undone): `--long` and `-X`.
fn flags_in(text: &str) -> BTreeSet<String> {
    let text = common::roff_plain(text);
    let bytes = text.as_bytes();
    let mut flags = BTreeSet::new();
    for i in 0..bytes.len() {
        let starts = bytes[i] == b'-'
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'-'));
        if !starts {
            continue;
        }
        let long = bytes.get(i + 1) == Some(&b'-');
        let start = i + if long { 2 } else { 1 };
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_alphabetic() || (long && bytes[end] == b'-'))
        {
            end += 1;
        }
        // A short flag is one letter standing alone (`-n`, not `-bash`).
        let alone = end == start + 1 || long;
        if end > start && alone {
            let dashes = if long { "--" } else { "-" };
            flags.insert(format!(
                "{dashes}{}",
                text[start..end].trim_end_matches('-')
            ));
        }
    }
    flags
}

#[test]
fn help_and_man_page_agree() {
    let out = finish(spawn("127.0.0.1:1", &["--help"]));
    assert_eq!(out.code, 0);
    let help = out.stdout;
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/lockctl.1"))
        .expect("man/lockctl.1");
    let plain = common::roff_plain(&page);
    // EXAMPLES call other programs (`sh -c`), whose flags are not ours.
    let reference = page.split(".SH EXAMPLES").next().expect("page");
    let help_flags = flags_in(&help);
    for flag in [
        "-E",
        "-s",
        "-S",
        "-x",
        "-c",
        "--conflict-exit-code",
        "--kill-after",
        "--json",
        "--verbose",
    ] {
        assert!(help_flags.contains(flag), "{flag} not found in --help");
    }
    assert_eq!(
        help_flags,
        flags_in(reference),
        "flags of --help vs man/lockctl.1"
    );
    // Commands, both ways: each one --help lists has a .TP entry, and
    // every .TP entry under COMMANDS is a command --help lists.
    let listed: BTreeSet<&str> = help_section(&help, "Commands:")
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(
        listed.contains("run") && listed.contains("bench"),
        "{listed:?}"
    );
    let commands = plain
        .split(".SH COMMANDS")
        .nth(1)
        .and_then(|rest| rest.split(".SH ").next())
        .expect("a COMMANDS section");
    let documented: BTreeSet<&str> = commands
        .split(".TP\n")
        .skip(1)
        .filter_map(|entry| entry.split_whitespace().next())
        .collect();
    assert_eq!(listed, documented, "commands of --help vs man/lockctl.1");
    // Exit codes, both ways.
    let codes: BTreeSet<&str> = help_section(&help, "Exit status:")
        .lines()
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(codes.contains("64") && codes.contains("128+N"), "{codes:?}");
    let section = plain
        .split(".SH \"EXIT STATUS\"")
        .nth(1)
        .and_then(|rest| rest.split(".SH ").next())
        .expect("an EXIT STATUS section");
    let documented: BTreeSet<&str> = section
        .split(".TP\n")
        .skip(1)
        .filter_map(|entry| entry.split_whitespace().next())
        .collect();
    assert_eq!(codes, documented, "exit codes of --help vs man/lockctl.1");
}

/// The lines of `--help` after the line `heading`, up to the next blank
/// line.
fn help_section<'a>(help: &'a str, heading: &str) -> &'a str {
    let start = help
        .find(&format!("\n{heading}\n"))
        .map(|at| at + heading.len() + 2)
        .unwrap_or_else(|| panic!("no {heading} in --help"));
    let rest = &help[start..];
    &rest[..rest.find("\n\n").map_or(rest.len(), |end| end + 1)]
}

/// On a terminal, CMD gets the foreground: an interactive command reads the
/// terminal instead of being stopped by SIGTTIN. `script` gives lockctl a
/// pseudo-terminal (skipped where util-linux's `script` is missing).
#[test]
fn run_hands_the_terminal_to_an_interactive_command() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` command for a pseudo-terminal");
        return;
    }
    let server = TestServer::start();
    let inner = format!(
        "{LOCKCTL} --server {} run -n tty -- sh -c 'read -r line; echo got:$line'",
        server.addr
    );
    let mut child = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .env_remove("LOCKD_SERVER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn script");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"hello\n")
        .expect("type a line");
    let out = finish(child);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("got:hello"), "{:?}", out.stdout);
}

/// Issue 14: a secret with doubled, leading, trailing or TAB whitespace
/// used to be stored raw and compared with the normalised `auth`
/// argument, so no client could ever authenticate.
#[test]
fn an_auth_file_with_odd_whitespace_works_for_lockd_and_lockctl() {
    let dir = TempDir::new("lockctl-auth-space");
    let file = dir.path.join("secret");
    std::fs::write(&file, " two  odd\tspaces \n").expect("write secret");
    let daemon = common::Daemon::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--no-state",
            "--auth-file",
            path_str(&file),
        ],
        1,
    );
    let addr = daemon.tcp_addr().to_string();
    let out = finish(spawn(&addr, &["--auth-file", path_str(&file), "ping"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut conn = common::Conn::tcp(daemon.tcp_addr());
    assert_eq!(conn.cmd("auth two   odd spaces"), "1 Auth Ok\n");
    let mut wrong = common::Conn::tcp(daemon.tcp_addr());
    assert_eq!(wrong.cmd("auth two odd"), "0 Auth Failure\n");
}

#[test]
fn an_auth_file_of_only_whitespace_is_refused_at_start() {
    let dir = TempDir::new("lockd-auth-blank");
    let file = dir.path.join("secret");
    std::fs::write(&file, " \t\n").expect("write secret");
    let out = Command::new(env!("CARGO_BIN_EXE_lockd"))
        .args(["--listen", "127.0.0.1:0", "--no-state", "--auth-file"])
        .arg(&file)
        .output()
        .expect("run lockd");
    assert_eq!(out.status.code(), Some(2), "usage error: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--auth-file"), "{stderr}");
}
