//! The figures of a run: one [`Row`] per workload and target, printed as a
//! table while the run goes and written as TSV for `scripts/chart.py`.

use super::Workload;
use std::fmt;
use std::io::{self, Write};
use std::time::Duration;

/// Which server a row measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The lock server.
    Lockd,
    /// The do-nothing echo server: the ceiling.
    Echo,
    /// The lock server driven through `lockd::Client` (W1 and W2 only):
    /// the client library's overhead over the raw generator.
    Client,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Target::Lockd => "lockd",
            Target::Echo => "echo",
            Target::Client => "client",
        })
    }
}

/// The machine a run measured.
#[derive(Clone, Debug)]
pub struct Machine {
    /// CPUs this process may use.
    pub cpus: usize,
    /// `model name` of `/proc/cpuinfo`.
    pub cpu_model: String,
    /// The kernel release.
    pub kernel: String,
}

impl Machine {
    /// Reads the machine's description from `/proc`.
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown CPU".to_string(), |(_, m)| m.trim().to_string());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_string(), |k| k.trim().to_string());
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel,
        }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} CPUs, {}, Linux {}",
            self.cpus, self.cpu_model, self.kernel
        )
    }
}

/// One workload measured against one target.
#[derive(Clone, Debug)]
pub struct Row {
    /// Which workload.
    pub workload: Workload,
    /// Which server.
    pub target: Target,
    /// Client connections used.
    pub connections: usize,
    /// The figure: ops/s, grants/s, connections/s, or bytes of RSS per
    /// connection for W6 (see [`unit`](Self::unit)); `None` when it could
    /// not be measured (W6 of a remote server without its pid).
    pub rate: Option<f64>,
    /// What [`rate`](Self::rate) counts: `ops/s`, `grants/s`, `conns/s`,
    /// `B/conn`.
    pub unit: &'static str,
    /// Median latency of an op (W3: of a whole batch; W4: of a wait).
    pub p50: Option<Duration>,
    /// 99th percentile latency.
    pub p99: Option<Duration>,
    /// 99.9th percentile latency.
    pub p999: Option<Duration>,
    /// lockd's figure over the echo ceiling's for the same workload (W6: a
    /// cost ratio, lower is better); on lockd rows. On client rows: the
    /// figure over the raw generator's against lockd.
    pub ratio: Option<f64>,
    /// Further figures and what the checks saw.
    pub notes: String,
}

/// Every figure of a run.
#[derive(Clone, Debug)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// One per workload and target, in the order measured.
    pub rows: Vec<Row>,
}

impl Report {
    /// Writes the rows as tab-separated values with a header line
    /// (latencies in microseconds, empty when unknown).
    ///
    /// # Errors
    /// Errors of `w`.
    pub fn write_tsv(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(w, "# {}", self.machine)?;
        writeln!(
            w,
            "workload\ttarget\tconnections\trate\tunit\tp50_us\tp99_us\tp999_us\tratio\tnotes"
        )?;
        let us = |d: Option<Duration>| d.map_or(String::new(), |d| format!("{:.1}", micros(d)));
        for r in &self.rows {
            writeln!(
                w,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                r.workload,
                r.target,
                r.connections,
                r.rate.map_or(String::new(), |v| format!("{v:.0}")),
                r.unit,
                us(r.p50),
                us(r.p99),
                us(r.p999),
                r.ratio.map_or(String::new(), |v| format!("{v:.3}")),
                r.notes.replace(['\t', '\n'], " ")
            )?;
        }
        Ok(())
    }
}

impl Report {
    /// Every figure as one JSON object (`lockctl bench --json`): the
    /// machine, then one object per row, latencies in microseconds.
    pub fn to_json(&self) -> serde_json::Value {
        let us = |d: Option<Duration>| d.map(micros);
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "workload": r.workload.name(),
                    "target": r.target.to_string(),
                    "connections": r.connections,
                    "rate": r.rate,
                    "unit": r.unit,
                    "p50_us": us(r.p50),
                    "p99_us": us(r.p99),
                    "p999_us": us(r.p999),
                    "ratio": r.ratio,
                    "notes": r.notes,
                })
            })
            .collect();
        serde_json::json!({
            "machine": {
                "cpus": self.machine.cpus,
                "cpu_model": self.machine.cpu_model,
                "kernel": self.machine.kernel,
            },
            "rows": rows,
        })
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The table header that [`table_line`] fills.
pub(crate) fn table_header() -> String {
    format!(
        "{:<4} {:<6} {:>6} {:>12} {:<8} {:>9} {:>9} {:>9} {:>7}  notes",
        "", "target", "conns", "rate", "unit", "p50", "p99", "p99.9", "vs echo"
    )
}

/// One row as a line of the printed table.
pub(crate) fn table_line(r: &Row) -> String {
    let lat = |d: Option<Duration>| d.map_or_else(|| "-".to_string(), human);
    format!(
        "{:<4} {:<6} {:>6} {:>12} {:<8} {:>9} {:>9} {:>9} {:>7}  {}",
        r.workload.name(),
        r.target.to_string(),
        r.connections,
        r.rate.map_or_else(|| "-".to_string(), thousands),
        r.unit,
        lat(r.p50),
        lat(r.p99),
        lat(r.p999),
        r.ratio.map_or_else(String::new, |v| format!("{v:.2}")),
        r.notes
    )
}

/// `12,345,678`.
pub(crate) fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `850ns`, `12.3µs`, `4.56ms`, `1.20s`.
pub(crate) fn human(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2}ms", ns as f64 / 1e6)
    } else {
        format!("{:.2}s", ns as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(human(Duration::from_nanos(850)), "850ns");
        assert_eq!(human(Duration::from_nanos(12_345)), "12.3µs");
        assert_eq!(human(Duration::from_micros(4_560)), "4.56ms");
    }
}
