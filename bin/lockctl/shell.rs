//! `lockctl shell`: raw protocol lines in, the server's replies out, like
//! redis-cli. On a TTY it prompts `lockd> ` with line editing and a
//! history of the session (rustyline: maintained, pure Rust, and small
//! with its default features off; reedline would bring crossterm and a
//! larger tree for features a one-line prompt does not use); `help` lists
//! the verbs, `quit` leaves. On a pipe it reads commands for scripts. The connection says `hello 2`, so a multi-line reply ends
//! with an empty line and is known to be complete; a classic server stays
//! silent there, and then multi-line and unknown replies end when the
//! line has been quiet for [`CLASSIC_QUIET`].

use crate::connect::{exit, Global};
use crate::wire::Wire;
use lockd::protocol;
use std::io::{self, BufRead, IsTerminal, Write};
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

/// Runs the shell; returns lockctl's exit status.
pub fn shell(global: &Global) -> u8 {
    let mut wire = match Wire::connect(global) {
        Ok(wire) => wire,
        Err(e) => {
            eprintln!("lockctl: {}", e.message);
            return if e.usage {
                exit::USAGE
            } else {
                exit::UNAVAILABLE
            };
        }
    };
    match session(&mut wire, global) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("lockctl: {e}");
            exit::UNAVAILABLE
        }
    }
}

fn session(conn: &mut Wire, global: &Global) -> io::Result<()> {
    let v2 = conn.v2;
    let tty = io::stdin().is_terminal();
    let mut input = if tty {
        eprintln!(
            "connected to {} ({}); one command per line, help for the verbs, quit or Ctrl-D to leave",
            global.server,
            if v2 {
                conn.version.trim_start_matches("2 ")
            } else {
                "classic server"
            }
        );
        let editor = rustyline::DefaultEditor::new().map_err(io::Error::other)?;
        Input::Terminal(Box::new(editor))
    } else {
        Input::Pipe(io::stdin().lock())
    };
    let mut out = io::stdout();
    loop {
        let Some(line) = input.next()? else {
            return Ok(());
        };
        let command = protocol::trim(&line);
        if command.is_empty() {
            // The server would not answer an empty line.
            continue;
        }
        if command == b"quit" || command == b"exit" {
            return Ok(());
        }
        if command == b"help" {
            out.write_all(HELP.as_bytes())?;
            continue;
        }
        conn.send(command)?;
        let verb = command.split(|&b| b == b' ').next().unwrap_or_default();
        let mut reply = Vec::new();
        if v2 && verb == b"watch" {
            // The connection is now an event stream: print it as it comes,
            // until the server ends it or lockctl is interrupted.
            loop {
                let line = conn.line(None)?;
                out.write_all(&line)?;
                out.flush()?;
            }
        }
        if v2 && BLOCK_VERBS.contains(&verb) {
            loop {
                let line = conn.line(None)?;
                reply.extend_from_slice(&line);
                if line == b"\n" {
                    break;
                }
            }
        } else if v2 || CLASSIC_LINE_VERBS.contains(&verb) {
            reply = conn.line(None)?;
        } else {
            while let Some(line) = conn.quiet_line(CLASSIC_QUIET)? {
                reply.extend_from_slice(&line);
            }
        }
        out.write_all(&reply)?;
        out.flush()?;
    }
}

/// Where the shell's commands come from: a terminal, with line editing
/// and history (rustyline), or a pipe, line by line.
enum Input {
    Terminal(Box<rustyline::DefaultEditor>),
    Pipe(io::StdinLock<'static>),
}

impl Input {
    /// The next command line; `None` at the end of input.
    fn next(&mut self) -> io::Result<Option<Vec<u8>>> {
        match self {
            Input::Terminal(editor) => loop {
                match editor.readline("lockd> ") {
                    Ok(line) => {
                        if !line.trim().is_empty() {
                            let _ = editor.add_history_entry(line.as_str());
                        }
                        return Ok(Some(line.into_bytes()));
                    }
                    // Ctrl-C drops the line being typed, as in a shell.
                    Err(rustyline::error::ReadlineError::Interrupted) => continue,
                    Err(rustyline::error::ReadlineError::Eof) => return Ok(None),
                    Err(e) => return Err(io::Error::other(e)),
                }
            },
            Input::Pipe(stdin) => {
                let mut line = Vec::new();
                Ok((stdin.read_until(b'\n', &mut line)? > 0).then_some(line))
            }
        }
    }
}

/// What `help` prints: the shell's own words and the protocol's verbs.
const HELP: &str = "\
Type a protocol command; its reply is printed as the server sent it.
  quit, exit        leave (so does Ctrl-D); the connection's locks are released
  help              this list
Exclusive locks:    g NAME, r NAME, i NAME, t NAME (token), wg MS NAME (wait in line)
Read holds:         wr MS NAME, rr NAME (many readers or one writer of NAME)
Shared (counted):   sg NAME, sr NAME, si NAME, wsg MS LIMIT NAME (semaphore)
Inspect:            d, sd, dj (JSON), dump, who, q (counters)
This connection:    me, iam NAME, ra (release all), ttl SECONDS, ping, auth SECRET
Events:             watch PATTERN (the connection then only streams events)
See lockd-protocol(7).
";
