//! Mass disconnect benchmark (issue 17): N connections each hold a lock and
//! have sent part of a line, then all close at once. Prints how long until
//! the server has released every lock, and the slowest reply a bystander
//! got meanwhile (a `q` sent in a loop). A program, not a test: nothing
//! here asserts a time.
//!
//! ```text
//! cargo run --release --example mass_close -- 2000 10000
//! cargo run --release --example mass_close -- --log 2000 10000 2>/dev/null
//! ```
//!
//! With `--log` the server logs as the `lockd` daemon does (a line per
//! orphaned lock, on standard error): its cost is part of a real mass close.
//!
//! The server runs in this process; the N client ends are held by a child
//! (this program again, run as `mass_close --clients ADDR N`), so each
//! process needs about N descriptors, and 10,000 connections fit under a
//! limit of 20,000. The child closes its connections when told to on its
//! standard input, and says when its last `close` returned.

use lockd::{Server, ServerConfig, Shutdown};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, addr, n] = args.as_slice() {
        if flag == "--clients" {
            return clients(addr.parse()?, n.parse()?);
        }
    }
    if args.first().is_some_and(|a| a == "--log") {
        args.remove(0);
        lockd::log::install();
    }
    let sizes: Vec<usize> = match args.iter().map(|a| a.parse()).collect() {
        Ok(sizes) if !Vec::is_empty(&sizes) => sizes,
        Ok(_) => vec![2000, 10000],
        Err(e) => return Err(format!("usage: mass_close [--log] [N...]: {e}").into()),
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average before: {}", load.trim());
    println!(
        "{:>7} {:>12} {:>14} {:>14} {:>7} {:>10} {:>14}",
        "conns",
        "released_ms",
        "bystander_max",
        "bystander_p50",
        "q_sent",
        "closed_ms",
        "server_cpu_ms"
    );
    for n in sizes {
        let run = run(n)?;
        println!(
            "{n:>7} {:>12.1} {:>14.1} {:>14.2} {:>7} {:>10.1} {:>14.0}",
            ms(run.released),
            ms(run.worst),
            ms(run.median),
            run.probes,
            ms(run.closed),
            ms(run.cpu)
        );
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn locks(reply: &str) -> Option<u64> {
    reply
        .lines()
        .find_map(|l| l.strip_prefix("locks: "))
        .and_then(|v| v.parse().ok())
}

/// One `q` (protocol 1: 19 lines); the `locks` gauge.
fn stats(conn: &mut BufReader<TcpStream>) -> std::io::Result<Option<u64>> {
    conn.get_mut().write_all(b"q\n")?;
    let mut reply = String::new();
    for _ in 0..19 {
        conn.read_line(&mut reply)?;
    }
    Ok(locks(&reply))
}

/// CPU time this process (the server, and the bystander's few `q`) has
/// used, from `/proc/self/stat` in clock ticks of 10 ms.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|t| t.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// The child: opens `n` connections to `addr`, takes a lock on each and
/// sends part of a line, says `ready`; closes them all at the first line
/// on its standard input and says `closed` with how long the closes took;
/// ends at the end of its input.
fn clients(addr: SocketAddr, n: usize) -> Result<()> {
    let mut holders = Vec::with_capacity(n);
    for i in 0..n {
        let mut conn = BufReader::new(TcpStream::connect(addr)?);
        conn.get_mut()
            .write_all(format!("g lock{i}\n").as_bytes())?;
        holders.push(conn);
    }
    for conn in &mut holders {
        let mut reply = String::new();
        conn.read_line(&mut reply)?;
        if !reply.starts_with("1 ") {
            return Err(format!("not granted: {reply}").into());
        }
        conn.get_mut().write_all(b"i part")?;
    }
    let mut out = std::io::stdout();
    writeln!(out, "ready")?;
    out.flush()?;
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    stdin.read_line(&mut line)?;
    let start = Instant::now();
    drop(holders);
    writeln!(out, "closed {}", start.elapsed().as_micros())?;
    out.flush()?;
    while stdin.read_line(&mut line)? > 0 {}
    Ok(())
}

struct Run {
    released: Duration,
    worst: Duration,
    median: Duration,
    probes: usize,
    /// How long the child's closes took.
    closed: Duration,
    /// The server's CPU time from the closes to the last release.
    cpu: Duration,
}

/// The child process holding the client ends; killed (by PID) if left.
struct Clients {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Clients {
    fn start(addr: SocketAddr, n: usize) -> Result<Clients> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--clients", &addr.to_string(), &n.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("no pipes to the child".into());
        };
        Ok(Clients {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
        })
    }

    fn expect(&mut self, word: &str) -> Result<String> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        match line.trim_end().strip_prefix(word) {
            Some(rest) => Ok(rest.trim().to_string()),
            None => Err(format!("the child said {line:?}, not {word}").into()),
        }
    }

    fn tell(&mut self, word: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or("the child's input is closed")?;
        stdin.write_all(word.as_bytes())?;
        Ok(stdin.flush()?)
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(n: usize) -> Result<Run> {
    let mut config = ServerConfig::default();
    config.listen = vec!["127.0.0.1:0".into()];
    config.max_connections = n + 16;
    let handle = Server::bind(config)?.spawn()?;
    let addr = handle.local_addr().ok_or("no TCP address")?;
    let mut clients = Clients::start(addr, n)?;
    clients.expect("ready")?;
    let mut bystander = BufReader::new(TcpStream::connect(addr)?);
    if stats(&mut bystander)? != Some(n as u64) {
        return Err("the locks are not all held".into());
    }
    let done = Arc::new(AtomicBool::new(false));
    let probe_done = Arc::clone(&done);
    let probe = thread::spawn(move || -> std::io::Result<Vec<Duration>> {
        let mut times = Vec::new();
        while !probe_done.load(Ordering::Relaxed) {
            let start = Instant::now();
            stats(&mut bystander)?;
            times.push(start.elapsed());
        }
        Ok(times)
    });
    let mut watcher = BufReader::new(TcpStream::connect(addr)?);
    thread::sleep(Duration::from_millis(50));
    let cpu = cpu_time();
    let start = Instant::now();
    clients.tell("close\n")?;
    let released = loop {
        if stats(&mut watcher)? == Some(0) {
            break start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(120) {
            return Err("locks still held after 120 s".into());
        }
        thread::sleep(Duration::from_millis(1));
    };
    let cpu = cpu_time().saturating_sub(cpu);
    done.store(true, Ordering::Relaxed);
    let mut times = probe.join().map_err(|_| "probe panicked")??;
    times.sort_unstable();
    let median = times.get(times.len() / 2).copied().unwrap_or_default();
    let worst = times.last().copied().unwrap_or_default();
    let closed = Duration::from_micros(clients.expect("closed")?.parse()?);
    drop(clients);
    handle.stop(Shutdown::Immediate);
    Ok(Run {
        released,
        worst,
        median,
        probes: times.len(),
        closed,
        cpu,
    })
}
