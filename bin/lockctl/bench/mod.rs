//! The benchmark behind `lockctl bench`: a load generator that drives a
//! lockd server (an in-process one on `127.0.0.1:0` by default, or any
//! server by address) through six workloads, and drives a do-nothing line
//! echo server of the same shape (see [`echo`]) with the same generator in
//! the same run, so every figure comes with its ratio to that ceiling.
//!
//! It checks correctness as it goes (never two holders of a lock, fencing
//! tokens that only grow, first come first served, every orphan freed) and
//! never asserts a speed: a failed check is printed and makes [`run`]
//! return [`BenchError::Check`]; slow figures are only figures.
//! tests/bench.rs runs it through `lockctl bench`.
//!
//! The generator is lean so that it is not the bottleneck: a thread per
//! connection, commands formatted once before the clock starts, replies
//! read through a buffered reader into a reused buffer, latencies into a
//! fixed histogram; nothing is allocated per command.

pub mod echo;
mod hist;
mod report;
mod workloads;

pub use report::Report;

use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// One workload of the benchmark. An op is one command and its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workload {
    /// One connection, `g NAME` then `r NAME`, request/response.
    W1,
    /// [`BenchOptions::connections`] connections at once, each doing
    /// get/release on its own name.
    W2,
    /// 20,000 pipelined commands (10,000 get/release pairs) written at once
    /// on one connection; ops/s = commands / elapsed.
    W3,
    /// [`BenchOptions::contenders`] protocol-2 connections queueing for one
    /// lock with `wg`: grants/s, first come first served, one holder at a
    /// time, fencing tokens that grow.
    W4,
    /// Connect, take 10 locks, close: connections/s; every orphan freed;
    /// the time from a holder's close until another client gets its lock.
    W5,
    /// [`BenchOptions::idle_connections`] idle connections, each holding a
    /// lock: server memory (RSS) per connection.
    W6,
}

impl Workload {
    /// Every workload, in order.
    pub const ALL: [Workload; 6] = [
        Workload::W1,
        Workload::W2,
        Workload::W3,
        Workload::W4,
        Workload::W5,
        Workload::W6,
    ];

    /// `W1` … `W6`.
    pub fn name(self) -> &'static str {
        match self {
            Workload::W1 => "W1",
            Workload::W2 => "W2",
            Workload::W3 => "W3",
            Workload::W4 => "W4",
            Workload::W5 => "W5",
            Workload::W6 => "W6",
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workload {
    type Err = BenchError;

    /// `W1` … `W6` (or `w1`, `1`).
    fn from_str(s: &str) -> Result<Workload, BenchError> {
        let digits = s.trim().trim_start_matches(['W', 'w']);
        match digits {
            "1" => Ok(Workload::W1),
            "2" => Ok(Workload::W2),
            "3" => Ok(Workload::W3),
            "4" => Ok(Workload::W4),
            "5" => Ok(Workload::W5),
            "6" => Ok(Workload::W6),
            _ => Err(BenchError::Usage(format!(
                "unknown workload {s:?}: give W1 to W6, comma-separated"
            ))),
        }
    }
}

/// Parses a comma-separated list of workloads (`W1,W3`), or `all`.
///
/// # Errors
/// [`BenchError::Usage`] naming the unknown workload.
pub fn parse_workloads(s: &str) -> Result<Vec<Workload>, BenchError> {
    if s.trim() == "all" {
        return Ok(Workload::ALL.to_vec());
    }
    s.split(',')
        .filter(|w| !w.trim().is_empty())
        .map(str::parse)
        .collect()
}

/// What to run. Start from `BenchOptions::default()` and set fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BenchOptions {
    /// The server to measure, `HOST:PORT`; `None` starts an in-process
    /// lockd on `127.0.0.1:0` (default).
    pub server: Option<String>,
    /// Which workloads, in order. Default: all six.
    pub workloads: Vec<Workload>,
    /// How long each timed workload runs, per target, over all its rounds.
    /// Default 3 s.
    pub duration: Duration,
    /// Each timed workload runs in this many rounds of `duration / rounds`,
    /// the targets taking turns, so that a change of load on the machine
    /// hits both alike. Default 3.
    pub rounds: usize,
    /// W2: connections at once. Default 64.
    pub connections: usize,
    /// W4: connections queueing for the one lock. Default 16.
    pub contenders: usize,
    /// W5: client threads connecting and closing at once. Default 4.
    pub churners: usize,
    /// W5: samples of the release latency (holder closes, another client
    /// takes the lock). Default 200.
    pub release_samples: usize,
    /// W6: idle connections, each holding a lock. Default 1,000 (the issue's
    /// target is 19,000).
    pub idle_connections: usize,
    /// Measure the echo ceiling too. Default true.
    pub echo: bool,
    /// W6 without [`server`](Self::server): the `lockd` binary to start as a
    /// child, so that its RSS is the server's alone. `None` looks next to
    /// the running executable (and one directory up, for `examples/`);
    /// when there is none, W6 measures an in-process server with the
    /// benchmark's own RSS.
    pub lockd_binary: Option<PathBuf>,
    /// W6 with [`server`](Self::server): the server's process id on this
    /// host, to read its RSS from `/proc`. Without it W6 reports no RSS.
    pub server_pid: Option<u32>,
}

impl Default for BenchOptions {
    fn default() -> BenchOptions {
        BenchOptions {
            server: None,
            workloads: Workload::ALL.to_vec(),
            duration: Duration::from_secs(3),
            rounds: 3,
            connections: 64,
            contenders: 16,
            churners: 4,
            release_samples: 200,
            idle_connections: 1000,
            echo: true,
            lockd_binary: None,
            server_pid: None,
        }
    }
}

/// Why the benchmark stopped or failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum BenchError {
    /// A socket, process or file operation failed.
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: io::Error,
    },
    /// A correctness check failed: the server misbehaved.
    Check {
        /// In which workload.
        workload: Workload,
        /// What was wrong.
        problem: String,
    },
    /// The in-process server could not start.
    Server(lockd::Error),
    /// Bad options.
    Usage(String),
}

impl BenchError {
    /// True when the server failed a correctness check (as opposed to the
    /// benchmark failing to run).
    pub fn is_check_failure(&self) -> bool {
        matches!(self, BenchError::Check { .. })
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> BenchError {
        BenchError::Io {
            context: context.into(),
            source,
        }
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Io { context, source } => write!(f, "{context}: {source}"),
            BenchError::Check { workload, problem } => {
                write!(f, "check failed in {workload}: {problem}")
            }
            BenchError::Server(e) => write!(f, "cannot start the in-process server: {e}"),
            BenchError::Usage(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for BenchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BenchError::Io { source, .. } => Some(source),
            BenchError::Server(e) => Some(e),
            _ => None,
        }
    }
}

/// Runs the workloads of `opts`, printing a line per target and workload
/// to `out` as it goes, and returns every figure.
///
/// Each workload runs first against the echo ceiling (unless
/// [`BenchOptions::echo`] is off), then against lockd. A failed
/// correctness check is printed, the remaining workloads still run, and
/// the first failure is returned at the end.
///
/// # Errors
/// [`BenchError::Check`] when the server failed a check; otherwise the
/// benchmark could not run (server unreachable, out of descriptors, …).
pub fn run(opts: &BenchOptions, out: &mut dyn Write) -> Result<Report, BenchError> {
    workloads::run(opts, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_workloads() {
        assert_eq!(
            parse_workloads("W1,w3, 6").unwrap(),
            vec![Workload::W1, Workload::W3, Workload::W6]
        );
        assert_eq!(parse_workloads("all").unwrap().len(), 6);
        assert!(parse_workloads("W7").is_err());
    }
}
