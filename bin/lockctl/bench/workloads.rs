//! The load generator and the six workloads.

use super::echo::EchoServer;
use super::hist::Histogram;
use super::report::{table_header, table_line, Machine, Report, Row, Target};
use super::{BenchError, BenchOptions, Workload};
use lockd::{Server, ServerConfig, ServerHandle};
use rustix::process::{getrlimit, Resource};
use rustix::thread::{sched_getaffinity, CpuSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

// W1 and W2 through `lockd::Client`: a child module, so it shares the
// generator's private driver.
#[path = "via_client.rs"]
mod via_client;

/// W3: commands per batch, written at once.
const W3_COMMANDS: usize = 20_000;
/// W5: locks each connection takes before it closes.
const W5_LOCKS: usize = 10;
/// How long a check waits for the server to settle (orphans freed, a
/// waiter queued) before it fails.
const SETTLE: Duration = Duration::from_secs(5);

/// A client connection: one socket, buffered reads into a reused line.
struct Conn {
    reader: BufReader<TcpStream>,
    line: Vec<u8>,
}

impl Conn {
    fn connect(addr: SocketAddr) -> Result<Conn, BenchError> {
        let stream = TcpStream::connect(addr)
            .map_err(|e| BenchError::io(format!("cannot connect to {addr}"), e))?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            reader: BufReader::with_capacity(64 * 1024, stream),
            line: Vec::with_capacity(128),
        })
    }

    fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut stream = self.reader.get_ref();
        stream.write_all(bytes)
    }

    /// The next reply line, `\n` included.
    fn reply(&mut self) -> io::Result<&[u8]> {
        self.line.clear();
        if self.reader.read_until(b'\n', &mut self.line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        Ok(&self.line)
    }

    fn call(&mut self, command: &[u8]) -> io::Result<&[u8]> {
        self.send(command)?;
        self.reply()
    }

    /// Switches to protocol 2 (lockd answers `2 lockd …`; the echo server
    /// its fixed line).
    fn hello(&mut self) -> io::Result<()> {
        self.call(b"hello 2\n").map(|_| ())
    }

    /// `q` on a protocol-2 connection: `key: value` lines up to the empty
    /// line.
    fn stats(&mut self) -> io::Result<Vec<(String, u64)>> {
        self.send(b"q\n")?;
        let mut stats = Vec::new();
        loop {
            let line = self.reply()?;
            let text = String::from_utf8_lossy(line);
            let text = text.trim_end();
            if text.is_empty() {
                return Ok(stats);
            }
            if let Some((k, v)) = text.split_once(": ") {
                stats.push((k.to_string(), v.parse().unwrap_or(0)));
            }
        }
    }

    fn stat(&mut self, key: &str) -> io::Result<Option<u64>> {
        Ok(self
            .stats()?
            .into_iter()
            .find_map(|(k, v)| (k == key).then_some(v)))
    }
}

/// What one measurement found.
struct Measure {
    /// Ops counted and the time they took (zero for W6), so rounds add up.
    count: u64,
    elapsed: Duration,
    rate: Option<f64>,
    unit: &'static str,
    connections: usize,
    hist: Histogram,
    notes: String,
}

impl Measure {
    /// `count` operations in `elapsed` over `connections`, as ops/s.
    pub(super) fn ops(
        count: u64,
        elapsed: Duration,
        connections: usize,
        hist: Histogram,
        notes: String,
    ) -> Measure {
        Measure {
            count,
            elapsed,
            rate: Some(per_second(count, elapsed)),
            unit: "ops/s",
            connections,
            hist,
            notes,
        }
    }

    /// Adds a later round; the notes are the later round's.
    fn merge(mut self, later: Measure) -> Measure {
        self.count += later.count;
        self.elapsed += later.elapsed;
        self.hist.merge(&later.hist);
        self.notes = later.notes;
        self.rate = if self.elapsed > Duration::ZERO {
            Some(per_second(self.count, self.elapsed))
        } else {
            later.rate
        };
        self
    }
}

/// Lockd is checked; the echo server only answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Lockd,
    Echo,
}

struct Ctx<'a> {
    opts: &'a BenchOptions,
    workload: Workload,
    mode: Mode,
    addr: SocketAddr,
    /// How long this round runs.
    duration: Duration,
    /// W1 and W2 through `lockd::Client` instead of the raw generator.
    via_client: bool,
}

impl Ctx<'_> {
    fn fail(&self, problem: impl Into<String>) -> BenchError {
        BenchError::Check {
            workload: self.workload,
            problem: problem.into(),
        }
    }

    /// Fails unless `reply` is a success (starts with a non-zero number).
    fn expect_success(&self, command: &[u8], reply: &[u8]) -> Result<(), BenchError> {
        if matches!(reply.first(), Some(b'1'..=b'9')) {
            return Ok(());
        }
        Err(self.fail(format!(
            "{:?} got {:?}, expected success",
            String::from_utf8_lossy(command).trim_end(),
            String::from_utf8_lossy(reply).trim_end()
        )))
    }

    fn io(&self, e: io::Error) -> BenchError {
        BenchError::io(format!("{} against {}", self.workload, self.addr), e)
    }
}

pub(super) fn run(opts: &BenchOptions, out: &mut dyn Write) -> Result<Report, BenchError> {
    crate::nofile::raise_nofile_limit();
    let machine = Machine::detect();
    let print_err = |e: io::Error| BenchError::io("cannot write the report", e);
    // The in-process server, if any, stops when this goes out of scope.
    let (lockd_addr, _in_process): (SocketAddr, Option<ServerHandle>) = match &opts.server {
        Some(server) => {
            let addr = server
                .to_socket_addrs()
                .map_err(|e| BenchError::io(format!("cannot resolve {server}"), e))?
                .next()
                .ok_or_else(|| BenchError::Usage(format!("{server} resolves to no address")))?;
            (addr, None)
        }
        None => {
            let handle = start_in_process(opts.idle_connections)?;
            let addr = handle
                .local_addr()
                .ok_or_else(|| BenchError::Usage("the in-process server has no address".into()))?;
            (addr, Some(handle))
        }
    };
    let echo = if opts.echo {
        Some(EchoServer::start().map_err(|e| BenchError::io("cannot start the echo server", e))?)
    } else {
        None
    };
    writeln!(
        out,
        "lockd bench: {machine}; lockd at {lockd_addr}{}; {} per timed workload and target",
        match &opts.server {
            None => " (in process)",
            Some(_) => "",
        },
        super::report::human(opts.duration)
    )
    .map_err(print_err)?;
    writeln!(out, "{}", table_header()).map_err(print_err)?;

    let mut rows = Vec::new();
    let mut first_failure = None;
    let targets: Vec<(Target, SocketAddr)> = echo
        .as_ref()
        .map(|e| (Target::Echo, e.local_addr()))
        .into_iter()
        .chain([(Target::Lockd, lockd_addr), (Target::Client, lockd_addr)])
        .collect();
    for &workload in &opts.workloads {
        // Targets take turns in short rounds, so that a change in the
        // machine's load or in where the scheduler puts the threads hits
        // both alike.
        let rounds = match workload {
            Workload::W6 => 1,
            _ => opts.rounds.max(1),
        };
        let duration = opts.duration / rounds as u32;
        let mut measured: Vec<Option<Measure>> = targets.iter().map(|_| None).collect();
        let mut failed = vec![false; targets.len()];
        for _ in 0..rounds {
            for (i, &(target, addr)) in targets.iter().enumerate() {
                let client_workload = matches!(workload, Workload::W1 | Workload::W2);
                if failed[i] || (target == Target::Client && !client_workload) {
                    continue;
                }
                let ctx = Ctx {
                    opts,
                    workload,
                    mode: match target {
                        Target::Lockd | Target::Client => Mode::Lockd,
                        Target::Echo => Mode::Echo,
                    },
                    via_client: target == Target::Client,
                    addr,
                    duration,
                };
                match measure(&ctx) {
                    Ok(m) => {
                        measured[i] = Some(match measured[i].take() {
                            Some(sofar) => sofar.merge(m),
                            None => m,
                        });
                    }
                    Err(e @ BenchError::Check { .. }) => {
                        writeln!(out, "{workload:<4} {target:<6} CHECK FAILED: {e}")
                            .map_err(print_err)?;
                        failed[i] = true;
                        first_failure.get_or_insert(e);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let mut echo_rate = None;
        let mut raw_rate = None;
        for (i, m) in measured.into_iter().enumerate() {
            let Some(m) = m else { continue };
            let target = targets[i].0;
            let ratio = match (target, m.rate, echo_rate, raw_rate) {
                (Target::Lockd, Some(l), Some(e), _) if e > 0.0 => Some(l / e),
                (Target::Client, Some(c), _, Some(r)) if r > 0.0 => Some(c / r),
                _ => None,
            };
            match target {
                Target::Echo => echo_rate = m.rate,
                Target::Lockd => raw_rate = m.rate,
                Target::Client => {}
            }
            let mut notes = m.notes;
            if rounds > 1 {
                notes = format!("{rounds} rounds; {notes}");
            }
            let row = Row {
                workload,
                target,
                connections: m.connections,
                rate: m.rate,
                unit: m.unit,
                p50: m.hist.percentile(50.0),
                p99: m.hist.percentile(99.0),
                p999: m.hist.percentile(99.9),
                ratio,
                notes,
            };
            writeln!(out, "{}", table_line(&row)).map_err(print_err)?;
            rows.push(row);
        }
    }
    match first_failure {
        Some(e) => Err(e),
        None => Ok(Report { machine, rows }),
    }
}

fn start_in_process(idle_connections: usize) -> Result<ServerHandle, BenchError> {
    let mut config = ServerConfig::default();
    config.listen = vec!["127.0.0.1:0".into()];
    config.max_connections = idle_connections.max(10_000) + 1_000;
    Server::bind(config)
        .and_then(Server::spawn)
        .map_err(BenchError::Server)
}

fn measure(ctx: &Ctx<'_>) -> Result<Measure, BenchError> {
    match ctx.workload {
        Workload::W1 if ctx.via_client => via_client::lock_release(ctx, 1),
        Workload::W2 if ctx.via_client => {
            via_client::lock_release(ctx, ctx.opts.connections.max(1))
        }
        Workload::W1 => get_release(ctx, 1),
        Workload::W2 => get_release(ctx, ctx.opts.connections.max(1)),
        Workload::W3 => pipelined(ctx),
        Workload::W4 => contended(ctx),
        Workload::W5 => churn(ctx),
        Workload::W6 => idle(ctx),
    }
}

/// Runs `body` on each connection in a thread of its own, all starting
/// together, until `deadline`; returns the ops and latencies of all, and
/// the elapsed time.
fn drive<C: Send, S: Send>(
    ctx: &Ctx<'_>,
    conns: Vec<(C, S)>,
    body: impl Fn(&mut C, &mut S, &mut Histogram, Instant) -> Result<u64, BenchError> + Sync,
) -> Result<(u64, Histogram, Duration), BenchError> {
    let start_line = Barrier::new(conns.len() + 1);
    let results = Mutex::new(Vec::new());
    let started = thread::scope(|scope| {
        let (body, start_line, results) = (&body, &start_line, &results);
        for (mut conn, mut state) in conns {
            scope.spawn(move || {
                start_line.wait();
                let deadline = Instant::now() + ctx.duration;
                let mut hist = Histogram::new();
                let result = body(&mut conn, &mut state, &mut hist, deadline);
                let finished = Instant::now();
                if let Ok(mut all) = results.lock() {
                    all.push(result.map(|ops| (ops, hist, finished)));
                }
            });
        }
        start_line.wait();
        Instant::now()
    });
    let mut finished_last = started;
    let mut ops = 0;
    let mut hist = Histogram::new();
    let results = results.into_inner().unwrap_or_default();
    for result in results {
        let (n, h, finished) = result?;
        ops += n;
        hist.merge(&h);
        finished_last = finished_last.max(finished);
    }
    Ok((ops, hist, finished_last - started))
}

fn connect_all(ctx: &Ctx<'_>, n: usize) -> Result<Vec<Conn>, BenchError> {
    (0..n).map(|_| Conn::connect(ctx.addr)).collect()
}

fn per_second(n: u64, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// W1 and W2: `g NAME`, `r NAME`, each a request and its reply, on names
/// of their own.
fn get_release(ctx: &Ctx<'_>, n: usize) -> Result<Measure, BenchError> {
    let conns = connect_all(ctx, n)?
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let name = format!("bench-{}-{i}", ctx.workload);
            let cmds = (
                format!("g {name}\n").into_bytes(),
                format!("r {name}\n").into_bytes(),
            );
            (c, cmds)
        })
        .collect();
    let (ops, hist, elapsed) = drive(ctx, conns, |conn, (g, r), hist, deadline| {
        let mut ops = 0;
        let mut now = Instant::now();
        while now < deadline {
            for cmd in [&*g, &*r] {
                let reply = conn.call(cmd).map_err(|e| ctx.io(e))?;
                ctx.expect_success(cmd, reply)?;
                let then = Instant::now();
                hist.record(then - now);
                now = then;
                ops += 1;
            }
        }
        Ok(ops)
    })?;
    let notes = if n == 1 {
        format!("not pinned (may run on CPUs {})", allowed_cpus())
    } else {
        String::new()
    };
    Ok(Measure::ops(ops, elapsed, n, hist, notes))
}

/// W3: batches of 20,000 commands, each written at once by a writer
/// thread while this one reads the replies; latency is per batch.
fn pipelined(ctx: &Ctx<'_>) -> Result<Measure, BenchError> {
    let mut conn = Conn::connect(ctx.addr)?;
    let writer = conn
        .stream()
        .try_clone()
        .map_err(|e| BenchError::io("cannot clone a socket", e))?;
    let mut batch = Vec::new();
    for _ in 0..W3_COMMANDS / 2 {
        batch.extend_from_slice(b"g bench-W3\nr bench-W3\n");
    }
    let mut hist = Histogram::new();
    let mut commands = 0u64;
    let mut batches = 0u64;
    let started = Instant::now();
    let deadline = started + ctx.duration;
    // At least one batch, however short the duration.
    while batches == 0 || Instant::now() < deadline {
        let t0 = Instant::now();
        let written = thread::scope(|scope| {
            let writing = scope.spawn(|| (&writer).write_all(&batch));
            for _ in 0..W3_COMMANDS {
                let reply = conn.reply().map_err(|e| ctx.io(e))?;
                if !matches!(reply.first(), Some(b'1'..=b'9')) {
                    return Err(ctx.fail(format!(
                        "a pipelined g/r got {:?}, expected success",
                        String::from_utf8_lossy(reply).trim_end()
                    )));
                }
            }
            writing
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("writer panicked")))
                .map_err(|e| ctx.io(e))
        });
        written?;
        hist.record(t0.elapsed());
        commands += W3_COMMANDS as u64;
        batches += 1;
    }
    let elapsed = started.elapsed();
    let notes = format!("{batches} batches of {W3_COMMANDS}; latency per batch");
    Ok(Measure::ops(commands, elapsed, 1, hist, notes))
}

/// The leading number of a reply (a fencing token for `wg`).
fn leading_number(reply: &[u8]) -> u64 {
    reply
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0u64, |n, &b| {
            n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
        })
}

/// W4: contenders loop `wg` (wait) / `r` on one lock. Checked: one holder
/// at a time, each grant's token above the previous, and (before the timed
/// part) strict first-come-first-served order of queued waiters.
fn contended(ctx: &Ctx<'_>) -> Result<Measure, BenchError> {
    let n = ctx.opts.contenders.max(2);
    let mut notes = String::new();
    if ctx.mode == Mode::Lockd {
        notes = check_fcfs(ctx, n)?;
    }
    let mut conns = connect_all(ctx, n)?;
    for conn in &mut conns {
        conn.hello().map_err(|e| ctx.io(e))?;
    }
    let holding = AtomicBool::new(false);
    let last_token = AtomicU64::new(0);
    let grants_each = Mutex::new(Vec::new());
    let wg = b"wg 30000 bench-W4\n";
    let r = b"r bench-W4\n";
    let conns = conns.into_iter().map(|c| (c, ())).collect();
    let (grants, hist, elapsed) = drive(ctx, conns, |conn, (), hist, deadline| {
        let mut grants = 0;
        let mut now = Instant::now();
        while now < deadline {
            let reply = conn.call(wg).map_err(|e| ctx.io(e))?;
            ctx.expect_success(wg, reply)?;
            let token = leading_number(reply);
            let then = Instant::now();
            hist.record(then - now);
            grants += 1;
            if ctx.mode == Mode::Lockd {
                if holding.swap(true, Ordering::SeqCst) {
                    return Err(ctx.fail("two connections held the lock at once"));
                }
                let previous = last_token.swap(token, Ordering::SeqCst);
                if token <= previous {
                    return Err(ctx.fail(format!(
                        "fencing token {token} granted after {previous}: tokens must grow"
                    )));
                }
                holding.store(false, Ordering::SeqCst);
            }
            let reply = conn.call(r).map_err(|e| ctx.io(e))?;
            ctx.expect_success(r, reply)?;
            now = Instant::now();
        }
        if let Ok(mut each) = grants_each.lock() {
            each.push(grants);
        }
        Ok(grants)
    })?;
    let each = grants_each.into_inner().unwrap_or_default();
    let (min, max) = (
        each.iter().min().copied().unwrap_or(0),
        each.iter().max().copied().unwrap_or(0),
    );
    if !notes.is_empty() {
        notes.push_str("; ");
    }
    notes.push_str(&format!(
        "grants per connection {min}..{max}; latency = wait for the grant"
    ));
    Ok(Measure {
        count: grants,
        elapsed,
        rate: Some(per_second(grants, elapsed)),
        unit: "grants/s",
        connections: n,
        hist,
        notes,
    })
}

/// Queues `n - 1` waiters one by one behind a holder, each confirmed in
/// line by the server's `waiting` counter before the next asks, then
/// releases: the grants must come in queue order with growing tokens.
fn check_fcfs(ctx: &Ctx<'_>, n: usize) -> Result<String, BenchError> {
    let io = |e| ctx.io(e);
    let mut observer = Conn::connect(ctx.addr)?;
    observer.hello().map_err(io)?;
    let Some(base) = observer.stat("waiting").map_err(io)? else {
        return Ok("FCFS not checked: the server's q has no `waiting`".into());
    };
    let mut holder = Conn::connect(ctx.addr)?;
    let g = b"g bench-W4-fcfs\n";
    let r = b"r bench-W4-fcfs\n";
    let reply = holder.call(g).map_err(io)?;
    ctx.expect_success(g, reply)?;
    let mut waiters = connect_all(ctx, n - 1)?;
    for (i, waiter) in waiters.iter_mut().enumerate() {
        waiter.hello().map_err(io)?;
        waiter.send(b"wg 30000 bench-W4-fcfs\n").map_err(io)?;
        let deadline = Instant::now() + SETTLE;
        while observer.stat("waiting").map_err(io)? != Some(base + i as u64 + 1) {
            if Instant::now() > deadline {
                return Err(ctx.fail(format!("waiter {} never showed in `waiting`", i + 1)));
            }
            thread::sleep(Duration::from_micros(200));
        }
    }
    let reply = holder.call(r).map_err(io)?;
    ctx.expect_success(r, reply)?;
    let mut previous = 0;
    for (i, waiter) in waiters.iter_mut().enumerate() {
        let _ = waiter.stream().set_read_timeout(Some(SETTLE));
        let reply = waiter.reply().map_err(|e| {
            if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
                ctx.fail(format!(
                    "waiter {} (queued {} of {}) was not granted next: not first come, first served",
                    i + 1,
                    i + 1,
                    n - 1
                ))
            } else {
                ctx.io(e)
            }
        })?;
        let token = leading_number(reply);
        if token == 0 {
            return Err(ctx.fail(format!(
                "waiter {} got {:?}",
                i + 1,
                String::from_utf8_lossy(reply).trim_end()
            )));
        }
        if token <= previous {
            return Err(ctx.fail(format!("token {token} granted after {previous}")));
        }
        previous = token;
        let reply = waiter.call(r).map_err(io)?;
        ctx.expect_success(r, reply)?;
    }
    Ok(format!("FCFS ok ({} queued waiters in order)", n - 1))
}

fn stats_conn(ctx: &Ctx<'_>) -> Result<Conn, BenchError> {
    let mut conn = Conn::connect(ctx.addr)?;
    conn.hello().map_err(|e| ctx.io(e))?;
    Ok(conn)
}

fn stat(ctx: &Ctx<'_>, conn: &mut Conn, key: &str) -> Result<u64, BenchError> {
    conn.stat(key)
        .map_err(|e| ctx.io(e))?
        .ok_or_else(|| ctx.fail(format!("the server's q has no `{key}`")))
}

/// W5: threads connect, send 10 `g` in one write, read the replies, and
/// close, until the deadline. Then (lockd) the release latency: a holder
/// closes and another connection polls `g` until it gets the lock. At the
/// end every orphan must be freed.
fn churn(ctx: &Ctx<'_>) -> Result<Measure, BenchError> {
    let threads = ctx.opts.churners.max(1);
    let mut observer = None;
    let (mut locks0, mut orphans0) = (0, 0);
    if ctx.mode == Mode::Lockd {
        let mut conn = stats_conn(ctx)?;
        locks0 = stat(ctx, &mut conn, "locks")?;
        orphans0 = stat(ctx, &mut conn, "orphans")?;
        observer = Some(conn);
    }
    let start_line = Barrier::new(threads);
    let results = Mutex::new(Vec::new());
    let started = Instant::now();
    thread::scope(|scope| {
        for t in 0..threads {
            let (start_line, results) = (&start_line, &results);
            scope.spawn(move || {
                start_line.wait();
                let deadline = Instant::now() + ctx.duration;
                let mut hist = Histogram::new();
                let result = churn_thread(ctx, t, deadline, &mut hist);
                if let Ok(mut all) = results.lock() {
                    all.push(result.map(|n| (n, hist, Instant::now())));
                }
            });
        }
    });
    let mut connections = 0;
    let mut hist = Histogram::new();
    let mut finished = started;
    for result in results.into_inner().unwrap_or_default() {
        let (n, h, end) = result?;
        connections += n;
        hist.merge(&h);
        finished = finished.max(end);
    }
    let elapsed = finished - started;
    let rate = per_second(connections, elapsed);
    let mut notes = format!("{connections} connections x {W5_LOCKS} commands");
    if let Some(observer) = observer.as_mut() {
        let release = release_latency(ctx)?;
        let deadline = Instant::now() + SETTLE;
        loop {
            let locks = stat(ctx, observer, "locks")?;
            if locks == locks0 {
                break;
            }
            if Instant::now() > deadline {
                return Err(ctx.fail(format!(
                    "{} locks still held {SETTLE:?} after their holders closed",
                    locks - locks0
                )));
            }
            thread::sleep(Duration::from_millis(1));
        }
        let orphans = stat(ctx, observer, "orphans")? - orphans0;
        let expected = connections * W5_LOCKS as u64 + release.samples;
        if orphans != expected {
            return Err(ctx.fail(format!(
                "orphans grew by {orphans}, expected {expected} ({connections} x {W5_LOCKS} + {} release samples)",
                release.samples
            )));
        }
        notes.push_str(&format!(
            "; all {orphans} orphans freed; release latency p50 {} p99 {} ({} samples, {}% on the first try)",
            release.hist.percentile(50.0).map_or("-".into(), super::report::human),
            release.hist.percentile(99.0).map_or("-".into(), super::report::human),
            release.samples,
            release.first_try * 100 / release.samples.max(1)
        ));
    }
    Ok(Measure {
        count: connections,
        elapsed,
        rate: Some(rate),
        unit: "conns/s",
        connections: threads,
        hist,
        notes,
    })
}

fn churn_thread(
    ctx: &Ctx<'_>,
    t: usize,
    deadline: Instant,
    hist: &mut Histogram,
) -> Result<u64, BenchError> {
    let mut commands = Vec::with_capacity(W5_LOCKS * 32);
    let mut buf = [0u8; 4096];
    let mut n = 0u64;
    let mut now = Instant::now();
    while now < deadline {
        commands.clear();
        for i in 0..W5_LOCKS {
            // Names never reused, so a slow orphaning cannot fail a `g`
            // here; the release latency below measures that case.
            let _ = writeln!(commands, "g bench-W5-{t}-{n}-{i}");
        }
        let mut stream = TcpStream::connect(ctx.addr)
            .map_err(|e| BenchError::io(format!("cannot connect to {}", ctx.addr), e))?;
        let _ = stream.set_nodelay(true);
        stream.write_all(&commands).map_err(|e| ctx.io(e))?;
        let (mut lines, mut at_start) = (0, true);
        while lines < W5_LOCKS {
            let got = stream.read(&mut buf).map_err(|e| ctx.io(e))?;
            if got == 0 {
                return Err(ctx.io(io::ErrorKind::UnexpectedEof.into()));
            }
            for &b in &buf[..got] {
                if at_start && (b == b'0' || !b.is_ascii_digit()) {
                    return Err(ctx.fail("a fresh connection's g of a free lock failed"));
                }
                at_start = b == b'\n';
                lines += usize::from(at_start);
            }
        }
        drop(stream);
        let then = Instant::now();
        hist.record(then - now);
        now = then;
        n += 1;
    }
    Ok(n)
}

struct Release {
    hist: Histogram,
    samples: u64,
    first_try: u64,
}

/// A holder takes the lock and closes; the clock runs from its close until
/// another connection's `g` of the lock succeeds (polled back to back).
fn release_latency(ctx: &Ctx<'_>) -> Result<Release, BenchError> {
    let g = b"g bench-W5-release\n";
    let r = b"r bench-W5-release\n";
    let mut poller = Conn::connect(ctx.addr)?;
    let mut out = Release {
        hist: Histogram::new(),
        samples: 0,
        first_try: 0,
    };
    let give_up = Instant::now() + ctx.duration.max(Duration::from_millis(100));
    while out.samples < ctx.opts.release_samples as u64
        && (out.samples == 0 || Instant::now() < give_up)
    {
        let mut holder = Conn::connect(ctx.addr)?;
        let reply = holder.call(g).map_err(|e| ctx.io(e))?;
        ctx.expect_success(g, reply)?;
        let closed = Instant::now();
        drop(holder);
        out.samples += 1;
        let mut tries = 0;
        loop {
            tries += 1;
            let reply = poller.call(g).map_err(|e| ctx.io(e))?;
            if reply.first() == Some(&b'1') {
                break;
            }
            if closed.elapsed() > Duration::from_secs(1) {
                return Err(
                    ctx.fail("a lock was still held 1 s after its holder closed the connection")
                );
            }
        }
        out.hist.record(closed.elapsed());
        out.first_try += u64::from(tries == 1);
        let reply = poller.call(r).map_err(|e| ctx.io(e))?;
        ctx.expect_success(r, reply)?;
    }
    Ok(out)
}

/// VmRSS of a process in bytes.
fn rss(pid: u32) -> Option<u64> {
    let path = if pid == std::process::id() {
        "/proc/self/status".to_string()
    } else {
        format!("/proc/{pid}/status")
    };
    let status = std::fs::read_to_string(path).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// A lockd started as a child for W6; killed on drop.
struct ChildServer {
    child: Child,
    addr: SocketAddr,
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_lockd(opts: &BenchOptions) -> Option<PathBuf> {
    if let Some(path) = &opts.lockd_binary {
        return Some(path.clone());
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join("lockd"), dir.parent()?.join("lockd")]
        .into_iter()
        .find(|p| p.is_file())
}

fn spawn_lockd(binary: &PathBuf, connections: usize) -> Result<ChildServer, BenchError> {
    let context = format!("cannot start {}", binary.display());
    let mut child = Command::new(binary)
        .args(["--listen", "127.0.0.1:0", "--no-state", "--max-connections"])
        .arg((connections + 1000).to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BenchError::io(&context, e))?;
    let stderr = child.stderr.take();
    let mut server = ChildServer {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let mut lines = BufReader::new(stderr.ok_or_else(|| BenchError::Usage(context.clone()))?);
    let mut line = String::new();
    loop {
        line.clear();
        if lines
            .read_line(&mut line)
            .map_err(|e| BenchError::io(&context, e))?
            == 0
        {
            return Err(BenchError::io(
                &context,
                io::Error::other("it exited before listening"),
            ));
        }
        if let Some(addr) = line.trim().strip_prefix("lockd: listening on ") {
            if let Ok(addr) = addr.parse() {
                server.addr = addr;
                break;
            }
        }
    }
    // Pass on what it logs (refused connections, say), and never let it
    // block on a full pipe.
    let _ = thread::Builder::new()
        .name("bench-lockd-stderr".into())
        .spawn(move || io::copy(&mut lines, &mut io::stderr()));
    Ok(server)
}

/// W6: idle connections, each holding a lock (lockd) or having sent one
/// line (echo); the server's RSS before and after, per connection.
fn idle(ctx: &Ctx<'_>) -> Result<Measure, BenchError> {
    let mut n = ctx.opts.idle_connections.max(1);
    let mut notes = Vec::new();
    let mut child = None;
    let (addr, pid) = match ctx.mode {
        Mode::Echo => {
            // Client and server sockets share this process's descriptors.
            let room = nofile_limit().saturating_sub(200) / 2;
            if n > room {
                notes.push(format!("{n} capped to {room} by the open-files limit"));
                n = room;
            }
            notes.push("in-process RSS".to_string());
            (ctx.addr, Some(std::process::id()))
        }
        Mode::Lockd if ctx.opts.server.is_some() => (ctx.addr, ctx.opts.server_pid),
        Mode::Lockd => match find_lockd(ctx.opts) {
            Some(binary) => {
                let server = spawn_lockd(&binary, n)?;
                notes.push(format!("child {}", binary.display()));
                let found = (server.addr, Some(server.child.id()));
                child = Some(server);
                found
            }
            None => {
                let room = nofile_limit().saturating_sub(200) / 2;
                if n > room {
                    notes.push(format!("{n} capped to {room} by the open-files limit"));
                    n = room;
                }
                notes.push("in-process RSS (no lockd binary found)".to_string());
                (ctx.addr, Some(std::process::id()))
            }
        },
    };
    let ctx = &Ctx { addr, ..*ctx };
    let mut observer = match ctx.mode {
        Mode::Lockd => Some(stats_conn(ctx)?),
        Mode::Echo => None,
    };
    let locks0 = match observer.as_mut() {
        Some(conn) => stat(ctx, conn, "locks")?,
        None => 0,
    };
    thread::sleep(Duration::from_millis(100));
    let before = pid.and_then(rss);
    let mut conns = Vec::with_capacity(n);
    let mut command = Vec::with_capacity(32);
    let mut buf = [0u8; 128];
    let mut hist = Histogram::new();
    let started = Instant::now();
    for i in 0..n {
        let t0 = Instant::now();
        let mut stream = TcpStream::connect(addr)
            .map_err(|e| BenchError::io(format!("cannot open idle connection {}", i + 1), e))?;
        let _ = stream.set_nodelay(true);
        command.clear();
        let _ = writeln!(command, "g bench-W6-{i}");
        stream.write_all(&command).map_err(|e| ctx.io(e))?;
        let mut got = 0;
        while !buf[..got].contains(&b'\n') && got < buf.len() {
            match stream.read(&mut buf[got..]).map_err(|e| ctx.io(e))? {
                0 => {
                    return Err(BenchError::io(
                        format!(
                            "the server closed idle connection {} of {n} (out of threads, memory maps or descriptors? see its log)",
                            i + 1
                        ),
                        io::ErrorKind::UnexpectedEof.into(),
                    ))
                }
                k => got += k,
            }
        }
        ctx.expect_success(&command, &buf[..got])?;
        hist.record(t0.elapsed());
        conns.push(stream);
    }
    let opened = started.elapsed();
    thread::sleep(Duration::from_millis(300));
    let after = pid.and_then(rss);
    if let Some(conn) = observer.as_mut() {
        let locks = stat(ctx, conn, "locks")?;
        if locks != locks0 + n as u64 {
            return Err(ctx.fail(format!(
                "{locks} locks held with {n} idle holders (expected {})",
                locks0 + n as u64
            )));
        }
    }
    drop(conns);
    drop(child);
    let rate = match (before, after) {
        (Some(b), Some(a)) => {
            notes.push(format!(
                "RSS {:.1} -> {:.1} MiB",
                b as f64 / 1048576.0,
                a as f64 / 1048576.0
            ));
            Some(a.saturating_sub(b) as f64 / n as f64)
        }
        _ => {
            notes.push("RSS unknown (give the server's pid)".to_string());
            None
        }
    };
    notes.push(format!(
        "opened at {:.0}/s; latency = connect + g",
        per_second(n as u64, opened)
    ));
    Ok(Measure {
        count: 0,
        elapsed: Duration::ZERO,
        rate,
        unit: "B/conn",
        connections: n,
        hist,
        notes: notes.join("; "),
    })
}

fn nofile_limit() -> usize {
    let limit = getrlimit(Resource::Nofile).current;
    limit.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// The CPUs this process may run on, as `0,1`.
fn allowed_cpus() -> String {
    match sched_getaffinity(None) {
        Ok(set) => (0..CpuSet::MAX_CPU)
            .filter(|&cpu| set.is_set(cpu))
            .map(|cpu| cpu.to_string())
            .collect::<Vec<_>>()
            .join(","),
        Err(_) => "?".into(),
    }
}
