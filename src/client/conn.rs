//! One connection, driven on its callers' threads: a call takes the
//! connection (callers queue first come, first served), writes its command,
//! reads its reply and gives the connection back. There is no owner thread.
//!
//! A guard dropped while another caller has the connection does not wait
//! for it: its release line goes into [`Pending`], and whoever has or next
//! takes the connection sends it first. Every call sends the pending lines
//! ahead of its own command, so a release always reaches the server before
//! any later command of the same client.
//!
//! Any failure mid-call (timeout, I/O error, a reply that makes no sense)
//! shuts the socket: a late reply could no longer be matched to its call.
//! The connection is never used again; later calls get
//! [`Error::Disconnected`].

use super::stream::RawStream;
use crate::error::{AuthError, Error, Phase};
use crate::protocol::reply::{self, parse_status};
use parking_lot::{Mutex, MutexGuard};
use rustix::event::{PollFd, PollFlags};
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A reply line longer than this is treated as a broken server.
const MAX_REPLY_LINE: usize = 1 << 20;

/// The socket's read timeout is left alone when it would wake us at most
/// this much after the deadline, to save a system call per call.
const TIMEOUT_SLACK: Duration = Duration::from_millis(10);

/// The deadline `timeout` from now; `None` (no deadline) for no timeout
/// or one too long to represent.
pub(crate) fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// The settings a connection runs with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    /// How long the server may take to answer (on top of a wait in line).
    pub read: Option<Duration>,
    /// How long sending may block.
    pub write: Option<Duration>,
    /// On a classic server, the quiet that ends a multi-line reply.
    pub quiet: Duration,
}

/// The health of a connection, shared with the watcher thread.
pub(crate) struct Health {
    closed: AtomicBool,
    state: Mutex<HealthState>,
}

type Callback = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct HealthState {
    reason: Option<String>,
    callbacks: Vec<Callback>,
    watching: bool,
}

impl Health {
    fn new() -> Health {
        Health {
            closed: AtomicBool::new(false),
            state: Mutex::new(HealthState::default()),
        }
    }

    /// True once the connection has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Records the end (the first reason sticks) and runs every callback.
    fn end(&self, reason: &str) {
        let callbacks = {
            let mut state = self.state.lock();
            if state.reason.is_none() {
                state.reason = Some(reason.to_string());
            }
            self.closed.store(true, Ordering::Release);
            std::mem::take(&mut state.callbacks)
        };
        for callback in callbacks {
            callback();
        }
    }

    /// The error for a call on a closed connection.
    pub(crate) fn disconnected(&self) -> Error {
        let reason = self.state.lock().reason.clone();
        Error::Disconnected {
            reason: reason.unwrap_or_else(|| "the connection is closed".to_string()),
        }
    }
}

/// Release lines queued by guards dropped while the connection was busy.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    lines: usize,
}

/// The socket and its buffers; only the caller holding the connection
/// touches it.
struct Io {
    /// Kept (and so its descriptor) until the connection is dropped, even
    /// once shut: the watcher may still be copying the descriptor.
    stream: RawStream,
    /// False once the socket is shut: never used again.
    open: bool,
    /// Read buffer: `buf[start..end]` is received and not yet consumed.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The socket's read timeout as last set (`None`: none, or to be set
    /// again before the next read with a deadline).
    socket_timeout: Option<Duration>,
    /// The bytes of the call being sent (pending lines, then the command).
    out: Vec<u8>,
    /// Where the command starts in `out`, for error messages.
    command_at: usize,
    timeouts: Timeouts,
}

/// A connection shared by every clone of a client.
pub(crate) struct Conn {
    io: Mutex<Io>,
    pending: Mutex<Pending>,
    pub(crate) health: Arc<Health>,
    /// Protocol 2 (`hello 2` answered) or 1.
    pub(crate) version: u32,
    /// A copy of the socket's descriptor, for the watcher to poll while a
    /// caller holds the stream (the socket stays open while either lives;
    /// `Io::shut` shuts it down for both).
    fd: OwnedFd,
}

/// The connection, taken by one caller; given back, fairly, on drop.
struct Taken<'a> {
    conn: &'a Conn,
    io: Option<MutexGuard<'a, Io>>,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if let Some(io) = self.io.take() {
            // Hand over to the longest waiter: callers are served in the
            // order they arrived.
            MutexGuard::unlock_fair(io);
        }
        self.conn.flush_pending();
    }
}

impl Conn {
    /// Opens the conversation: `hello 2` (and `auth`), then `me`, and
    /// learns the protocol from which reply comes first: a lockd server
    /// answers `hello 2` with `2 lockd VERSION`; a classic server ignores
    /// it, and the first line is the answer to `me`, which every server
    /// gives. No timeout decides anything.
    pub(crate) fn handshake(
        stream: RawStream,
        timeouts: Timeouts,
        secret: Option<&[u8]>,
    ) -> Result<Conn, Error> {
        let fd = stream
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::io("cannot copy the connection's descriptor", e))?;
        let mut io = Io {
            stream,
            open: true,
            buf: vec![0; 4096],
            start: 0,
            end: 0,
            socket_timeout: None,
            out: Vec::with_capacity(256),
            command_at: 0,
            timeouts,
        };
        let version = match io.hello(secret) {
            Ok(version) => version,
            Err(e) => {
                io.shut();
                return Err(e);
            }
        };
        Ok(Conn {
            io: Mutex::new(io),
            pending: Mutex::new(Pending::default()),
            health: Arc::new(Health::new()),
            version,
            fd,
        })
    }

    fn take(&self) -> Result<Taken<'_>, Error> {
        if self.health.is_closed() {
            return Err(self.health.disconnected());
        }
        let io = self.io.lock();
        if !io.open {
            drop(io);
            return Err(self.health.disconnected());
        }
        Ok(Taken {
            conn: self,
            io: Some(io),
        })
    }

    /// Sends `command` (built by `build` into the buffer) and reads a
    /// one-line reply, which `parse` turns into a value; `None` from
    /// `parse` means the reply makes no sense, and closes the connection.
    /// `wait` is how long the server may keep the reply back on purpose
    /// (a wait in line), on top of the read timeout; `None` is forever.
    pub(crate) fn call<T>(
        &self,
        build: impl FnOnce(&mut Vec<u8>),
        wait: Option<Duration>,
        parse: impl FnOnce(&[u8]) -> Option<T>,
    ) -> Result<T, Error> {
        let mut taken = self.take()?;
        let io = taken.io.as_mut().expect("taken holds the connection");
        let range = match io.call(self, build, wait) {
            Ok(range) => range,
            Err(e) => return Err(self.fail(io, e)),
        };
        let line = &io.buf[range];
        // Refused for want of a secret: the connection is fine.
        if line == reply::AUTH_REQUIRED.trim_ascii_end() {
            return Err(Error::Auth(AuthError::Required));
        }
        match parse(line) {
            Some(value) => Ok(value),
            None => {
                let e = io.unexpected(line);
                Err(self.fail(io, e))
            }
        }
    }

    /// Sends a command whose reply is a block of lines.
    pub(crate) fn block(&self, command: &[u8], stats: bool) -> Result<Vec<Vec<u8>>, Error> {
        let mut taken = self.take()?;
        let io = taken.io.as_mut().expect("taken holds the connection");
        let result = io.block_call(self, command, stats, self.version);
        result.map_err(|e| self.fail(io, e))
    }

    /// Writes `bytes` and reads nothing: for `watch`, whose replies are an
    /// endless stream read by [`Conn::next_line`].
    pub(crate) fn send_only(&self, bytes: &[u8]) -> Result<(), Error> {
        let mut taken = self.take()?;
        let io = taken.io.as_mut().expect("taken holds the connection");
        io.out.clear();
        io.out.extend_from_slice(bytes);
        io.command_at = 0;
        let result = io.send();
        result.map_err(|e| self.fail(io, e))
    }

    /// The next line the server sends, waiting as long as it takes (for a
    /// watch stream). `Ok(None)` at a clean end of the stream.
    pub(crate) fn next_line(&self) -> Result<Option<Vec<u8>>, Error> {
        let mut taken = self.take()?;
        let io = taken.io.as_mut().expect("taken holds the connection");
        match io.read_line(None) {
            Ok(range) => Ok(Some(io.buf[range].to_vec())),
            Err(Error::Disconnected { .. }) => {
                self.end(io, "the server closed the connection");
                Ok(None)
            }
            Err(e) => Err(self.fail(io, e)),
        }
    }

    /// Records the failure, shuts the socket, and returns the error.
    fn fail(&self, io: &mut Io, error: Error) -> Error {
        let reason = close_reason(&error);
        self.end(io, &reason);
        error
    }

    /// The reason is recorded before the socket is shut, so the watcher,
    /// woken by the shutdown, cannot record its own first.
    fn end(&self, io: &mut Io, reason: &str) {
        self.health.end(reason);
        io.shut();
    }

    /// Queues a release line (a guard's drop) and sends it now if the
    /// connection is free; otherwise whoever has it sends it next.
    pub(crate) fn release_later(&self, verb: &[u8], name: &[u8]) {
        if self.health.is_closed() {
            return;
        }
        {
            let mut pending = self.pending.lock();
            pending.bytes.extend_from_slice(verb);
            pending.bytes.push(b' ');
            pending.bytes.extend_from_slice(name);
            pending.bytes.push(b'\n');
            pending.lines += 1;
        }
        self.flush_pending();
    }

    /// Sends the queued release lines if the connection is free. Called
    /// after each queueing and each time a caller gives the connection
    /// back, so a queued line is never left behind: whoever held the
    /// connection when it was queued looks again after letting go.
    fn flush_pending(&self) {
        loop {
            if self.pending.lock().lines == 0 {
                return;
            }
            let Some(mut io) = self.io.try_lock() else {
                return;
            };
            if !io.open {
                return;
            }
            let result = io.call(self, |_| {}, Some(Duration::ZERO));
            if let Err(e) = result {
                self.fail(&mut io, e);
                return;
            }
            MutexGuard::unlock_fair(io);
        }
    }

    /// Half-closes, then waits (up to the read timeout) for the server to
    /// close its side: by then it has released this connection's locks.
    pub(crate) fn disconnect(&self) {
        let Ok(mut taken) = self.take() else {
            return;
        };
        let io = taken.io.as_mut().expect("taken holds the connection");
        let pending = std::mem::take(&mut *self.pending.lock());
        io.out.clear();
        io.out.extend_from_slice(&pending.bytes);
        if !io.out.is_empty() {
            let _ = io.send();
        }
        self.health.end("the client disconnected");
        io.stream.close_write();
        let deadline = deadline_after(io.timeouts.read);
        while io.read_line(deadline).is_ok() {}
        self.end(io, "the client disconnected");
    }

    /// Starts the thread that watches for the server's close while no call
    /// is in flight, once, and registers `callback` for the end.
    pub(crate) fn on_end(&self, callback: Callback) {
        let start_watcher = {
            let mut state = self.health.state.lock();
            if self.health.is_closed() {
                drop(state);
                callback();
                return;
            }
            state.callbacks.push(callback);
            !std::mem::replace(&mut state.watching, true)
        };
        if start_watcher {
            // Not through `io`: a caller may hold it for a long wait.
            let health = Arc::clone(&self.health);
            let started = self.fd.try_clone().and_then(|fd| {
                std::thread::Builder::new()
                    .name("lockd-client-watch".into())
                    .spawn(move || watch(&fd, &health))
                    .map(drop)
            });
            if let Err(e) = started {
                // Without a watcher an idle close would go unnoticed.
                self.health
                    .end(&format!("cannot watch the connection: {e}"));
                if let Some(mut io) = self.io.try_lock() {
                    io.shut();
                }
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The last handle is gone: closing wakes the watcher, and the
        // server releases every lock.
        self.health.end("the client was dropped");
        self.io.get_mut().shut();
    }
}

/// The watcher: waits for the peer's close (or our own shutdown) without
/// reading, so it never takes a reply from a caller.
fn watch(fd: &OwnedFd, health: &Health) {
    loop {
        let mut poll = [PollFd::new(fd, PollFlags::RDHUP)];
        match rustix::event::poll(&mut poll, None) {
            Ok(n) if n > 0 => break,
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => break,
        }
    }
    health.end("the server closed the connection");
}

impl Io {
    fn shut(&mut self) {
        if std::mem::replace(&mut self.open, false) {
            self.stream.shutdown(Shutdown::Both);
        }
    }

    /// The command being sent, as shown in errors (never an `auth` secret).
    fn shown(&self) -> String {
        let command = &self.out[self.command_at.min(self.out.len())..];
        show_command(command.strip_suffix(b"\n").unwrap_or(command))
    }

    fn unexpected(&self, line: &[u8]) -> Error {
        Error::Protocol {
            command: self.shown(),
            reply: line.escape_ascii().to_string(),
        }
    }

    /// Pending lines, then the command; reads the pending replies and
    /// returns where the command's own reply line is in the buffer.
    /// `wait`: how long the server may hold the reply back on purpose, on
    /// top of the read timeout; `None` is forever.
    fn call(
        &mut self,
        conn: &Conn,
        build: impl FnOnce(&mut Vec<u8>),
        wait: Option<Duration>,
    ) -> Result<std::ops::Range<usize>, Error> {
        if !self.start_call(conn, build)? {
            return Ok(0..0);
        }
        let deadline = match wait {
            Some(wait) => deadline_after(self.timeouts.read.and_then(|r| r.checked_add(wait))),
            None => None,
        };
        self.read_line(deadline)
    }

    /// Sends the pending lines and the command `build` writes (if any),
    /// and reads the pending lines' replies. True when there was a
    /// command.
    fn start_call(&mut self, conn: &Conn, build: impl FnOnce(&mut Vec<u8>)) -> Result<bool, Error> {
        self.out.clear();
        let pending = {
            let mut pending = conn.pending.lock();
            self.out.extend_from_slice(&pending.bytes);
            pending.bytes.clear();
            std::mem::take(&mut pending.lines)
        };
        self.command_at = self.out.len();
        build(&mut self.out);
        let has_command = self.out.len() > self.command_at;
        if has_command {
            self.out.push(b'\n');
        }
        self.send()?;
        // The pending releases' answers matter to nobody.
        let deadline = deadline_after(self.timeouts.read);
        for _ in 0..pending {
            self.read_line(deadline)?;
        }
        Ok(has_command)
    }

    fn send(&mut self) -> Result<(), Error> {
        if self.timeouts.write == Some(Duration::ZERO) {
            return Err(Error::Timeout {
                phase: Phase::Write,
                context: format!("sending `{}` (the write timeout is zero)", self.shown()),
            });
        }
        if !self.open {
            return Err(Error::Disconnected {
                reason: "the connection is closed".into(),
            });
        }
        let stream = &mut self.stream;
        let sent = stream.write_all(&self.out).and_then(|()| stream.flush());
        sent.map_err(|e| {
            if is_timeout(&e) {
                Error::Timeout {
                    phase: Phase::Write,
                    context: format!("sending `{}`", self.shown()),
                }
            } else {
                Error::io(format!("cannot send `{}` to the server", self.shown()), e)
            }
        })
    }

    /// The next line (without `\n` or a `\r` before it), by the deadline.
    fn read_line(&mut self, deadline: Option<Instant>) -> Result<std::ops::Range<usize>, Error> {
        // Bytes after `start` already searched (`fill` may move `start`).
        let mut searched = 0;
        loop {
            let from = self.start + searched;
            if let Some(i) = self.buf[from..self.end].iter().position(|&b| b == b'\n') {
                let newline = from + i;
                let mut line_end = newline;
                if line_end > self.start && self.buf[line_end - 1] == b'\r' {
                    line_end -= 1;
                }
                let range = self.start..line_end;
                self.start = newline + 1;
                return Ok(range);
            }
            searched = self.end - self.start;
            self.fill(deadline)?;
        }
    }

    /// Reads more bytes into the buffer, by the deadline.
    fn fill(&mut self, deadline: Option<Instant>) -> Result<(), Error> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() >= MAX_REPLY_LINE {
                return Err(Error::io(
                    format!("reading the reply to `{}`", self.shown()),
                    io::Error::new(ErrorKind::InvalidData, "a reply line over 1 MiB"),
                ));
            } else {
                let len = self.buf.len() * 2;
                self.buf.resize(len, 0);
            }
        }
        loop {
            let wanted = match deadline {
                None => None,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::Timeout {
                            phase: Phase::Read,
                            context: format!("reading the reply to `{}`", self.shown()),
                        });
                    }
                    Some(left)
                }
            };
            if !self.open {
                return Err(Error::Disconnected {
                    reason: "the connection is closed".into(),
                });
            }
            let stream = &mut self.stream;
            // With no deadline, a timer already set only wakes us to read
            // again; changing it would cost two system calls per wait.
            let reset = match (self.socket_timeout, wanted) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(set), Some(left)) => set > left.saturating_add(TIMEOUT_SLACK),
            };
            if reset {
                stream
                    .set_read_timeout(wanted)
                    .map_err(|e| Error::io("cannot set the connection's read timeout", e))?;
                self.socket_timeout = wanted;
            }
            match stream.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    return Err(Error::Disconnected {
                        reason: format!(
                            "the server closed the connection while `{}` waited for its reply",
                            self.shown()
                        ),
                    })
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // The socket's timer ran out; the deadline decides (and
                // the timer is set again to what is left).
                Err(e) if is_timeout(&e) => {
                    if deadline.is_some() {
                        // Unknown from here: set it again.
                        self.socket_timeout = None;
                    }
                }
                Err(e) => {
                    return Err(Error::io(
                        format!(
                            "lost the connection while reading the reply to `{}`",
                            self.shown()
                        ),
                        e,
                    ))
                }
            }
        }
    }

    fn block_call(
        &mut self,
        conn: &Conn,
        command: &[u8],
        stats: bool,
        version: u32,
    ) -> Result<Vec<Vec<u8>>, Error> {
        self.start_call(conn, |out| out.extend_from_slice(command))?;
        let mut lines = Vec::new();
        let deadline = deadline_after(self.timeouts.read);
        if version >= 2 {
            loop {
                let range = self.read_line(deadline)?;
                if range.is_empty() {
                    return Ok(lines);
                }
                lines.push(self.buf[range].to_vec());
            }
        }
        // A classic server marks no end: the block is over when the line
        // goes quiet. `q` always ends with `shared_orphans`, and
        // `0 disabled` is the whole reply, so those need no wait.
        loop {
            let quiet = deadline_after(Some(self.timeouts.quiet));
            let by_quiet = match (quiet, deadline) {
                (Some(q), Some(d)) => q < d,
                (Some(_), None) => true,
                (None, _) => false,
            };
            let range = match self.read_line(if by_quiet { quiet } else { deadline }) {
                Ok(range) => range,
                Err(Error::Timeout { .. }) if by_quiet => return Ok(lines),
                Err(e) => return Err(e),
            };
            let line = &self.buf[range];
            let last = (stats && line.starts_with(b"shared_orphans: "))
                || (lines.is_empty() && line == reply::DISABLED.trim_ascii_end());
            lines.push(line.to_vec());
            if last {
                return Ok(lines);
            }
        }
    }

    /// `hello 2`, `auth`, `me`; returns the protocol version.
    fn hello(&mut self, secret: Option<&[u8]>) -> Result<u32, Error> {
        self.out.clear();
        self.out.extend_from_slice(b"hello 2\n");
        if let Some(secret) = secret {
            self.out.extend_from_slice(b"auth ");
            self.out.extend_from_slice(secret);
            self.out.push(b'\n');
        }
        self.out.extend_from_slice(b"me\n");
        self.command_at = 0;
        self.send()?;
        let deadline = deadline_after(self.timeouts.read);
        let unexpected = |what: &str, line: &[u8]| Error::Protocol {
            command: what.to_string(),
            reply: line.escape_ascii().to_string(),
        };
        let first = self.read_line(deadline)?;
        let first = &self.buf[first];
        if first == reply::TOO_MANY_CONNECTIONS.trim_ascii_end() {
            return Err(Error::Disconnected {
                reason: "the server has too many connections (try later, or raise its --max-connections)".into(),
            });
        }
        let status = parse_status(first).ok_or_else(|| unexpected("hello 2", first))?;
        if status.number == 2 && status.text.starts_with(b"lockd") {
            if secret.is_some() {
                let line = self.read_line(deadline)?;
                let line = &self.buf[line];
                if line == reply::AUTH_FAILURE.trim_ascii_end() {
                    return Err(Error::Auth(AuthError::Failure));
                }
                if line != reply::AUTH_OK.trim_ascii_end() {
                    return Err(unexpected("auth <secret>", line));
                }
            }
            // `1 DEFAULT NAME`, or `0 Auth Required` when the server wants
            // a secret we did not give: calls will say so.
            let me = self.read_line(deadline)?;
            let me = &self.buf[me];
            if parse_status(me).is_none() {
                return Err(unexpected("me", me));
            }
            Ok(2)
        } else if status.number == 1 {
            Ok(1)
        } else {
            Err(unexpected("hello 2", first))
        }
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

/// Why the connection closed, for later calls' `Disconnected`.
fn close_reason(e: &Error) -> String {
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
