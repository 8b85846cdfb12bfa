//! One connection's thread and the one connection loop: read a command,
//! run it through the [`Session`], send the reply, carry out waits in line.
//!
//! The loop is generic over [`Framing`]: lines on TCP, Unix and TLS
//! streams, messages on WebSocket. Line replies are buffered and written
//! when no complete line is left in the input buffer, so a pipelined batch
//! costs one write; a WebSocket reply is one message per command (a long
//! listing sent as fragments of one message). No store
//! lock is ever held across socket I/O.
//!
//! Output is bounded per connection: replies go out once 64 KiB (or
//! `--max-output`, if smaller) is buffered, and a listing is made and sent
//! a piece of `--max-output` at a time, so a peer that does not read stops
//! being read itself, holds at most that much here, and is dropped when a
//! block of output is not taken within `--write-timeout` in total.

use super::liveness::Presence;
use super::stream::{Shared, Socket, Stream};
use super::{websocket, State};
use crate::metrics::Transport;
use crate::protocol::line::{Line, LineReader};
use crate::protocol::reply;
use crate::session::{Session, Step, Wait};
use crossbeam_channel::select;
use std::cell::{Cell, RefCell};
use std::io::{self, ErrorKind, Read, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Line replies are written early once this much is buffered.
const FLUSH_AT: usize = 64 * 1024;

/// Longest a line may take to arrive once its first byte has: a client
/// that trickles a line (slowloris), or sends bytes that never make one (a
/// TLS ClientHello on a plain port), is closed after this. A connection
/// with nothing buffered may stay silent as long as its timeouts allow.
const LINE_DEADLINE: Duration = Duration::from_secs(10);

/// What a framing read from the peer.
pub(crate) enum Input<'a> {
    /// One command, and whether the framing read the socket for it (fresh
    /// input, which may follow another client's close).
    Command {
        /// The command's bytes, without framing.
        line: &'a [u8],
        /// Read from the socket just now.
        fresh: bool,
    },
    /// A command longer than the line limit, skipped.
    TooLong,
    /// The peer closed.
    End,
}

/// How commands and replies are cut on the wire.
pub(crate) trait Framing {
    /// The next command. `out` holds replies not sent yet, which go out
    /// before the framing blocks on the socket.
    fn next(&mut self, out: &mut Vec<u8>) -> io::Result<Input<'_>>;
    /// `out` holds the whole reply to one command.
    fn reply(&mut self, out: &mut Vec<u8>) -> io::Result<()>;
    /// Sends what `out` holds now (before a wait, or at the end).
    fn flush(&mut self, out: &mut Vec<u8>) -> io::Result<()>;
    /// `out` holds part of a long reply (a listing), more to come: send
    /// what the framing can before the rest is made.
    fn part(&mut self, out: &mut Vec<u8>) -> io::Result<()>;
    /// Whether a command may be read without waiting for the peer: one is
    /// buffered, or the socket holds unread bytes (a watcher polls this).
    fn has_input(&mut self) -> bool;
}

/// What a connection's framing and loop share: the server, the stream and
/// the connection's place in the liveness module.
pub(crate) struct Conn<'a> {
    pub(crate) state: &'a State,
    pub(crate) io: &'a RefCell<Stream>,
    pub(crate) presence: &'a Presence,
    /// Set when a read won input from a connection already orphaned.
    rejoined: Cell<bool>,
    /// The socket's read timeout outside a partial line: the idle
    /// timeout or the `ttl` lease.
    read_timeout: Cell<Option<Duration>>,
}

impl Conn<'_> {
    /// The socket under the stream.
    pub(crate) fn socket(&self) -> &Socket {
        self.presence.socket()
    }

    /// Sets the read timeout used outside a partial line.
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.read_timeout.set(timeout);
        self.socket().set_read_timeout(timeout)
    }

    /// Writes `out` as one block (one `write`, or one run of TLS records)
    /// and empties it, keeping its room (see [`Conn::shrink_out`]).
    pub(crate) fn write_out(&self, out: &mut Vec<u8>) -> io::Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        let result = self.drain(|| {
            let mut io = self.io.borrow_mut();
            io.write_all(out).and_then(|()| io.flush())
        });
        out.clear();
        result
    }

    /// Gives back the room a burst of output took, once the peer has sent
    /// nothing more: while it pipelines, the buffer keeps its size, where
    /// shrinking after each block cost a regrowth (copies, and page faults
    /// of a fresh mapping past 128 KiB) every 64 KiB of replies. One
    /// `FIONREAD`, only after output beyond [`FLUSH_AT`].
    fn shrink_out(&self, out: &mut Vec<u8>) {
        if out.capacity() > FLUSH_AT && self.socket().unread_bytes() == 0 {
            out.shrink_to(1024);
        }
    }

    /// Runs `send`, which writes one block of output (at most
    /// `--max-output` bytes, or one WebSocket frame), and fails it with
    /// `TimedOut` unless the peer took the whole block within
    /// `--write-timeout` in total: a peer that reads a byte now and then is
    /// closed as surely as one that never reads.
    pub(crate) fn drain<T>(&self, send: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        self.io
            .borrow_mut()
            .drain_within(self.state.config.write_timeout);
        let result = send();
        let restored = self.io.borrow_mut().drained();
        let value = result?;
        restored.map(|()| value)
    }

    /// A reader and writer over the stream, for a framing to own.
    /// `idle_on_read`: each read is a moment with no command held in this
    /// process (true for WebSocket, whose library reads the socket only
    /// when it holds no whole frame). `deadline`: reads past it fail with
    /// `TimedOut`, however the bytes trickle in (a handshake's total).
    pub(crate) fn io(&self, idle_on_read: bool, deadline: Option<Instant>) -> ConnIo<'_> {
        ConnIo {
            conn: self,
            idle_on_read,
            deadline,
        }
    }
}

/// Reads and writes a connection's stream, telling the liveness module
/// when a read wakes up.
pub(crate) struct ConnIo<'a> {
    conn: &'a Conn<'a>,
    idle_on_read: bool,
    deadline: Option<Instant>,
}

impl ConnIo<'_> {
    /// Bytes the peer sent that nobody has read yet.
    pub(crate) fn unread_bytes(&self) -> u64 {
        self.conn.socket().unread_bytes()
    }

    /// Reads from now on are bounded by the socket's own timeouts only.
    pub(crate) fn clear_deadline(&mut self) {
        self.deadline = None;
    }
}

impl Read for ConnIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let presence = self.conn.presence;
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    "the handshake took too long",
                ));
            }
            self.conn.socket().set_read_timeout(Some(left))?;
        }
        if self.idle_on_read {
            presence.idle();
        }
        let result = self.conn.io.borrow_mut().read(buf);
        if matches!(result, Ok(0)) {
            // The peer is done sending: what is left to serve are its last
            // commands, as after a hang-up the liveness module reported.
            presence.peer_closed();
        } else if matches!(&result, Err(e) if e.kind() != ErrorKind::Interrupted) {
            presence.ending();
        } else if result.is_ok() && !presence.busy() {
            // The liveness module saw the hang-up and released our locks
            // while this read took the peer's last commands: answer them
            // anyway, as a connection that joins the store again.
            presence.rejoin();
            self.conn.rejoined.set(true);
        }
        // On EOF or an error this thread only ends the connection, so it
        // stays reapable (orphaning is idempotent).
        result
    }
}

impl Write for ConnIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.conn.io.borrow_mut().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.conn.io.borrow_mut().flush()
    }
}

/// Lines: TCP, Unix and TLS streams.
struct Lines<'a> {
    reader: LineReader<ConnIo<'a>>,
    conn: &'a Conn<'a>,
    clock: LineClock,
}

/// The [`LINE_DEADLINE`] of the partial line now buffered.
#[derive(Default)]
struct LineClock {
    /// When the reader first blocked holding part of the current line.
    since: Option<Instant>,
    /// Whether the socket's read timeout is bounded by the deadline now.
    bounded: bool,
}

impl LineClock {
    /// Bounds the next read by what is left of the deadline while a
    /// partial line is buffered, and restores the usual timeout after.
    fn before_read(&mut self, conn: &Conn<'_>, partial: bool) -> io::Result<()> {
        if !partial {
            self.since = None;
            if std::mem::take(&mut self.bounded) {
                conn.socket().set_read_timeout(conn.read_timeout.get())?;
            }
            return Ok(());
        }
        let now = Instant::now();
        let left = (*self.since.get_or_insert(now) + LINE_DEADLINE).saturating_duration_since(now);
        if left.is_zero() {
            return Err(Self::expiry());
        }
        let bound = conn.read_timeout.get().map_or(left, |t| t.min(left));
        self.bounded = true;
        conn.socket().set_read_timeout(Some(bound))
    }

    /// Whether the deadline (rather than the idle timeout or the lease)
    /// is what ran out.
    fn expired(&self) -> bool {
        self.since.is_some_and(|t| t.elapsed() >= LINE_DEADLINE)
    }

    fn expiry() -> io::Error {
        io::Error::new(ErrorKind::TimedOut, "no complete line within 10 s")
    }
}

impl Framing for Lines<'_> {
    fn next(&mut self, out: &mut Vec<u8>) -> io::Result<Input<'_>> {
        let conn = self.conn;
        let mut fresh = false;
        let clock = &mut self.clock;
        let line = self.reader.next_line(|partial| {
            clock.before_read(conn, partial)?;
            // Idle means "nothing of a command is held in this process":
            // with TLS, rustls may hold decrypted bytes the reader has not
            // taken yet. Idle already while the replies go out, so a
            // hang-up is handled at once.
            if !partial && !conn.io.borrow_mut().has_pending_input() {
                conn.presence.idle();
            }
            fresh = true;
            conn.write_out(out)?;
            if !partial {
                conn.shrink_out(out);
            }
            Ok(())
        });
        let line = match line {
            Err(e) if e.kind() == ErrorKind::WouldBlock && self.clock.expired() => {
                return Err(LineClock::expiry())
            }
            line => line?,
        };
        // A line came out whole: whatever is buffered after it is the start
        // of the next one, with a deadline of its own.
        self.clock.since = None;
        Ok(match line {
            Line::Complete(line) => Input::Command { line, fresh },
            Line::TooLong => Input::TooLong,
            Line::Eof => Input::End,
        })
    }

    fn reply(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        if out.len() >= FLUSH_AT.min(self.conn.state.config.max_output) {
            self.conn.write_out(out)?;
        }
        Ok(())
    }

    fn flush(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        self.conn.write_out(out)
    }

    fn part(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        self.conn.write_out(out)
    }

    fn has_input(&mut self) -> bool {
        self.reader.has_line()
            || self.conn.socket().unread_bytes() > 0
            || self.conn.io.borrow_mut().has_pending_input()
    }
}

/// Owns the thread's `Arc<State>` and, when the thread ends, drops it and
/// then takes the connection out of the liveness module: a stopped
/// server's handle waits for that set to empty, and must find the state
/// (its listeners, the lock on its state directory) released by then.
struct Live {
    state: Option<Arc<State>>,
    presence: Arc<Presence>,
}

impl Drop for Live {
    fn drop(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        state.uncount(&self.presence);
        let liveness = Arc::clone(&state.liveness);
        drop(state);
        liveness.forget(self.presence.id());
    }
}

/// Serves one connection until it closes: the TLS or WebSocket handshake
/// (on this thread, under a total deadline), then the loop. The session
/// is dropped (its locks released) before the socket can close: the
/// liveness module holds the socket until the connection is forgotten.
pub(crate) fn serve(state: Arc<State>, presence: Arc<Presence>, websocket: bool, name: String) {
    let live = Live {
        state: Some(state),
        presence,
    };
    let (Some(state), presence) = (live.state.as_ref(), &*live.presence) else {
        return;
    };
    let socket = Arc::clone(presence.socket());
    let tls = match (&state.config.tls, &*socket) {
        (Some(tls), Socket::Tcp(_)) if !websocket => Some(tls),
        _ => None,
    };
    let transport = match (&*socket, tls) {
        (Socket::Unix(_), _) => Transport::Unix,
        (Socket::Tcp(_), _) if websocket => Transport::WebSocket,
        (Socket::Tcp(_), Some(_)) => Transport::Tls,
        (Socket::Tcp(_), None) => Transport::Tcp,
    };
    let _counted = state.host.metrics.connection(transport);
    let stream = match tls {
        None => Stream::Plain(Shared::new(socket)),
        Some(tls) => {
            let accepted = tls
                .connection()
                .and_then(|conn| Stream::accept_tls(socket, conn));
            match accepted {
                Ok(stream) => stream,
                Err(e) => {
                    if state.config.verbose {
                        ::log::info!("{name}: TLS handshake failed: {e}");
                    }
                    return;
                }
            }
        }
    };
    let io = RefCell::new(stream);
    let conn = Conn {
        state,
        io: &io,
        presence,
        rejoined: Cell::new(false),
        read_timeout: Cell::new(None),
    };
    let (result, session) = if websocket {
        let Some(mut messages) = websocket::accept(&conn, &name) else {
            return;
        };
        let mut session = start_session(&conn, name, true);
        (run(&conn, &mut messages, &mut session), session)
    } else {
        let mut session = start_session(&conn, name, tls.is_some());
        let mut lines = Lines {
            reader: LineReader::new(conn.io(false, None), state.config.max_line),
            conn: &conn,
            clock: LineClock::default(),
        };
        (run(&conn, &mut lines, &mut session), session)
    };
    match result {
        // The socket's read timeout ran out (EAGAIN). A keepalive failure is
        // ETIMEDOUT (`TimedOut`): no lease expiry, whatever the lease.
        Err(e) if e.kind() == ErrorKind::WouldBlock => {
            session.lease_expired();
        }
        Err(e) if state.config.verbose => ::log::info!("{}: closed: {e}", session.name()),
        Ok(()) if state.config.verbose => ::log::info!("{}: closed by peer", session.name()),
        _ => {}
    }
    // A sweep that orphaned this connection releases and counts its
    // locks; the session's own release (its drop, next) must not take
    // them first, or a settle could return before they are counted.
    if presence.reaped() {
        state.liveness.wait_for_sweep();
    }
}

/// Starts the session once the handshake (if any) is over, with the
/// server's timeouts on the socket. A TCP socket has its write timeout
/// from its listener, and no read timeout unless a handshake set one.
fn start_session(conn: &Conn<'_>, name: String, handshake: bool) -> Session {
    let config = &conn.state.config;
    if let Socket::Unix(unix) = conn.socket() {
        let _ = unix.set_write_timeout(Some(config.write_timeout));
    }
    if handshake || config.idle_timeout.is_some() {
        let _ = conn.set_read_timeout(config.idle_timeout);
    }
    conn.presence.serving();
    let host = Arc::clone(&conn.state.host);
    Session::new(host, conn.presence.id(), name)
}

/// The one connection loop.
pub(crate) fn run(
    conn: &Conn<'_>,
    framing: &mut impl Framing,
    session: &mut Session,
) -> io::Result<()> {
    let mut out = Vec::new();
    loop {
        let input = framing.next(&mut out)?;
        if conn.rejoined.take() {
            session.rejoin();
        }
        let step = match input {
            Input::Command { line, fresh } => {
                if fresh {
                    session.fresh_input();
                }
                // Before serving new input, release the locks of peers
                // that hung up but whose threads have not run yet: the
                // session settles before a command that can show them (not
                // `r` of a `g`/`r` loop, nor a `g` granted at once:
                // settling costs a system call). A connection whose own
                // peer has left serves only that peer's last commands,
                // whose replies nobody reads: it skips the settling (in a
                // mass close, thousands of them).
                let state = conn.state;
                let mut settle = || {
                    if fresh && !conn.presence.hung_up() {
                        state.liveness.settle(conn.presence, &|p| state.reap(p));
                    }
                };
                session.execute(line, &mut out, &mut settle)
            }
            Input::TooLong => {
                session.line_too_long(&mut out);
                Step::Done
            }
            Input::End => break,
        };
        match step {
            Step::Done => {}
            Step::Wait(wait) => {
                framing.flush(&mut out)?;
                if !wait_in_line(conn, session, wait, &mut out) {
                    return Ok(());
                }
            }
            Step::Pause(pause) => std::thread::sleep(pause),
            // A listing goes out a piece of at most --max-output at a
            // time: the next piece is made only once the socket took the
            // last (each write bounded by --write-timeout), and nothing
            // more is read from the peer meanwhile. Each piece is made
            // under one of the server's few listing permits.
            Step::List(mut listing) => {
                let state = conn.state;
                let bound = state.config.max_output;
                while state
                    .listings
                    .with(|| session.list(&mut listing, &mut out, bound))?
                {
                    framing.part(&mut out)?;
                }
            }
            Step::Close(why) => {
                framing.reply(&mut out)?;
                framing.flush(&mut out)?;
                return Err(io::Error::other(why));
            }
        }
        if let Some(timeout) = session.take_read_timeout_change() {
            conn.set_read_timeout(timeout)?;
        }
        framing.reply(&mut out)?;
        if session.watcher().is_some() {
            return watch(conn, framing, session, &mut out);
        }
    }
    framing.flush(&mut out)
}

/// How often a watcher looks for a command from its peer between events.
const WATCH_TICK: Duration = Duration::from_millis(50);

/// At most this many queued events go out in one write.
const WATCH_BATCH: usize = 256;

/// Streams a watcher's events as they come, serving any further commands
/// its peer sends (another `watch` adds a pattern), until the peer leaves
/// or falls so far behind that the store cut it off. The connection waits
/// as a waiter does, so the liveness module orphans it on a hang-up.
fn watch(
    conn: &Conn<'_>,
    framing: &mut impl Framing,
    session: &mut Session,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    loop {
        framing.flush(out)?;
        let Some(watcher) = session.watcher() else {
            return Ok(());
        };
        if watcher.overflowed() {
            out.extend_from_slice(reply::WATCHER_TOO_SLOW);
            framing.reply(out)?;
            return framing.flush(out);
        }
        if framing.has_input() {
            match framing.next(out)? {
                Input::Command { line, fresh } => {
                    if fresh {
                        session.fresh_input();
                        // As in the main loop: peers that hung up lose
                        // their locks before a snapshot can show them.
                        let state = conn.state;
                        state.liveness.settle(conn.presence, &|p| state.reap(p));
                    }
                    // A watching session never waits in line, and has
                    // settled already.
                    let _ = session.execute(line, out, &mut || {});
                }
                Input::TooLong => session.line_too_long(out),
                Input::End => return Ok(()),
            }
            if conn.rejoined.take() {
                session.rejoin();
            }
            framing.reply(out)?;
            continue;
        }
        let events = watcher.events.clone();
        if !conn.presence.wait_starts() {
            return Ok(());
        }
        select! {
            recv(events) -> event => match event {
                Ok(event) => {
                    session.write_event(&event, out);
                    for event in events.try_iter().take(WATCH_BATCH) {
                        session.write_event(&event, out);
                    }
                }
                // The store let go of the queue: it cut the watcher off
                // (said above, next time round) or forgot the connection
                // (orphaned: its peer is gone).
                Err(_) if watcher.overflowed() => {}
                Err(_) => return Ok(()),
            },
            recv(conn.presence.woken()) -> _ => return Ok(()),
            default(WATCH_TICK) => {}
        }
        if !conn.presence.wait_ends() {
            return Ok(());
        }
        framing.reply(out)?;
    }
}

/// Blocks until the grant, the deadline or the peer's hang-up. `false`
/// when the peer hung up (the connection must end, leaving the line).
fn wait_in_line(conn: &Conn<'_>, session: &mut Session, wait: Wait, out: &mut Vec<u8>) -> bool {
    if !conn.presence.wait_starts() {
        return false;
    }
    let grants = session.grants().clone();
    let timeout = wait.deadline.saturating_duration_since(Instant::now());
    let mut peer_alive = true;
    select! {
        recv(grants) -> grant => match grant {
            // During an immediate shutdown the grant is a lock orphaned by
            // the teardown; this connection is being closed too, so it must
            // not be told it got it (its session's drop releases it).
            Ok(grant) if !conn.state.closing_all.load(Ordering::SeqCst) => {
                session.finish_wait(wait, Some(grant), out);
            }
            // Or the store let go of the channel: the liveness module
            // orphaned the connection, its peer gone.
            _ => peer_alive = false,
        },
        recv(conn.presence.woken()) -> _ => peer_alive = false,
        default(timeout) => session.finish_wait(wait, None, out),
    }
    peer_alive && conn.presence.wait_ends()
}
