//! `/metrics` in the Prometheus text format (version 0.0.4).
//!
//! - Every `q` counter (the extended set): `command_X` as
//!   `lockd_commands_total{verb="X"}`, the gauges (`connections`, `locks`,
//!   `shared_locks`, `read_locks`, `waiting`, `max_connections`,
//!   `uptime_seconds`) as `lockd_KEY`, every other key as the counter
//!   `lockd_KEY_total` (so `grants`, `deadlocks`, `wait_timeouts`,
//!   `orphans`...).
//! - `lockd_transport_connections{transport}`: connections by
//!   transport (`tcp`, `tls`, `unix`, `websocket`), while their threads run.
//! - `lockd_lock_grants_total{kind}`: grants by kind (`exclusive`, `shared`,
//!   `read`).
//! - Histograms (seconds): `lockd_wait_seconds{kind,outcome}` and
//!   `lockd_hold_seconds{kind}` over all locks, and
//!   `lockd_lock_wait_seconds{lock,kind,outcome}`,
//!   `lockd_lock_hold_seconds{lock,kind}` for the locks
//!   `--metrics-locks` selects, at most
//!   [`MAX_LOCK_SERIES`] of them;
//!   `lockd_lock_series_dropped_total` counts observations left out.
//! - `lockd_oldest_hold_seconds{kind}`: the longest current hold; and for
//!   selected locks held now, `lockd_lock_held_seconds{lock,kind}` and
//!   `lockd_lock_waiters{lock,kind}` (at most
//!   [`MAX_LOCK_SERIES`] each).
//! - `lockd_token_next`, and `lockd_token_high_water_mark` when tokens are
//!   persisted.
//! - In cluster mode, group commit's `lockd_etcd_requests_total`,
//!   `lockd_etcd_commands_total` and `lockd_etcd_largest_batch`.
//! - `process_*` from `/proc/self`: resident and virtual memory, open and
//!   maximum descriptors, threads, CPU seconds, start time.

use super::Parts;
use crate::metrics::{
    LockHistograms, LockKind, Outcome, Snapshot, Transport, BUCKETS, MAX_LOCK_SERIES,
};
use crate::store::{ExclusiveView, ReadView, SharedView, StoreError};
use std::fmt::Write;
use std::time::Instant;

/// `q` keys that are gauges; every other non-command key is a counter.
const GAUGES: &[&str] = &[
    "connections",
    "locks",
    "max_connections",
    "read_locks",
    "shared_locks",
    "uptime_seconds",
    "waiting",
];

/// The whole scrape.
///
/// # Errors
/// The store could not answer.
pub(crate) fn render(parts: &Parts<'_>) -> Result<String, StoreError> {
    let mut out = String::with_capacity(16 * 1024);
    let counts = parts.store.counts()?;
    let report = parts.stats.report(counts, parts.max_connections, true);

    family(
        &mut out,
        "lockd_commands_total",
        "counter",
        "Commands received, by verb (the command_VERB keys of q).",
    );
    for (key, value) in &report {
        if let Some(verb) = key.strip_prefix("command_") {
            let _ = writeln!(out, "lockd_commands_total{{verb=\"{verb}\"}} {value}");
        }
    }
    for (key, value) in &report {
        if key.starts_with("command_") {
            continue;
        }
        let gauge = GAUGES.contains(&key.as_str());
        let name = if gauge {
            format!("lockd_{key}")
        } else {
            format!("lockd_{key}_total")
        };
        let kind = if gauge { "gauge" } else { "counter" };
        family(&mut out, &name, kind, &format!("The {key} key of q."));
        let _ = writeln!(out, "{name} {value}");
    }

    let metrics = parts.metrics;
    family(
        &mut out,
        "lockd_transport_connections",
        "gauge",
        "Connections by transport, counted while their threads run.",
    );
    for transport in Transport::ALL {
        let _ = writeln!(
            out,
            "lockd_transport_connections{{transport=\"{}\"}} {}",
            transport.as_str(),
            metrics.connections(transport)
        );
    }
    family(
        &mut out,
        "lockd_lock_grants_total",
        "counter",
        "Locks granted (g, wg, sg, wsg), by kind.",
    );
    for kind in LockKind::ALL {
        let _ = writeln!(
            out,
            "lockd_lock_grants_total{{kind=\"{}\"}} {}",
            kind.as_str(),
            metrics.grants(kind)
        );
    }

    let overall = metrics.overall();
    let overall = [(String::new(), &overall)];
    histograms(&mut out, "lockd", &overall);
    let per_lock = metrics.per_lock();
    let per_lock: Vec<(String, &LockHistograms)> = per_lock
        .iter()
        .map(|(name, lock)| (format!("lock=\"{}\",", label(name.as_bytes())), &**lock))
        .collect();
    histograms(&mut out, "lockd_lock", &per_lock);
    family(
        &mut out,
        "lockd_lock_series_dropped_total",
        "counter",
        &format!(
            "Observations of --metrics-locks locks past the first {MAX_LOCK_SERIES} names, left out of lockd_lock_*_seconds."
        ),
    );
    let _ = writeln!(
        out,
        "lockd_lock_series_dropped_total {}",
        metrics.lock_series_dropped()
    );

    held_now(&mut out, parts)?;

    let (next, mark) = parts.store.token_marks();
    family(
        &mut out,
        "lockd_token_next",
        "gauge",
        "The next fencing token to be issued.",
    );
    let _ = writeln!(out, "lockd_token_next {next}");
    if let Some(mark) = mark {
        family(
            &mut out,
            "lockd_token_high_water_mark",
            "gauge",
            "The fencing-token mark saved in the state directory: no token at or above it was issued.",
        );
        let _ = writeln!(out, "lockd_token_high_water_mark {mark}");
    }
    for metric in parts.store.store_metrics() {
        let kind = if metric.gauge { "gauge" } else { "counter" };
        family(&mut out, metric.name, kind, metric.help);
        let _ = writeln!(out, "{} {}", metric.name, metric.value);
    }
    family(
        &mut out,
        "lockd_build_info",
        "gauge",
        "Always 1; the version is a label.",
    );
    let _ = writeln!(
        out,
        "lockd_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    process(&mut out);
    Ok(out)
}

/// Gauges of what is held now, from a copy of the table: the longest
/// current hold of each kind (a histogram only learns of a hold when it
/// ends), and for the locks `--metrics-locks` selects that are held now
/// (the first [`MAX_LOCK_SERIES`] by name) their hold age and waiters.
fn held_now(out: &mut String, parts: &Parts<'_>) -> Result<(), StoreError> {
    let now = Instant::now();
    let clock = parts.metrics.hold_clock();
    let age = |holder: &[u8], kind: LockKind, name: &[u8]| {
        (clock.since(holder, kind, name)).map_or(0.0, |since| {
            now.saturating_duration_since(since).as_secs_f64()
        })
    };
    let exclusive = parts.store.exclusive_locks(b"")?;
    let shared = parts.store.shared_locks(b"")?;
    let exclusive_age =
        |l: &ExclusiveView| age(&l.holder.default, LockKind::Exclusive, l.name.as_bytes());
    let shared_age = |l: &SharedView| {
        (l.holders.iter())
            .map(|h| age(&h.default, LockKind::Shared, l.name.as_bytes()))
            .fold(0.0, f64::max)
    };
    let read_age = |l: &ReadView| {
        (l.readers.iter())
            .map(|r| age(r, LockKind::Read, l.name.as_bytes()))
            .fold(0.0, f64::max)
    };
    // In the order of `LockKind::ALL`.
    let oldest = [
        exclusive.iter().map(exclusive_age).fold(0.0, f64::max),
        shared.iter().map(shared_age).fold(0.0, f64::max),
        (parts.store.read_locks(b"")?.iter())
            .map(read_age)
            .fold(0.0, f64::max),
    ];
    family(
        out,
        "lockd_oldest_hold_seconds",
        "gauge",
        "How long the longest-held lock of each kind has been held now (0 when none is).",
    );
    for (kind, oldest) in LockKind::ALL.iter().zip(oldest) {
        let _ = writeln!(
            out,
            "lockd_oldest_hold_seconds{{kind=\"{}\"}} {oldest}",
            kind.as_str()
        );
    }
    let metrics = parts.metrics;
    let mut selected: Vec<(String, LockKind, f64, usize)> = Vec::new();
    for lock in &exclusive {
        if metrics.selects(lock.name.as_bytes()) {
            let held = exclusive_age(lock);
            selected.push((
                label(lock.name.as_bytes()),
                LockKind::Exclusive,
                held,
                lock.waiters.len(),
            ));
        }
    }
    for lock in &shared {
        if metrics.selects(lock.name.as_bytes()) {
            let held = shared_age(lock);
            selected.push((
                label(lock.name.as_bytes()),
                LockKind::Shared,
                held,
                lock.waiters.len(),
            ));
        }
    }
    selected.sort_by(|a, b| a.0.cmp(&b.0));
    selected.truncate(MAX_LOCK_SERIES);
    family(
        out,
        "lockd_lock_held_seconds",
        "gauge",
        "How long a lock --metrics-locks selects has been held now (its longest holder); absent when free.",
    );
    for (name, kind, held, _) in &selected {
        let kind = kind.as_str();
        let _ = writeln!(
            out,
            "lockd_lock_held_seconds{{lock=\"{name}\",kind=\"{kind}\"}} {held}"
        );
    }
    family(
        out,
        "lockd_lock_waiters",
        "gauge",
        "Clients in line for a lock --metrics-locks selects and that is held now.",
    );
    for (name, kind, _, waiters) in &selected {
        let kind = kind.as_str();
        let _ = writeln!(
            out,
            "lockd_lock_waiters{{lock=\"{name}\",kind=\"{kind}\"}} {waiters}"
        );
    }
    Ok(())
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The wait and hold histograms of `locks`, each with its label prefix
/// (`lock="NAME",` or empty).
fn histograms(out: &mut String, prefix: &str, locks: &[(String, &LockHistograms)]) {
    let wait = format!("{prefix}_wait_seconds");
    family(
        out,
        &wait,
        "histogram",
        "Time from a wg or wsg to its grant or timeout.",
    );
    for (labels, lock) in locks {
        for kind in LockKind::ALL {
            for outcome in Outcome::ALL {
                let snapshot = lock.wait(kind, outcome).snapshot();
                let labels = format!(
                    "{labels}kind=\"{}\",outcome=\"{}\"",
                    kind.as_str(),
                    outcome.as_str()
                );
                histogram(out, &wait, &labels, &snapshot);
            }
        }
    }
    let hold = format!("{prefix}_hold_seconds");
    family(
        out,
        &hold,
        "histogram",
        "Time from a grant to its release or orphaning.",
    );
    for (labels, lock) in locks {
        for kind in LockKind::ALL {
            let snapshot = lock.hold(kind).snapshot();
            let labels = format!("{labels}kind=\"{}\"", kind.as_str());
            histogram(out, &hold, &labels, &snapshot);
        }
    }
}

fn histogram(out: &mut String, name: &str, labels: &str, snapshot: &Snapshot) {
    let mut cumulative = 0;
    for (i, n) in snapshot.buckets.iter().enumerate() {
        cumulative += n;
        match BUCKETS.get(i) {
            Some(bound) => {
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
            }
            None => {
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
            }
        }
    }
    let sum = snapshot.sum_us as f64 / 1e6;
    let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", snapshot.count);
}

/// A lock name as a label value: one string per name (injective), so two
/// names never share a series. Valid UTF-8 stays as it is, except that a
/// backslash doubles; control characters and bytes that are not UTF-8
/// become `\xNN`. Then escaped for the exposition format.
pub fn label(name: &[u8]) -> String {
    let mut text = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => text.push_str("\\\\"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        let _ = write!(text, "\\x{b:02X}");
                    }
                }
                c => text.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(text, "\\x{b:02X}");
        }
    }
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// `process_*` from `/proc/self`; what cannot be read is left out.
fn process(out: &mut String) {
    let ticks = rustix::param::clock_ticks_per_second();
    let page = rustix::param::page_size();
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, so index i here is field i + 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    let mut gauge = |name: &str, kind: &str, help: &str, value: Option<f64>| {
        if let Some(value) = value {
            family(out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
    };
    if ticks > 0 {
        let cpu = field(14)
            .zip(field(15))
            .map(|(u, s)| (u + s) / ticks as f64);
        gauge(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, in seconds.",
            cpu,
        );
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
        });
        let start = field(22).zip(boot).map(|(t, boot)| boot + t / ticks as f64);
        gauge(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, in seconds.",
            start,
        );
    }
    gauge(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        field(23),
    );
    if page > 0 {
        gauge(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            field(24).map(|pages| pages * page as f64),
        );
    }
    gauge(
        "process_threads",
        "gauge",
        "Threads of the process.",
        field(20),
    );
    let fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as f64);
    gauge("process_open_fds", "gauge", "Open file descriptors.", fds);
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse::<f64>().ok())
        });
    gauge(
        "process_max_fds",
        "gauge",
        "The soft limit on open file descriptors.",
        max_fds,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_one_per_name() {
        assert_eq!(label(b"plain/\xc3\xa9"), "plain/\u{e9}");
        assert_eq!(label(b"q\"uote"), "q\\\"uote");
        assert_eq!(label(b"a\nb"), "a\\\\x0Ab");
        assert_eq!(label(b"\xff"), "\\\\xFF");
        assert_ne!(label(b"\xff"), label(b"\\xFF"));
    }
}
