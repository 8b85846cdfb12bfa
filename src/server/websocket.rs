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
//! A listing longer than `--max-output` is still one message, sent as
//! fragments (RFC 6455 section 5.4: a first frame, continuation frames, the
//! last marked final) of at most that size, each made once the socket took
//! the one before, as on a line connection. Every WebSocket client
//! reassembles them, so what it sees does not change, with one exception:
//! the message's type is chosen by its first fragment, so a text message
//! whose later fragments hold bytes that are not UTF-8 carries U+FFFD in
//! their place, as `dj` always does.
//!
//! tungstenite does the handshake, framing, ping/pong and close frames over
//! the connection's stream; the loop is the one of every connection.

use super::conn::{Conn, ConnIo, Framing, Input};
use super::stream::HANDSHAKE_TIMEOUT;
use std::io;
use std::time::Instant;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

/// Frames and messages larger than this close the connection (the library
/// refuses them without buffering them whole); smaller ones over the line
/// limit are answered as an over-long line.
const MIN_MESSAGE_LIMIT: usize = 64 * 1024;

/// Messages: one command in, one reply out.
pub(crate) struct Messages<'a> {
    ws: WebSocket<ConnIo<'a>>,
    conn: &'a Conn<'a>,
    max_line: usize,
    /// The message whose command [`Framing::next`] handed out.
    current: Message,
    /// The reply being sent in fragments, once its first went out.
    fragments: Option<Fragments>,
}

/// A reply message sent a fragment at a time.
struct Fragments {
    /// A text message (else binary): what its first fragment was.
    text: bool,
    /// The start of a UTF-8 sequence cut by the end of the last fragment
    /// of a text message, held back for the next.
    carry: Vec<u8>,
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
                conn,
                max_line: state.config.max_line,
                current: Message::Binary(Default::default()),
                fragments: None,
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

impl Messages<'_> {
    /// Sends one message or frame, within `--write-timeout` in total.
    fn send(&mut self, message: Message) -> io::Result<()> {
        let ws = &mut self.ws;
        self.conn.drain(|| ws.send(message).map_err(io_error))
    }
}

impl Fragments {
    /// The payload of the next fragment: `out`, taken. In a text message,
    /// a UTF-8 sequence cut at the end waits for the next fragment (unless
    /// this is the `last`), and bytes that are not UTF-8 become U+FFFD.
    fn payload(&mut self, out: &mut Vec<u8>, last: bool) -> Vec<u8> {
        if !self.text {
            return std::mem::take(out);
        }
        let mut bytes = std::mem::take(&mut self.carry);
        if bytes.is_empty() {
            bytes = std::mem::take(out);
        } else {
            bytes.append(out);
        }
        if !last {
            let cut = bytes.len() - incomplete_tail(&bytes);
            self.carry = bytes.split_off(cut);
        }
        match String::from_utf8(bytes) {
            Ok(text) => text.into_bytes(),
            Err(e) => String::from_utf8_lossy(e.as_bytes())
                .into_owned()
                .into_bytes(),
        }
    }
}

/// How many bytes at the end of `bytes` start a UTF-8 sequence that the
/// bytes after them may still complete (0 to 3).
fn incomplete_tail(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let byte = bytes[bytes.len() - back];
        if byte & 0xC0 != 0x80 {
            let needs = match byte {
                0xC2..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF4 => 4,
                // ASCII, or a byte that starts no sequence.
                _ => 1,
            };
            return if needs > back { back } else { 0 };
        }
    }
    0
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
    /// Checking UTF-8 only picks the message type; the bytes go as is. A
    /// reply begun in fragments ends with its final fragment.
    fn reply(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        let reply = match self.fragments.take() {
            Some(mut fragments) => Message::Frame(Frame::message(
                fragments.payload(out, true),
                OpCode::Data(Data::Continue),
                true,
            )),
            None => match String::from_utf8(std::mem::take(out)) {
                Ok(text) => Message::text(text),
                Err(bytes) => Message::binary(bytes.into_bytes()),
            },
        };
        self.send(reply)
    }

    /// Sends what `out` holds as a fragment of the reply, which is not
    /// final: the first sets the message's type.
    fn part(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        let frame = match &mut self.fragments {
            Some(fragments) => Frame::message(
                fragments.payload(out, false),
                OpCode::Data(Data::Continue),
                false,
            ),
            None => {
                let whole = out.len() - incomplete_tail(out);
                let mut fragments = Fragments {
                    text: std::str::from_utf8(&out[..whole]).is_ok(),
                    carry: Vec::new(),
                };
                let kind = if fragments.text {
                    Data::Text
                } else {
                    Data::Binary
                };
                let frame =
                    Frame::message(fragments.payload(out, false), OpCode::Data(kind), false);
                self.fragments = Some(fragments);
                frame
            }
        };
        self.send(Message::Frame(frame))
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

#[cfg(test)]
mod tests {
    use super::{incomplete_tail, Fragments};

    #[test]
    fn a_cut_sequence_waits_for_the_next_fragment() {
        assert_eq!(incomplete_tail(b""), 0);
        assert_eq!(incomplete_tail(b"ab"), 0);
        assert_eq!(incomplete_tail("é".as_bytes()), 0);
        assert_eq!(incomplete_tail(&"é".as_bytes()[..1]), 1);
        assert_eq!(incomplete_tail(&"€".as_bytes()[..2]), 2);
        assert_eq!(incomplete_tail(&"😀".as_bytes()[..3]), 3);
        assert_eq!(incomplete_tail(b"a\x80"), 0);

        let mut fragments = Fragments {
            text: true,
            carry: Vec::new(),
        };
        let euro = "€".as_bytes();
        let mut out = [b"a", &euro[..1]].concat();
        assert_eq!(fragments.payload(&mut out, false), b"a");
        let mut out = [&euro[1..], b"b\xff"].concat();
        assert_eq!(fragments.payload(&mut out, false), "€b\u{fffd}".as_bytes());
        let mut out = euro[..2].to_vec();
        assert_eq!(fragments.payload(&mut out, true), "\u{fffd}".as_bytes());
        assert!(out.is_empty() && fragments.carry.is_empty());

        let mut binary = Fragments {
            text: false,
            carry: Vec::new(),
        };
        assert_eq!(
            binary.payload(&mut b"\xff\xe2".to_vec(), false),
            b"\xff\xe2"
        );
    }
}
