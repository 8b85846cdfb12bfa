//! One connection's thread: reads lines, runs them through its
//! [`Session`], writes replies, and carries out waits in line.
//!
//! Replies are buffered and written when no complete line is left in the
//! input buffer, so a pipelined batch costs one write; no table lock is
//! ever held across socket I/O.

use crate::protocol::line::{Line, LineReader};
use crate::server::{LiveSet, Presence, State};
use crate::session::{Session, Step, Wait};
use crate::transport::tls::{self, TlsServerStream};
use crate::transport::Stream;
use super::watch::Watch;
use crossbeam_channel::{never, select, Receiver};
use std::cell::{Cell, RefCell};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Replies are written early once this much is buffered.
const FLUSH_AT: usize = 64 * 1024;

/// Owns the thread's `Arc<State>` and, when the thread ends, drops it and
/// then removes the connection from the server's live set: a stopped
/// server's handle waits for that set to empty, and must find the state
/// (its listeners, the lock on its state directory) released by then.
pub(crate) struct Live {
    state: Option<Arc<State>>,
    set: Arc<LiveSet>,
    id: u64,
}

impl Live {
    /// Takes over the thread's `Arc<State>` for connection `id`.
    pub(crate) fn new(state: Arc<State>, id: u64) -> Live {
        Live {
            set: Arc::clone(&state.live),
            state: Some(state),
            id,
        }
    }

    /// The server state, until the thread ends.
    pub(crate) fn state(&self) -> Option<&Arc<State>> {
        self.state.as_ref()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            state.uncount_connection(self.id);
        }
        self.set.forget(self.id);
    }
}

/// Serves one connection until it closes. Drop order matters and is the
/// reverse of declaration: the session first (its locks are released), then
/// the live entry, then the socket, so a client that sees our close can rely
/// on its locks being gone.
pub(crate) fn serve(state: Arc<State>, stream: Stream, id: u64, name: String, presence: &Presence) {
    // Declared first, so dropped last: the socket closes only after the
    // connection has left `live` (an immediate shutdown calls shutdown(2)
    // on the fds there, which must not have been reused).
    let io: RefCell<Io>;
    let live = Live::new(state, id);
    let Some(state) = live.state() else {
        return;
    };
    let tls = match (&state.config.tls, &stream) {
        (Some(tls), Stream::Tcp(_)) => match tls.connection() {
            Ok(conn) => Some(conn),
            Err(e) => {
                eprintln!("lockd: {name}: cannot start TLS: {e}");
                return;
            }
        },
        _ => None,
    };
    io = RefCell::new(match (tls, stream) {
        (Some(conn), Stream::Tcp(tcp)) => Io::Tls(Box::new(TlsServerStream::new(conn, tcp))),
        (_, stream) => Io::Plain(stream),
    });
    if let Io::Tls(stream) = &mut *io.borrow_mut() {
        // The handshake runs here, on the connection's thread, under its
        // own deadline: a slow or silent client holds only this thread.
        if let Err(e) = tls::accept(stream) {
            if state.config.verbose {
                eprintln!("lockd: {name}: TLS handshake failed: {e}");
            }
            return;
        }
    }
    let mut session = Session::new(Arc::clone(state), id, name);
    {
        let io = io.borrow();
        let _ = io.set_write_timeout(Some(state.config.write_timeout));
        let _ = io.set_read_timeout(state.config.idle_timeout);
    }
    if let Err(e) = run(state, &io, presence, &mut session) {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => session.lease_expired(),
            _ if state.config.verbose => eprintln!("lockd: {}: closed: {e}", session.name()),
            _ => {}
        }
    } else if state.config.verbose {
        eprintln!("lockd: {}: closed by peer", session.name());
    }
}

/// A connection's byte stream: plain TCP or Unix, or TLS over TCP.
enum Io {
    Plain(Stream),
    Tls(Box<TlsServerStream>),
}

impl Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.read(buf),
            Io::Tls(s) => tls::read_plain_eof(s, buf),
        }
    }

    /// Writes all of `buf` as one block (one `write`, or one run of TLS
    /// records).
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Io::Plain(s) => s.write_all(buf),
            Io::Tls(s) => tls::write_flush(s, buf),
        }
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Io::Plain(s) => s.set_read_timeout(timeout),
            Io::Tls(s) => s.sock.set_read_timeout(timeout),
        }
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Io::Plain(s) => s.set_write_timeout(timeout),
            Io::Tls(s) => s.sock.set_write_timeout(timeout),
        }
    }

    fn fd(&self) -> RawFd {
        match self {
            Io::Plain(s) => s.as_raw_fd(),
            Io::Tls(s) => s.sock.as_raw_fd(),
        }
    }

    /// Input read from the socket that the line reader has not had yet.
    /// Plain streams have none (the kernel holds it, and the reaper asks the
    /// kernel); rustls may hold decrypted records.
    fn has_pending_input(&mut self) -> bool {
        match self {
            Io::Plain(_) => false,
            Io::Tls(s) => tls::has_plaintext(s),
        }
    }
}

/// Reads the socket, telling the server's reaper when this thread blocks
/// with nothing half-read and when it wakes up.
///
/// The stream sits in a `RefCell` because the line reader reads it while
/// the reply flush (called from inside the reader, before it blocks) writes
/// it; the two never overlap.
struct PresenceReader<'a> {
    io: &'a RefCell<Io>,
    presence: &'a Presence,
    /// Set when a read won input from a connection already reaped.
    rejoined: &'a Cell<bool>,
}

impl Read for PresenceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = self.io.borrow_mut().read(buf);
        if matches!(result, Ok(n) if n > 0) && !self.presence.busy() {
            // Another thread saw the hang-up and released our locks while
            // this read took the peer's last commands: answer them anyway,
            // as a connection that joins the table again.
            self.presence.rejoin();
            self.rejoined.set(true);
        }
        // On EOF or an error this thread will only end the connection, so
        // it stays reapable: another thread may orphan it first (orphaning
        // is idempotent).
        result
    }
}

fn run(
    state: &State,
    io: &RefCell<Io>,
    presence: &Presence,
    session: &mut Session,
) -> io::Result<()> {
    let rejoined = Cell::new(false);
    let reader = PresenceReader {
        io,
        presence,
        rejoined: &rejoined,
    };
    let mut reader = LineReader::new(reader, state.config.max_line);
    let mut out = Vec::new();
    let flush = |out: &mut Vec<u8>| write_out(&mut io.borrow_mut(), out);
    let mut fresh_input = false;
    // Dropped as this returns, before `serve` closes the socket.
    let mut hang_up = HangUp::new(state, io.borrow().fd(), session.id());
    loop {
        let line = reader.next_line(|partial| {
            // Idle means "nothing of a command is held in this process":
            // with TLS, rustls may hold decrypted bytes the reader has not
            // taken yet, and the reaper (which asks only the kernel) must
            // not take such a connection for an idle one. Idle already
            // while the replies go out, so a hang-up is reaped at once.
            if !partial && !io.borrow_mut().has_pending_input() {
                presence.idle();
            }
            flush(&mut out)?;
            fresh_input = true;
            Ok(())
        })?;
        if rejoined.take() {
            session.rejoin();
        }
        let step = match line {
            Line::Complete(line) => {
                if std::mem::take(&mut fresh_input) {
                    // Before serving new input, release the locks of peers
                    // that hung up but whose threads have not run yet.
                    state.reap_closed(session.id());
                }
                session.execute(line, &mut out)
            }
            Line::TooLong => {
                session.line_too_long(&mut out);
                Step::Done
            }
            Line::Eof => break,
        };
        if let Step::Wait(wait) = step {
            flush(&mut out)?;
            if !wait_in_line(state, &mut hang_up, session, wait, &mut out) {
                return Ok(());
            }
        }
        if let Some(timeout) = session.take_read_timeout_change() {
            io.borrow().set_read_timeout(timeout)?;
        }
        if out.len() >= FLUSH_AT {
            flush(&mut out)?;
        }
    }
    flush(&mut out)
}

/// Writes the buffered replies in one write and empties the buffer.
fn write_out(io: &mut Io, out: &mut Vec<u8>) -> io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let result = io.write_all(out);
    out.clear();
    if out.capacity() > FLUSH_AT {
        out.shrink_to(1024);
    }
    result
}

/// A connection's registration with the server's close watcher: made at
/// its first wait and kept until the connection ends, so that waiting
/// costs no `epoll_ctl` (see `transport::watch`). Must be dropped before
/// the socket closes.
pub(crate) struct HangUp<'a> {
    state: &'a State,
    fd: RawFd,
    id: u64,
    watch: Option<Watch<'a>>,
}

impl<'a> HangUp<'a> {
    /// Nothing watched yet; `fd` is the connection's socket.
    pub(crate) fn new(state: &'a State, fd: RawFd, id: u64) -> HangUp<'a> {
        HangUp {
            state,
            fd,
            id,
            watch: None,
        }
    }

    /// Where the peer's hang-up is reported; `None` if the socket cannot
    /// be watched (out of memory: the next wait tries again).
    fn closed(&mut self) -> Option<&Receiver<()>> {
        if self.watch.is_none() {
            self.watch = self.state.watcher.watch(self.fd, self.id).ok();
        }
        self.watch.as_ref().map(Watch::closed)
    }
}

/// Blocks until the grant, the deadline or the peer's hang-up. `false`
/// when the peer hung up (the connection must end, leaving the line).
pub(crate) fn wait_in_line(
    state: &State,
    hang_up: &mut HangUp<'_>,
    session: &mut Session,
    wait: Wait,
    out: &mut Vec<u8>,
) -> bool {
    let unwatched = never();
    let closed = hang_up.closed().unwrap_or(&unwatched);
    let grants = session.grants().clone();
    let timeout = wait.deadline.saturating_duration_since(Instant::now());
    let mut peer_alive = true;
    select! {
        recv(grants) -> grant => {
            // During an immediate shutdown the grant is a lock orphaned by
            // the teardown; this connection is being closed too, so it must
            // not be told it got it (its session's drop releases it).
            if state.closing_all.load(Ordering::SeqCst) {
                peer_alive = false;
            } else {
                session.finish_wait(wait, grant.ok(), out);
            }
        }
        recv(closed) -> _ => peer_alive = false,
        default(timeout) => session.finish_wait(wait, None, out),
    }
    peer_alive
}
