//! The lockd side of cluster mode's benchmark: the same clients as
//! `etcd_recipe_bench`, speaking lockd's protocol to one or more lockd
//! servers (cluster nodes, or a single server), connection `i` to server
//! `i mod N`.
//!
//! W2 (W1 on one connection): every client loops `g NAME` / `r NAME` on a lock of its own; each
//! request counts as one operation. W4: every client loops `wg` / `r` on
//! one lock; each grant counts, and is checked: one holder at a time, each
//! token above the previous one, across all servers.
//!
//! ```text
//! cargo run --release --example cluster_bench -- SERVERS W1|W2|W4 CLIENTS SECONDS
//! cargo run --release --example cluster_bench -- 127.0.0.1:9999,127.0.0.1:9998 W2 64 3
//! ```
//! `scripts/cluster-bench.sh` runs it beside `etcd_recipe_bench` on one etcd.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args = match common::args("cluster_bench SERVERS(H:P,...) W1|W2|W4 CLIENTS SECONDS") {
        Ok(args) => args,
        Err(code) => return code,
    };
    let (contended, clients, seconds) = (args.contended, args.clients, args.seconds);
    let servers = &args.targets;
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        holding: AtomicBool::new(false),
        last_token: AtomicU64::new(0),
        start: Barrier::new(clients + 1),
    });
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let shared = Arc::clone(&shared);
            let server = servers[i % servers.len()].clone();
            std::thread::spawn(move || run(&server, i, contended, &shared))
        })
        .collect();
    shared.start.wait();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    shared.stop.store(true, Ordering::Relaxed);
    common::report(
        &format!("lockd {} via {} server(s)", args.workload, servers.len()),
        clients,
        threads,
        start,
    )
}

struct Shared {
    stop: AtomicBool,
    holding: AtomicBool,
    last_token: AtomicU64,
    start: Barrier,
}

/// One client: its loop until `stop`; returns each counted operation's time.
fn run(server: &str, i: usize, contended: bool, shared: &Shared) -> Result<Vec<Duration>, String> {
    let connected = TcpStream::connect(server).map_err(|e| format!("{server}: {e}"));
    shared.start.wait();
    let stream = connected?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut conn = Conn {
        reader: BufReader::new(stream.try_clone().map_err(|e| e.to_string())?),
        writer: stream,
        line: String::new(),
    };
    let mut latencies = Vec::new();
    if contended {
        let (wg, r) = ("wg 30000 bench-cluster-W4\n", "r bench-cluster-W4\n");
        while !shared.stop.load(Ordering::Relaxed) {
            let began = Instant::now();
            let token = conn.call(wg)?;
            latencies.push(began.elapsed());
            if token == 0 {
                return Err(format!("{wg:?} failed: {}", conn.line.trim_end()));
            }
            if shared.holding.swap(true, Ordering::SeqCst) {
                return Err("two clients held the lock at once".into());
            }
            let previous = shared.last_token.swap(token, Ordering::SeqCst);
            if token <= previous {
                return Err(format!("token {token} granted after {previous}"));
            }
            shared.holding.store(false, Ordering::SeqCst);
            if conn.call(r)? != 1 {
                return Err(format!("{r:?} failed: {}", conn.line.trim_end()));
            }
        }
    } else {
        let g = format!("g bench-cluster-W2-{i}\n");
        let r = format!("r bench-cluster-W2-{i}\n");
        while !shared.stop.load(Ordering::Relaxed) {
            for command in [&g, &r] {
                let began = Instant::now();
                if conn.call(command)? == 0 {
                    return Err(format!("{command:?} failed: {}", conn.line.trim_end()));
                }
                latencies.push(began.elapsed());
            }
        }
    }
    Ok(latencies)
}

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    line: String,
}

impl Conn {
    /// Sends one command; returns the leading number of its one-line reply.
    fn call(&mut self, command: &str) -> Result<u64, String> {
        self.writer
            .write_all(command.as_bytes())
            .map_err(|e| e.to_string())?;
        self.line.clear();
        match self.reader.read_line(&mut self.line) {
            Ok(0) => Err("the server closed the connection".into()),
            Ok(_) => Ok(self
                .line
                .bytes()
                .take_while(u8::is_ascii_digit)
                .fold(0u64, |n, b| {
                    n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
                })),
            Err(e) => Err(e.to_string()),
        }
    }
}
