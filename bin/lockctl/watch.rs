//! `lockctl watch PATTERN`: PROTOCOL.md Part 2's `watch`, through
//! `lockd::Client::watch` (a connection of its own): the locks held now
//! (`held`), then `synced`, then every event as it happens, as columns or
//! (`--json`) one object per line, until interrupted or the server ends
//! the stream.

use crate::connect::{connect, exit, in_cli_terms, Global};
use lockd::client::{HoldKind, LockEvent, WatchEvent};
use serde_json::json;
use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

/// Shows a name from the wire: UTF-8 where valid, control characters
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
fn render(event: &WatchEvent, as_json: bool) -> Option<String> {
    let (epoch, clock) = now();
    let (what, e): (&str, &LockEvent) = match event {
        WatchEvent::Held(e) => ("held", e),
        WatchEvent::Locked(e) => ("locked", e),
        WatchEvent::Released(e) => ("released", e),
        WatchEvent::Orphaned(e) => ("orphaned", e),
        WatchEvent::Synced => {
            return Some(if as_json {
                json!({"time": epoch, "event": "synced"}).to_string()
            } else {
                format!("{clock}  synced: the locks above are held now; events follow")
            })
        }
        // A kind of event this lockctl does not know yet.
        _ => return None,
    };
    let (kind, count) = match e.kind {
        HoldKind::Exclusive => ("x", "token"),
        HoldKind::Shared => ("s", "count"),
        HoldKind::Read => ("rd", "count"),
        _ => return None,
    };
    let (number, holder, name) = (
        e.number,
        shown(e.holder.as_bytes()),
        shown(e.name.as_bytes()),
    );
    Some(if as_json {
        json!({"time": epoch, "event": what, "kind": kind, count: number,
               "holder": holder, "name": name})
        .to_string()
    } else {
        format!("{clock}  {what:<8}  {kind:<2}  {count} {number:<6}  {holder:<21}  {name}")
    })
}

/// Runs `watch`; returns the exit status once the stream ends.
pub fn watch(global: &Global, pattern: &str, as_json: bool) -> u8 {
    let client = match connect(global) {
        Ok(client) => client,
        Err(code) => return code,
    };
    let events = match client.watch(pattern) {
        Ok(events) => events,
        Err(e) => {
            eprintln!("lockctl: watch {pattern:?}: {}", in_cli_terms(&e));
            return exit::UNAVAILABLE;
        }
    };
    let mut out = io::stdout();
    for event in events {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                eprintln!("lockctl: watch ended: {}", in_cli_terms(&e));
                return exit::LOCK_LOST;
            }
        };
        if let Some(text) = render(&event, as_json) {
            // Whoever reads the output has gone (a closed pipe): done.
            if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
                return 0;
            }
        }
    }
    eprintln!("lockctl: watch ended: the server closed the connection");
    exit::LOCK_LOST
}
