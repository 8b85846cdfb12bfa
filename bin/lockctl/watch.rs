//! `lockctl watch PATTERN`: PROTOCOL.md Part 2's `watch` on a connection
//! of its own: the locks held now (`held`), then `synced`, then every
//! event as it happens, as columns or (`--json`) one object per line,
//! until interrupted or the server ends the stream.

use crate::connect::{exit, Global};
use crate::wire::Wire;
use serde_json::json;
use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

/// One line of the stream, parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// `held`, `locked`, `released` or `orphaned`.
    Event {
        /// What happened.
        event: &'a str,
        /// `x`, `s` or `rd`.
        kind: &'a str,
        /// The token for `x`, the holders after the event for `s`, `rd`.
        number: u64,
        /// The holder's default name (`IP:PORT`, `unix:N`).
        holder: String,
        /// The lock.
        name: String,
    },
    /// `synced`: the snapshot is complete.
    Synced,
    /// `1 Watching: PATTERN`, the reply to a `watch`.
    Watching,
    /// Anything else: an error line from the server.
    Other(String),
}

/// Shows bytes from the wire: UTF-8 where valid, control characters
/// escaped.
fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// Parses one line, without its `\n`.
pub fn parse(line: &[u8]) -> Line<'_> {
    if line == b"synced" {
        return Line::Synced;
    }
    if line.starts_with(b"1 Watching: ") {
        return Line::Watching;
    }
    let mut parts = line.splitn(5, |&b| b == b' ');
    let fields: Vec<&[u8]> = parts.by_ref().collect();
    if let [event, kind, number, holder, name] = fields[..] {
        let event = std::str::from_utf8(event).ok();
        let kind = std::str::from_utf8(kind).ok();
        let number = std::str::from_utf8(number)
            .ok()
            .and_then(|n| n.parse().ok());
        if let (Some(event), Some(kind), Some(number)) = (event, kind, number) {
            if matches!(event, "held" | "locked" | "released" | "orphaned")
                && matches!(kind, "x" | "s" | "rd")
            {
                return Line::Event {
                    event,
                    kind,
                    number,
                    holder: shown(holder),
                    name: shown(name),
                };
            }
        }
    }
    Line::Other(shown(line))
}

/// The time now, as seconds since the epoch and as `HH:MM:SS.mmm` UTC.
fn now() -> (f64, String) {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let clock = format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60,
        since.subsec_millis()
    );
    (since.as_secs_f64(), clock)
}

/// One line for people, or one JSON object.
fn render(line: &Line<'_>, as_json: bool) -> Option<String> {
    let (epoch, clock) = now();
    match line {
        Line::Event {
            event,
            kind,
            number,
            holder,
            name,
        } => {
            let count = if *kind == "x" { "token" } else { "count" };
            Some(if as_json {
                json!({"time": epoch, "event": event, "kind": kind, count: number,
                       "holder": holder, "name": name})
                .to_string()
            } else {
                format!("{clock}  {event:<8}  {kind:<2}  {count} {number:<6}  {holder:<21}  {name}")
            })
        }
        Line::Synced => Some(if as_json {
            json!({"time": epoch, "event": "synced"}).to_string()
        } else {
            format!("{clock}  synced: the locks above are held now; events follow")
        }),
        Line::Watching | Line::Other(_) => None,
    }
}

/// Runs `watch`; returns the exit status once the stream ends.
pub fn watch(global: &Global, pattern: &str, as_json: bool) -> u8 {
    let mut wire = match Wire::connect(global) {
        Ok(wire) => wire,
        Err(e) => {
            eprintln!("lockctl: {}", e.message);
            return if e.usage {
                exit::USAGE
            } else {
                exit::UNAVAILABLE
            };
        }
    };
    if !wire.v2 {
        eprintln!("lockctl: a classic server cannot watch locks (watch needs lockd)");
        return exit::UNAVAILABLE;
    }
    let mut line = b"watch ".to_vec();
    line.extend_from_slice(pattern.as_bytes());
    let reply = match wire.call(&line, Some(wire.timeout())) {
        Ok(reply) => reply,
        Err(e) => {
            eprintln!(
                "lockctl: watch: {}",
                crate::connect::explain_io(&global.server, &e)
            );
            return exit::UNAVAILABLE;
        }
    };
    let reply = reply.trim_ascii_end();
    if parse(reply) != Line::Watching {
        eprintln!(
            "lockctl: watch {pattern:?}: the server said {:?}",
            shown(reply)
        );
        return exit::UNAVAILABLE;
    }
    let mut out = io::stdout();
    loop {
        let line = match wire.line(None) {
            Ok(line) => line,
            Err(e) => {
                eprintln!("lockctl: watch ended: {e}");
                return exit::LOCK_LOST;
            }
        };
        let parsed = parse(line.trim_ascii_end());
        if let Line::Other(text) = &parsed {
            eprintln!("lockctl: watch ended: the server said {text:?}");
            return exit::LOCK_LOST;
        }
        if let Some(text) = render(&parsed, as_json) {
            // Whoever reads the output has gone (a closed pipe): done.
            if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
                return 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_the_stream() {
        assert_eq!(
            parse(b"locked x 7 127.0.0.1:5000 my lock"),
            Line::Event {
                event: "locked",
                kind: "x",
                number: 7,
                holder: "127.0.0.1:5000".into(),
                name: "my lock".into()
            }
        );
        assert_eq!(parse(b"synced"), Line::Synced);
        assert_eq!(parse(b"1 Watching: a*"), Line::Watching);
        assert!(matches!(
            parse(b"0 Error: watcher too slow"),
            Line::Other(_)
        ));
        assert!(matches!(parse(b"locked q 7 h n"), Line::Other(_)));
        let Some(text) = render(&parse(b"released rd 2 unix:3 a\tb"), true) else {
            panic!()
        };
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["count"], 2);
        assert_eq!(value["name"], "a\\tb");
    }
}
