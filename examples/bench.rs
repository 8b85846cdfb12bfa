//! Temporary driver for the benchmark library (`lockd::bench`) until
//! `lockctl bench` replaces it:
//!
//! ```text
//! cargo run --release --example bench -- [--server ADDR] [--workloads W1,W2]
//!     [--duration 3s] [--rounds 3] [--connections 64] [--contenders 16] [--churners 4]
//!     [--idle 1000] [--server-pid PID] [--lockd PATH] [--no-echo] [--tsv PATH]
//! ```

use lockd::bench::{self, BenchOptions};
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::from(1)
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut opts = BenchOptions::default();
    let mut tsv = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => opts.server = Some(value()?),
            "--workloads" => opts.workloads = bench::parse_workloads(&value()?)?,
            "--duration" => opts.duration = bench::parse_duration(&value()?)?,
            "--rounds" => opts.rounds = value()?.parse()?,
            "--connections" => opts.connections = value()?.parse()?,
            "--contenders" => opts.contenders = value()?.parse()?,
            "--churners" => opts.churners = value()?.parse()?,
            "--idle" => opts.idle_connections = value()?.parse()?,
            "--server-pid" => opts.server_pid = Some(value()?.parse()?),
            "--lockd" => opts.lockd_binary = Some(value()?.into()),
            "--no-echo" => opts.echo = false,
            "--tsv" => tsv = Some(value()?),
            _ => return Err(format!("unknown flag {flag} (see examples/bench.rs)").into()),
        }
    }
    let report = bench::run(&opts, &mut std::io::stdout())?;
    if let Some(path) = tsv {
        let mut file = std::fs::File::create(&path)?;
        report.write_tsv(&mut file)?;
        eprintln!("bench: figures written to {path}");
    }
    Ok(())
}
