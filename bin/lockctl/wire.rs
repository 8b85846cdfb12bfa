//! A raw protocol connection, for `lockctl shell` and for what
//! `lockd::Client` does not offer yet: read holds (`wr`/`rr`, PROTOCOL.md
//! Part 2) for `run -s` and `hold -s`, and the event stream of `watch`. It opens the stream the client would
//! (`lockd::client::open`: TCP, Unix or TLS, with the client's timeouts),
//! says `hello 2`, authenticates, then sends lines and reads replies.
//!
//! When the client library gains `Client::read` and `Client::watch`, the
//! read hold of `run` and `hold` becomes that one call (see `hold::take`).

use crate::connect::{client_config, read_secret, Global};
use lockd::transport::Stream;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::sync::Arc;
use std::time::Duration;

/// The longest `MS` sent with `wr`: about 3 million years, "forever".
pub const FOREVER_MS: u64 = 100_000_000_000_000_000;

/// Reads through a shared stream, so that a reader thread and a writer
/// can use one connection.
struct Shared(Arc<Stream>);

impl Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

/// One protocol connection.
pub struct Wire {
    stream: Arc<Stream>,
    reader: BufReader<Shared>,
    /// A line read only in part before a quiet period ended.
    partial: Vec<u8>,
    /// The server answered `hello 2`.
    pub v2: bool,
    /// What it answered (`2 lockd VERSION`), or empty for a classic server.
    pub version: String,
    timeout: Duration,
}

/// Why a [`Wire`] could not be set up: the message to print and whether
/// it is the user's mistake (exit 64) rather than the server's (exit 69).
pub struct WireError {
    /// The message, without the `lockctl: ` prefix.
    pub message: String,
    /// A bad `--auth-file`.
    pub usage: bool,
}

impl Wire {
    /// Connects as `global` says, says `hello 2` and authenticates.
    pub fn connect(global: &Global) -> Result<Wire, WireError> {
        let failed = |message: String| WireError {
            message,
            usage: false,
        };
        let secret = global
            .auth_file
            .as_deref()
            .map(read_secret)
            .transpose()
            .map_err(|message| WireError {
                message,
                usage: true,
            })?;
        let stream = lockd::client::open(&global.server, &client_config(global))
            .map(Arc::new)
            .map_err(|e| failed(crate::connect::explain(&global.server, &e)))?;
        let mut wire = Wire {
            reader: BufReader::new(Shared(Arc::clone(&stream))),
            partial: Vec::new(),
            stream,
            v2: false,
            version: String::new(),
            timeout: global.timeout,
        };
        let said = |e: io::Error| failed(crate::connect::explain_io(&global.server, &e));
        // `me` is answered by every server: if the first line back is not
        // the answer to `hello 2`, the server is classic.
        wire.send(b"hello 2").map_err(said)?;
        wire.send(b"me").map_err(said)?;
        let first = wire.line(Some(global.timeout)).map_err(said)?;
        if first.starts_with(b"2 ") {
            wire.v2 = true;
            wire.version = String::from_utf8_lossy(first.trim_ascii_end()).into_owned();
            wire.line(Some(global.timeout)).map_err(said)?;
        }
        if let Some(secret) = secret {
            if !wire.v2 {
                eprintln!("lockctl: warning: a classic server has no auth; --auth-file ignored");
                return Ok(wire);
            }
            let mut line = b"auth ".to_vec();
            line.extend_from_slice(&secret);
            wire.send(&line).map_err(said)?;
            let reply = wire.line(Some(global.timeout)).map_err(said)?;
            if reply.trim_ascii_end() != b"1 Auth Ok" {
                return Err(failed(
                    "the server refused the secret: check the file given to --auth-file".into(),
                ));
            }
        }
        Ok(wire)
    }

    /// The `--io-timeout` this connection was opened with.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one line (`\n` added).
    pub fn send(&self, line: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(line.len() + 1);
        out.extend_from_slice(line);
        out.push(b'\n');
        (&*self.stream).write_all(&out)
    }

    /// Reads one line, `\n` included, waiting at most `timeout` (`None`:
    /// forever). EOF and a quiet `timeout` are errors.
    pub fn line(&mut self, timeout: Option<Duration>) -> io::Result<Vec<u8>> {
        self.read_line(timeout)?
            .ok_or_else(|| io::Error::new(ErrorKind::TimedOut, "the server did not answer in time"))
    }

    /// One line, `\n` included, or `None` when `quiet` passes without one
    /// (a classic server's way of ending a reply of unknown length); a
    /// line begun is kept for the next read. EOF is an error.
    pub fn quiet_line(&mut self, quiet: Duration) -> io::Result<Option<Vec<u8>>> {
        self.read_line(Some(quiet))
    }

    fn read_line(&mut self, timeout: Option<Duration>) -> io::Result<Option<Vec<u8>>> {
        self.stream.set_read_timeout(timeout)?;
        let mut line = std::mem::take(&mut self.partial);
        match self.reader.read_until(b'\n', &mut line) {
            Ok(_) if line.last() == Some(&b'\n') => Ok(Some(line)),
            Ok(_) => Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                self.partial = line;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Sends `line` and reads the one-line reply, waiting at most
    /// `timeout` for it.
    pub fn call(&mut self, line: &[u8], timeout: Option<Duration>) -> io::Result<Vec<u8>> {
        self.send(line)?;
        self.line(timeout)
    }

    /// Splits the connection: a writer for later lines, and the reader
    /// for a thread that waits for the server's next line or its close.
    pub fn split(self) -> (Arc<Stream>, impl FnMut() -> io::Result<Vec<u8>>) {
        // The reader waits as long as the connection lasts.
        let _ = self.stream.set_read_timeout(None);
        let mut reader = self.reader;
        let read = move || {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(_) if line.last() == Some(&b'\n') => Ok(line),
                Ok(_) => Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                )),
                Err(e) => Err(e),
            }
        };
        (self.stream, read)
    }
}
