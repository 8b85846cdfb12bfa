//! The kernel's limits on threads and memory maps that cap a
//! thread-per-connection server, checked against --max-connections.

/// Memory maps (`/proc/PID/maps` lines, counted against
/// `vm.max_map_count`) that one connection costs: its thread's stack and
/// the stack's guard page, and the signal stack Rust's std gives every
/// thread (to report stack overflows) and its guard page. Measured: 4.03
/// per connection over 1,000 idle ones. std offers no way to drop either
/// guard or the signal stack.
pub const MAPS_PER_CONNECTION: u64 = 4;

/// Memory maps of the process besides its connections (binary, libraries,
/// heap arenas, the other threads), with room to spare: 49 at start.
pub const BASE_MAPS: u64 = 256;

/// Threads of the process besides its connections (main, signals, close
/// watcher, accept loops), with room to spare.
pub const BASE_THREADS: u64 = 16;

/// The kernel's system-wide limits that cap a thread-per-connection
/// server; `None` where unknown (not Linux, no `/proc`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLimits {
    /// `vm.max_map_count`: memory maps per process.
    pub max_map_count: Option<u64>,
    /// `kernel.threads-max`: threads on the whole system.
    pub threads_max: Option<u64>,
    /// `kernel.pid_max`: every thread takes a process id.
    pub pid_max: Option<u64>,
}

impl KernelLimits {
    /// Reads the limits from `/proc/sys`.
    pub fn read() -> KernelLimits {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|text| text.trim().parse().ok())
        };
        KernelLimits {
            max_map_count: read("/proc/sys/vm/max_map_count"),
            threads_max: read("/proc/sys/kernel/threads-max"),
            pid_max: read("/proc/sys/kernel/pid_max"),
        }
    }

    /// What stands in the way of `max_connections` connections, each a
    /// thread: one message per limit too low, saying what to do; empty when
    /// they fit (or the limits are unknown).
    pub fn capacity_warnings(&self, max_connections: usize) -> Vec<String> {
        let connections = max_connections as u64;
        let mut warnings = Vec::new();
        let maps = connections
            .saturating_mul(MAPS_PER_CONNECTION)
            .saturating_add(BASE_MAPS);
        if let Some(limit) = self.max_map_count.filter(|&limit| maps > limit) {
            let fits = limit.saturating_sub(BASE_MAPS) / MAPS_PER_CONNECTION;
            let suggest = maps.next_power_of_two().max(262_144);
            warnings.push(format!(
                "vm.max_map_count is {limit}, enough for about {fits} connections, not \
                 --max-connections {max_connections} ({MAPS_PER_CONNECTION} memory maps \
                 each): raise it (sysctl -w vm.max_map_count={suggest}, or install \
                 dist/sysctl.d/50-lockd.conf) or lower --max-connections"
            ));
        }
        let threads = connections.saturating_add(BASE_THREADS);
        for (name, limit) in [
            ("kernel.threads-max", self.threads_max),
            ("kernel.pid_max", self.pid_max),
        ] {
            if let Some(limit) = limit.filter(|&limit| threads > limit) {
                warnings.push(format!(
                    "{name} is {limit}, below --max-connections {max_connections} (a thread \
                     each): raise it (sysctl -w {name}={}) or lower --max-connections",
                    threads.next_power_of_two()
                ));
            }
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_warnings_name_the_limit_and_the_fix() {
        let here = KernelLimits {
            max_map_count: Some(65_530),
            threads_max: Some(192_730),
            pid_max: Some(32_768),
        };
        // (65,530 - 256) / 4 = 16,318 connections fit.
        assert!(here.capacity_warnings(10_000).is_empty());
        assert!(here.capacity_warnings(16_318).is_empty());
        let warnings = here.capacity_warnings(16_319);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("vm.max_map_count is 65530, enough for about 16318 connections, not --max-connections 16319"),
            "{}",
            warnings[0]
        );
        assert!(warnings[0].contains("sysctl -w vm.max_map_count=262144"));
        // 19,500 connections: 78,256 maps fit 262,144.
        let raised = KernelLimits {
            max_map_count: Some(262_144),
            ..here
        };
        assert!(raised.capacity_warnings(19_500).is_empty());
        // Past 65,472 connections the suggestion grows.
        let warnings = raised.capacity_warnings(70_000);
        assert!(
            warnings[0].contains("vm.max_map_count=524288"),
            "{warnings:?}"
        );
        assert!(warnings[1].starts_with("kernel.pid_max is 32768, below"));
        assert!(warnings[1].contains("sysctl -w kernel.pid_max=131072"));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        // Unknown limits warn of nothing.
        assert!(KernelLimits::default()
            .capacity_warnings(usize::MAX)
            .is_empty());
    }
}
