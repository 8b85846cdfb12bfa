//! Hostile-client benchmark (issue 14): a spawned `lockd` holding many
//! locks is listed by one client that reads (`dj` after `dj`), then by
//! many that never read their `dj`, while a bystander times its `g` and
//! `r`. Prints the server's resident memory (from /proc, by PID) and the
//! bystander's slowest reply in each phase, with the same bystander on the
//! idle server as the baseline. A program, not a test: nothing here
//! asserts a time.
//!
//! ```text
//! cargo build --release --bin lockd
//! cargo run --release --example hostile_bench -- 1000000 40
//! ```
//!
//! Arguments: locks held (default 1,000,000) and non-reading clients
//! (default 40). `LOCKD` names the binary (default target/release/lockd).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let locks = args.next().transpose()?.unwrap_or(1_000_000);
    let clients = args.next().transpose()?.unwrap_or(40);
    let bin = std::env::var("LOCKD").unwrap_or_else(|_| "target/release/lockd".into());
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = Command::new(&bin)
        .args(["--listen", &addr, "--no-state", "--max-locks", "0"])
        .args(["--max-locks-per-connection", "0", "--write-timeout", "30"])
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("{bin}: {e}"))?;
    let result = run(&server, &addr, locks, clients);
    let _ = Command::new("kill").arg(server.id().to_string()).status();
    let _ = server.wait();
    result
}

fn run(server: &Child, addr: &str, locks: usize, clients: usize) -> Result<()> {
    let pid = server.id();
    let started = Instant::now();
    let holder = loop {
        match TcpStream::connect(addr) {
            Ok(stream) => break stream,
            Err(_) if started.elapsed() < Duration::from_secs(10) => {
                thread::sleep(Duration::from_millis(20))
            }
            Err(e) => return Err(e.into()),
        }
    };
    let empty = rss_mb(pid)?;
    fill(&holder, locks)?;
    let table = rss_mb(pid)?;
    println!("lockd {pid}: {empty} MB empty, {table} MB holding {locks} locks");

    let idle = bystander(addr, Duration::from_secs(2), &AtomicBool::new(false))?;
    println!("bystander, idle server: {idle}");

    // Phase 1: one client lists the whole table again and again, reading.
    let stop = Arc::new(AtomicBool::new(false));
    let lister = {
        let (addr, stop) = (addr.to_string(), Arc::clone(&stop));
        thread::spawn(move || -> std::io::Result<(usize, Duration, usize)> {
            let stream = TcpStream::connect(&addr)?;
            let mut reader = BufReader::with_capacity(1 << 20, stream.try_clone()?);
            let (mut count, mut slowest, mut bytes) = (0, Duration::ZERO, 0);
            let mut line = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                (&stream).write_all(b"dj\n")?;
                line.clear();
                bytes = reader.read_until(b'\n', &mut line)?;
                slowest = slowest.max(t.elapsed());
                count += 1;
            }
            Ok((count, slowest, bytes))
        })
    };
    let during = bystander(addr, Duration::from_secs(8), &stop)?;
    let (count, slowest, bytes) = lister.join().map_err(|_| "lister panicked")??;
    println!(
        "bystander during {count} dj listings ({} MB each, slowest {} ms): {during}",
        bytes >> 20,
        slowest.as_millis()
    );

    // Phase 2: many clients ask for dj and never read a byte of it.
    let mut silent = Vec::new();
    for _ in 0..clients {
        let stream = TcpStream::connect(addr)?;
        (&stream).write_all(b"dj\n")?;
        silent.push(stream);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(rss_mb(pid).unwrap_or(0));
                thread::sleep(Duration::from_millis(50));
            }
            peak
        })
    };
    let stalled = bystander(addr, Duration::from_secs(10), &AtomicBool::new(false))?;
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().map_err(|_| "sampler panicked")?;
    println!(
        "bystander with {clients} non-reading dj clients: {stalled}; \
         lockd peak {peak} MB ({} MB above the table)",
        peak.saturating_sub(table)
    );
    drop(silent);
    thread::sleep(Duration::from_secs(2));
    println!("2 s after they closed: {} MB", rss_mb(pid)?);
    let t = Instant::now();
    let _ = Command::new("kill").arg(pid.to_string()).status();
    while rss_mb(pid).is_ok() && t.elapsed() < Duration::from_secs(30) {
        thread::sleep(Duration::from_millis(10));
    }
    println!("SIGTERM to exit: {} ms", t.elapsed().as_millis());
    Ok(())
}

/// Takes `locks` distinct locks on `stream`, pipelined.
fn fill(stream: &TcpStream, locks: usize) -> Result<()> {
    let writer = {
        let mut stream = stream.try_clone()?;
        thread::spawn(move || -> std::io::Result<()> {
            let mut batch = Vec::with_capacity(1 << 20);
            for i in 0..locks {
                writeln!(batch, "g lock-{i:09}")?;
                if batch.len() >= 1 << 20 {
                    stream.write_all(&batch)?;
                    batch.clear();
                }
            }
            stream.write_all(&batch)
        })
    };
    let mut reader = BufReader::with_capacity(1 << 20, stream.try_clone()?);
    let mut line = String::new();
    for _ in 0..locks {
        line.clear();
        reader.read_line(&mut line)?;
        if !line.starts_with('1') {
            return Err(format!("g refused: {line}").into());
        }
    }
    writer.join().map_err(|_| "writer panicked")??;
    Ok(())
}

/// The bystander's `g` and `r` latencies over `time` (or until `stop`).
struct Latency {
    replies: usize,
    p99: Duration,
    max: Duration,
    /// When the slowest reply came, from the start.
    max_at: Duration,
    /// Replies slower than 50 ms: a loaded machine's stray delays show
    /// as a few; a server that stalls its clients, as many.
    over_50ms: usize,
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} replies, p99 {:.2} ms, max {:.2} ms (at {:.1} s), {} over 50 ms",
            self.replies,
            self.p99.as_secs_f64() * 1e3,
            self.max.as_secs_f64() * 1e3,
            self.max_at.as_secs_f64(),
            self.over_50ms
        )
    }
}

fn bystander(addr: &str, time: Duration, stop: &AtomicBool) -> Result<Latency> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut times = Vec::new();
    let mut line = String::new();
    let started = Instant::now();
    while started.elapsed() < time {
        for command in [&b"g bystander\n"[..], b"r bystander\n"] {
            let t = Instant::now();
            (&stream).write_all(command)?;
            line.clear();
            reader.read_line(&mut line)?;
            times.push((t.elapsed(), started.elapsed()));
            if !line.starts_with('1') {
                return Err(format!("bystander refused: {line}").into());
            }
        }
        thread::sleep(Duration::from_millis(2));
    }
    stop.store(true, Ordering::Relaxed);
    times.sort();
    let (max, max_at) = times[times.len() - 1];
    Ok(Latency {
        replies: times.len(),
        p99: times[times.len() * 99 / 100].0,
        max,
        max_at,
        over_50ms: times
            .iter()
            .filter(|(t, _)| *t > Duration::from_millis(50))
            .count(),
    })
}

/// The resident set of process `pid`, in MB.
fn rss_mb(pid: u32) -> Result<u64> {
    let mut status = String::new();
    std::fs::File::open(format!("/proc/{pid}/status"))?.read_to_string(&mut status)?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or("no VmRSS")?;
    Ok(kb / 1024)
}
