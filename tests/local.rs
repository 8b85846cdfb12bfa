//! Local mode (issue 12): processes of one machine share locks through a
//! socket path, the first one serving it. Each test that needs several
//! processes runs copies of itself as the other processes: the copy finds
//! its role in `LOCKD_LOCAL_ROLE` and runs only that.

mod common;

use common::TempDir;
use lockd::local::{self, LocalError};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROLE: &str = "LOCKD_LOCAL_ROLE";
const PATH: &str = "LOCKD_LOCAL_PATH";
const SHARED: &str = "LOCKD_LOCAL_SHARED";
const WAIT: Duration = Duration::from_secs(30);

/// A private (0700) directory for the socket.
fn private_dir(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    fs::set_permissions(&dir.path, fs::Permissions::from_mode(0o700)).expect("chmod");
    dir
}

/// Runs this test again in a new process, in `role`.
fn spawn_role(test: &str, role: &str, socket: &Path, shared: &Path) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(ROLE, role)
        .env(PATH, socket)
        .env(SHARED, shared)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn a copy of the test")
}

/// This process's role, when it is a copy.
fn role() -> Option<(String, PathBuf, PathBuf)> {
    let role = std::env::var(ROLE).ok()?;
    let path = std::env::var_os(PATH).map(PathBuf::from)?;
    let shared = std::env::var_os(SHARED).map(PathBuf::from)?;
    Some((role, path, shared))
}

/// Tells the parent something, on a line of its own.
fn say(what: &str) {
    let mut out = std::io::stdout().lock();
    // After a newline: the harness's "test NAME ... " has none.
    let _ = writeln!(out, "\nLOCAL {what}");
    let _ = out.flush();
}

/// Reads a copy's stdout until it says `what`; returns what followed it.
fn hear(child: &mut Child, what: &str) -> String {
    let stdout = child.stdout.as_mut().expect("piped stdout");
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).expect("read a copy's stdout");
        assert!(n > 0, "the copy ended before saying {what:?}");
        if let Some(rest) = line.trim_end().strip_prefix("LOCAL ") {
            if let Some(rest) = rest.strip_prefix(what) {
                return rest.trim().to_string();
            }
        }
    }
}

fn wait_ok(mut child: Child, who: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            assert!(status.success(), "{who} failed: {status}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{who} did not finish within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One critical section: a file that must not exist on entry proves no
/// other process is inside, and a counter file counts the sections.
fn critical_section(shared: &Path) {
    let inside = shared.join("inside");
    if let Err(e) = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&inside)
    {
        say(&format!("VIOLATION {e}"));
        std::process::exit(3);
    }
    let counter = shared.join("counter");
    let n: u64 = fs::read_to_string(&counter)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    fs::write(&counter, format!("{}\n", n + 1)).expect("write counter");
    fs::remove_file(&inside).expect("leave");
}

#[test]
fn eight_processes_take_turns_on_one_name() {
    const TEST: &str = "eight_processes_take_turns_on_one_name";
    if let Some((_, path, shared)) = role() {
        let client = local::open(&path).expect("open the local path");
        for _ in 0..100 {
            let guard = client
                .try_lock_for("counter", WAIT)
                .expect("my turn")
                .expect("within WAIT");
            critical_section(&shared);
            drop(guard);
        }
        return;
    }
    let dir = private_dir("local-eight");
    let socket = dir.path.join("app.sock");
    // This process serves, so the server outlives every worker.
    let _serving = local::open(&socket).expect("serve");
    assert!(local::serves(&socket));
    let workers: Vec<Child> = (0..8)
        .map(|_| spawn_role(TEST, "worker", &socket, &dir.path))
        .collect();
    for (i, worker) in workers.into_iter().enumerate() {
        wait_ok(worker, &format!("worker {i}"));
    }
    let count = fs::read_to_string(dir.path.join("counter")).expect("counter");
    assert_eq!(count.trim(), "800");
    let mode = fs::metadata(&socket).expect("socket").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    let state = dir.path.join("app.sock.state/fencing-token");
    let mode = fs::metadata(&state).expect("state").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "state file mode {mode:o}");
}

#[test]
fn the_line_goes_on_after_the_serving_process_is_killed() {
    const TEST: &str = "the_line_goes_on_after_the_serving_process_is_killed";
    if let Some((role, path, shared)) = role() {
        match role.as_str() {
            "server" => {
                let client = local::open(&path).expect("serve");
                assert!(local::serves(&path), "the first process serves");
                let guard = client
                    .try_lock_for("job", WAIT)
                    .expect("lock")
                    .expect("within WAIT");
                say(&format!("HELD {}", guard.token().expect("a token")));
                std::thread::sleep(WAIT * 2); // until killed
            }
            _ => {
                // Waits in line, loses the connection when the server dies,
                // opens the path again (one waiter takes it over), and waits
                // again until it gets the lock.
                let mut lost = false;
                let deadline = Instant::now() + WAIT;
                let (guard, _client) = loop {
                    assert!(Instant::now() < deadline, "never got the lock");
                    let client = local::open(&path).expect("open");
                    say("WAITING");
                    match client.try_lock_for("job", WAIT) {
                        Ok(Some(guard)) => break (guard, client),
                        Ok(None) => panic!("still busy after {WAIT:?}"),
                        Err(e) if e.locks_lost() => lost = true,
                        Err(e) => panic!("{e}"),
                    }
                };
                assert!(lost, "the wait through the dead server was ended");
                critical_section(&shared);
                say(&format!("GOT {}", guard.token().expect("a token")));
            }
        }
        return;
    }
    let dir = private_dir("local-takeover");
    let socket = dir.path.join("app.sock");
    let mut server = spawn_role(TEST, "server", &socket, &dir.path);
    let first_token: u64 = hear(&mut server, "HELD").parse().expect("token");
    let mut waiters: Vec<Child> = (0..2)
        .map(|_| spawn_role(TEST, "waiter", &socket, &dir.path))
        .collect();
    for waiter in &mut waiters {
        hear(waiter, "WAITING");
    }
    std::thread::sleep(Duration::from_millis(200)); // both are in line
    server.kill().expect("SIGKILL the serving process");
    server.wait().expect("reap");
    let mut tokens = Vec::new();
    for waiter in &mut waiters {
        tokens.push(hear(waiter, "GOT").parse::<u64>().expect("token"));
    }
    for (i, waiter) in waiters.into_iter().enumerate() {
        wait_ok(waiter, &format!("waiter {i}"));
    }
    assert!(
        tokens.iter().all(|t| *t > first_token),
        "tokens {tokens:?} after {first_token}: they grow across takeovers"
    );
    assert_ne!(tokens[0], tokens[1]);
}

#[test]
fn a_client_learns_when_the_serving_process_dies() {
    const TEST: &str = "a_client_learns_when_the_serving_process_dies";
    if let Some((_, path, _)) = role() {
        let _client = local::open(&path).expect("serve");
        say("SERVING");
        std::thread::sleep(WAIT * 2);
        return;
    }
    let dir = private_dir("local-lost");
    let socket = dir.path.join("app.sock");
    let mut server = spawn_role(TEST, "server", &socket, &dir.path);
    hear(&mut server, "SERVING");
    let client = local::open(&socket).expect("connect");
    assert!(!local::serves(&socket), "another process serves");
    let _held = client.lock("mine").expect("lock");
    let lost = client.on_disconnect();
    server.kill().expect("SIGKILL");
    server.wait().expect("reap");
    lost.recv_timeout(WAIT)
        .expect("told that the locks are gone");
    assert!(client.is_locked("mine").is_err(), "the connection is gone");
    // The next open serves the path from this process.
    let again = local::open(&socket).expect("take over");
    assert!(local::serves(&socket));
    assert!(
        !again.is_locked("mine").expect("i"),
        "the old lock died with its server"
    );
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let dir = private_dir("local-stale");
    let socket = dir.path.join("app.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    assert!(socket.exists(), "a socket file nobody listens on");
    let client = local::open(&socket).expect("take over the stale socket");
    assert!(local::serves(&socket));
    let _held = client.lock("x").expect("lock");
    assert!(client.is_locked("x").expect("i"));
}

#[test]
fn a_directory_open_to_others_is_refused() {
    let dir = TempDir::new("local-perm");
    fs::set_permissions(&dir.path, fs::Permissions::from_mode(0o755)).expect("chmod");
    let err = local::open(dir.path.join("app.sock")).expect_err("0755 directory");
    assert!(matches!(err, LocalError::Permissions { .. }), "{err}");
    assert!(err.to_string().contains("chmod 700"), "{err}");
    let err = local::Options::new()
        .mode(0o660)
        .open(dir.path.join("app.sock"))
        .expect_err("world-readable for the group mode too");
    assert!(err.to_string().contains("chmod 770"), "{err}");
}

#[test]
fn a_file_that_is_not_a_socket_is_refused() {
    let dir = private_dir("local-file");
    let path = dir.path.join("app.sock");
    fs::write(&path, "precious").expect("write");
    let err = local::open(&path).expect_err("not a socket");
    assert!(matches!(err, LocalError::NotASocket { .. }), "{err}");
    assert_eq!(fs::read_to_string(&path).expect("kept"), "precious");
}

#[test]
fn another_users_socket_is_never_connected_to() {
    if !is_root() {
        eprintln!("skipped: needs root to make a socket owned by another user");
        return;
    }
    let dir = private_dir("local-other");
    let socket = dir.path.join("app.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    std::os::unix::fs::chown(&socket, Some(65534), Some(65534)).expect("chown to nobody");
    let err = local::open(&socket).expect_err("another user's socket");
    assert!(matches!(err, LocalError::Permissions { .. }), "{err}");
    assert!(err.to_string().contains("another user"), "{err}");
}

fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

#[test]
fn a_helper_serves_while_anyone_is_connected_then_leaves() {
    const TEST: &str = "a_helper_serves_while_anyone_is_connected_then_leaves";
    if let Some((_, path, _)) = role() {
        say("STARTING");
        let served = local::Options::new()
            .serve_until_idle(&path, Duration::from_millis(200))
            .expect("serve");
        assert!(served, "nobody else served the path");
        say("IDLE");
        return;
    }
    let dir = private_dir("local-helper");
    let socket = dir.path.join("app.sock");
    let mut helper = spawn_role(TEST, "helper", &socket, &dir.path);
    hear(&mut helper, "STARTING");
    let deadline = Instant::now() + WAIT;
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "the helper never served");
        std::thread::sleep(Duration::from_millis(10));
    }
    let client = local::open(&socket).expect("connect to the helper");
    assert!(
        !local::serves(&socket),
        "the helper serves, not this process"
    );
    let held = client.lock("job").expect("lock");
    std::thread::sleep(Duration::from_millis(600)); // three idle periods
    assert!(
        helper.try_wait().expect("try_wait").is_none(),
        "the helper left while a client was connected"
    );
    assert!(client.is_locked("job").expect("i"), "the lock survived");
    assert!(
        local::Options::new()
            .serve_until_idle(&socket, Duration::from_millis(1))
            .is_ok_and(|served| !served),
        "a second helper does not serve a served path"
    );
    drop(held);
    drop(client);
    hear(&mut helper, "IDLE");
    wait_ok(helper, "helper");
    assert!(!socket.exists(), "the socket file is removed");
}

// --- lockctl --local ------------------------------------------------------

const LOCKCTL: &str = env!("CARGO_BIN_EXE_lockctl");

/// Runs a bash script with `LOCKCTL`, `SOCK` and `DIR` set; the child is
/// killed by PID if it outlives the deadline.
fn bash(script: &str, socket: &Path, dir: &Path) -> Child {
    Command::new("bash")
        .args(["-c", script])
        .env("LOCKCTL", LOCKCTL)
        .env("SOCK", socket)
        .env("DIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn bash")
}

/// Whether some process holds the takeover lock of `socket` (a helper
/// serves it).
fn served(socket: &Path) -> bool {
    let lock = fs::File::open(with_suffix(socket, ".lock")).expect("lock file");
    lock.try_lock().is_err()
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

#[test]
fn lockctl_run_local_excludes_across_processes_and_its_helper_leaves() {
    let dir = private_dir("local-lockctl");
    let socket = dir.path.join("jobs.sock");
    let section = r#"mkdir "$DIR/inside" || exit 3
n=$(cat "$DIR/counter" 2>/dev/null || echo 0)
echo $((n + 1)) > "$DIR/counter"
rmdir "$DIR/inside""#;
    fs::write(dir.path.join("section.sh"), section).expect("script");
    let worker = r#"for i in $(seq 20); do
  "$LOCKCTL" run --local "$SOCK" counter -- sh "$DIR/section.sh" || exit $?
done"#;
    let workers: Vec<Child> = (0..8).map(|_| bash(worker, &socket, &dir.path)).collect();
    for (i, worker) in workers.into_iter().enumerate() {
        wait_ok(worker, &format!("worker {i}"));
    }
    let count = fs::read_to_string(dir.path.join("counter")).expect("counter");
    assert_eq!(count.trim(), "160", "every section ran, one at a time");
    // Nobody is connected any more: the helper stops serving by itself.
    let deadline = Instant::now() + WAIT;
    while socket.exists() || served(&socket) {
        assert!(Instant::now() < deadline, "the helper never left");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn lockctl_run_local_stops_cmd_when_the_helper_dies() {
    let dir = private_dir("local-lost-cmd");
    let socket = dir.path.join("jobs.sock");
    let mut run = bash(
        r#"exec "$LOCKCTL" run --local "$SOCK" job -- sh -c 'echo started; exec sleep 30'"#,
        &socket,
        &dir.path,
    );
    let stdout = run.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("CMD started");
    assert_eq!(line, "started\n");
    let helper = helper_pid(&socket).expect("a helper serves the path");
    let helper = rustix::process::Pid::from_raw(helper).expect("a helper's pid");
    rustix::process::kill_process(helper, rustix::process::Signal::KILL)
        .expect("SIGKILL the helper");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = run.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "lockctl run did not notice");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(75), "the lock was lost: CMD stopped");
}

/// The PID of the `lockctl serve --local SOCKET` process.
fn helper_pid(socket: &Path) -> Option<i32> {
    let wanted = socket.to_str()?;
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.contains(&&b"serve"[..]) && args.contains(&wanted.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

#[test]
fn lockctl_serve_needs_local() {
    let out = Command::new(LOCKCTL)
        .arg("serve")
        .output()
        .expect("run lockctl");
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--local"));
}

#[test]
fn lockctl_group_mode_makes_the_socket_0660() {
    let dir = TempDir::new("local-group");
    fs::set_permissions(&dir.path, fs::Permissions::from_mode(0o770)).expect("chmod");
    let socket = dir.path.join("team.sock");
    let out = Command::new(LOCKCTL)
        .args(["run", "--mode", "660", "--local"])
        .arg(&socket)
        .args(["x", "--", "stat", "-c", "%a"])
        .arg(&socket)
        .output()
        .expect("run lockctl");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "660\n");
    let private = Command::new(LOCKCTL)
        .args(["run", "--local"])
        .arg(dir.path.join("private.sock"))
        .args(["x", "--", "true"])
        .output()
        .expect("run lockctl");
    assert_eq!(private.status.code(), Some(69), "0770 is too open for 0600");
    assert!(String::from_utf8_lossy(&private.stderr).contains("--mode 0660"));
    let bad = Command::new(LOCKCTL)
        .args(["run", "--mode", "644", "--local"])
        .arg(&socket)
        .args(["x", "--", "true"])
        .output()
        .expect("run lockctl");
    assert_eq!(bad.status.code(), Some(64), "{bad:?}");
}
