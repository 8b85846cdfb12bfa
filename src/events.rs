//! Events an operator wants in the log at the default level, one line
//! each: a lock orphaned by its holder's disconnect (who held it, for how
//! long) and a wait refused because it would close a deadlock. Through the
//! `log` facade, with the facts as key-value pairs for `--log-format json`
//! (`event`, `kind`, `lock`, `client`, `name`, `held_ms`, `holder`).
//! Names are escaped as [`LockName`]'s `Debug` writes them; nothing here
//! ever sees a secret.

use crate::metrics::{Let, LockKind};
use std::fmt::{self, Write as _};
use std::time::Duration;

/// A name as a log shows it: escaped as [`LockName`](crate::name::LockName)'s
/// `Debug` does, without the quotes.
fn shown(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 8);
    let _ = write!(out, "{}", bytes.escape_ascii());
    out
}

/// A duration in seconds to the nearest millisecond, `1.250`: integer
/// arithmetic, where `{:.3}` of an `f64` cost an orphaned-lock line a
/// tenth of its formatting (callgrind, W5 against the daemon).
struct Seconds(Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // u64 and u32 only: u128 division and `{:03}` cost as much as
        // the float did.
        let rounded = u64::from((self.0.subsec_nanos() + 500_000) / 1_000_000);
        let ms = self
            .0
            .as_secs()
            .saturating_mul(1000)
            .saturating_add(rounded);
        let frac = ms % 1000;
        write!(f, "{}.", ms / 1000)?;
        for digit in [frac / 100, frac / 10 % 10, frac % 10] {
            f.write_char(char::from(b'0' + digit as u8))?;
        }
        Ok(())
    }
}

/// One line per lock that `client` (registered as `registered`, if it
/// was) held when its connection ended.
pub(crate) fn orphaned(client: &str, registered: Option<&[u8]>, lost: &[Let]) {
    // The names are escaped before `info!` decides to drop the line: not
    // for a program that logs nothing at this level.
    if lost.is_empty() || !::log::log_enabled!(::log::Level::Info) {
        return;
    }
    let name = registered.map(shown);
    let by = match &name {
        Some(name) => format!("{client} ({name})"),
        None => client.to_string(),
    };
    crate::log::batch(|| {
        for lock in lost {
            let held_ms = u64::try_from(lock.held.as_millis()).unwrap_or(u64::MAX);
            let shown_lock = shown(lock.name.as_bytes());
            ::log::info!(
                event = "orphaned",
                kind = lock.kind.as_str(),
                lock = shown_lock.as_str(),
                client = client,
                name = name.as_deref().unwrap_or(""),
                held_ms = held_ms;
                "orphaned {} lock \"{shown_lock}\" held {}s by {by}: its connection ended",
                lock.kind.as_str(),
                Seconds(lock.held),
            );
        }
    });
}

/// A `wg`/`wsg` of `client` for `lock` refused with a deadlock; `holder`
/// is who holds an exclusive lock (its default name).
pub(crate) fn deadlock_refused(client: &str, kind: LockKind, lock: &[u8], holder: Option<&[u8]>) {
    let shown_lock = shown(lock);
    let holder = holder.map(shown).unwrap_or_default();
    let held_by = if holder.is_empty() {
        String::new()
    } else {
        format!(" (held by {holder})")
    };
    ::log::info!(
        event = "deadlock",
        kind = kind.as_str(),
        lock = shown_lock.as_str(),
        client = client,
        holder = holder.as_str();
        "deadlock refused: {client} asked to wait for {} lock \"{shown_lock}\"{held_by}, which would close a cycle of waiters",
        kind.as_str(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::LockName;

    #[test]
    fn names_are_shown_as_their_debug_form_without_quotes() {
        for bytes in [&b"deploy"[..], b"a\"b\\c", b"\0\xff \n", b""] {
            let debug = format!("{:?}", LockName::new(bytes));
            assert_eq!(format!("\"{}\"", shown(bytes)), debug);
        }
    }

    #[test]
    fn seconds_round_to_the_millisecond() {
        let shown = |ns: u64| Seconds(Duration::from_nanos(ns)).to_string();
        assert_eq!(shown(0), "0.000");
        assert_eq!(shown(499_999), "0.000");
        assert_eq!(shown(500_000), "0.001");
        assert_eq!(shown(1_249_600_000), "1.250");
        assert_eq!(shown(61_999_600_000), "62.000");
    }
}
