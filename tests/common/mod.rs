//! Shared test helpers: a real server on port 0 (or a Unix socket in a
//! fresh temp dir) and raw line connections to it.
#![allow(dead_code)]

pub mod rng;

use lockd::{Server, ServerConfig, ServerHandle, Shutdown};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A server for one test; stops (disconnecting everyone) on drop.
pub struct TestServer {
    pub handle: Option<ServerHandle>,
    pub addr: SocketAddr,
    pub dir: TempDir,
    pub unix_path: Option<PathBuf>,
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
    /// after 5 s. The polling connection itself counts in `connections`.
    pub fn wait_for_stat(&self, key: &str, value: u64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut conn = self.connect();
        loop {
            let got = conn.stat(key);
            if got == value {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{key} stayed {got}, expected {value}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
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
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Conn {
            reader: BufReader::new(RawStream::Tcp(stream)),
        }
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

    pub fn shutdown_write(&mut self) {
        self.reader.get_ref().shutdown(std::net::Shutdown::Write);
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
