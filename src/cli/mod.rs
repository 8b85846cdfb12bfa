//! Command-line plumbing shared by the `lockd` and `lockctl` binaries:
//! flags defined once in a table that feeds both getopts and `--help`, the
//! pidfile, the descriptor limit, and the kernel limits on threads and
//! memory maps.

pub mod daemon;
pub mod json;
pub mod lockctl;
pub mod run;
pub mod shell;

use std::fmt;
use std::time::Duration;

/// Whether a flag takes a value, and may repeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// A switch.
    Flag,
    /// Takes one value.
    Value,
    /// Takes a value and may be given more than once.
    Repeated,
}

/// One command-line flag: the single definition behind getopts, `--help`
/// and the test that keeps the man page in step.
#[derive(Clone, Copy, Debug)]
pub struct FlagSpec {
    /// One-letter form, or `""`.
    pub short: &'static str,
    /// Long form without the dashes.
    pub long: &'static str,
    /// Name of the value (`PATH`), or `""` for a switch.
    pub value: &'static str,
    /// Flag or value.
    pub arity: Arity,
    /// One line of help.
    pub help: &'static str,
}

/// `-h/--help`, common to both binaries.
pub const HELP_FLAG: FlagSpec = FlagSpec {
    short: "h",
    long: "help",
    value: "",
    arity: Arity::Flag,
    help: "print this help and exit",
};

/// `--version`, common to both binaries.
pub const VERSION_FLAG: FlagSpec = FlagSpec {
    short: "",
    long: "version",
    value: "",
    arity: Arity::Flag,
    help: "print the version and exit",
};

/// A command-line error: printed as one line, exit status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Builds getopts options from a flag table.
pub fn options(flags: &[FlagSpec]) -> getopts::Options {
    let mut opts = getopts::Options::new();
    for f in flags {
        match f.arity {
            Arity::Flag => opts.optflag(f.short, f.long, f.help),
            Arity::Value => opts.optopt(f.short, f.long, f.help, f.value),
            Arity::Repeated => opts.optmulti(f.short, f.long, f.help, f.value),
        };
    }
    opts
}

/// Renders the option list of `--help` from a flag table.
pub fn render_flags(flags: &[FlagSpec]) -> String {
    let mut rows = Vec::new();
    for f in flags {
        let mut left = if f.short.is_empty() {
            format!("    --{}", f.long)
        } else {
            format!("-{}, --{}", f.short, f.long)
        };
        if !f.value.is_empty() {
            left.push(' ');
            left.push_str(f.value);
        }
        rows.push((left, f.help));
    }
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(left, help)| format!("  {left:width$}  {help}\n"))
        .collect()
}

/// Parses a number, with a message that names the flag.
///
/// # Errors
/// When `value` is not a number in range.
pub fn parse_number<T: std::str::FromStr>(
    flag: &str,
    value: &str,
    what: &str,
) -> Result<T, UsageError> {
    value.trim().parse().map_err(|_| {
        UsageError(format!(
            "invalid value {value:?} for {flag}: expected {what} (see --help)"
        ))
    })
}

/// Parses a duration: a number with a unit, `ms`, `s`, `m` or `h`
/// (`500ms`, `5s`, `1.5s`, `2m`, `1h`); a bare number is seconds.
///
/// # Errors
/// When `value` is not such a duration; the message names the flag.
pub fn parse_duration(flag: &str, value: &str) -> Result<Duration, UsageError> {
    let bad = || {
        UsageError(format!(
            "invalid value {value:?} for {flag}: expected a duration such as 500ms, 5s, 2m or 1h"
        ))
    };
    let text = value.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(bad());
    }
    let seconds_per_unit = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    let number: f64 = number.parse().map_err(|_| bad())?;
    Duration::try_from_secs_f64(number * seconds_per_unit).map_err(|_| bad())
}

/// Raises the open-files soft limit to the hard limit. Returns the limit
/// now in force.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct passed, which
    // lives across the calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    Ok(limit.rlim_cur)
}

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
    fn flag_tables_are_well_formed() {
        let tables = [
            daemon::FLAGS,
            lockctl::GLOBAL_FLAGS,
            lockctl::RUN_FLAGS,
            lockctl::JSON_FLAGS,
            lockctl::BENCH_FLAGS,
        ];
        for table in tables {
            let mut longs: Vec<&str> = table.iter().map(|f| f.long).collect();
            longs.sort();
            let before = longs.len();
            longs.dedup();
            assert_eq!(before, longs.len(), "duplicate long flag");
            for f in table {
                assert_eq!(f.value.is_empty(), f.arity == Arity::Flag, "{}", f.long);
                assert!(f.short.len() <= 1, "{}", f.long);
            }
        }
    }

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

    #[test]
    fn durations() {
        let ok = |text: &str| parse_duration("--wait", text).unwrap();
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("5s"), Duration::from_secs(5));
        assert_eq!(ok("5"), Duration::from_secs(5));
        assert_eq!(ok(" 2m "), Duration::from_secs(120));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("0"), Duration::ZERO);
        for bad in [
            "", "s", "-1s", "5x", "1.s", ".5s", "5 s", "1..2s", "nan", "inf", "5sm",
        ] {
            let e = parse_duration("--wait", bad).unwrap_err();
            assert!(e.0.contains("--wait"), "{bad:?}: {e}");
        }
    }
}
