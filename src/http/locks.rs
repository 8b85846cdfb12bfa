//! `/locks.json`: the object `dj` prints, with hold times added, and
//! filtering and paging for a table of ten thousand locks.
//!
//! Each exclusive lock has `dj`'s `holder`, `name`, `token` and `waiters`,
//! plus `held_ms`; each shared lock has `holders` and `waiters`, plus
//! `holder_names` (registered names, `null` for none) and `held_ms`, in
//! the order of `holders`. Read-held locks are under `readers`, as in
//! `dj`: `holders` (the readers), `waiters` and `held_ms` per reader (the
//! filter applies to them; paging does not). `counts` says how many locks there are and how
//! many matched; `server` has a few gauges for the page's header.

use super::Parts;
use crate::metrics::LockKind;
use crate::name::LockName;
use crate::protocol::reply::json_string;
use crate::store::{ExclusiveView, ReadView, SharedView, StoreError};
use std::fmt::Write as _;
use std::time::Instant;

/// The query string's options.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// Only locks whose name contains these bytes.
    pub filter: Vec<u8>,
    /// The order before paging.
    pub sort: Sort,
    /// Locks of each kind to skip.
    pub offset: usize,
    /// Most locks of each kind to list.
    pub limit: Option<usize>,
}

/// How `/locks.json?sort=` orders the locks before paging.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sort {
    /// By name, bytewise.
    #[default]
    Name,
    /// Held longest first.
    Held,
    /// Most waiters first.
    Waiters,
}

impl Query {
    /// Parses `match=TEXT&sort=name|held|waiters&offset=N&limit=N`;
    /// anything else is ignored.
    pub fn parse(query: &str) -> Query {
        let mut parsed = Query::default();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value);
            match key {
                "match" => parsed.filter = value,
                "sort" => {
                    parsed.sort = match &value[..] {
                        b"held" => Sort::Held,
                        b"waiters" => Sort::Waiters,
                        _ => Sort::Name,
                    }
                }
                "offset" => parsed.offset = number(&value).unwrap_or(0),
                "limit" => parsed.limit = number(&value),
                _ => {}
            }
        }
        parsed
    }

    fn wants(&self, name: &[u8]) -> bool {
        self.filter.is_empty() || name.windows(self.filter.len()).any(|w| w == self.filter)
    }

    fn page<T>(&self, mut locks: Vec<T>, key: impl Fn(&T) -> (u128, usize)) -> Vec<T> {
        match self.sort {
            Sort::Name => {}
            Sort::Held => locks.sort_by_key(|l| std::cmp::Reverse(key(l).0)),
            Sort::Waiters => locks.sort_by_key(|l| std::cmp::Reverse(key(l).1)),
        }
        let limit = self.limit.unwrap_or(usize::MAX);
        locks.into_iter().skip(self.offset).take(limit).collect()
    }
}

fn number(bytes: &[u8]) -> Option<usize> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// `+` is a space and `%XX` a byte; a bad escape stays as it is.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// The reply body.
///
/// # Errors
/// The store could not answer.
pub fn render(parts: &Parts<'_>, query: &Query) -> Result<Vec<u8>, StoreError> {
    let now = Instant::now();
    let exclusive = parts.store.exclusive_locks(b"")?;
    let shared = parts.store.shared_locks(b"")?;
    let (exclusive_total, shared_total) = (exclusive.len(), shared.len());
    let exclusive: Vec<ExclusiveView> = exclusive
        .into_iter()
        .filter(|l| query.wants(l.name.as_bytes()))
        .collect();
    let shared: Vec<SharedView> = shared
        .into_iter()
        .filter(|l| query.wants(l.name.as_bytes()))
        .collect();
    let (exclusive_matched, shared_matched) = (exclusive.len(), shared.len());
    let readers: Vec<ReadView> = (parts.store.read_locks(b"")?.into_iter())
        .filter(|l| query.wants(l.name.as_bytes()))
        .collect();
    let clock = parts.metrics.hold_clock();
    // How long `holder` has held the lock, in ms (0 if unknown: it just
    // got it, or has just gone).
    let held = |holder: &[u8], kind: LockKind, name: &LockName| {
        clock
            .since(holder, kind, name.as_bytes())
            .map_or(0, |since| now.saturating_duration_since(since).as_millis())
    };
    let exclusive_held = |l: &ExclusiveView| held(&l.holder.default, LockKind::Exclusive, &l.name);
    let shared_held = |l: &SharedView| -> Vec<u128> {
        (l.holders.iter())
            .map(|h| held(&h.default, LockKind::Shared, &l.name))
            .collect()
    };
    let exclusive = query.page(exclusive, |l| (exclusive_held(l), l.waiters.len()));
    let shared = query.page(shared, |l| {
        let longest = shared_held(l).into_iter().max().unwrap_or(0);
        (longest, l.waiters.len())
    });

    let mut out = Vec::with_capacity(256 + 128 * (exclusive.len() + shared.len()));
    out.extend_from_slice(b"{\"exclusive\":{");
    for (i, lock) in exclusive.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_string(&mut out, lock.name.as_bytes());
        out.extend_from_slice(b":{\"holder\":");
        json_string(&mut out, &lock.holder.default);
        out.extend_from_slice(b",\"name\":");
        optional_string(&mut out, lock.holder.registered.as_deref());
        let _ = write!(Bytes(&mut out), ",\"token\":{},\"waiters\":", lock.token);
        string_list(&mut out, lock.waiters.iter().map(|w| &w[..]));
        let _ = write!(Bytes(&mut out), ",\"held_ms\":{}}}", exclusive_held(lock));
    }
    out.extend_from_slice(b"},\"shared\":{");
    for (i, lock) in shared.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_string(&mut out, lock.name.as_bytes());
        out.extend_from_slice(b":{\"holders\":");
        string_list(&mut out, lock.holders.iter().map(|h| &h.default[..]));
        out.extend_from_slice(b",\"waiters\":[");
        for (j, (waiter, limit)) in lock.waiters.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"client\":");
            json_string(&mut out, waiter);
            let _ = write!(Bytes(&mut out), ",\"limit\":{limit}}}");
        }
        out.extend_from_slice(b"],\"holder_names\":[");
        for (j, holder) in lock.holders.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            optional_string(&mut out, holder.registered.as_deref());
        }
        out.extend_from_slice(b"],\"held_ms\":[");
        for (j, ms) in shared_held(lock).into_iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            let _ = write!(Bytes(&mut out), "{ms}");
        }
        out.extend_from_slice(b"]}");
    }
    out.extend_from_slice(b"},\"readers\":{");
    for (i, lock) in readers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_string(&mut out, lock.name.as_bytes());
        out.extend_from_slice(b":{\"holders\":");
        string_list(&mut out, lock.readers.iter().map(|r| &r[..]));
        out.extend_from_slice(b",\"waiters\":");
        string_list(&mut out, lock.waiters.iter().map(|w| &w[..]));
        out.extend_from_slice(b",\"held_ms\":[");
        for (j, reader) in lock.readers.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            let ms = held(reader, LockKind::Read, &lock.name);
            let _ = write!(Bytes(&mut out), "{ms}");
        }
        out.extend_from_slice(b"]}");
    }
    let counts = parts.store.counts()?;
    let stats = parts.stats.report(counts, parts.max_connections, true);
    let stat = |key: &str| {
        stats
            .iter()
            .find(|(k, _)| k == key)
            .map_or(0, |(_, value)| *value)
    };
    let _ = write!(
        Bytes(&mut out),
        "}},\"counts\":{{\"exclusive\":{exclusive_total},\"shared\":{shared_total},\
         \"exclusive_matched\":{exclusive_matched},\"shared_matched\":{shared_matched}}},\
         \"server\":{{\"version\":\"{}\",\"connections\":{},\"max_connections\":{},\
         \"waiting\":{},\"grants\":{},\"uptime_seconds\":{}}}}}",
        env!("CARGO_PKG_VERSION"),
        stat("connections"),
        parts.max_connections,
        counts.waiting,
        counts.grants,
        stat("uptime_seconds"),
    );
    out.push(b'\n');
    Ok(out)
}

fn optional_string(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        Some(value) => json_string(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

fn string_list<'a>(out: &mut Vec<u8>, items: impl Iterator<Item = &'a [u8]>) {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_string(out, item);
    }
    out.push(b']');
}

/// `write!` into a byte buffer.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_options_and_percent_decoding() {
        let q = Query::parse("match=a%20b+c%3C%zz%4&sort=held&offset=20&limit=10&x=1");
        assert_eq!(q.filter, b"a b c<%zz%4");
        assert_eq!((q.sort, q.offset, q.limit), (Sort::Held, 20, Some(10)));
        assert_eq!(Query::parse(""), Query::default());
        assert_eq!(Query::parse("limit=x&sort=?").limit, None);
        assert!(q.wants(b"xa b c<%zz%4y") && !q.wants(b"a b"));
    }
}
