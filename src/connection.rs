//! One connection's thread: reads lines, runs them through its
//! [`Session`], writes replies, and carries out waits in line.
//!
//! Replies are buffered and written when no complete line is left in the
//! input buffer, so a pipelined batch costs one write; no table lock is
//! ever held across socket I/O.

use crate::protocol::line::{Line, LineReader};
use crate::server::{LiveSet, State};
use crate::session::{Session, Step, Wait};
use crate::transport::Stream;
use crossbeam_channel::{bounded, select};
use std::io::{self, ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Replies are written early once this much is buffered.
const FLUSH_AT: usize = 64 * 1024;

/// Owns the thread's `Arc<State>` and, when the thread ends, drops it and
/// then removes the connection from the server's live set: a stopped
/// server's handle waits for that set to empty, and must find the state
/// (its listeners, the lock on its state directory) released by then.
struct Live {
    state: Option<Arc<State>>,
    set: Arc<LiveSet>,
    id: u64,
}

impl Live {
    fn state(&self) -> &Arc<State> {
        self.state.as_ref().expect("state is only taken in drop")
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            state.stats.connections.fetch_sub(1, Ordering::Relaxed);
        }
        self.set.forget(self.id);
    }
}

/// Serves one connection until it closes. Drop order matters and is the
/// reverse of declaration: the session first (its locks are released), then
/// the live entry, then the socket, so a client that sees our close can rely
/// on its locks being gone.
pub(crate) fn serve(state: Arc<State>, stream: Stream, id: u64, name: String) {
    let live = Live {
        set: Arc::clone(&state.live),
        state: Some(state),
        id,
    };
    let state = live.state();
    let mut session = Session::new(Arc::clone(state), id, name);
    let _ = stream.set_write_timeout(Some(state.config.write_timeout));
    if let Some(timeout) = state.config.idle_timeout {
        let _ = stream.set_read_timeout(Some(timeout));
    }
    if let Err(e) = run(state, &stream, &mut session) {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => session.lease_expired(),
            _ if state.config.verbose => eprintln!("lockd: {}: closed: {e}", session.name()),
            _ => {}
        }
    } else if state.config.verbose {
        eprintln!("lockd: {}: closed by peer", session.name());
    }
}

fn run(state: &State, stream: &Stream, session: &mut Session) -> io::Result<()> {
    let mut reader = LineReader::new(stream, state.config.max_line);
    let mut out = Vec::new();
    let flush = |out: &mut Vec<u8>| write_out(stream, out);
    loop {
        let step = match reader.next_line(|| flush(&mut out))? {
            Line::Complete(line) => session.execute(line, &mut out),
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
        recv(grants) -> grant => session.finish_wait(wait, grant.ok(), out),
        recv(closed_rx) -> _ => peer_alive = false,
        default(timeout) => session.finish_wait(wait, None, out),
    }
    if watched {
        state.watcher.unwatch(fd, session.id());
    }
    peer_alive
}
