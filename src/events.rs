//! Events an operator wants in the log at the default level, one line
//! each: a lock orphaned by its holder's disconnect (who held it, for how
//! long) and a wait refused because it would close a deadlock. Through the
//! `log` facade, with the facts as key-value pairs for `--log-format json`
//! (`event`, `kind`, `lock`, `client`, `name`, `held_ms`, `holder`).
//! Names are escaped as [`LockName`]'s `Debug` writes them; nothing here
//! ever sees a secret.

use crate::metrics::{Let, LockKind};
use crate::name::LockName;

/// A name as a log shows it: escaped, without the quotes.
fn shown(bytes: &[u8]) -> String {
    let quoted = format!("{:?}", LockName::new(bytes));
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .map_or_else(|| quoted.clone(), str::to_string)
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
                "orphaned {} lock \"{shown_lock}\" held {:.3}s by {by}: its connection ended",
                lock.kind.as_str(),
                lock.held.as_secs_f64(),
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
