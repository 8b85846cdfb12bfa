//! Reply texts, byte for byte as `PROTOCOL.md` gives them, and the small
//! parser the client uses to read them back.

use std::io::Write;

/// `1 Lock Get Success: NAME` (or the fencing token in place of `1` on `wg`).
pub const LOCK_GET_SUCCESS: &str = "Lock Get Success";
/// `0 Lock Get Failure: NAME`
pub const LOCK_GET_FAILURE: &str = "Lock Get Failure";
/// `0 Lock Get Timeout: NAME`
pub const LOCK_GET_TIMEOUT: &str = "Lock Get Timeout";
/// `0 Lock Get Deadlock: NAME`
pub const LOCK_GET_DEADLOCK: &str = "Lock Get Deadlock";
/// `0 Shared Lock Get Deadlock: NAME` (`wsg`)
pub const SHARED_GET_DEADLOCK: &str = "Shared Lock Get Deadlock";
/// `1 Lock Release Success: NAME`
pub const LOCK_RELEASE_SUCCESS: &str = "Lock Release Success";
/// `0 Lock Release Failure: NAME`
pub const LOCK_RELEASE_FAILURE: &str = "Lock Release Failure";
/// `1 Lock Is Locked: NAME`
pub const LOCK_IS_LOCKED: &str = "Lock Is Locked";
/// `0 Lock Not Locked: NAME`
pub const LOCK_NOT_LOCKED: &str = "Lock Not Locked";
/// `T Lock Token: NAME`
pub const LOCK_TOKEN: &str = "Lock Token";
/// `0 Lock Not Held: NAME`
pub const LOCK_NOT_HELD: &str = "Lock Not Held";
/// `N Shared Lock Get Success: NAME`
pub const SHARED_GET_SUCCESS: &str = "Shared Lock Get Success";
/// `0 Shared Lock Get Failure: NAME` (`sg` past a cap)
pub const SHARED_GET_FAILURE: &str = "Shared Lock Get Failure";
/// `0 Shared Lock Get Timeout: NAME`
pub const SHARED_GET_TIMEOUT: &str = "Shared Lock Get Timeout";
/// `1 Shared Lock Release Success: NAME`
pub const SHARED_RELEASE_SUCCESS: &str = "Shared Lock Release Success";
/// `0 Shared Lock Release Failure: NAME`
pub const SHARED_RELEASE_FAILURE: &str = "Shared Lock Release Failure";
/// `N Shared Lock Is Locked: NAME`
pub const SHARED_IS_LOCKED: &str = "Shared Lock Is Locked";
/// `0 Shared Lock Not Locked: NAME`
pub const SHARED_NOT_LOCKED: &str = "Shared Lock Not Locked";

/// `N Read Lock Get Success: NAME` (N readers now)
pub const READ_GET_SUCCESS: &str = "Read Lock Get Success";
/// `0 Read Lock Get Timeout: NAME`
pub const READ_GET_TIMEOUT: &str = "Read Lock Get Timeout";
/// `1 Read Lock Release Success: NAME`
pub const READ_RELEASE_SUCCESS: &str = "Read Lock Release Success";
/// `0 Read Lock Release Failure: NAME`
pub const READ_RELEASE_FAILURE: &str = "Read Lock Release Failure";

/// `0 disabled`
pub const DISABLED: &[u8] = b"0 disabled\n";
/// `1 ok`
pub const OK: &[u8] = b"1 ok\n";
/// `1 pong`
pub const PONG: &[u8] = b"1 pong\n";
/// `0 Auth Required`
pub const AUTH_REQUIRED: &[u8] = b"0 Auth Required\n";
/// `1 Auth Ok`
pub const AUTH_OK: &[u8] = b"1 Auth Ok\n";
/// `0 Auth Failure`
pub const AUTH_FAILURE: &[u8] = b"0 Auth Failure\n";
/// Sent to a connection past `--max-connections`, which is then closed.
pub const TOO_MANY_CONNECTIONS: &[u8] = b"0 Too Many Connections\n";
/// The same refusal for a WebSocket client, still in its HTTP handshake.
pub const TOO_MANY_CONNECTIONS_HTTP: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: text/plain\r\nContent-Length: 23\r\nConnection: close\r\n\r\n\
0 Too Many Connections\n";
/// `synced`: a watcher's snapshot is complete; events follow.
pub const SYNCED: &[u8] = b"synced\n";
/// Text of the protocol-2 error for any verb but `watch` on a watching
/// connection.
pub const WATCHING: &str = "watching";
/// Sent to a watcher that fell too far behind, before it is closed.
pub const WATCHER_TOO_SLOW: &[u8] = b"0 Error: watcher too slow\n";

/// Appends `1 Watching: PATTERN\n`.
pub fn watching(out: &mut Vec<u8>, pattern: &[u8]) {
    out.extend_from_slice(b"1 Watching: ");
    out.extend_from_slice(pattern);
    out.push(b'\n');
}

/// Appends a watcher's event line, `EVENT KIND N HOLDER NAME\n` (`held x 7
/// 127.0.0.1:5 a b`): the name last, as it may hold spaces.
pub fn watch_event(out: &mut Vec<u8>, event: &str, kind: &str, n: u64, holder: &[u8], name: &[u8]) {
    out.extend_from_slice(event.as_bytes());
    out.push(b' ');
    out.extend_from_slice(kind.as_bytes());
    out.push(b' ');
    push_number(out, n);
    out.push(b' ');
    out.extend_from_slice(holder);
    out.push(b' ');
    out.extend_from_slice(name);
    out.push(b'\n');
}

/// Text of the protocol-2 error for an over-long line.
pub const LINE_TOO_LONG: &str = "line too long";

/// Appends `N TEXT: NAME\n`. Inlined: each caller's `TEXT` is a constant,
/// so only the name is copied by a call to `memcpy`.
#[inline(always)]
pub fn status(out: &mut Vec<u8>, n: u64, text: &str, name: &[u8]) {
    // One reservation for the whole line; the count is almost always 0 or
    // 1 (a classic `g` or `r`), a single digit.
    out.reserve(text.len() + name.len() + 24);
    match n {
        0..=9 => out.push(b'0' + n as u8),
        _ => push_number(out, n),
    }
    out.push(b' ');
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(name);
    out.push(b'\n');
}

/// Appends `0 Error: WHAT\n` (protocol 2 only).
pub fn error(out: &mut Vec<u8>, what: &dyn std::fmt::Display) {
    let _ = writeln!(out, "0 Error: {what}");
}

/// Appends a decimal number without allocating.
pub fn push_number(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends `KEY: HOLDER\n`, the line of `d`, `sd` and `who`.
pub fn pair_line(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(key);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Appends a JSON string; each byte that is not part of valid UTF-8
/// becomes one U+FFFD.
pub fn json_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        // One U+FFFD per bad byte, as PROTOCOL.md says and Go's
        // encoding/json does (not one per maximal bad sequence).
        for _ in chunk.invalid() {
            out.extend_from_slice("\u{fffd}".as_bytes());
        }
    }
    out.push(b'"');
}

/// One exclusive lock as the listings show it, borrowed from whatever the
/// store copied out.
#[derive(Clone, Debug, Default)]
pub struct ExclusiveEntry<'a> {
    /// The lock's name.
    pub name: &'a [u8],
    /// The holder's default name (`IP:PORT`, `unix:N`).
    pub holder: &'a [u8],
    /// The holder's `iam` name, if it registered one.
    pub registered: Option<&'a [u8]>,
    /// The fencing token of the current grant.
    pub token: u64,
    /// The default names of the waiters, first in line first.
    pub waiters: Vec<&'a [u8]>,
}

/// One shared lock as the listings show it.
#[derive(Clone, Debug, Default)]
pub struct SharedEntry<'a> {
    /// The lock's name.
    pub name: &'a [u8],
    /// The holders' default names.
    pub holders: Vec<&'a [u8]>,
    /// The waiters' default names and the limit each asked for.
    pub waiters: Vec<(&'a [u8], u32)>,
}

/// One read-held lock as `dj` shows it.
#[derive(Clone, Debug, Default)]
pub struct ReadEntry<'a> {
    /// The lock's name.
    pub name: &'a [u8],
    /// The readers' default names, in the order they got it.
    pub readers: Vec<&'a [u8]>,
    /// The default names of the waiters (`wg` and `wr`), first in line first.
    pub waiters: Vec<&'a [u8]>,
}

/// Appends a JSON array of strings (see [`json_string`]).
fn json_strings(out: &mut Vec<u8>, items: &[&[u8]]) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_string(out, item);
    }
    out.push(b']');
}

/// Opens `dump` and `dump shared`, before their entries.
pub const DUMP_OPEN: &[u8] = b"map[";
/// Closes `dump` and `dump shared`, after their entries.
pub const DUMP_CLOSE: &[u8] = b"]\n";
/// Opens `dj`, before its exclusive entries.
pub const JSON_OPEN: &[u8] = b"{\"exclusive\":{";
/// Between the exclusive and the shared entries of `dj`.
pub const JSON_SHARED: &[u8] = b"},\"shared\":{";
/// After the shared entries of `dj`, before any read-held ones.
pub const JSON_SHARED_CLOSE: &[u8] = b"}";
/// Closes the `"readers"` object of `dj`, when it has one.
pub const JSON_READERS_CLOSE: &[u8] = b"}";
/// Closes `dj`.
pub const JSON_CLOSE: &[u8] = b"}\n";

/// Appends `dump`: glockd's Go-map text, `map[NAME:HOLDER NAME2:HOLDER2]\n`,
/// in the order given (the caller sorts by name).
pub fn dump_exclusive<'a>(out: &mut Vec<u8>, locks: impl IntoIterator<Item = ExclusiveEntry<'a>>) {
    out.extend_from_slice(DUMP_OPEN);
    for (i, lock) in locks.into_iter().enumerate() {
        dump_exclusive_item(out, i == 0, &lock);
    }
    out.extend_from_slice(DUMP_CLOSE);
}

/// Appends one `NAME:HOLDER` of `dump` (`first`: no separator before it).
pub fn dump_exclusive_item(out: &mut Vec<u8>, first: bool, lock: &ExclusiveEntry<'_>) {
    if !first {
        out.push(b' ');
    }
    out.extend_from_slice(lock.name);
    out.push(b':');
    out.extend_from_slice(lock.holder);
}

/// Appends `dump shared`: `map[NAME:[HOLDER HOLDER2] ...]\n`.
pub fn dump_shared<'a>(out: &mut Vec<u8>, locks: impl IntoIterator<Item = SharedEntry<'a>>) {
    out.extend_from_slice(DUMP_OPEN);
    for (i, lock) in locks.into_iter().enumerate() {
        dump_shared_item(out, i == 0, &lock);
    }
    out.extend_from_slice(DUMP_CLOSE);
}

/// Appends one `NAME:[HOLDER HOLDER2]` of `dump shared`.
pub fn dump_shared_item(out: &mut Vec<u8>, first: bool, lock: &SharedEntry<'_>) {
    if !first {
        out.push(b' ');
    }
    out.extend_from_slice(lock.name);
    out.extend_from_slice(b":[");
    for (j, holder) in lock.holders.iter().enumerate() {
        if j > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(holder);
    }
    out.push(b']');
}

/// Appends `dj`: one line of JSON, exclusive (write-held) then shared
/// locks, then, only when some lock is read-held (so a `dj` without readers
/// stays byte for byte what the first `dj` was), `"readers"`.
pub fn dump_json<'a>(
    out: &mut Vec<u8>,
    exclusive: impl IntoIterator<Item = ExclusiveEntry<'a>>,
    shared: impl IntoIterator<Item = SharedEntry<'a>>,
    readers: impl IntoIterator<Item = ReadEntry<'a>>,
) {
    out.extend_from_slice(JSON_OPEN);
    for (i, lock) in exclusive.into_iter().enumerate() {
        json_exclusive_item(out, i == 0, &lock);
    }
    out.extend_from_slice(JSON_SHARED);
    for (i, lock) in shared.into_iter().enumerate() {
        json_shared_item(out, i == 0, &lock);
    }
    out.extend_from_slice(JSON_SHARED_CLOSE);
    let mut any = false;
    for lock in readers {
        json_read_item(out, !any, &lock);
        any = true;
    }
    if any {
        out.extend_from_slice(JSON_READERS_CLOSE);
    }
    out.extend_from_slice(JSON_CLOSE);
}

/// Appends one exclusive entry of `dj` (`first`: no comma before it).
pub fn json_exclusive_item(out: &mut Vec<u8>, first: bool, lock: &ExclusiveEntry<'_>) {
    if !first {
        out.push(b',');
    }
    json_string(out, lock.name);
    out.extend_from_slice(b":{\"holder\":");
    json_string(out, lock.holder);
    out.extend_from_slice(b",\"name\":");
    match lock.registered {
        Some(name) => json_string(out, name),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"token\":");
    push_number(out, lock.token);
    out.extend_from_slice(b",\"waiters\":");
    json_strings(out, &lock.waiters);
    out.push(b'}');
}

/// Appends one shared entry of `dj`.
pub fn json_shared_item(out: &mut Vec<u8>, first: bool, lock: &SharedEntry<'_>) {
    if !first {
        out.push(b',');
    }
    json_string(out, lock.name);
    out.extend_from_slice(b":{\"holders\":");
    json_strings(out, &lock.holders);
    out.extend_from_slice(b",\"waiters\":[");
    for (j, (waiter, limit)) in lock.waiters.iter().enumerate() {
        if j > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"client\":");
        json_string(out, waiter);
        out.extend_from_slice(b",\"limit\":");
        push_number(out, u64::from(*limit));
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
}

/// Appends one read-held entry of `dj`; the first opens `"readers"`.
pub fn json_read_item(out: &mut Vec<u8>, first: bool, lock: &ReadEntry<'_>) {
    out.extend_from_slice(if first { &b",\"readers\":{"[..] } else { b"," });
    json_string(out, lock.name);
    out.extend_from_slice(b":{\"holders\":");
    json_strings(out, &lock.readers);
    out.extend_from_slice(b",\"waiters\":");
    json_strings(out, &lock.waiters);
    out.push(b'}');
}

/// Appends the `q` reply's `key: value` lines.
pub fn stats<'a>(out: &mut Vec<u8>, pairs: impl IntoIterator<Item = (&'a str, u64)>) {
    for (key, value) in pairs {
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b": ");
        push_number(out, value);
        out.push(b'\n');
    }
}

/// A status reply split into its parts: `N TEXT: NAME` or `N TEXT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusLine<'a> {
    /// The leading number (a success flag, a count, or a fencing token).
    pub number: u64,
    /// The text between the number and `: ` (or the rest of the line).
    pub text: &'a [u8],
    /// What follows the first `: `, if anything does.
    pub name: Option<&'a [u8]>,
}

/// Splits a reply line (without `\n`) into number, text and name. `None`
/// when the line does not start with a number and a space.
pub fn parse_status(line: &[u8]) -> Option<StatusLine<'_>> {
    let space = line.iter().position(|&b| b == b' ')?;
    let digits = &line[..space];
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let number = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let rest = &line[space + 1..];
    let (text, name) = match rest.windows(2).position(|w| w == b": ") {
        Some(i) => (&rest[..i], Some(&rest[i + 2..])),
        None => (rest, None),
    };
    Some(StatusLine { number, text, name })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips() {
        let mut out = Vec::new();
        status(&mut out, 42, LOCK_GET_SUCCESS, b"a: b\0");
        assert_eq!(out, b"42 Lock Get Success: a: b\0\n");
        let parsed = parse_status(&out[..out.len() - 1]).expect("parses");
        assert_eq!(parsed.number, 42);
        assert_eq!(parsed.text, LOCK_GET_SUCCESS.as_bytes());
        assert_eq!(parsed.name, Some(&b"a: b\0"[..]));
        assert_eq!(parse_status(b"x y"), None);
    }

    #[test]
    fn websocket_refusal_is_well_formed_http() {
        let text = std::str::from_utf8(TOO_MANY_CONNECTIONS_HTTP).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert_eq!(body.as_bytes(), TOO_MANY_CONNECTIONS);
    }

    #[test]
    fn listings_encode_as_glockd_does() {
        let lock = |name: &'static [u8], holder: &'static [u8]| ExclusiveEntry {
            name,
            holder,
            ..ExclusiveEntry::default()
        };
        let mut out = Vec::new();
        dump_exclusive(&mut out, [lock(b"a", b"unix:1"), lock(b"b", b"unix:2")]);
        assert_eq!(out, b"map[a:unix:1 b:unix:2]\n");
        out.clear();
        dump_exclusive(&mut out, []);
        assert_eq!(out, b"map[]\n");
        out.clear();
        let shared = SharedEntry {
            name: b"s",
            holders: vec![b"unix:1", b"unix:2"],
            waiters: vec![(b"unix:3", 2)],
        };
        dump_shared(&mut out, [shared.clone()]);
        assert_eq!(out, b"map[s:[unix:1 unix:2]]\n");
        out.clear();
        let exclusive = ExclusiveEntry {
            registered: Some(b"me"),
            token: 7,
            waiters: vec![b"unix:4"],
            ..lock(b"a", b"unix:1")
        };
        dump_json(&mut out, [exclusive], [shared], []);
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "{\"exclusive\":{\"a\":{\"holder\":\"unix:1\",\"name\":\"me\",\"token\":7,\
             \"waiters\":[\"unix:4\"]}},\"shared\":{\"s\":{\"holders\":[\"unix:1\",\"unix:2\"],\
             \"waiters\":[{\"client\":\"unix:3\",\"limit\":2}]}}}\n"
        );
        let mut out = Vec::new();
        let read = |name| ReadEntry {
            name,
            readers: vec![b"unix:1", b"unix:2"],
            waiters: vec![b"unix:3"],
        };
        dump_json(&mut out, [], [], [read(b"r"), read(b"t\xff")]);
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "{\"exclusive\":{},\"shared\":{},\"readers\":{\
             \"r\":{\"holders\":[\"unix:1\",\"unix:2\"],\"waiters\":[\"unix:3\"]},\
             \"t\u{fffd}\":{\"holders\":[\"unix:1\",\"unix:2\"],\"waiters\":[\"unix:3\"]}}}\n"
        );
    }

    #[test]
    fn json_strings() {
        let mut out = Vec::new();
        json_string(&mut out, b"a\"\\\n\x01\xffz");
        assert_eq!(out, "\"a\\\"\\\\\\n\\u0001\u{fffd}z\"".as_bytes());
        out.clear();
        json_string(&mut out, b"\xe2\x82\xff");
        assert_eq!(out, "\"\u{fffd}\u{fffd}\u{fffd}\"".as_bytes());
    }
}
