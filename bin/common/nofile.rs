//! The open-files limit, raised by both binaries (the daemon for its
//! connections, `lockctl bench` for its load) and by tests/faults.rs and
//! tests/rwlock.rs; included with `#[path]`.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Raises the open-files soft limit to the hard limit. Returns the limit
/// now in force (`u64::MAX` for none). (getrlimit(2) of the calling
/// process cannot fail.)
pub fn raise_nofile_limit() -> u64 {
    let limit = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    let now = if limit.current != limit.maximum && setrlimit(Resource::Nofile, raised).is_ok() {
        limit.maximum
    } else {
        limit.current
    };
    now.unwrap_or(u64::MAX)
}
