//! The counters behind `q`: lock-free atomics, bumped outside the table lock.

use crate::protocol::Verb;
use crate::store::Counts;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Server-wide counters.
#[derive(Debug)]
pub struct Stats {
    commands: [AtomicU64; Verb::ALL.len()],
    /// Live connections over all transports.
    pub connections: AtomicU64,
    /// Unknown verbs and over-long lines.
    pub invalid_commands: AtomicU64,
    /// Exclusive locks released by a disconnect.
    pub orphans: AtomicU64,
    /// Shared locks released by a disconnect.
    pub shared_orphans: AtomicU64,
    /// `wg`/`wsg` that ended without the lock.
    pub wait_timeouts: AtomicU64,
    /// `wg` refused because it would close a cycle.
    pub deadlocks: AtomicU64,
    /// Connections refused past the connection limit.
    pub rejected_connections: AtomicU64,
    /// Lines over the line limit.
    pub lines_too_long: AtomicU64,
    /// Connections closed because their `ttl` lease ran out.
    pub ttl_expirations: AtomicU64,
    /// `auth` attempts with a wrong secret.
    pub auth_failures: AtomicU64,
    /// When a failed `auth` was last logged, in seconds since `started`
    /// plus one (0: never).
    pub auth_failure_logged: AtomicU64,
    /// When a failed lock-store call was last logged, likewise.
    pub store_failure_logged: AtomicU64,
    started: Instant,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            commands: std::array::from_fn(|_| AtomicU64::new(0)),
            connections: AtomicU64::new(0),
            invalid_commands: AtomicU64::new(0),
            orphans: AtomicU64::new(0),
            shared_orphans: AtomicU64::new(0),
            wait_timeouts: AtomicU64::new(0),
            deadlocks: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            lines_too_long: AtomicU64::new(0),
            ttl_expirations: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            auth_failure_logged: AtomicU64::new(0),
            store_failure_logged: AtomicU64::new(0),
            started: Instant::now(),
        }
    }
}

/// Adds one to a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

impl Stats {
    /// Counts one recognised command.
    pub fn count_command(&self, verb: Verb) {
        bump(&self.commands[verb.index()]);
    }

    /// Whether an event whose last log time is kept in `last` may be
    /// logged now: at most once a second (and notes the time if so).
    pub fn log_allowed(&self, last: &AtomicU64) -> bool {
        let now = self.started.elapsed().as_secs() + 1;
        let before = last.load(Relaxed);
        before != now && last.compare_exchange(before, now, Relaxed, Relaxed).is_ok()
    }

    /// How many times `verb` was received.
    pub fn commands(&self, verb: Verb) -> u64 {
        self.commands[verb.index()].load(Relaxed)
    }

    /// The `q` reply's `key: value` pairs, sorted bytewise by key: the 19
    /// classic keys, plus the extended ones when `extended`.
    pub fn report(
        &self,
        counts: Counts,
        max_connections: usize,
        extended: bool,
    ) -> Vec<(String, u64)> {
        let load = |c: &AtomicU64| c.load(Relaxed);
        let mut pairs: Vec<(String, u64)> = Verb::ALL
            .iter()
            .filter(|v| extended || v.is_classic())
            .map(|v| (format!("command_{}", v.as_str()), self.commands(*v)))
            .collect();
        pairs.extend([
            ("connections".to_string(), load(&self.connections)),
            ("invalid_commands".to_string(), load(&self.invalid_commands)),
            ("locks".to_string(), counts.locks as u64),
            ("orphans".to_string(), load(&self.orphans)),
            ("shared_locks".to_string(), counts.shared_locks as u64),
            ("shared_orphans".to_string(), load(&self.shared_orphans)),
        ]);
        if extended {
            pairs.extend([
                ("auth_failures".to_string(), load(&self.auth_failures)),
                ("deadlocks".to_string(), load(&self.deadlocks)),
                ("grants".to_string(), counts.grants),
                ("lines_too_long".to_string(), load(&self.lines_too_long)),
                ("max_connections".to_string(), max_connections as u64),
                ("refused_max_locks".to_string(), counts.refused.locks),
                (
                    "refused_max_locks_per_connection".to_string(),
                    counts.refused.locks_per_connection,
                ),
                ("refused_max_waiters".to_string(), counts.refused.waiters),
                ("read_locks".to_string(), counts.read_locks as u64),
                (
                    "rejected_connections".to_string(),
                    load(&self.rejected_connections),
                ),
                ("ttl_expirations".to_string(), load(&self.ttl_expirations)),
                (
                    "uptime_seconds".to_string(),
                    self.started.elapsed().as_secs(),
                ),
                ("wait_timeouts".to_string(), load(&self.wait_timeouts)),
                ("waiting".to_string(), counts.waiting as u64),
            ]);
        }
        pairs.sort();
        pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_report_has_exactly_the_19_keys() {
        let keys: Vec<String> = Stats::default()
            .report(Counts::default(), 10, false)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let expected =
            "command_d command_dump command_g command_i command_iam command_me command_q \
             command_r command_sd command_sg command_si command_sr command_who connections \
             invalid_commands locks orphans shared_locks shared_orphans";
        assert_eq!(keys.join(" "), expected);
    }
}
