//! WebSocket connections (`--ws`), as `PROTOCOL.md` has them: any URL path,
//! a handshake with or without `Origin`; each message, text or binary, is
//! one command (a trailing `\n` optional, a `\n` inside is whitespace); each
//! command gets exactly one message back holding the whole reply as TCP
//! would send it, and an empty one where TCP would send nothing.
//!
//! The reply is a text message, as glockd's clients expect. A reply that is
//! not UTF-8 (a lock name with such bytes, which only a binary message can
//! carry) goes back as a binary message instead, since a text message must
//! be UTF-8.
//!
//! tungstenite does the handshake, framing, ping/pong and close frames over
//! the blocking socket; the session logic is the same as on TCP.

use super::conn::{wait_in_line, HangUp, Live};
use crate::server::{Presence, State};
use crate::session::{Session, Step};
use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

/// How long a client has to complete the HTTP upgrade.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Frames and messages larger than this close the connection (the library
/// refuses them without buffering them whole); smaller ones over the line
/// limit are answered as an over-long line.
const MIN_MESSAGE_LIMIT: usize = 64 * 1024;

/// The TCP socket under the WebSocket, telling the reaper when the thread
/// blocks on it. tungstenite reads the socket only when it holds no whole
/// frame, so a blocked read means no command is held in this process (a
/// partial frame cannot become a command once the peer has hung up).
struct PresenceSocket<'a> {
    tcp: TcpStream,
    presence: &'a Presence,
    /// False during the handshake, when there is nothing to reap.
    serving: bool,
    /// Set when a read won input from a connection already reaped.
    rejoined: Cell<bool>,
}

impl Read for PresenceSocket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.serving {
            return self.tcp.read(buf);
        }
        self.presence.idle();
        let result = self.tcp.read(buf);
        if matches!(result, Ok(n) if n > 0) && !self.presence.busy() {
            // Another thread saw the hang-up and released our locks while
            // this read took the peer's last messages: serve them anyway.
            self.presence.rejoin();
            self.rejoined.set(true);
        }
        result
    }
}

impl Write for PresenceSocket<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

/// Serves one WebSocket connection until it closes; drop order as in
/// `connection::serve`.
pub(crate) fn serve(state: Arc<State>, tcp: TcpStream, id: u64, name: String, presence: &Presence) {
    // Declared first, so dropped last: the socket closes only after the
    // connection has left `live` (see `connection::serve`). tungstenite
    // gets a borrow, so not even a failed handshake closes it early.
    let mut socket = PresenceSocket {
        tcp,
        presence,
        serving: false,
        rejoined: Cell::new(false),
    };
    let live = Live::new(state, id);
    let Some(state) = live.state() else {
        return;
    };
    // The upgrade runs under its own deadline, so a silent client cannot
    // hold the thread.
    let _ = socket.tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    let _ = socket.tcp.set_write_timeout(Some(HANDSHAKE_TIMEOUT));
    let limit = state
        .config
        .max_line
        .saturating_add(1)
        .max(MIN_MESSAGE_LIMIT);
    let config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let mut ws = match tungstenite::accept_with_config(&mut socket, Some(config)) {
        Ok(ws) => ws,
        Err(e) => {
            if state.config.verbose {
                eprintln!("lockd: {name}: WebSocket handshake failed: {e}");
            }
            return;
        }
    };
    ws.get_mut().serving = true;
    let tcp = &ws.get_ref().tcp;
    let _ = tcp.set_write_timeout(Some(state.config.write_timeout));
    let _ = tcp.set_read_timeout(state.config.idle_timeout);
    let mut session = Session::new(Arc::clone(state), id, name);
    match run(state, &mut ws, &mut session) {
        Ok(()) => {
            if state.config.verbose {
                eprintln!("lockd: {}: closed by peer", session.name());
            }
        }
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            session.lease_expired();
        }
        Err(e) => {
            if state.config.verbose {
                eprintln!("lockd: {}: closed: {e}", session.name());
            }
        }
    }
}

fn run(
    state: &State,
    ws: &mut WebSocket<&mut PresenceSocket<'_>>,
    session: &mut Session,
) -> tungstenite::Result<()> {
    let max_line = state.config.max_line;
    let mut out = Vec::new();
    // Dropped as this returns, before `serve` closes the socket.
    let mut hang_up = HangUp::new(state, ws.get_ref().tcp.as_raw_fd(), session.id());
    loop {
        let message = match ws.read() {
            Ok(message) => message,
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        let command: &[u8] = match &message {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
            // Ping, pong and close are the library's business.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => continue,
        };
        let command = command.strip_suffix(b"\n").unwrap_or(command);
        if ws.get_ref().rejoined.take() {
            session.rejoin();
        }
        // Before serving, release the locks of peers that hung up but whose
        // threads have not run yet (as on TCP).
        state.reap_closed(session.id());
        let step = if command.len() > max_line {
            session.line_too_long(&mut out);
            Step::Done
        } else {
            session.execute(command, &mut out)
        };
        if let Step::Wait(wait) = step {
            if !wait_in_line(state, &mut hang_up, session, wait, &mut out) {
                return Ok(());
            }
        }
        if let Some(timeout) = session.take_read_timeout_change() {
            ws.get_ref().tcp.set_read_timeout(timeout)?;
        }
        // One message per command, empty when TCP would send nothing.
        // Checking UTF-8 only picks the message type; the bytes go as is.
        let reply = match String::from_utf8(std::mem::take(&mut out)) {
            Ok(text) => Message::text(text),
            Err(bytes) => Message::binary(bytes.into_bytes()),
        };
        ws.send(reply)?;
    }
}
