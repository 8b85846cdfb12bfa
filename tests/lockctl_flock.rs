//! `lockctl` as a `flock` user meets it (issue 11): run's flock options
//! (-c, -o, --verbose, -s), `hold` in a real bash script, `watch` against a
//! small fake server (and the real one once it has `watch`), completions
//! loaded by a real bash, the shell's `help`, `quit` and line editing.
//! tests/tls.rs checks the errors for a TLS mismatch.

mod common;

use common::lockctl::{finish, lockctl, spawn, LOCKCTL};
use common::{wait_until, TestServer};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

fn has_bash() -> bool {
    Command::new("bash").arg("-c").arg("true").status().is_ok()
}

#[test]
fn run_takes_c_o_and_verbose() {
    let server = TestServer::start();
    let mut holder = server.connect();
    assert!(holder.cmd("g job").starts_with("1 "));
    let child = spawn(
        &server.addr.to_string(),
        &[
            "run",
            "--verbose",
            "-o",
            "-w",
            "10s",
            "job",
            "-c",
            "echo token=$LOCKD_TOKEN",
        ],
    );
    server.wait_for_stat2("waiting", 1);
    assert!(holder.cmd("r job").starts_with("1 "));
    let out = finish(child);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let token = out
        .stdout
        .trim()
        .strip_prefix("token=")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no token in {:?}", out.stdout));
    for said in [
        "-o/--close changes nothing here",
        "waiting for the exclusive lock \"job\"",
        &format!("got the exclusive lock \"job\" (token {token}) after "),
        &format!("released the exclusive lock \"job\" (token {token})"),
    ] {
        assert!(out.stderr.contains(said), "{said:?} not in\n{}", out.stderr);
    }
    // -n on a busy lock: -E's status, and no word of waiting.
    assert!(holder.cmd("g job").starts_with("1 "));
    let out = lockctl(
        &server,
        &["run", "-n", "-E", "9", "--verbose", "job", "-c", "true"],
    );
    assert_eq!(out.code, 9, "{}", out.stderr);
    assert!(!out.stderr.contains("waiting"), "{}", out.stderr);
}

/// `-s` is a read hold: two readers at once, and a writer waits for both.
/// (tests/lockctl.rs checks the fallback of a classic server.)
#[test]
fn shared_is_a_read_hold() {
    let server = TestServer::start();
    let mut probe = server.connect2();
    let has_wr = probe.cmd("wr 0 probe").contains("Read Lock Get Success");
    let mut readers = Vec::new();
    for _ in 0..2 {
        readers.push(spawn(
            &server.addr.to_string(),
            &["run", "-s", "-n", "--verbose", "books", "--", "sleep", "1"],
        ));
    }
    if !has_wr {
        for reader in readers {
            let _ = finish(reader);
        }
        eprintln!("skipped: this server has no wr yet");
        return;
    }
    wait_until("two readers", || {
        let dj: serde_json::Value = serde_json::from_str(&probe.cmd("dj")).unwrap_or_default();
        dj["readers"]["books"]["holders"].as_array().map(Vec::len) == Some(2)
            && probe.cmd("i books").starts_with("1 ")
    });
    let out = lockctl(&server, &["status", "--json", "books"]);
    assert_eq!(out.code, 0, "read-held is held: {}", out.stderr);
    let status: serde_json::Value = serde_json::from_str(&out.stdout).expect(&out.stdout);
    assert_eq!(status["read"]["holders"].as_array().map(Vec::len), Some(2));
    assert_eq!(status["exclusive"], serde_json::Value::Null);
    let writer = spawn(
        &server.addr.to_string(),
        &["run", "-n", "books", "--", "true"],
    );
    let out = finish(writer);
    assert_eq!(out.code, 1, "a writer is kept out: {}", out.stderr);
    for reader in readers {
        let out = finish(reader);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(
            out.stderr.contains("a read hold on \"books\""),
            "{}",
            out.stderr
        );
    }
    let out = lockctl(&server, &["run", "-n", "books", "--", "true"]);
    assert_eq!(out.code, 0, "free again: {}", out.stderr);
}

/// The recipe of the man page, in a real bash: the lock is held from the
/// `read` until the script exits.
#[test]
fn hold_keeps_the_lock_until_the_shell_exits() {
    if !has_bash() {
        eprintln!("skipped: no bash");
        return;
    }
    let server = TestServer::start();
    let script = format!(
        r#"exec {{fd}}< <("{LOCKCTL}" -S {addr} hold deploy)
echo "pid=$!"
read -r line <&$fd
echo "$line"
"{LOCKCTL}" -S {addr} status deploy > /dev/null
echo "status=$?"
"#,
        addr = server.addr
    );
    let out = finish(
        Command::new("bash")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bash"),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    let pid: u32 = lines[0]
        .strip_prefix("pid=")
        .and_then(|p| p.parse().ok())
        .expect("the pid of lockctl hold");
    let held: Vec<&str> = lines[1].split(' ').collect();
    assert_eq!(
        (held[0], held[1], held[3]),
        ("held", "x", "deploy"),
        "{}",
        lines[1]
    );
    assert!(held[2].parse::<u64>().is_ok_and(|t| t > 0), "{}", lines[1]);
    assert_eq!(lines[2], "status=0");
    // The shell has exited: lockctl hold lets go and ends.
    let mut conn = server.connect();
    wait_until("the lock freed", || conn.cmd("i deploy").starts_with("0 "));
    wait_until("lockctl hold gone", || !common::process_exists(pid));
}

#[test]
fn hold_json_and_busy() {
    let server = TestServer::start();
    let mut holder = server.connect();
    assert!(holder.cmd("g h").starts_with("1 "));
    let out = lockctl(&server, &["hold", "-n", "h"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("busy"), "{}", out.stderr);
    assert!(holder.cmd("r h").starts_with("1 "));
    // stdout is a pipe that this test closes after the first line.
    let mut child = spawn(
        &server.addr.to_string(),
        &["hold", "--json", "--semaphore", "h"],
    );
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("the held line");
    let held: serde_json::Value = serde_json::from_str(&line).expect(&line);
    assert_eq!(held["kind"], "s");
    assert_eq!(held["count"], 1);
    assert_eq!(held["name"], "h");
    drop(stdout);
    let out = finish(child);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(holder.cmd("si h").starts_with("0 "), "released");
}

/// A fake protocol-2 server that answers `watch *` with a snapshot, an
/// event and a close.
fn fake_watch_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        // A thread per connection: the client's own connection stays
        // open while its watch runs on a second one.
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(mut writer) = stream.try_clone() else {
                    return;
                };
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let reply: &[u8] = match line.as_str() {
                        "hello 2" => b"2 lockd fake\n",
                        "me" => b"1 127.0.0.1:1 127.0.0.1:1\n",
                        "watch *" => {
                            b"1 Watching: *\nheld x 3 127.0.0.1:2 a lock\nsynced\nreleased rd 1 unix:4 b\n"
                        }
                        _ => b"0 Error: unknown command\n",
                    };
                    if writer.write_all(reply).is_err() || line.starts_with("watch") {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn watch_prints_events_until_the_stream_ends() {
    let addr = fake_watch_server();
    let out = finish(spawn(&addr, &["watch", "--json", "*"]));
    assert_eq!(out.code, 75, "the stream ended: {}", out.stderr);
    let events: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect();
    assert_eq!(events.len(), 3, "{}", out.stdout);
    assert_eq!(events[0]["event"], "held");
    assert_eq!(events[0]["token"], 3);
    assert_eq!(events[0]["name"], "a lock");
    assert_eq!(events[1]["event"], "synced");
    assert_eq!(events[2]["kind"], "rd");
    assert_eq!(events[2]["count"], 1);
    assert_eq!(events[2]["holder"], "unix:4");
    let out = finish(spawn(&addr, &["watch", "*"]));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(
        lines[0].contains("held") && lines[0].ends_with("a lock"),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("synced"), "{}", lines[1]);
}

/// Against the real server, when it has `watch`: a lock taken after
/// `synced` arrives as an event.
#[test]
fn watch_live() {
    let server = TestServer::start();
    let mut probe = server.connect2();
    if !probe.cmd("watch nothing-here").starts_with("1 Watching") {
        eprintln!("skipped: this server has no watch yet");
        return;
    }
    let mut child = spawn(&server.addr.to_string(), &["watch", "--json", "live*"]);
    let pid = child.id();
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("synced");
    assert!(line.contains("\"synced\""), "{line}");
    let mut holder = server.connect();
    assert!(holder.cmd("g live-1").starts_with("1 "));
    line.clear();
    stdout.read_line(&mut line).expect("locked");
    let event: serde_json::Value = serde_json::from_str(&line).expect(&line);
    assert_eq!(
        (event["event"].as_str(), event["name"].as_str()),
        (Some("locked"), Some("live-1"))
    );
    // Our child, not yet reaped.
    let _ = common::send_signal(pid, libc::SIGTERM);
    let _ = child.wait();
}

#[test]
fn completions_load_in_bash() {
    if !has_bash() {
        eprintln!("skipped: no bash");
        return;
    }
    let script = format!(
        r#"source <("{LOCKCTL}" completions bash)
complete -p lockctl
COMP_WORDS=(lockctl run --ex); COMP_CWORD=2; _lockctl; echo "${{COMPREPLY[*]}}"
COMP_WORDS=(lockctl -S h:1 wat); COMP_CWORD=3; _lockctl; echo "${{COMPREPLY[*]}}"
COMP_WORDS=(lockctl completions ''); COMP_CWORD=2; _lockctl; echo "${{COMPREPLY[*]}}"
"#
    );
    let out = finish(
        Command::new("bash")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bash"),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].contains("_lockctl"), "{}", out.stdout);
    assert_eq!(lines[1], "--exclusive");
    assert_eq!(lines[2], "watch");
    assert!(
        lines[3].contains("bash") && lines[3].contains("fish"),
        "{}",
        out.stdout
    );
    for shell in ["zsh", "fish"] {
        let out = finish(
            Command::new(LOCKCTL)
                .args(["completions", shell])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn lockctl"),
        );
        assert_eq!(out.code, 0);
        assert!(out.stdout.contains("--semaphore"), "{shell}");
    }
}

#[test]
fn shell_help_and_quit() {
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
        .write_all(b"help\ng a\nquit\ng b\n")
        .expect("write commands");
    drop(stdin);
    let out = finish(child);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("wr MS NAME"), "{}", out.stdout);
    assert!(
        out.stdout.contains("1 Lock Get Success: a"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains(": b"),
        "nothing after quit: {}",
        out.stdout
    );
}

/// On a terminal the shell edits lines (rustyline): `script` gives it a
/// pseudo-terminal (skipped where util-linux's `script` is missing).
#[test]
fn shell_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` command for a pseudo-terminal");
        return;
    }
    let server = TestServer::start();
    let inner = format!("{LOCKCTL} -S {} shell", server.addr);
    let mut child = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn script");
    let mut stdin = child.stdin.take().expect("stdin");
    // Typed keys: "g a", a backspace over a typo, Enter; then quit.
    stdin.write_all(b"g ax\x7f\r").expect("type");
    std::thread::sleep(Duration::from_millis(300));
    stdin.write_all(b"quit\r").expect("type quit");
    let out = finish(child);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("lockd> "), "{:?}", out.stdout);
    assert!(
        out.stdout.contains("1 Lock Get Success: a\r\n"),
        "{:?}",
        out.stdout
    );
}

/// Closing the descriptor releases the lock before the script ends, as
/// `flock -u` would; the server comes from `LOCKD_SERVER`.
#[test]
fn hold_releases_when_the_descriptor_is_closed() {
    if !has_bash() {
        eprintln!("skipped: no bash");
        return;
    }
    let server = TestServer::start();
    let script = format!(
        r#"exec {{fd}}< <("{LOCKCTL}" hold early)
read -r line <&$fd
echo "$line"
exec {{fd}}<&-
for i in $(seq 100); do
    "{LOCKCTL}" status early > /dev/null || {{ echo released; exit 0; }}
    sleep 0.1
done
echo "still held"
"#
    );
    let out = finish(
        Command::new("bash")
            .args(["-c", &script])
            .env("LOCKD_SERVER", server.addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bash"),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("held x "), "{}", out.stdout);
    assert_eq!(lines[1], "released", "{}", out.stdout);
}

/// The completion scripts the Debian package installs are what
/// `lockctl completions` prints: regenerate them with
/// `lockctl completions bash > dist/completions/lockctl.bash` (and `_lockctl`
/// for zsh, `lockctl.fish` for fish) when a flag changes.
#[test]
fn shipped_completions_match_the_flag_tables() {
    for (shell, file) in [
        ("bash", "lockctl.bash"),
        ("zsh", "_lockctl"),
        ("fish", "lockctl.fish"),
    ] {
        let out = Command::new(LOCKCTL)
            .args(["completions", shell])
            .output()
            .expect("run lockctl completions");
        assert!(out.status.success(), "{out:?}");
        let shipped = std::fs::read(format!(
            "{}/dist/completions/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("shipped completion script");
        assert!(
            out.stdout == shipped,
            "dist/completions/{file} is stale: lockctl completions {shell} > dist/completions/{file}"
        );
    }
}
