//! [`Watch`]: the events of the locks a pattern matches, on a connection
//! of its own (a watching connection serves nothing else).

use super::conn::Conn;
use crate::error::Error;
use crate::name::LockName;
use crate::protocol::reply::parse_status;

/// Which kind of hold an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HoldKind {
    /// An exclusive lock (`x`); the event's number is its fencing token.
    Exclusive,
    /// A shared lock (`s`); the number is the holder count after it.
    Shared,
    /// A read hold (`rd`); the number is the reader count after it.
    Read,
}

/// One change of one lock, or the state it was in when the watch began.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockEvent {
    /// Exclusive, shared or read.
    pub kind: HoldKind,
    /// The fencing token (exclusive) or the holder count after the event.
    pub number: u64,
    /// The holder's default name (`IP:PORT`, `unix:N`).
    pub holder: LockName,
    /// The lock.
    pub name: LockName,
}

/// What a [`Watch`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchEvent {
    /// Held when the watch began (the snapshot).
    Held(LockEvent),
    /// The snapshot is complete; events follow as they happen.
    Synced,
    /// Taken.
    Locked(LockEvent),
    /// Released by its holder.
    Released(LockEvent),
    /// Released because its holder's connection ended.
    Orphaned(LockEvent),
}

/// The events of the locks a pattern matches, from
/// [`Client::watch`](super::Client::watch): first the locks held now, then
/// [`WatchEvent::Synced`], then each change as it happens. Each `next`
/// blocks until the server sends something; the iterator ends when the
/// connection does.
pub struct Watch {
    conn: Conn,
    done: bool,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").field("done", &self.done).finish()
    }
}

impl Watch {
    pub(crate) fn new(conn: Conn) -> Watch {
        Watch { conn, done: false }
    }
}

impl Iterator for Watch {
    type Item = Result<WatchEvent, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let line = match self.conn.next_line() {
            Ok(Some(line)) => line,
            Ok(None) => {
                self.done = true;
                return None;
            }
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        let event = parse_event(&line);
        if event.is_err() {
            self.done = true;
        }
        Some(event)
    }
}

/// `EVENT KIND N HOLDER NAME` (NAME last: it may hold spaces), `synced`,
/// or the server's goodbye.
pub(crate) fn parse_event(line: &[u8]) -> Result<WatchEvent, Error> {
    if line == b"synced" {
        return Ok(WatchEvent::Synced);
    }
    let bad = || Error::Protocol {
        command: "watch".into(),
        reply: line.escape_ascii().to_string(),
    };
    if let Some(status) = parse_status(line) {
        if status.number == 0 && status.text == b"Error" {
            return Err(Error::Disconnected {
                reason: format!(
                    "the server ended the watch: {}",
                    String::from_utf8_lossy(status.name.unwrap_or_default())
                ),
            });
        }
    }
    let mut fields = line.splitn(5, |&b| b == b' ');
    let mut next = || fields.next().ok_or_else(bad);
    let (event, kind, number, holder) = (next()?, next()?, next()?, next()?);
    let name = next().unwrap_or_default();
    let kind = match kind {
        b"x" => HoldKind::Exclusive,
        b"s" => HoldKind::Shared,
        b"rd" => HoldKind::Read,
        _ => return Err(bad()),
    };
    let number = std::str::from_utf8(number)
        .ok()
        .and_then(|n| n.parse().ok())
        .ok_or_else(bad)?;
    let lock = LockEvent {
        kind,
        number,
        holder: LockName::from(holder),
        name: LockName::from(name),
    };
    Ok(match event {
        b"held" => WatchEvent::Held(lock),
        b"locked" => WatchEvent::Locked(lock),
        b"released" => WatchEvent::Released(lock),
        b"orphaned" => WatchEvent::Orphaned(lock),
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events() {
        let e = parse_event(b"locked x 7 127.0.0.1:5000 a b").unwrap();
        assert_eq!(
            e,
            WatchEvent::Locked(LockEvent {
                kind: HoldKind::Exclusive,
                number: 7,
                holder: "127.0.0.1:5000".into(),
                name: "a b".into(),
            })
        );
        assert_eq!(parse_event(b"synced").unwrap(), WatchEvent::Synced);
        let e = parse_event(b"held rd 2 unix:1 ").unwrap();
        assert!(matches!(
            e,
            WatchEvent::Held(LockEvent {
                kind: HoldKind::Read,
                ..
            })
        ));
        assert!(parse_event(b"0 Error: watcher too slow")
            .unwrap_err()
            .is_disconnected());
        assert!(parse_event(b"held q 1 h n").is_err());
        assert!(parse_event(b"held x one h n").is_err());
    }
}
