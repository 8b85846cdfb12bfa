//! What the two cluster benchmarks (`cluster_bench`, `etcd_recipe_bench`)
//! share: their command line and their report, so the two sides of one
//! comparison parse and count alike.

use std::process::ExitCode;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `TARGETS W1|W2|W4 CLIENTS SECONDS`.
pub struct Args {
    /// The comma-separated servers or etcd endpoints.
    pub targets: Vec<String>,
    pub workload: String,
    /// W4 (every client on one lock) rather than W1/W2 (a lock each; W1
    /// is W2's loop on one connection).
    pub contended: bool,
    pub clients: usize,
    pub seconds: u64,
}

/// Parses the command line, or says what is wrong (exit 2).
pub fn args(usage: &str) -> Result<Args, ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage_error = |why: &str| {
        eprintln!("{why}\nusage: {usage}");
        ExitCode::from(2)
    };
    let [targets, workload, clients, seconds] = &args[..] else {
        return Err(usage_error("four arguments are needed"));
    };
    let (Ok(clients), Ok(seconds)) = (clients.parse::<usize>(), seconds.parse::<u64>()) else {
        return Err(usage_error("CLIENTS and SECONDS are numbers"));
    };
    let contended = match workload.as_str() {
        "W1" | "W2" => false,
        "W4" => true,
        _ => return Err(usage_error("the workload is W1, W2 or W4")),
    };
    Ok(Args {
        targets: targets.split(',').map(str::to_string).collect(),
        workload: workload.clone(),
        contended,
        clients,
        seconds,
    })
}

/// Joins the clients (each returns the time of every counted operation)
/// and prints one line, `LABEL: N clients, R ops/s, p50 .., p99 .., ops N`,
/// which `scripts/cluster-bench.sh` reads.
pub fn report<E: std::fmt::Display>(
    label: &str,
    clients: usize,
    threads: Vec<JoinHandle<Result<Vec<Duration>, E>>>,
    start: Instant,
) -> ExitCode {
    let mut latencies = Vec::new();
    for thread in threads {
        match thread.join() {
            Ok(Ok(mut l)) => latencies.append(&mut l),
            Ok(Err(e)) => {
                eprintln!("{label}: {e}");
                return ExitCode::from(1);
            }
            Err(_) => return ExitCode::from(1),
        }
    }
    let elapsed = start.elapsed();
    latencies.sort();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "{label}: {clients} clients, {:.0} ops/s, p50 {:?}, p99 {:?}, ops {}",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pick(0.50),
        pick(0.99),
        latencies.len()
    );
    ExitCode::SUCCESS
}
