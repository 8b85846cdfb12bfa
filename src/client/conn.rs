//! The machinery behind a [`Client`](super::Client): one thread owns the
//! conversation (it writes each call and reads its reply before taking the
//! next, so replies cannot cross), and a reader thread turns the socket into
//! lines, so that a server close is seen at once even while no call is in
//! flight.
//!
//! Callers queue [`Msg`]s FIFO on an unbounded channel and wait for their
//! reply on a `bounded(1)` channel of their own. When the connection ends,
//! for any reason, the owner thread stops, the queue's receiver is dropped,
//! and every waiting caller sees its reply channel close: `Disconnected`.

use crate::error::{Error, Phase};
use crate::protocol::reply::{self, parse_status};
use crate::transport::Stream;
use crossbeam_channel::{bounded, select, Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A reply line longer than this is treated as a broken server.
const MAX_REPLY_LINE: u64 = 1 << 20;

/// What the reader thread hands over: a line without its `\n` (and
/// without a `\r` before it), or the error that ended reading.
type LineResult = io::Result<Vec<u8>>;

/// How a reply ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expect {
    /// One line.
    Line,
    /// A block (`d`, `sd`, `who`, `q`): up to the empty line on protocol 2;
    /// on a classic server, until the line goes quiet (or, for `q`, up to
    /// its last key, `shared_orphans`).
    Block {
        /// The block is a `q` reply.
        stats: bool,
    },
}

/// A reply, as lines without their `\n`.
#[derive(Debug)]
pub(crate) enum Reply {
    Line(Vec<u8>),
    Block(Vec<Vec<u8>>),
}

/// One command for the owner thread.
pub(crate) struct Call {
    /// The command line, without its `\n`.
    pub line: Vec<u8>,
    /// How its reply ends.
    pub expect: Expect,
    /// Added to the read timeout: how long the server may wait in line
    /// before answering (`wg`, `wsg`).
    pub extra: Duration,
    /// Where the reply goes; `None` discards it (a guard's drop).
    pub reply: Option<Sender<Result<Reply, Error>>>,
}

impl Call {
    /// The command as shown in errors; never an `auth` secret.
    fn shown(&self) -> String {
        show_command(&self.line)
    }
}

/// The command as shown in errors; never an `auth` secret.
pub(crate) fn show_command(line: &[u8]) -> String {
    if line.starts_with(b"auth ") {
        "auth <secret>".to_string()
    } else {
        line.escape_ascii().to_string()
    }
}

/// What callers send to the owner thread.
pub(crate) enum Msg {
    /// A command.
    Call(Call),
    /// Close the connection; answer once the server has closed its side.
    Close(Sender<()>),
}

/// State shared by the client handles and both threads.
pub(crate) struct Shared {
    closed: AtomicBool,
    reason: Mutex<Option<String>>,
    watchers: Mutex<Watchers>,
    /// A handle on the socket that only ever shuts it down.
    stream: Stream,
}

#[derive(Default)]
struct Watchers {
    fired: bool,
    senders: Vec<Sender<()>>,
}

impl Shared {
    pub(crate) fn new(stream: Stream) -> Shared {
        Shared {
            closed: AtomicBool::new(false),
            reason: Mutex::new(None),
            watchers: Mutex::new(Watchers::default()),
            stream,
        }
    }

    /// True once the connection is closed or closing.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Closes the connection (both threads notice and stop). The first
    /// reason given is the one later errors report.
    pub(crate) fn close(&self, reason: &str) {
        self.note(reason);
        self.stream.shutdown();
    }

    fn note(&self, reason: &str) {
        self.closed.store(true, Ordering::SeqCst);
        let mut slot = self.reason.lock();
        if slot.is_none() {
            *slot = Some(reason.to_string());
        }
    }

    /// The error for a call on a closed connection.
    pub(crate) fn disconnected(&self) -> Error {
        let reason = self.reason.lock().clone();
        Error::Disconnected {
            reason: reason.unwrap_or_else(|| "the connection is closed".to_string()),
        }
    }

    /// A receiver that gets `()` once the connection has ended (at once if
    /// it already has).
    pub(crate) fn subscribe(&self) -> Receiver<()> {
        let (tx, rx) = bounded(1);
        let mut watchers = self.watchers.lock();
        if watchers.fired {
            let _ = tx.try_send(());
        } else {
            watchers.senders.push(tx);
        }
        rx
    }

    /// Tells every watcher, once.
    fn fire(&self) {
        let mut watchers = self.watchers.lock();
        watchers.fired = true;
        for tx in watchers.senders.drain(..) {
            let _ = tx.try_send(());
        }
    }
}

/// The reader thread: lines from the socket until EOF or an error, then
/// the disconnect signal.
pub(crate) fn read_lines(stream: Stream, lines: Sender<LineResult>, shared: Arc<Shared>) {
    let mut reader = BufReader::new(stream);
    let reason = loop {
        let mut line = Vec::new();
        match (&mut reader)
            .take(MAX_REPLY_LINE)
            .read_until(b'\n', &mut line)
        {
            Ok(0) => break "the server closed the connection".to_string(),
            Ok(_) if line.last() != Some(&b'\n') => {
                if line.len() as u64 >= MAX_REPLY_LINE {
                    let e = io::Error::new(ErrorKind::InvalidData, "reply line over 1 MiB");
                    let _ = lines.send(Err(e));
                    break "the server sent a reply line over 1 MiB".to_string();
                }
                break "the server closed the connection in the middle of a line".to_string();
            }
            Ok(_) => {
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if lines.send(Ok(line)).is_err() {
                    break "the connection is closed".to_string();
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                let reason = format!("reading from the server failed: {e}");
                let _ = lines.send(Err(e));
                break reason;
            }
        }
    };
    shared.note(&reason);
    drop(lines);
    shared.stream.shutdown();
    shared.fire();
}

/// The owner of the conversation.
pub(crate) struct Owner {
    pub stream: Stream,
    pub lines: Receiver<LineResult>,
    pub shared: Arc<Shared>,
    pub read_timeout: Option<Duration>,
    pub quiet: Duration,
    pub version: u32,
}

impl Owner {
    /// Serves calls until the connection ends or every client is dropped.
    pub(crate) fn run(mut self, calls: Receiver<Msg>) {
        loop {
            select! {
                recv(calls) -> msg => match msg {
                    Ok(Msg::Call(call)) => {
                        let result = self.exchange(&call);
                        let failed = result.is_err();
                        if let Some(reply) = &call.reply {
                            let _ = reply.send(result);
                        }
                        if failed {
                            break;
                        }
                    }
                    Ok(Msg::Close(done)) => {
                        self.close_gracefully();
                        let _ = done.send(());
                        break;
                    }
                    Err(_) => {
                        self.shared.close("the client was dropped");
                        break;
                    }
                },
                recv(self.lines) -> line => {
                    match line {
                        Ok(Ok(line)) => self.shared.close(&format!(
                            "the server sent a line nobody asked for: \"{}\"",
                            line.escape_ascii()
                        )),
                        // The reader has recorded why.
                        Ok(Err(_)) | Err(_) => self.shared.close("the connection is closed"),
                    }
                    break;
                }
            }
        }
        // Waiting callers learn of the close when their reply channels
        // drop along with the queue.
    }

    /// Half-closes, then waits (up to the read timeout) for the server to
    /// close its side: by then it has released this connection's locks.
    fn close_gracefully(&mut self) {
        self.shared.note("the client disconnected");
        let _ = match &self.stream {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        };
        let deadline = self.read_timeout.map(|t| Instant::now() + t);
        loop {
            let next = match deadline {
                Some(d) => self.lines.recv_deadline(d).map_err(|_| ()),
                None => self.lines.recv().map_err(|_| ()),
            };
            if matches!(next, Err(()) | Ok(Err(_))) {
                break;
            }
        }
        self.shared.close("the client disconnected");
    }

    /// Writes one call and reads its reply. Any error is fatal: the
    /// connection is closed before this returns.
    pub(crate) fn exchange(&mut self, call: &Call) -> Result<Reply, Error> {
        let result = self.try_exchange(call);
        if let Err(e) = &result {
            self.shared.close(&close_reason(e));
        }
        result
    }

    fn try_exchange(&mut self, call: &Call) -> Result<Reply, Error> {
        let mut bytes = Vec::with_capacity(call.line.len() + 1);
        bytes.extend_from_slice(&call.line);
        bytes.push(b'\n');
        self.send(&bytes, || call.shown())?;
        let deadline = self.read_timeout.map(|t| Instant::now() + t + call.extra);
        match call.expect {
            Expect::Line => self.next_line(deadline, &call.shown()).map(Reply::Line),
            Expect::Block { stats } => self.block(deadline, stats, &call.shown()),
        }
    }

    /// Writes bytes; `what` names the command for errors.
    pub(crate) fn send(&mut self, bytes: &[u8], what: impl Fn() -> String) -> Result<(), Error> {
        (&self.stream).write_all(bytes).map_err(|e| {
            if is_timeout(&e) {
                Error::Timeout {
                    phase: Phase::Write,
                    context: format!("sending `{}`", what()),
                }
            } else if self.shared.is_closed() {
                self.shared.disconnected()
            } else {
                Error::io(format!("cannot send `{}` to the server", what()), e)
            }
        })
    }

    /// The next reply line, by the deadline.
    pub(crate) fn next_line(
        &self,
        deadline: Option<Instant>,
        what: &str,
    ) -> Result<Vec<u8>, Error> {
        let next = match deadline {
            Some(d) => self.lines.recv_deadline(d),
            None => self
                .lines
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
        };
        match next {
            Ok(Ok(line)) => Ok(line),
            Ok(Err(e)) => Err(Error::io(
                format!("lost the connection while reading the reply to `{what}`"),
                e,
            )),
            Err(RecvTimeoutError::Timeout) => Err(Error::Timeout {
                phase: Phase::Read,
                context: format!("reading the reply to `{what}`"),
            }),
            Err(RecvTimeoutError::Disconnected) => Err(self.shared.disconnected()),
        }
    }

    fn block(&self, deadline: Option<Instant>, stats: bool, what: &str) -> Result<Reply, Error> {
        let mut lines = Vec::new();
        if self.version >= 2 {
            loop {
                let line = self.next_line(deadline, what)?;
                if line.is_empty() {
                    return Ok(Reply::Block(lines));
                }
                lines.push(line);
            }
        }
        // A classic server marks no end: the block is over when the line
        // goes quiet. `q` always ends with `shared_orphans`, and
        // `0 disabled` is the whole reply, so those need no wait.
        loop {
            let quiet_until = Instant::now() + self.quiet;
            let until = match deadline {
                Some(d) if d < quiet_until => d,
                _ => quiet_until,
            };
            match self.lines.recv_deadline(until) {
                Ok(Ok(line)) => {
                    let last = (stats && line.starts_with(b"shared_orphans: "))
                        || (lines.is_empty() && line == reply::DISABLED.trim_ascii_end());
                    lines.push(line);
                    if last {
                        return Ok(Reply::Block(lines));
                    }
                }
                Ok(Err(e)) => {
                    return Err(Error::io(
                        format!("lost the connection while reading the reply to `{what}`"),
                        e,
                    ))
                }
                Err(RecvTimeoutError::Timeout) if until == quiet_until => {
                    return Ok(Reply::Block(lines))
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(Error::Timeout {
                        phase: Phase::Read,
                        context: format!("reading the reply to `{what}`"),
                    })
                }
                Err(RecvTimeoutError::Disconnected) => return Err(self.shared.disconnected()),
            }
        }
    }

    /// Sends `hello 2` (and `auth`), then `me`, and learns the protocol
    /// from which reply comes first: a lockd server answers `hello 2` with
    /// `2 lockd VERSION`; a classic server ignores it, and the first line
    /// is the answer to `me`, which every server gives. No timeout decides
    /// anything.
    pub(crate) fn handshake(&mut self, secret: Option<&[u8]>) -> Result<(), Error> {
        let mut bytes = b"hello 2\n".to_vec();
        if let Some(secret) = secret {
            bytes.extend_from_slice(b"auth ");
            bytes.extend_from_slice(secret);
            bytes.push(b'\n');
        }
        bytes.extend_from_slice(b"me\n");
        self.send(&bytes, || "hello 2".to_string())?;
        let deadline = self.read_timeout.map(|t| Instant::now() + t);
        let unexpected = |what: &str, line: &[u8]| Error::Protocol {
            command: what.to_string(),
            reply: line.escape_ascii().to_string(),
        };
        let first = self.next_line(deadline, "hello 2")?;
        if first == reply::TOO_MANY_CONNECTIONS.trim_ascii_end() {
            return Err(Error::Disconnected {
                reason: "the server has too many connections (try later, or raise its --max-connections)".into(),
            });
        }
        let status = parse_status(&first).ok_or_else(|| unexpected("hello 2", &first))?;
        if status.number == 2 && status.text.starts_with(b"lockd") {
            self.version = 2;
            if secret.is_some() {
                let line = self.next_line(deadline, "auth <secret>")?;
                if line == reply::AUTH_FAILURE.trim_ascii_end() {
                    return Err(Error::Auth(crate::error::AuthError::Failure));
                }
                if line != reply::AUTH_OK.trim_ascii_end() {
                    return Err(unexpected("auth <secret>", &line));
                }
            }
            // `1 DEFAULT NAME`, or `0 Auth Required` when the server wants
            // a secret we did not give: calls will say so.
            let me = self.next_line(deadline, "me")?;
            if parse_status(&me).is_none() {
                return Err(unexpected("me", &me));
            }
        } else if status.number == 1 {
            self.version = 1;
        } else {
            return Err(unexpected("hello 2", &first));
        }
        Ok(())
    }
}

/// Why the connection closed, for later calls' `Disconnected`.
pub(crate) fn close_reason(e: &Error) -> String {
    match e {
        Error::Disconnected { reason } => reason.clone(),
        Error::Timeout { context, .. } => format!("timed out {context}"),
        Error::Io { context, source } => format!("{context}: {source}"),
        Error::Protocol { command, reply } => {
            format!("unexpected reply to `{command}`: \"{reply}\"")
        }
        other => other.to_string(),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}
