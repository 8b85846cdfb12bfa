//! Shared test helpers: a real server on port 0 (or a Unix socket in a
//! fresh temp dir) and raw line connections to it.
#![allow(dead_code)]

#[cfg(feature = "cluster")]
pub mod etcd;
pub mod lockctl;
#[cfg(feature = "cluster")]
pub mod proxy;
pub mod rng;

use lockd::{Server, ServerConfig, ServerHandle, Shutdown};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// How long a poll, or a wait for the daemon, gives a condition before the
/// test fails: a hang detector, generous for a loaded 2-CPU machine, never
/// a claim about speed.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Runs `probe` every few ms until it returns `Ok`; after `patience`, fails
/// with its last complaint.
#[track_caller]
pub fn poll_until(patience: Duration, mut probe: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + patience;
    loop {
        match probe() {
            Ok(()) => return,
            Err(why) => assert!(Instant::now() < deadline, "after {patience:?}: {why}"),
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// [`poll_until`] for a plain condition, with [`PATIENCE`].
#[track_caller]
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    poll_until(PATIENCE, || {
        check(done(), || format!("still waiting for {what}"))
    });
}

/// A step of a [`poll_until`] probe: `Ok` if `ok`, else the complaint.
pub fn check(ok: bool, complaint: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(complaint())
    }
}

/// A server for one test; stops (disconnecting everyone) on drop.
pub struct TestServer {
    pub handle: Option<ServerHandle>,
    pub addr: SocketAddr,
    pub dir: TempDir,
    pub unix_path: Option<PathBuf>,
    /// What the server's store needs running until it stops (a cluster
    /// node's etcd).
    pub backing: Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>,
}

/// Which server a test that runs on both talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A single server, locks in memory.
    Single,
    /// A cluster node (in this process) on this test binary's shared etcd,
    /// under a key prefix of its own.
    #[cfg(feature = "cluster")]
    Node,
}

impl Kind {
    /// A server of this kind with defaults.
    pub fn start(self) -> TestServer {
        self.with_config(|_| {})
    }

    /// A server of this kind with defaults changed by `adjust`.
    pub fn with_config(self, adjust: impl FnOnce(&mut ServerConfig)) -> TestServer {
        match self {
            Kind::Single => TestServer::with_config(adjust),
            #[cfg(feature = "cluster")]
            Kind::Node => etcd::node_server(adjust),
        }
    }

    /// Whether this is a cluster node.
    pub fn is_cluster(self) -> bool {
        self != Kind::Single
    }
}

/// Runs each named case, a `fn(Kind)`, as a test against a single server
/// (module `single`) and against a cluster node (module `cluster`).
#[macro_export]
macro_rules! on_both {
    ($($case:ident),* $(,)?) => {
        mod single {
            $(
                #[test]
                fn $case() {
                    super::$case($crate::common::Kind::Single);
                }
            )*
        }
        mod cluster {
            $(
                #[test]
                fn $case() {
                    super::$case($crate::common::Kind::Node);
                }
            )*
        }
    };
}

impl TestServer {
    /// Defaults, on 127.0.0.1:0.
    pub fn start() -> TestServer {
        TestServer::with_config(|_| {})
    }

    /// Defaults changed by `adjust`, on 127.0.0.1:0 plus a Unix socket in a
    /// fresh temp dir.
    pub fn with_config(adjust: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let dir = TempDir::new("server");
        let mut config = ServerConfig::default();
        config.listen = vec!["127.0.0.1:0".into()];
        config.unix = vec![dir.path.join("lockd.sock")];
        adjust(&mut config);
        let unix_path = config.unix.first().cloned();
        let server = Server::bind(config).expect("bind test server");
        let addr = server.local_addr().expect("tcp listener");
        let handle = server.spawn().expect("spawn test server");
        TestServer {
            handle: Some(handle),
            addr,
            dir,
            unix_path,
            backing: None,
        }
    }

    /// A new TCP connection.
    pub fn connect(&self) -> Conn {
        Conn::tcp(self.addr)
    }

    /// A new Unix-socket connection.
    pub fn connect_unix(&self) -> Conn {
        let path = self.unix_path.as_ref().expect("server has a unix socket");
        Conn::unix(path)
    }

    /// Polls `q` (on a fresh connection) until `key` has `value`, or fails
    /// after [`PATIENCE`]. The polling connection itself counts in
    /// `connections`.
    pub fn wait_for_stat(&self, key: &str, value: u64) {
        self.connect().wait_for_stat(key, value);
    }

    /// A new TCP connection switched to protocol 2.
    pub fn connect2(&self) -> Conn {
        let mut conn = self.connect();
        conn.hello2();
        conn
    }

    /// Like [`TestServer::wait_for_stat`], over a protocol-2 connection, so
    /// extended counters (`waiting`, `deadlocks`, ...) can be polled.
    pub fn wait_for_stat2(&self, key: &str, value: u64) {
        self.connect2().wait_for_stat(key, value);
    }

    /// Live connections as the server counts them, read without opening a
    /// connection (so a probe does not count itself).
    pub fn live_connections(&self) -> usize {
        self.handle
            .as_ref()
            .expect("server running")
            .shutdown_handle()
            .connections()
    }

    /// Polls [`TestServer::live_connections`] until it is `n`, or fails
    /// after [`PATIENCE`].
    pub fn wait_for_connections(&self, n: usize) {
        poll_until(PATIENCE, || {
            let got = self.live_connections();
            check(got == n, || {
                format!("connections stayed {got}, expected {n}")
            })
        });
    }

    /// Stops the server and waits for every thread.
    pub fn stop(&mut self, mode: Shutdown) {
        if let Some(handle) = self.handle.take() {
            handle.stop(mode);
        }
    }
}

/// A raw line connection with a read timeout (a hang fails the test).
pub struct Conn {
    pub reader: BufReader<RawStream>,
}

/// TCP or Unix, for raw tests.
pub enum RawStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl RawStream {
    pub fn set_read_timeout(&self, timeout: Option<Duration>) {
        let _ = match self {
            RawStream::Tcp(s) => s.set_read_timeout(timeout),
            RawStream::Unix(s) => s.set_read_timeout(timeout),
        };
    }

    pub fn shutdown(&self, how: std::net::Shutdown) {
        let _ = match self {
            RawStream::Tcp(s) => s.shutdown(how),
            RawStream::Unix(s) => s.shutdown(how),
        };
    }
}

impl Read for RawStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            RawStream::Tcp(s) => s.read(buf),
            RawStream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for RawStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            RawStream::Tcp(s) => s.write(buf),
            RawStream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

impl Conn {
    pub fn tcp(addr: SocketAddr) -> Conn {
        Conn::from_tcp(TcpStream::connect(addr).expect("connect"))
    }

    pub fn unix(path: &std::path::Path) -> Conn {
        let stream = UnixStream::connect(path).expect("connect unix");
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("timeout");
        Conn {
            reader: BufReader::new(RawStream::Unix(stream)),
        }
    }

    /// This end's `IP:PORT`, which is the server's default name for us.
    pub fn name(&self) -> String {
        match self.reader.get_ref() {
            RawStream::Tcp(s) => s.local_addr().expect("local addr").to_string(),
            RawStream::Unix(_) => String::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("send");
    }

    /// Reads one line, `\n` included.
    pub fn line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.reader
            .read_until(b'\n', &mut line)
            .expect("read reply");
        line
    }

    /// Sends `command\n` and returns the one-line reply, `\n` included.
    pub fn cmd(&mut self, command: &str) -> String {
        self.send(format!("{command}\n").as_bytes());
        String::from_utf8(self.line()).expect("utf-8 reply")
    }

    /// Reads lines up to and including an empty line (protocol 2 blocks).
    pub fn block(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = String::from_utf8(self.line()).expect("utf-8");
            assert!(!line.is_empty(), "eof inside a block: {lines:?}");
            if line == "\n" {
                return lines;
            }
            lines.push(line);
        }
    }

    /// Reads whatever arrives within `wait` (for classic multi-line replies
    /// and for checking silence).
    pub fn read_for(&mut self, wait: Duration) -> Vec<u8> {
        let mut out = self.reader.buffer().to_vec();
        self.reader.consume(out.len());
        let stream = self.reader.get_mut();
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            stream.set_read_timeout(Some(left));
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        stream.set_read_timeout(Some(READ_TIMEOUT));
        out
    }

    /// Reads until the server closes the connection.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.reader.read_to_end(&mut out).expect("read to eof");
        out
    }

    /// Sends a protocol-2 `q` (or classic) and returns one counter.
    pub fn stat(&mut self, key: &str) -> u64 {
        self.send(b"q\n");
        let prefix = format!("{key}: ");
        let mut found = None;
        // Classic q has 19 lines; read them all (keys sorted, no terminator).
        let text = self.read_stats_block();
        for line in text.lines() {
            if let Some(v) = line.strip_prefix(&prefix) {
                found = v.trim().parse().ok();
            }
        }
        found.unwrap_or_else(|| panic!("no {key} in {text}"))
    }

    /// Reads a whole `q` reply: up to `shared_orphans` (classic, its last
    /// key) or the terminating empty line (protocol 2).
    pub fn read_stats_block(&mut self) -> String {
        let mut text = String::new();
        loop {
            let line = String::from_utf8(self.line()).expect("utf-8");
            assert!(!line.is_empty(), "eof in q reply");
            if line == "\n" {
                return text;
            }
            let last = line.starts_with("shared_orphans: ");
            text.push_str(&line);
            if last && !text.contains("waiting: ") && !text.contains("command_wg") {
                return text;
            }
        }
    }

    /// Sends `command\n` (any bytes) and returns the one-line reply.
    pub fn cmd_bytes(&mut self, command: &[u8]) -> Vec<u8> {
        let mut line = command.to_vec();
        line.push(b'\n');
        self.send(&line);
        self.line()
    }

    /// Reads `n` lines and returns them concatenated.
    pub fn lines(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..n {
            let line = self.line();
            assert!(line.ends_with(b"\n"), "eof after {out:?}");
            out.extend_from_slice(&line);
        }
        out
    }

    /// Sends `command\n` followed by the sentinel command [`SENTINEL`] and
    /// returns every byte that came before the sentinel's reply: the whole
    /// reply of a classic multi-line verb (or nothing, for a silent one),
    /// known complete without waiting. The sentinel counts as one `i`.
    pub fn multi(&mut self, command: &[u8]) -> Vec<u8> {
        let mut line = command.to_vec();
        line.push(b'\n');
        line.extend_from_slice(SENTINEL.as_bytes());
        line.push(b'\n');
        self.send(&line);
        let mut out = Vec::new();
        loop {
            let line = self.line();
            assert!(line.ends_with(b"\n"), "eof before sentinel after {out:?}");
            if line == SENTINEL_REPLY.as_bytes() {
                return out;
            }
            out.extend_from_slice(&line);
        }
    }

    /// Like [`Conn::multi`], with the reply's lines sorted (for replies
    /// whose line order is unspecified).
    pub fn multi_sorted(&mut self, command: &[u8]) -> Vec<Vec<u8>> {
        let reply = self.multi(command);
        let mut lines: Vec<Vec<u8>> = reply
            .split_inclusive(|&b| b == b'\n')
            .map(<[u8]>::to_vec)
            .collect();
        lines.sort();
        lines
    }

    /// Sends `q` and returns its whole classic reply (19 lines).
    pub fn q(&mut self) -> String {
        self.send(b"q\n");
        self.read_stats_block()
    }

    /// Polls `q` on this connection until `key` has `value`, or fails after
    /// [`PATIENCE`] (for when a new connection would be refused or would
    /// count).
    pub fn wait_for_stat(&mut self, key: &str, value: u64) {
        poll_until(PATIENCE, || {
            let got = self.stat(key);
            check(got == value, || {
                format!("{key} stayed {got}, expected {value}")
            })
        });
    }

    /// One `read(2)` straight from the socket (the buffer must be empty):
    /// what a client that reads each reply with a single `recv` gets.
    pub fn recv_once(&mut self) -> Vec<u8> {
        assert!(self.reader.buffer().is_empty(), "unread buffered bytes");
        let mut buf = vec![0u8; 1 << 16];
        let n = self.reader.get_mut().read(&mut buf).expect("recv");
        buf.truncate(n);
        buf
    }

    /// The TCP socket (panics on a Unix connection).
    pub fn tcp_stream(&self) -> &TcpStream {
        match self.reader.get_ref() {
            RawStream::Tcp(s) => s,
            RawStream::Unix(_) => panic!("not a TCP connection"),
        }
    }

    /// Closes with a reset instead of a FIN (`SO_LINGER` 0, then close).
    pub fn reset(self) {
        set_linger_zero(self.tcp_stream());
        drop(self);
    }

    /// Wraps a connected stream (one made in another network namespace,
    /// say).
    pub fn from_tcp(stream: TcpStream) -> Conn {
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Conn {
            reader: BufReader::new(RawStream::Tcp(stream)),
        }
    }

    /// Reads one line as a string, `\n` included (`""` at EOF).
    pub fn line_string(&mut self) -> String {
        String::from_utf8(self.line()).expect("utf-8 reply")
    }

    /// `hello 2`, checking the reply.
    pub fn hello2(&mut self) {
        assert_eq!(
            self.cmd("hello 2"),
            concat!("2 lockd ", env!("CARGO_PKG_VERSION"), "\n")
        );
    }

    /// Sends `commands` (whole lines) followed by `ping`, and returns every
    /// byte that came back before the `1 pong` line: a deterministic way to
    /// check that commands got no reply, without sleeping.
    pub fn before_pong(&mut self, commands: &str) -> String {
        self.send(format!("{commands}ping\n").as_bytes());
        let mut out = String::new();
        loop {
            let line = String::from_utf8(self.line()).expect("utf-8");
            assert!(!line.is_empty(), "eof before pong, got {out:?}");
            if line == "1 pong\n" {
                return out;
            }
            out.push_str(&line);
        }
    }

    pub fn shutdown_write(&mut self) {
        self.reader.get_ref().shutdown(std::net::Shutdown::Write);
    }
}

/// The command [`Conn::multi`] sends after the command under test.
pub const SENTINEL: &str = "i lockd-test-sentinel";
/// Its reply (nobody ever takes that lock).
pub const SENTINEL_REPLY: &str = "0 Lock Not Locked: lockd-test-sentinel\n";

/// Sets `SO_LINGER` to on, 0 s: closing the socket then sends a RST.
/// (`TcpStream::set_linger` is unstable.)
pub fn set_linger_zero(stream: &TcpStream) {
    rustix::net::sockopt::set_socket_linger(stream, Some(Duration::ZERO)).expect("SO_LINGER");
}

/// Whether process `pid` exists (signal 0).
pub fn process_exists(pid: u32) -> bool {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    pid.is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok())
}

/// Sends signal number `signal` to process `pid`.
pub fn send_signal(pid: u32, signal: i32) -> std::io::Result<()> {
    use rustix::process::{kill_process, Pid, Signal};
    let pid = i32::try_from(pid).ok().and_then(Pid::from_raw);
    let pid = pid.ok_or_else(|| std::io::Error::other("not a process id"))?;
    let signal =
        Signal::from_named_raw(signal).ok_or_else(|| std::io::Error::other("not a signal"))?;
    Ok(kill_process(pid, signal)?)
}

/// The classic `q` reply with every counter 0 except those in `nonzero`.
pub fn expected_q(nonzero: &[(&str, u64)]) -> String {
    const KEYS: [&str; 19] = [
        "command_d",
        "command_dump",
        "command_g",
        "command_i",
        "command_iam",
        "command_me",
        "command_q",
        "command_r",
        "command_sd",
        "command_sg",
        "command_si",
        "command_sr",
        "command_who",
        "connections",
        "invalid_commands",
        "locks",
        "orphans",
        "shared_locks",
        "shared_orphans",
    ];
    for (key, _) in nonzero {
        assert!(KEYS.contains(key), "not a classic key: {key}");
    }
    let mut out = String::new();
    for key in KEYS {
        let value = nonzero
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(0, |(_, v)| *v);
        out.push_str(&format!("{key}: {value}\n"));
    }
    out
}

/// A `q` reply without the line of `key` (for counters a polling loop
/// bumped an unknown number of times, like `command_q`).
pub fn without_key(q: &str, key: &str) -> String {
    let prefix = format!("{key}: ");
    q.lines()
        .filter(|line| !line.starts_with(&prefix))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Compares bytes, showing both sides escaped when they differ.
#[track_caller]
pub fn assert_bytes(got: impl AsRef<[u8]>, want: impl AsRef<[u8]>) {
    let (got, want) = (got.as_ref(), want.as_ref());
    assert!(
        got == want,
        "\n got: \"{}\"\nwant: \"{}\"",
        got.escape_ascii(),
        want.escape_ascii()
    );
}

/// Concatenates byte strings.
pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A small seeded generator (xorshift64*); tests print the seed so a
/// failure can be replayed with `LOCKD_TEST_SEED`.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `LOCKD_TEST_SEED` if set, else from the clock; prints
    /// the seed.
    pub fn from_env(test: &str) -> Rng {
        let seed = std::env::var("LOCKD_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("{test}: seed {seed} (rerun with LOCKD_TEST_SEED={seed})");
        Rng::new(seed)
    }

    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A fresh temp directory, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "lockd-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop(Shutdown::Immediate);
    }
}

/// The `lockd` binary.
pub const LOCKD: &str = env!("CARGO_BIN_EXE_lockd");

/// The prefix of the log line lockd writes per listener once it serves.
pub const LISTENING: &str = "lockd: listening on ";

/// A real `lockd` process, killed on drop. Its stderr is read line by line
/// on a thread, so the daemon never blocks (or dies) writing a log line.
pub struct Daemon {
    pub child: Child,
    lines: Receiver<String>,
    /// Every stderr line read so far.
    pub log: Vec<String>,
}

impl Daemon {
    /// Spawns `lockd ARGS` and waits until it has logged `listeners`
    /// `listening on` lines.
    pub fn start(args: &[&str], listeners: usize) -> Daemon {
        let mut daemon = Daemon::spawn(args);
        for _ in 0..listeners {
            daemon.wait_line(|l| l.starts_with(LISTENING));
        }
        daemon
    }

    /// Spawns `lockd ARGS` without waiting for anything.
    pub fn spawn(args: &[&str]) -> Daemon {
        let mut command = Command::new(LOCKD);
        command.args(args);
        Daemon::spawn_command(command)
    }

    /// Spawns a prepared command (stdin and stdout go to /dev/null).
    pub fn spawn_command(mut command: Command) -> Daemon {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lockd");
        let stderr = child.stderr.take().expect("piped stderr");
        Daemon::reading(child, stderr)
    }

    /// A spawned `child` whose log comes from `stderr`.
    pub fn reading(child: Child, stderr: impl Read + Send + 'static) -> Daemon {
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Daemon {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Reads stderr until a line matches; fails after [`PATIENCE`] or at EOF.
    #[track_caller]
    pub fn wait_line(&mut self, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(e) => panic!("no expected line on stderr ({e:?}); got {:?}", self.log),
            }
        }
    }

    /// Every `listening on` line logged so far, without the prefix.
    pub fn listening(&self) -> Vec<&str> {
        self.log
            .iter()
            .filter_map(|l| l.strip_prefix(LISTENING))
            .collect()
    }

    /// The first TCP address it logged.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.listening()
            .into_iter()
            .find(|a| !a.starts_with("unix:") && !a.starts_with("ws:"))
            .unwrap_or_else(|| panic!("no TCP listener in {:?}", self.log))
            .parse()
            .expect("address in the listening line")
    }

    pub fn signal(&self, signal: libc::c_int) {
        // Our own child, not yet reaped: its pid is still its own.
        send_signal(self.child.id(), signal).expect("kill");
    }

    /// `kill -9`, and reaps it.
    pub fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// Waits for the process to exit, then collects the rest of stderr.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let status = wait_for_exit(&mut self.child);
        while let Ok(line) = self.lines.recv_timeout(PATIENCE) {
            self.log.push(line);
        }
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `child` to exit; kills it and fails after [`PATIENCE`].
#[track_caller]
pub fn wait_for_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("lockd did not exit within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The lines of a daemon's stderr that are not start-up warnings
/// (`lockd: warning: ...`, e.g. an open-files limit below
/// `--max-connections` on this machine).
pub fn without_warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| !l.starts_with("lockd: warning: "))
        .collect()
}

/// A man page's text with roff's `\-` and font escapes undone, so its
/// flags compare with `--help`'s.
pub fn roff_plain(text: &str) -> String {
    text.replace("\\-", "-")
        .replace("\\fB", "")
        .replace("\\fI", "")
        .replace("\\fR", "")
        .replace("\\fP", "")
}
