//! `lockd` under systemd, through the real binary: `Type=notify` readiness
//! over a datagram socket the test binds, socket activation with a
//! listener the test passes as fd 3, and priority prefixes for the journal.
//! Every daemon listens on port 0 or on inherited sockets and has no state.

mod common;

use common::{without_warnings, Conn, Daemon, TempDir, LISTENING, LOCKD, PATIENCE};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// `lockd ARGS` with no state, as a command to adjust before spawning.
fn lockd(args: &[&str]) -> Command {
    let mut command = Command::new(LOCKD);
    command.args(args).arg("--no-state");
    command
}

/// `lockd ARGS` started the way systemd starts an activated service: `fd`
/// becomes descriptor 3, `LISTEN_FDS=1`, and `LISTEN_PID` is the pid of the
/// process that execs lockd (a shell that sets it to its own `$$`, then
/// execs, keeping the pid; the environment cannot be set after fork).
fn activated(fd: RawFd, name: &str, args: &[&str]) -> Command {
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"")
        .arg(LOCKD)
        .args(args)
        .arg("--no-state")
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", name);
    // SAFETY: between fork and exec the closure calls only dup2(2) and
    // fcntl(2), which are async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            let rc = if fd == 3 {
                // Already in place: only let it survive exec.
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if rc == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// A datagram socket standing in for systemd's notification socket.
struct NotifySocket {
    socket: UnixDatagram,
    /// The value of `NOTIFY_SOCKET`.
    address: String,
    _dir: Option<TempDir>,
}

impl NotifySocket {
    fn at_path() -> NotifySocket {
        let dir = TempDir::new("notify");
        let path = dir.path.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        NotifySocket::ready(socket, path.display().to_string(), Some(dir))
    }

    fn abstract_name() -> NotifySocket {
        let name = format!("lockd-test-notify-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .expect("abstract address");
        let socket = UnixDatagram::bind_addr(&addr).expect("bind abstract notify socket");
        NotifySocket::ready(socket, format!("@{name}"), None)
    }

    fn ready(socket: UnixDatagram, address: String, dir: Option<TempDir>) -> NotifySocket {
        socket
            .set_read_timeout(Some(PATIENCE))
            .expect("read timeout");
        NotifySocket {
            socket,
            address,
            _dir: dir,
        }
    }

    /// The next notification, as its `KEY=VALUE` lines.
    fn recv(&self) -> Vec<String> {
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).expect("a notification in time");
        let text = std::str::from_utf8(&buf[..n]).expect("UTF-8 notification");
        text.lines().map(str::to_string).collect()
    }
}

/// READY=1 comes once the port accepts, with our pid and a status; SIGTERM
/// brings STOPPING=1 and a clean exit.
fn readiness(notify: NotifySocket) {
    let mut command = lockd(&["--listen", "127.0.0.1:0"]);
    command.env("NOTIFY_SOCKET", &notify.address);
    let mut daemon = Daemon::spawn_command(command);
    let ready = notify.recv();
    assert_eq!(ready[0], "READY=1", "{ready:?}");
    assert!(ready.contains(&format!("MAINPID={}", daemon.child.id())));
    daemon.wait_line(|l| l.starts_with(LISTENING));
    let addr = daemon.tcp_addr();
    let status = ready
        .iter()
        .find_map(|l| l.strip_prefix("STATUS="))
        .expect("a STATUS= line");
    assert_eq!(status, format!("listening on {addr}"));
    let mut conn = Conn::tcp(addr);
    assert_eq!(conn.cmd("g a"), "1 Lock Get Success: a\n");

    daemon.signal(libc::SIGTERM);
    let stopping = notify.recv();
    assert_eq!(stopping[0], "STOPPING=1", "{stopping:?}");
    assert_eq!(daemon.wait_exit().code(), Some(0), "{:?}", daemon.log);
}

#[test]
fn notify_socket_path_gets_ready_and_stopping() {
    readiness(NotifySocket::at_path());
}

#[test]
fn notify_socket_abstract_name_gets_ready_and_stopping() {
    readiness(NotifySocket::abstract_name());
}

#[test]
fn no_notify_socket_no_notification() {
    let mut command = lockd(&["--listen", "127.0.0.1:0"]);
    command.env_remove("NOTIFY_SOCKET");
    let mut daemon = Daemon::spawn_command(command);
    daemon.wait_line(|l| l.starts_with(LISTENING));
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    assert!(
        !daemon.log.iter().any(|l| l.contains("notify")),
        "{:?}",
        daemon.log
    );
}

#[test]
fn activated_tcp_listener_replaces_the_default() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut daemon = Daemon::spawn_command(activated(listener.as_raw_fd(), "lockd.socket", &[]));
    daemon.wait_line(|l| l == "lockd: sockets from systemd: lockd.socket");
    daemon.wait_line(|l| l.starts_with(LISTENING));
    drop(listener); // lockd holds its own copy
    let mut conn = Conn::tcp(addr);
    assert_eq!(conn.cmd("g a"), "1 Lock Get Success: a\n");
    assert_eq!(daemon.listening(), [addr.to_string()], "{:?}", daemon.log);
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0), "{:?}", daemon.log);
    // No default 127.0.0.1:9999 was bound besides it.
    assert_eq!(daemon.listening(), [addr.to_string()], "{:?}", daemon.log);
}

/// A restart (as `systemctl restart lockd` does with `lockd.socket`) gets
/// the same inherited sockets again: a stop must leave them listening, for
/// TCP and for Unix.
#[test]
fn inherited_listeners_survive_a_stop_for_the_next_start() {
    let tcp = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let dir = TempDir::new("restart");
    let path = dir.path.join("lockd.sock");
    let unix = UnixListener::bind(&path).expect("bind unix");
    for round in 0..2 {
        for fd in [tcp.as_raw_fd(), unix.as_raw_fd()] {
            let mut daemon = Daemon::spawn_command(activated(fd, "lockd.socket", &[]));
            daemon.wait_line(|l| l.starts_with(LISTENING));
            let mut conn = if fd == tcp.as_raw_fd() {
                Conn::tcp(addr)
            } else {
                Conn::unix(&path)
            };
            assert_eq!(conn.cmd("g a"), "1 Lock Get Success: a\n", "round {round}");
            drop(conn);
            daemon.signal(libc::SIGTERM);
            assert_eq!(daemon.wait_exit().code(), Some(0), "{:?}", daemon.log);
        }
    }
}

#[test]
fn activated_unix_listener_serves_and_its_file_is_left_to_systemd() {
    let dir = TempDir::new("activated");
    let path = dir.path.join("lockd.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let inode = std::fs::metadata(&path).expect("socket file").ino();
    // An explicit --listen is bound besides the inherited socket.
    let mut daemon = Daemon::spawn_command(activated(
        listener.as_raw_fd(),
        "unix",
        &["--listen", "127.0.0.1:0"],
    ));
    let unix_line = format!("{LISTENING}unix:{}", path.display());
    daemon.wait_line(|l| l == unix_line);
    let mut conn = Conn::unix(&path);
    assert_eq!(conn.cmd("g a"), "1 Lock Get Success: a\n");
    let mut tcp = Conn::tcp(daemon.tcp_addr());
    assert_eq!(tcp.cmd("g a"), "0 Lock Get Failure: a\n");
    drop((conn, tcp));
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0), "{:?}", daemon.log);
    let after = std::fs::metadata(&path).expect("socket file left in place");
    assert_eq!(after.ino(), inode, "the same socket file");
}

#[test]
fn listen_pid_of_another_process_is_ignored() {
    let mut command = lockd(&["--listen", "127.0.0.1:0"]);
    command.env("LISTEN_PID", "1").env("LISTEN_FDS", "1");
    let mut daemon = Daemon::spawn_command(command);
    daemon.wait_line(|l| l.starts_with(LISTENING));
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    assert_eq!(daemon.listening().len(), 1, "{:?}", daemon.log);
    assert!(!daemon.log.iter().any(|l| l.contains("systemd")));
}

#[test]
fn a_datagram_socket_is_refused_with_exit_1() {
    let dir = TempDir::new("activated-dgram");
    let socket = UnixDatagram::bind(dir.path.join("d.sock")).expect("bind");
    let mut command = activated(socket.as_raw_fd(), "dgram", &[]);
    let output = command.stdin(Stdio::null()).output().expect("run lockd");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    // One error line (after any start-up warnings about this machine).
    let errors = without_warnings(&stderr);
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("not a stream socket"), "{stderr}");
}

#[test]
fn journal_stream_gets_priority_prefixes() {
    let (reader, writer) = std::io::pipe().expect("pipe");
    let stat = rustix::fs::fstat(&writer).expect("fstat");
    let mut command = lockd(&["--listen", "127.0.0.1:0"]);
    command
        .env("JOURNAL_STREAM", format!("{}:{}", stat.st_dev, stat.st_ino))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(writer);
    let child = command.spawn().expect("spawn lockd");
    drop(command); // our copy of the writer, so EOF comes at exit
    let mut daemon = Daemon::reading(child, reader);
    let line = daemon.wait_line(|l| l.contains("listening on"));
    assert!(
        line.starts_with("<6>lockd: listening on 127.0.0.1:"),
        "{line}"
    );
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    assert!(
        daemon.log.iter().any(|l| l == "<5>lockd: stopped"),
        "{:?}",
        daemon.log
    );
}

#[test]
fn journal_stream_of_another_file_means_plain_lines() {
    let mut command = lockd(&["--listen", "127.0.0.1:0"]);
    command.env("JOURNAL_STREAM", "1:1");
    let mut daemon = Daemon::spawn_command(command);
    daemon.wait_line(|l| l.starts_with(&format!("{LISTENING}127.0.0.1:")));
}
