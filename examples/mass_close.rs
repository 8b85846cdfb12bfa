//! Mass disconnect benchmark (issue 17): N connections each hold a lock and
//! have sent part of a line, then all close at once. Prints how long until
//! the server has released every lock, and the slowest reply a bystander
//! got meanwhile (a `q` sent in a loop). A program, not a test: nothing
//! here asserts a time.
//!
//! ```text
//! ulimit -n 20000; cargo run --release --example mass_close -- 2000 9000
//! ```
//!
//! Each N needs about 2 N descriptors (both ends live in this process).

use lockd::{Server, ServerConfig, Shutdown};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sizes: Vec<usize> = match std::env::args().skip(1).map(|a| a.parse()).collect() {
        Ok(sizes) if !Vec::is_empty(&sizes) => sizes,
        Ok(_) => vec![2000, 9000],
        Err(e) => return Err(format!("usage: mass_close [N...]: {e}").into()),
    };
    println!(
        "{:>7} {:>14} {:>16} {:>10}",
        "conns", "released_ms", "bystander_max_ms", "q_sent"
    );
    for n in sizes {
        let (released, worst, probes) = run(n)?;
        println!(
            "{n:>7} {:>14.1} {:>16.1} {probes:>10}",
            released.as_secs_f64() * 1e3,
            worst.as_secs_f64() * 1e3
        );
    }
    Ok(())
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

fn run(n: usize) -> Result<(Duration, Duration, u64), Box<dyn std::error::Error>> {
    let mut config = ServerConfig::default();
    config.listen = vec!["127.0.0.1:0".into()];
    config.max_connections = n + 16;
    let handle = Server::bind(config)?.spawn()?;
    let addr = handle.local_addr().ok_or("no TCP address")?;
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
    let mut bystander = BufReader::new(TcpStream::connect(addr)?);
    if stats(&mut bystander)? != Some(n as u64) {
        return Err("the locks are not all held".into());
    }
    let done = Arc::new(AtomicBool::new(false));
    let probe_done = Arc::clone(&done);
    let probe = thread::spawn(move || -> std::io::Result<(Duration, u64)> {
        let mut worst = Duration::ZERO;
        let mut sent = 0;
        while !probe_done.load(Ordering::Relaxed) {
            let start = Instant::now();
            stats(&mut bystander)?;
            worst = worst.max(start.elapsed());
            sent += 1;
        }
        Ok((worst, sent))
    });
    let mut watcher = BufReader::new(TcpStream::connect(addr)?);
    thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    drop(holders);
    let released = loop {
        if stats(&mut watcher)? == Some(0) {
            break start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(120) {
            return Err("locks still held after 120 s".into());
        }
        thread::sleep(Duration::from_millis(1));
    };
    done.store(true, Ordering::Relaxed);
    let (worst, sent) = probe.join().map_err(|_| "probe panicked")??;
    handle.stop(Shutdown::Immediate);
    Ok((released, worst, sent))
}
