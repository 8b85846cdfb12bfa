//! WebSocket framing (`--ws`), as `PROTOCOL.md` has it: any URL path, a
//! handshake with or without `Origin`; each message, text or binary, is
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
//! the connection's stream; the loop is the one of every connection.

use super::conn::{Conn, ConnIo, Framing, Input};
use super::stream::HANDSHAKE_TIMEOUT;
use std::io;
use std::time::Instant;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

/// Frames and messages larger than this close the connection (the library
/// refuses them without buffering them whole); smaller ones over the line
/// limit are answered as an over-long line.
const MIN_MESSAGE_LIMIT: usize = 64 * 1024;

/// Messages: one command in, one reply out.
pub(crate) struct Messages<'a> {
    ws: WebSocket<ConnIo<'a>>,
    max_line: usize,
    /// The message whose command [`Framing::next`] handed out.
    current: Message,
}

/// Runs the HTTP upgrade, bounded by [`HANDSHAKE_TIMEOUT`] in total. `None`
/// (logged with `--verbose`) when it fails.
pub(crate) fn accept<'a>(conn: &'a Conn<'a>, name: &str) -> Option<Messages<'a>> {
    let state = conn.state;
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let _ = conn.socket().set_write_timeout(Some(HANDSHAKE_TIMEOUT));
    let limit = state
        .config
        .max_line
        .saturating_add(1)
        .max(MIN_MESSAGE_LIMIT);
    let config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    match tungstenite::accept_with_config(conn.io(true, Some(deadline)), Some(config)) {
        Ok(mut ws) => {
            ws.get_mut().clear_deadline();
            Some(Messages {
                ws,
                max_line: state.config.max_line,
                current: Message::Binary(Default::default()),
            })
        }
        Err(e) => {
            if state.config.verbose {
                ::log::info!("{name}: WebSocket handshake failed: {e}");
            }
            None
        }
    }
}

fn io_error(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        e => io::Error::other(e),
    }
}

impl Framing for Messages<'_> {
    fn next(&mut self, _out: &mut Vec<u8>) -> io::Result<Input<'_>> {
        self.current = loop {
            match self.ws.read() {
                Ok(message @ (Message::Text(_) | Message::Binary(_))) => break message,
                // Ping, pong and close are the library's business.
                Ok(_) => continue,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Ok(Input::End)
                }
                Err(e) => return Err(io_error(e)),
            }
        };
        let command: &[u8] = match &self.current {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
            _ => &[],
        };
        let command = command.strip_suffix(b"\n").unwrap_or(command);
        Ok(if command.len() > self.max_line {
            Input::TooLong
        } else {
            Input::Command {
                line: command,
                fresh: true,
            }
        })
    }

    /// One message per command, empty when TCP would send nothing.
    /// Checking UTF-8 only picks the message type; the bytes go as is.
    fn reply(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        let reply = match String::from_utf8(std::mem::take(out)) {
            Ok(text) => Message::text(text),
            Err(bytes) => Message::binary(bytes.into_bytes()),
        };
        self.ws.send(reply).map_err(io_error)
    }

    /// A reply is one message, so a listing is gathered whole (still
    /// copied from the store a page at a time).
    fn part(&mut self, _out: &mut Vec<u8>) -> io::Result<()> {
        Ok(())
    }

    /// Nothing is ever held back: each reply went out as its message.
    fn flush(&mut self, _out: &mut Vec<u8>) -> io::Result<()> {
        Ok(())
    }

    /// Unread bytes on the socket. A message the library already holds
    /// whole is not seen until more bytes come.
    fn has_input(&mut self) -> bool {
        self.ws.get_ref().unread_bytes() > 0
    }
}
