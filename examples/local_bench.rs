//! Local mode against flock, all in one run (issue 12). Only the ratios of
//! one run compare: the machine may be shared and noisy.
//!
//! ```sh
//! cargo build --release --bins --examples
//! target/release/examples/local_bench [SECONDS] [CLI_RUNS]
//! ```
//!
//! - W1: one client takes and releases one lock in a loop: `flock(2)` on a
//!   file, against `lockd::local` through a socket path.
//! - W4: 16 threads contend for one lock, each with its own descriptor or
//!   its own connection; every grant is a hand-off.
//! - CLI: a command run under a lock, `flock FILE true` against
//!   `lockctl run --local PATH NAME -- true`, one after another.
//!
//! It checks exclusion as it goes (a counter that two holders would
//! break) and never judges a speed.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONTENDERS: usize = 16;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let secs: f64 = args.next().map_or(Ok(3.0), |a| a.parse())?;
    let cli_runs: u32 = args.next().map_or(Ok(200), |a| a.parse())?;
    let period = Duration::from_secs_f64(secs);
    let dir = std::env::temp_dir().join(format!("lockd-local-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let file = dir.join("flock-target");
    let socket = dir.join("bench.sock");
    let client = lockd::local::open(&socket)?;

    println!(
        "{:<4} {:>16} {:>16} {:>8}",
        "", "flock", "lockd --local", "ratio"
    );
    let w1_flock = rate(period, |stop| {
        let f = open(&file)?;
        let mut n = 0u64;
        while !stop() {
            f.lock()?;
            f.unlock()?;
            n += 1;
        }
        Ok(n)
    })?;
    let w1_local = rate(period, |stop| {
        let mut n = 0u64;
        while !stop() {
            drop(client.lock("w1")?);
            n += 1;
        }
        Ok(n)
    })?;
    row("W1", w1_flock, w1_local, "ops/s");

    let w4_flock = contend(period, |_| {
        let f = open(&file)?;
        Ok(Box::new(move || {
            f.lock()?;
            Ok(Box::new(UnlockOnDrop(f.try_clone()?)) as Box<dyn Send>)
        }))
    })?;
    let w4_local = contend(period, |_| {
        let client = lockd::local::open(&socket)?;
        Ok(Box::new(move || {
            Ok(Box::new(client.lock("w4")?) as Box<dyn Send>)
        }))
    })?;
    row("W4", w4_flock, w4_local, "grants/s");

    let lockctl = sibling("lockctl")?;
    let flock = cli_rate(cli_runs, || {
        Command::new("flock").arg(&file).arg("true").status()
    })?;
    let local = cli_rate(cli_runs, || {
        Command::new(&lockctl)
            .args(["run", "--local"])
            .arg(&socket)
            .args(["cli", "--", "true"])
            .status()
    })?;
    row("CLI", flock, local, "runs/s");
    drop(client);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
}

struct UnlockOnDrop(File);

impl Drop for UnlockOnDrop {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Operations per second of one loop that runs until `stop` says so.
fn rate(period: Duration, body: impl FnOnce(&dyn Fn() -> bool) -> Result<u64>) -> Result<f64> {
    let start = Instant::now();
    let n = body(&|| start.elapsed() >= period)?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

type Take = Box<dyn FnMut() -> Result<Box<dyn Send>> + Send>;

/// Grants per second among `CONTENDERS` threads that each take the lock
/// (through `make(i)`'s taker), bump a counter that two holders would
/// break, and let go.
fn contend(period: Duration, make: impl Fn(usize) -> Result<Take>) -> Result<f64> {
    let inside = Arc::new(AtomicBool::new(false));
    let grants = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..CONTENDERS)
        .map(|i| {
            let mut take = make(i)?;
            let (inside, grants) = (Arc::clone(&inside), Arc::clone(&grants));
            Ok(std::thread::spawn(move || -> Result<()> {
                while start.elapsed() < period {
                    let held = take()?;
                    if inside.swap(true, Ordering::SeqCst) {
                        return Err("two holders at once".into());
                    }
                    grants.fetch_add(1, Ordering::Relaxed);
                    inside.store(false, Ordering::SeqCst);
                    drop(held);
                }
                Ok(())
            }))
        })
        .collect::<Result<_>>()?;
    for thread in threads {
        thread.join().map_err(|_| "a contender panicked")??;
    }
    Ok(grants.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// Runs per second of a command, one after another.
fn cli_rate(runs: u32, run: impl Fn() -> std::io::Result<std::process::ExitStatus>) -> Result<f64> {
    let start = Instant::now();
    for _ in 0..runs {
        let status = run()?;
        if !status.success() {
            return Err(format!("a run failed: {status}").into());
        }
    }
    Ok(f64::from(runs) / start.elapsed().as_secs_f64())
}

/// A binary built beside this example (`target/release/lockctl`).
fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot find the target directory")?;
    let path = dir.join(name);
    if !path.exists() {
        return Err(format!(
            "{} is missing: cargo build --release --bins",
            path.display()
        )
        .into());
    }
    Ok(path)
}

fn row(name: &str, flock: f64, local: f64, unit: &str) {
    println!(
        "{name:<4} {flock:>16.0} {local:>16.0} {:>8.2}  {unit}",
        local / flock
    );
}
