//! What the server tells about itself and its connections: [`Stats`]
//! (`q`), [`Identity`] (`me`), [`Registration`] (`who`).

use crate::name::LockName;
use std::collections::BTreeMap;

/// What the server says about this connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The server's name for the connection: `IP:PORT` or `unix:N`.
    pub default: LockName,
    /// The registered name, or the default one again if none.
    pub name: LockName,
}

/// A connection with a registered name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The server's name for the connection: `IP:PORT` or `unix:N`.
    pub default: LockName,
    /// The name it registered.
    pub name: LockName,
}

/// The server's counters, by key, as `q` lists them. The keys every
/// server sends have getters; protocol 2 adds more (see
/// [`Stats::get`]), and the getters of those return `None` from a classic
/// server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    counters: BTreeMap<String, u64>,
}

impl Stats {
    pub(crate) fn new(counters: BTreeMap<String, u64>) -> Stats {
        Stats { counters }
    }

    /// A counter by key, if the server sent it.
    pub fn get(&self, key: &str) -> Option<u64> {
        self.counters.get(key).copied()
    }

    /// Every counter, keys sorted bytewise.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.counters.iter().map(|(k, &v)| (k.as_str(), v))
    }

    /// How many `VERB` commands the server has received (`command_VERB`;
    /// a `q` does not count itself).
    pub fn command(&self, verb: &str) -> Option<u64> {
        self.counters
            .iter()
            .find(|(k, _)| k.strip_prefix("command_") == Some(verb))
            .map(|(_, &v)| v)
    }

    fn classic(&self, key: &str) -> u64 {
        self.get(key).unwrap_or(0)
    }

    /// Live connections, over all transports.
    pub fn connections(&self) -> u64 {
        self.classic("connections")
    }

    /// Exclusive locks held now.
    pub fn locks(&self) -> u64 {
        self.classic("locks")
    }

    /// Shared locks held now.
    pub fn shared_locks(&self) -> u64 {
        self.classic("shared_locks")
    }

    /// Exclusive locks released because their holder disconnected.
    pub fn orphans(&self) -> u64 {
        self.classic("orphans")
    }

    /// Shared holds released because their holder disconnected.
    pub fn shared_orphans(&self) -> u64 {
        self.classic("shared_orphans")
    }

    /// Unknown verbs (and over-long lines) received.
    pub fn invalid_commands(&self) -> u64 {
        self.classic("invalid_commands")
    }

    /// Names read-held now (protocol 2).
    pub fn read_locks(&self) -> Option<u64> {
        self.get("read_locks")
    }

    /// Connections waiting in line now (protocol 2).
    pub fn waiting(&self) -> Option<u64> {
        self.get("waiting")
    }

    /// Waits that ended without the lock (protocol 2).
    pub fn wait_timeouts(&self) -> Option<u64> {
        self.get("wait_timeouts")
    }

    /// Waits refused because they would deadlock (protocol 2).
    pub fn deadlocks(&self) -> Option<u64> {
        self.get("deadlocks")
    }

    /// Exclusive grants, each with its fencing token (protocol 2).
    pub fn grants(&self) -> Option<u64> {
        self.get("grants")
    }

    /// Seconds since the server started (protocol 2).
    pub fn uptime_seconds(&self) -> Option<u64> {
        self.get("uptime_seconds")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getters_read_the_map() {
        let stats = Stats::new(
            [("command_g", 3), ("locks", 2), ("waiting", 1)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        );
        assert_eq!(stats.command("g"), Some(3));
        assert_eq!(stats.command("r"), None);
        assert_eq!(stats.locks(), 2);
        assert_eq!(stats.orphans(), 0);
        assert_eq!(stats.waiting(), Some(1));
        assert_eq!(stats.grants(), None);
        assert_eq!(stats.iter().count(), 3);
    }
}
