//! A raw protocol connection for `lockctl shell`, which passes lines
//! through: it opens the stream a client would
//! (`lockd::client::connect_raw`: TCP, Unix or TLS, with the client's
//! timeouts), says `hello 2`, authenticates, then sends lines and reads
//! replies.

use crate::connect::{client_config, read_secret, Global};
use lockd::client::RawStream;
use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::time::Duration;

/// One protocol connection.
pub struct Wire {
    reader: BufReader<RawStream>,
    /// A line read only in part before a quiet period ended.
    partial: Vec<u8>,
    /// The server answered `hello 2`.
    pub v2: bool,
    /// What it answered (`2 lockd VERSION`), or empty for a classic server.
    pub version: String,
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
        // Local mode: the path must be served, and pass the ownership
        // checks, before we speak to it; this client keeps the helper up
        // until our own connection does.
        let _served = match &global.local {
            Some(path) => Some(
                crate::connect::connect_local(global, path, client_config(global))
                    .map_err(failed)?,
            ),
            None => None,
        };
        let stream = lockd::client::connect_raw(&global.server, &client_config(global))
            .map_err(|e| failed(crate::connect::explain(&global.server, &e)))?;
        let mut wire = Wire {
            reader: BufReader::new(stream),
            partial: Vec::new(),
            v2: false,
            version: String::new(),
        };
        let said = |e: io::Error| {
            failed(if crate::connect::speaks_tls(global) {
                crate::connect::use_tls(&global.server)
            } else {
                crate::connect::explain_io(&global.server, &e)
            })
        };
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

    /// Sends one line (`\n` added).
    pub fn send(&mut self, line: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(line.len() + 1);
        out.extend_from_slice(line);
        out.push(b'\n');
        let stream = self.reader.get_mut();
        stream.write_all(&out)?;
        stream.flush()
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
        self.reader.get_ref().set_read_timeout(timeout)?;
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
}
