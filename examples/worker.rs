//! A worker that runs one job at a time across processes and machines.
//!
//! Start a server (`lockd --listen 127.0.0.1:9999`), then several workers:
//!
//! ```text
//! cargo run --example worker -- 127.0.0.1:9999 nightly-report &
//! cargo run --example worker -- 127.0.0.1:9999 nightly-report &
//! ```
//!
//! They queue for the lock first come, first served and take turns. Each
//! passes the lock's fencing token to what it writes, so a store can
//! refuse a worker whose lock was lost, and each stops at once if its
//! connection (and so its lock) goes away.

use lockd::Client;
use std::process::ExitCode;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

/// How long a worker waits in line before giving up.
const WAIT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("worker: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9999".into());
    let job = args.next().unwrap_or_else(|| "nightly-report".into());
    let me = std::process::id();

    let client = Client::connect(&addr)?;
    eprintln!("worker {me}: waiting for {job}");
    let Some(guard) = client.try_lock_for(&job, WAIT)? else {
        eprintln!("worker {me}: {job} stayed busy for {WAIT:?}; skipping this run");
        return Ok(());
    };
    let token = guard.token().unwrap_or_default();
    let lost = client.on_disconnect();

    for step in 1..=5 {
        // Between steps, stop at once if the lock is gone: someone else
        // may already be running the job.
        match lost.recv_timeout(Duration::from_millis(200)) {
            Err(RecvTimeoutError::Timeout) => {
                println!("worker {me}: {job} step {step}/5 (fencing token {token})");
            }
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                return Err(format!("lost {job} at step {step}; stopping").into());
            }
        }
    }
    guard.release()?;
    eprintln!("worker {me}: done with {job}");
    Ok(())
}
