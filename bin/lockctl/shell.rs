//! `lockctl shell`: raw protocol lines in, the server's replies out, like
//! redis-cli. On a TTY it prompts `lockd> `; on a pipe it reads commands
//! for scripts. The connection says `hello 2`, so a multi-line reply ends
//! with an empty line and is known to be complete; a classic server stays
//! silent there, and then multi-line and unknown replies end when the
//! line has been quiet for [`CLASSIC_QUIET`].

use crate::cli::{client_config, exit, read_secret, Global};
use lockd::client::{connect_raw, RawStream};
use lockd::protocol;
use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::time::Duration;

/// On a classic server, a reply of unknown length is over after this
/// much silence.
pub const CLASSIC_QUIET: Duration = Duration::from_millis(200);

/// Verbs whose protocol-2 reply is a block ending in an empty line.
const BLOCK_VERBS: &[&[u8]] = &[b"d", b"sd", b"who", b"q"];
/// Verbs a classic server answers with exactly one line.
const CLASSIC_LINE_VERBS: &[&[u8]] = &[
    b"g", b"r", b"i", b"sg", b"sr", b"si", b"me", b"iam", b"dump",
];

struct Conn {
    reader: BufReader<RawStream>,
    /// A line read only in part before a quiet period ended.
    partial: Vec<u8>,
}

impl Conn {
    fn send(&mut self, line: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(line.len() + 1);
        out.extend_from_slice(line);
        out.push(b'\n');
        let stream = self.reader.get_mut();
        stream.write_all(&out)?;
        stream.flush()
    }

    /// One line, `\n` included; `None` when `quiet` passes with no line.
    /// EOF is an error.
    fn line(&mut self, quiet: Option<Duration>) -> io::Result<Option<Vec<u8>>> {
        self.reader.get_ref().set_read_timeout(quiet)?;
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

/// Runs the shell; returns lockctl's exit status.
pub fn shell(global: &Global) -> u8 {
    let secret = match global.auth_file.as_deref().map(read_secret).transpose() {
        Ok(secret) => secret,
        Err(e) => {
            eprintln!("lockctl: {e}");
            return exit::USAGE;
        }
    };
    let stream = match connect_raw(&global.server, &client_config(global)) {
        Ok(stream) => stream,
        Err(e) => {
            eprintln!("lockctl: {e}");
            return exit::UNAVAILABLE;
        }
    };
    let mut conn = Conn {
        reader: BufReader::new(stream),
        partial: Vec::new(),
    };
    match session(&mut conn, global, secret.as_deref()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("lockctl: {e}");
            exit::UNAVAILABLE
        }
    }
}

fn session(conn: &mut Conn, global: &Global, secret: Option<&[u8]>) -> io::Result<()> {
    // `me` is answered by every server: if the first line back is not the
    // answer to `hello 2`, the server is classic.
    conn.send(b"hello 2")?;
    conn.send(b"me")?;
    let timeout = Some(global.timeout);
    let first = conn.line(timeout)?.ok_or_else(no_answer)?;
    let v2 = first.starts_with(b"2 ");
    if v2 {
        conn.line(timeout)?.ok_or_else(no_answer)?;
    }
    if let Some(secret) = secret {
        if v2 {
            let mut line = b"auth ".to_vec();
            line.extend_from_slice(secret);
            conn.send(&line)?;
            let reply = conn.line(timeout)?.ok_or_else(no_answer)?;
            if reply.trim_ascii_end() != b"1 Auth Ok" {
                return Err(io::Error::other(
                    "the server refused the secret (check --auth-file)",
                ));
            }
        } else {
            eprintln!("lockctl: warning: a classic server has no auth; --auth-file ignored");
        }
    }
    // SAFETY: isatty only inspects the descriptor.
    let tty = unsafe { libc::isatty(0) } == 1;
    if tty {
        let version = String::from_utf8_lossy(first.trim_ascii_end()).into_owned();
        eprintln!(
            "connected to {} ({}); one command per line, Ctrl-D to quit",
            global.server,
            if v2 {
                version.trim_start_matches("2 ")
            } else {
                "classic server"
            }
        );
    }
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut out = io::stdout();
    loop {
        if tty {
            out.write_all(b"lockd> ")?;
            out.flush()?;
        }
        let mut line = Vec::new();
        if input.read_until(b'\n', &mut line)? == 0 {
            if tty {
                out.write_all(b"\n")?;
            }
            return Ok(());
        }
        let command = protocol::trim(&line);
        if command.is_empty() {
            // The server would not answer an empty line.
            continue;
        }
        conn.send(command)?;
        let verb = command.split(|&b| b == b' ').next().unwrap_or_default();
        let mut reply = Vec::new();
        if v2 && BLOCK_VERBS.contains(&verb) {
            loop {
                let line = conn.line(None)?.ok_or_else(no_answer)?;
                reply.extend_from_slice(&line);
                if line == b"\n" {
                    break;
                }
            }
        } else if v2 || CLASSIC_LINE_VERBS.contains(&verb) {
            reply = conn.line(None)?.ok_or_else(no_answer)?;
        } else {
            while let Some(line) = conn.line(Some(CLASSIC_QUIET))? {
                reply.extend_from_slice(&line);
            }
        }
        out.write_all(&reply)?;
        out.flush()?;
    }
}

fn no_answer() -> io::Error {
    io::Error::new(ErrorKind::TimedOut, "the server did not answer in time")
}
