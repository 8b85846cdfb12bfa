//! One connection's thread: reads lines, runs them through its
//! [`Session`], writes replies, and carries out waits in line.
//!
//! Replies are buffered and written when no complete line is left in the
//! input buffer, so a pipelined batch costs one write; no table lock is
//! ever held across socket I/O.

use crate::protocol::line::{Line, LineReader};
use crate::server::{Presence, State};
use crate::session::{Session, Step, Wait};
use crate::transport::Stream;
use crossbeam_channel::{bounded, select};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Replies are written early once this much is buffered.
const FLUSH_AT: usize = 64 * 1024;

/// Removes the connection from the server's live set when the thread ends.
struct Live<'a> {
    state: &'a State,
    id: u64,
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.state.forget_connection(self.id);
    }
}

/// Serves one connection until it closes. Drop order matters and is the
/// reverse of declaration: the session first (its locks are released), then
/// the live entry, then the socket, so a client that sees our close can rely
/// on its locks being gone.
pub(crate) fn serve(state: Arc<State>, stream: Stream, id: u64, name: String, presence: &Presence) {
    let _live = Live { state: &state, id };
    let mut session = Session::new(Arc::clone(&state), id, name);
    let _ = stream.set_write_timeout(Some(state.config.write_timeout));
    if let Some(timeout) = state.config.idle_timeout {
        let _ = stream.set_read_timeout(Some(timeout));
    }
    if let Err(e) = run(&state, &stream, presence, &mut session) {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => session.lease_expired(),
            _ if state.config.verbose => eprintln!("lockd: {}: closed: {e}", session.name()),
            _ => {}
        }
    } else if state.config.verbose {
        eprintln!("lockd: {}: closed by peer", session.name());
    }
}

/// Reads the socket, telling the server's reaper when this thread blocks
/// with nothing half-read and when it wakes up.
struct PresenceReader<'a> {
    stream: &'a Stream,
    presence: &'a Presence,
}

impl Read for PresenceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = (&mut &*self.stream).read(buf);
        if !self.presence.busy() {
            // Reaped while idle: the peer hung up with nothing unread, and
            // another thread already released our locks. End here.
            return Ok(0);
        }
        result
    }
}

fn run(
    state: &State,
    stream: &Stream,
    presence: &Presence,
    session: &mut Session,
) -> io::Result<()> {
    let mut reader = LineReader::new(PresenceReader { stream, presence }, state.config.max_line);
    let mut out = Vec::new();
    let flush = |out: &mut Vec<u8>| write_out(stream, out);
    let mut fresh_input = false;
    loop {
        let line = reader.next_line(|partial| {
            flush(&mut out)?;
            if !partial {
                presence.idle();
            }
            fresh_input = true;
            Ok(())
        })?;
        let step = match line {
            Line::Complete(line) => {
                if std::mem::take(&mut fresh_input) {
                    // Before serving new input, release the locks of peers
                    // that hung up but whose threads have not run yet.
                    state.reap_closed();
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
            if !wait_in_line(state, stream, session, wait, &mut out) {
                return Ok(());
            }
        }
        if let Some(timeout) = session.take_read_timeout_change() {
            stream.set_read_timeout(timeout)?;
        }
        if out.len() >= FLUSH_AT {
            flush(&mut out)?;
        }
    }
    flush(&mut out)
}

/// Writes the buffered replies in one write and empties the buffer.
fn write_out(mut stream: &Stream, out: &mut Vec<u8>) -> io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let result = stream.write_all(out);
    out.clear();
    if out.capacity() > FLUSH_AT {
        out.shrink_to(1024);
    }
    result
}

/// Blocks until the grant, the deadline or the peer's hang-up. `false`
/// when the peer hung up (the connection must end, leaving the line).
fn wait_in_line(
    state: &State,
    stream: &Stream,
    session: &mut Session,
    wait: Wait,
    out: &mut Vec<u8>,
) -> bool {
    let fd = stream.as_raw_fd();
    let (closed_tx, closed_rx) = bounded(1);
    let watched = state.watcher.watch(fd, session.id(), closed_tx).is_ok();
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
        recv(closed_rx) -> _ => peer_alive = false,
        default(timeout) => session.finish_wait(wait, None, out),
    }
    if watched {
        state.watcher.unwatch(fd, session.id());
    }
    peer_alive
}
