//! Chaos test (issue 8): 64 clients on raw TCP connections (`hello 2`)
//! take and release exclusive locks, read holds on them (`wr`/`rr`, issue
//! 11), semaphores and shared locks at random,
//! wait with random timeouts, and end their sessions cleanly, with a reset
//! (RST through `SO_LINGER` 0), by abandoning a wait, or by letting a `ttl`
//! lease run out. Every grant is recorded with client-side times; a checker
//! then proves from the history alone:
//!
//! - mutual exclusion: for each lock, a write hold's interval (grant reply
//!   received .. release sent, or close) overlaps no other write or read
//!   hold's; read holds may overlap each other;
//! - semaphore limits: at no instant do more clients hold a `wsg` place
//!   than its (fixed per name) limit;
//! - tokens: unique, and a grant whose reply arrived before another grant
//!   was even requested has the smaller token;
//! - no reply lost: every command and every wait is answered in time, and a
//!   timeout never comes early;
//! - at the end `locks`, `shared_locks`, `waiting` drop to 0 and
//!   `connections` to 1 (the polling connection).
//!
//! Client intervals lie inside the server's (a grant is received after the
//! server made it, a release is sent before the server sees it), so a
//! correct server can never fail these checks.
//!
//! Runs 5 s by default, so `cargo test` stays short (issue 17);
//! `LOCKD_CHAOS_SECS=N` runs longer (CI runs it long once), `LOCKD_SEED=N`
//! replays a seed.
//!
//! The same clients also run across two cluster nodes (issue 15) on one
//! etcd, each session through one node or the other: 3 s by default,
//! `LOCKD_CHAOS_CLUSTER_SECS=N` for longer.

mod common;

use common::rng::{seeds, Rng};
use common::{set_linger_zero, Kind, TestServer};
use lockd::protocol::reply::parse_status;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

const CLIENTS: usize = 64;
/// Clients across the cluster nodes: each etcd transaction costs a round
/// trip through three members, so fewer clients keep the run short.
const CLUSTER_CLIENTS: usize = 16;
const EXCLUSIVE: [&str; 4] = ["e0", "e1", "e2", "e3"];
/// Semaphores, each always asked for with the same limit.
const SEMAPHORES: [(&str, u32); 3] = [("s1", 1), ("s2", 2), ("s3", 3)];
/// Plain shared locks (`sg`, no limit).
const SHARED: [&str; 2] = ["p0", "p1"];
/// A reply to a command that does not wait must come within this.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// One grant as a client saw it; times since the start of the run.
#[derive(Clone, Debug)]
struct Held {
    lock: &'static str,
    /// Fencing token (write holds).
    token: Option<u64>,
    /// A read hold (`wr`) on an exclusive lock.
    read: bool,
    client: usize,
    requested: Duration,
    granted: Duration,
    released: Option<Duration>,
}

#[derive(Debug, Default)]
struct Tally {
    sessions: u64,
    commands: u64,
    grants: u64,
    timeouts: u64,
    deadlocks: u64,
    resets: u64,
    abandoned: u64,
    expired: u64,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.sessions += other.sessions;
        self.commands += other.commands;
        self.grants += other.grants;
        self.timeouts += other.timeouts;
        self.deadlocks += other.deadlocks;
        self.resets += other.resets;
        self.abandoned += other.abandoned;
        self.expired += other.expired;
    }
}

/// `N TEXT: NAME` split up, or an error naming the line.
/// A waiting command's reply and its times: `requested` and `granted` on
/// the history's clock, `sent` to measure the wait.
struct Waited {
    requested: Duration,
    sent: Instant,
    granted: Duration,
    reply: String,
}

fn status(line: &str) -> Result<(u64, String, String), String> {
    let bytes = line.trim_end_matches('\n').as_bytes();
    let parsed = parse_status(bytes).ok_or_else(|| format!("not a status line: {line:?}"))?;
    Ok((
        parsed.number,
        String::from_utf8_lossy(parsed.text).into_owned(),
        String::from_utf8_lossy(parsed.name.unwrap_or_default()).into_owned(),
    ))
}

struct Session<'a> {
    client: usize,
    start: Instant,
    reader: BufReader<TcpStream>,
    /// Lock -> index of its grant in `history`.
    exclusive: HashMap<&'static str, usize>,
    /// Read holds: lock -> index of its grant in `history`.
    reads: HashMap<&'static str, usize>,
    semaphores: HashMap<&'static str, usize>,
    shared: HashSet<&'static str>,
    history: &'a mut Vec<Held>,
    tally: &'a mut Tally,
}

impl Session<'_> {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn fail<T>(&self, what: String) -> Result<T, String> {
        Err(format!("client {}: {what}", self.client))
    }

    fn send(&mut self, text: &str) -> Result<(), String> {
        self.tally.commands += text.matches('\n').count() as u64;
        self.reader
            .get_mut()
            .write_all(text.as_bytes())
            .or_else(|e| self.fail(format!("send {text:?}: {e}")))
    }

    fn line(&mut self, timeout: Duration, after: &str) -> Result<String, String> {
        let _ = self.reader.get_ref().set_read_timeout(Some(timeout));
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => self.fail(format!("eof waiting for the reply to {after:?}")),
            Ok(_) if line.ends_with('\n') => Ok(line),
            Ok(_) => self.fail(format!("partial reply {line:?} to {after:?}")),
            Err(e) => self.fail(format!("no reply to {after:?} within {timeout:?}: {e}")),
        }
    }

    /// Sends one command and reads its one-line reply.
    fn call(&mut self, command: &str, timeout: Duration) -> Result<String, String> {
        self.send(&format!("{command}\n"))?;
        self.line(timeout, command)
    }

    /// Sends a command that may wait up to `ms` (`wg`, `wr`, `wsg`) and
    /// notes when it was asked and answered, for the history.
    fn wait_call(&mut self, command: &str, ms: u64) -> Result<Waited, String> {
        let requested = self.now();
        let sent = Instant::now();
        let reply = self.call(command, REPLY_TIMEOUT + Duration::from_millis(ms))?;
        Ok(Waited {
            requested,
            sent,
            granted: self.now(),
            reply,
        })
    }

    fn got_exclusive(
        &mut self,
        lock: &'static str,
        token: u64,
        requested: Duration,
        granted: Duration,
    ) -> Result<(), String> {
        if token == 0 {
            return self.fail(format!("{lock} granted with token 0"));
        }
        if let Some(&i) = self.exclusive.get(lock) {
            let had = self.history[i].token;
            if had != Some(token) {
                return self.fail(format!("re-get of {lock}: token {token}, had {had:?}"));
            }
            return Ok(());
        }
        // An upgrade: the read hold became the write hold.
        if let Some(i) = self.reads.remove(lock) {
            self.history[i].released = Some(granted);
        }
        self.tally.grants += 1;
        self.exclusive.insert(lock, self.history.len());
        self.history.push(Held {
            lock,
            token: Some(token),
            read: false,
            client: self.client,
            requested,
            granted,
            released: None,
        });
        Ok(())
    }

    fn got_semaphore(
        &mut self,
        (lock, limit): (&'static str, u32),
        holders: u64,
        requested: Duration,
        granted: Duration,
    ) -> Result<(), String> {
        if holders == 0 || holders > u64::from(limit) {
            return self.fail(format!(
                "{lock} (limit {limit}) granted with {holders} holders"
            ));
        }
        if self.semaphores.contains_key(lock) {
            return Ok(());
        }
        self.tally.grants += 1;
        self.semaphores.insert(lock, self.history.len());
        self.history.push(Held {
            lock,
            token: None,
            read: false,
            client: self.client,
            requested,
            granted,
            released: None,
        });
        Ok(())
    }

    fn got_read(
        &mut self,
        lock: &'static str,
        readers: u64,
        requested: Duration,
        granted: Duration,
    ) -> Result<(), String> {
        if readers == 0 || self.exclusive.contains_key(lock) {
            return self.fail(format!("{lock} read with {readers} readers"));
        }
        if self.reads.contains_key(lock) {
            return Ok(());
        }
        self.tally.grants += 1;
        self.reads.insert(lock, self.history.len());
        self.history.push(Held {
            lock,
            token: None,
            read: true,
            client: self.client,
            requested,
            granted,
            released: None,
        });
        Ok(())
    }

    /// Holds anything a cycle of waits could go through.
    fn holds_any(&self) -> bool {
        !(self.exclusive.is_empty() && self.reads.is_empty() && self.semaphores.is_empty())
    }

    /// Everything this session holds counts as released at `at`.
    fn released_all(&mut self, at: Duration) {
        let all = self.exclusive.drain().chain(self.reads.drain());
        for (_, i) in all.chain(self.semaphores.drain()) {
            self.history[i].released = Some(at);
        }
        self.shared.clear();
    }

    fn wait_timeout(rng: &mut Rng) -> u64 {
        match rng.below(10) {
            0..=2 => 0,
            3..=6 => rng.range(1, 30),
            _ => rng.range(50, 400),
        }
    }

    /// A timeout reply: never early.
    fn timed_out(&mut self, what: &str, ms: u64, sent: Instant) -> Result<(), String> {
        self.tally.timeouts += 1;
        let waited = sent.elapsed();
        if waited < Duration::from_millis(ms) {
            return self.fail(format!("{what} timed out after {waited:?}, before {ms} ms"));
        }
        Ok(())
    }

    fn op(&mut self, rng: &mut Rng) -> Result<(), String> {
        match rng.below(100) {
            0..=11 => {
                let lock = *rng.pick(&EXCLUSIVE);
                let requested = self.now();
                self.send(&format!("g {lock}\nt {lock}\n"))?;
                let get = self.line(REPLY_TIMEOUT, "g")?;
                let token = self.line(REPLY_TIMEOUT, "t")?;
                let granted = self.now();
                let (ok, text, name) = status(&get)?;
                let (t, t_text, _) = status(&token)?;
                match (ok, text.as_str(), t_text.as_str()) {
                    (1, "Lock Get Success", "Lock Token") if name == lock => {
                        self.got_exclusive(lock, t, requested, granted)?
                    }
                    (0, "Lock Get Failure", "Lock Not Held")
                        if t == 0 && !self.exclusive.contains_key(lock) => {}
                    _ => return self.fail(format!("g {lock}: {get:?} then {token:?}")),
                }
            }
            12..=27 => {
                let lock = *rng.pick(&EXCLUSIVE);
                let ms = Session::wait_timeout(rng);
                let command = format!("wg {ms} {lock}");
                let Waited {
                    requested,
                    sent,
                    granted,
                    reply,
                } = self.wait_call(&command, ms)?;
                let (n, text, name) = status(&reply)?;
                match (n, text.as_str()) {
                    (1.., "Lock Get Success") if name == lock => {
                        self.got_exclusive(lock, n, requested, granted)?
                    }
                    (0, "Lock Get Timeout") if !self.exclusive.contains_key(lock) => {
                        self.timed_out(&command, ms, sent)?
                    }
                    (0, "Lock Get Deadlock") if ms > 0 && self.holds_any() => {
                        self.tally.deadlocks += 1
                    }
                    _ => return self.fail(format!("{command}: {reply:?}")),
                }
            }
            28..=37 => {
                let lock = *rng.pick(&EXCLUSIVE);
                let ms = Session::wait_timeout(rng);
                let command = format!("wr {ms} {lock}");
                let Waited {
                    requested,
                    sent,
                    granted,
                    reply,
                } = self.wait_call(&command, ms)?;
                let (n, text, name) = status(&reply)?;
                match (n, text.as_str()) {
                    (1.., "Read Lock Get Success") if name == lock => {
                        self.got_read(lock, n, requested, granted)?
                    }
                    (0, "Read Lock Get Timeout") if !self.reads.contains_key(lock) => {
                        self.timed_out(&command, ms, sent)?
                    }
                    (0, "Lock Get Deadlock") if ms > 0 && self.holds_any() => {
                        self.tally.deadlocks += 1
                    }
                    _ => return self.fail(format!("{command}: {reply:?}")),
                }
            }
            38..=44 => {
                let held: Vec<&'static str> = self.reads.keys().copied().collect();
                let lock = if !held.is_empty() && rng.chance(85) {
                    *rng.pick(&held)
                } else {
                    *rng.pick(&EXCLUSIVE)
                };
                let at = self.now();
                let reply = self.call(&format!("rr {lock}"), REPLY_TIMEOUT)?;
                let want = match self.reads.remove(lock) {
                    Some(i) => {
                        self.history[i].released = Some(at);
                        format!("1 Read Lock Release Success: {lock}\n")
                    }
                    None => format!("0 Read Lock Release Failure: {lock}\n"),
                };
                if reply != want {
                    return self.fail(format!("rr {lock}: {reply:?}, expected {want:?}"));
                }
            }
            45..=56 => {
                let held: Vec<&'static str> = self.exclusive.keys().copied().collect();
                let lock = if !held.is_empty() && rng.chance(85) {
                    *rng.pick(&held)
                } else {
                    *rng.pick(&EXCLUSIVE)
                };
                let at = self.now();
                let reply = self.call(&format!("r {lock}"), REPLY_TIMEOUT)?;
                let want = match self.exclusive.remove(lock) {
                    Some(i) => {
                        self.history[i].released = Some(at);
                        format!("1 Lock Release Success: {lock}\n")
                    }
                    None => format!("0 Lock Release Failure: {lock}\n"),
                };
                if reply != want {
                    return self.fail(format!("r {lock}: {reply:?}, expected {want:?}"));
                }
            }
            57..=58 => {
                if let Some((&lock, &i)) = self.exclusive.iter().next() {
                    let reply = self.call(&format!("t {lock}"), REPLY_TIMEOUT)?;
                    let want = format!(
                        "{} Lock Token: {lock}\n",
                        self.history[i].token.unwrap_or(0)
                    );
                    if reply != want {
                        return self.fail(format!("t {lock}: {reply:?}, expected {want:?}"));
                    }
                }
            }
            59..=70 => {
                let semaphore = *rng.pick(&SEMAPHORES);
                let (lock, limit) = semaphore;
                let ms = Session::wait_timeout(rng);
                let command = format!("wsg {ms} {limit} {lock}");
                let Waited {
                    requested,
                    sent,
                    granted,
                    reply,
                } = self.wait_call(&command, ms)?;
                let (n, text, name) = status(&reply)?;
                match (n, text.as_str()) {
                    (1.., "Shared Lock Get Success") if name == lock => {
                        self.got_semaphore(semaphore, n, requested, granted)?
                    }
                    (0, "Shared Lock Get Timeout") if !self.semaphores.contains_key(lock) => {
                        self.timed_out(&command, ms, sent)?
                    }
                    (0, "Shared Lock Get Deadlock") if ms > 0 && self.holds_any() => {
                        self.tally.deadlocks += 1
                    }
                    _ => return self.fail(format!("{command}: {reply:?}")),
                }
            }
            71..=79 => {
                let held: Vec<&'static str> = self.semaphores.keys().copied().collect();
                let lock = if !held.is_empty() && rng.chance(85) {
                    *rng.pick(&held)
                } else {
                    rng.pick(&SEMAPHORES).0
                };
                let at = self.now();
                let reply = self.call(&format!("sr {lock}"), REPLY_TIMEOUT)?;
                let want = match self.semaphores.remove(lock) {
                    Some(i) => {
                        self.history[i].released = Some(at);
                        format!("1 Shared Lock Release Success: {lock}\n")
                    }
                    None => format!("0 Shared Lock Release Failure: {lock}\n"),
                };
                if reply != want {
                    return self.fail(format!("sr {lock}: {reply:?}, expected {want:?}"));
                }
            }
            80..=85 => {
                let lock = *rng.pick(&SHARED);
                let reply = self.call(&format!("sg {lock}"), REPLY_TIMEOUT)?;
                match status(&reply)? {
                    (1.., text, name) if text == "Shared Lock Get Success" && name == lock => {
                        self.shared.insert(lock);
                    }
                    _ => return self.fail(format!("sg {lock}: {reply:?}")),
                }
            }
            86..=89 => {
                let lock = *rng.pick(&SHARED);
                let reply = self.call(&format!("sr {lock}"), REPLY_TIMEOUT)?;
                let want = if self.shared.remove(lock) {
                    format!("1 Shared Lock Release Success: {lock}\n")
                } else {
                    format!("0 Shared Lock Release Failure: {lock}\n")
                };
                if reply != want {
                    return self.fail(format!("sr {lock}: {reply:?}, expected {want:?}"));
                }
            }
            90..=94 => {
                let held = self.exclusive.len()
                    + self.reads.len()
                    + self.semaphores.len()
                    + self.shared.len();
                let at = self.now();
                let reply = self.call("ra", REPLY_TIMEOUT)?;
                self.released_all(at);
                if reply != format!("{held} Released\n") {
                    return self.fail(format!("ra holding {held}: {reply:?}"));
                }
            }
            _ => {
                let reply = self.call("ping", REPLY_TIMEOUT)?;
                if reply != "1 pong\n" {
                    return self.fail(format!("ping: {reply:?}"));
                }
            }
        }
        Ok(())
    }

    /// Ends the session one of four ways.
    fn end(mut self, rng: &mut Rng) -> Result<(), String> {
        match rng.below(100) {
            0..=49 => {
                let at = self.now();
                self.released_all(at);
            }
            50..=74 => {
                self.tally.resets += 1;
                let at = self.now();
                self.released_all(at);
                set_linger_zero(self.reader.get_ref());
            }
            75..=96 => self.abandon_wait(rng)?,
            _ => self.expire(rng)?,
        }
        Ok(())
    }

    /// Asks to wait a minute, then goes away without reading the answer
    /// (unless it is already there).
    fn abandon_wait(&mut self, rng: &mut Rng) -> Result<(), String> {
        self.tally.abandoned += 1;
        let kind = rng.below(10);
        let (exclusive, read) = (kind < 5, (5..7).contains(&kind));
        let lock = *rng.pick(&EXCLUSIVE);
        let semaphore = *rng.pick(&SEMAPHORES);
        let requested = self.now();
        if exclusive {
            self.send(&format!("wg 60000 {lock}\n"))?;
        } else if read {
            self.send(&format!("wr 60000 {lock}\n"))?;
        } else {
            self.send(&format!("wsg 60000 {} {}\n", semaphore.1, semaphore.0))?;
        }
        thread::sleep(Duration::from_millis(rng.below(15)));
        let stream = self.reader.get_ref();
        let _ = stream.set_nonblocking(true);
        let mut buf = [0u8; 256];
        let got = (&mut &*stream).read(&mut buf).unwrap_or(0);
        let line = String::from_utf8_lossy(&buf[..got]).into_owned();
        if line.ends_with('\n') {
            let granted = self.now();
            match status(&line)? {
                (n @ 1.., text, _) if exclusive && text == "Lock Get Success" => {
                    self.got_exclusive(lock, n, requested, granted)?
                }
                (n @ 1.., text, _) if read && text == "Read Lock Get Success" => {
                    self.got_read(lock, n, requested, granted)?
                }
                (n @ 1.., text, _) if !exclusive && !read && text == "Shared Lock Get Success" => {
                    self.got_semaphore(semaphore, n, requested, granted)?
                }
                (0, text, _)
                    if text == "Lock Get Deadlock" || text == "Shared Lock Get Deadlock" =>
                {
                    self.tally.deadlocks += 1
                }
                _ => return self.fail(format!("abandoned wait: {line:?}")),
            }
        } else if got > 0 {
            return self.fail(format!("partial reply {line:?} to an abandoned wait"));
        }
        let at = self.now();
        self.released_all(at);
        if rng.chance(50) {
            set_linger_zero(self.reader.get_ref());
        }
        Ok(())
    }

    /// Sets a one-second lease and goes silent: the server must close the
    /// connection (releasing everything) after about a second.
    fn expire(&mut self, _rng: &mut Rng) -> Result<(), String> {
        self.tally.expired += 1;
        // The lease runs from after this line, so the server releases no
        // earlier than now.
        let at = self.now();
        let reply = self.call("ttl 1", REPLY_TIMEOUT)?;
        if reply != "1 ttl 1\n" {
            return self.fail(format!("ttl 1: {reply:?}"));
        }
        self.released_all(at);
        let silent = Instant::now();
        let _ = self.reader.get_ref().set_read_timeout(Some(REPLY_TIMEOUT));
        let mut buf = [0u8; 64];
        match self.reader.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Ok(n) => return self.fail(format!("data after ttl: {:?}", &buf[..n])),
            Err(e) => return self.fail(format!("lease of 1 s not enforced: {e}")),
        }
        let waited = silent.elapsed();
        if waited < Duration::from_millis(900) {
            return self.fail(format!("lease of 1 s ended after {waited:?}"));
        }
        Ok(())
    }
}

fn client(
    client: usize,
    addrs: &[SocketAddr],
    mut rng: Rng,
    start: Instant,
    until: Instant,
) -> (Vec<Held>, Tally, Option<String>) {
    let mut history = Vec::new();
    let mut tally = Tally::default();
    let result = (|| {
        while Instant::now() < until {
            // Sessions take turns among the servers (nodes).
            let addr = addrs[(client + tally.sessions as usize) % addrs.len()];
            tally.sessions += 1;
            let stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            let mut session = Session {
                client,
                start,
                reader: BufReader::new(stream),
                exclusive: HashMap::new(),
                reads: HashMap::new(),
                semaphores: HashMap::new(),
                shared: HashSet::new(),
                history: &mut history,
                tally: &mut tally,
            };
            let hello = session.call("hello 2", REPLY_TIMEOUT)?;
            if !hello.starts_with("2 lockd ") {
                return session.fail(format!("hello 2: {hello:?}"));
            }
            for _ in 0..rng.range(1, 40) {
                if Instant::now() >= until {
                    break;
                }
                session.op(&mut rng)?;
                thread::sleep(Duration::from_micros(rng.below(2000)));
            }
            session.end(&mut rng)?;
        }
        Ok(())
    })();
    // A client that failed closed its connection on the way out.
    let closed = start.elapsed();
    for held in &mut history {
        held.released.get_or_insert(closed);
    }
    (history, tally, result.err())
}

/// Proves the history consistent; returns what is wrong.
fn check(history: &[Held]) -> Vec<String> {
    let mut problems = Vec::new();
    // Mutual exclusion, lock by lock: sweep the intervals in time order,
    // releases first at a tie. A write grant finds nobody holding; a read
    // grant finds no writer.
    let mut tokens = HashSet::new();
    for lock in EXCLUSIVE {
        // (time, 0 = release / 1 = grant, index)
        let mut events: Vec<(Duration, u8, usize)> = Vec::new();
        for (i, h) in history.iter().enumerate().filter(|(_, h)| h.lock == lock) {
            events.push((h.granted, 1, i));
            events.push((h.released.expect("every grant ends"), 0, i));
        }
        events.sort();
        let mut writers: Vec<usize> = Vec::new();
        let mut readers: Vec<usize> = Vec::new();
        for (at, grant, i) in events {
            let h = &history[i];
            let holders = if h.read { &mut readers } else { &mut writers };
            if grant == 0 {
                holders.retain(|&j| j != i);
                continue;
            }
            let conflict = if h.read {
                writers.first()
            } else {
                writers.first().or(readers.first())
            };
            if let Some(&j) = conflict {
                let other = &history[j];
                problems.push(format!(
                    "{lock}: client {} ({}) granted at {at:?} while client {} ({}) held it since {:?}",
                    h.client,
                    if h.read { "read" } else { "write" },
                    other.client,
                    if other.read { "read" } else { "write" },
                    other.granted
                ));
                break;
            }
            let holders = if h.read { &mut readers } else { &mut writers };
            holders.push(i);
        }
    }
    // Tokens: unique, and ordered as cause and effect allow.
    let mut exclusive: Vec<&Held> = history.iter().filter(|h| h.token.is_some()).collect();
    for held in &exclusive {
        if !tokens.insert(held.token) {
            problems.push(format!("token {:?} granted twice", held.token));
        }
    }
    exclusive.sort_by_key(|h| std::cmp::Reverse(h.token));
    let mut first_later_grant: Option<&Held> = None;
    for held in exclusive {
        if let Some(later) = first_later_grant {
            if later.granted < held.requested {
                problems.push(format!(
                    "token {:?} was received at {:?}, before token {:?} was requested at {:?}",
                    later.token, later.granted, held.token, held.requested
                ));
            }
        }
        if first_later_grant.is_none_or(|l| held.granted < l.granted) {
            first_later_grant = Some(held);
        }
    }
    // Semaphore limits: sweep the intervals, releases first at a tie.
    for (lock, limit) in SEMAPHORES {
        let mut events: Vec<(Duration, i64)> = Vec::new();
        for h in history.iter().filter(|h| h.lock == lock) {
            events.push((h.granted, 1));
            events.push((h.released.expect("every grant ends"), -1));
        }
        events.sort();
        let mut holders = 0;
        for (at, delta) in events {
            holders += delta;
            if holders > i64::from(limit) {
                problems.push(format!(
                    "{lock}: {holders} holders at {at:?}, limit {limit}"
                ));
                break;
            }
        }
    }
    problems
}

fn chaos_seconds() -> u64 {
    std::env::var("LOCKD_CHAOS_SECS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(5)
}

on_both!(sixty_four_clients_of_chaos);

fn sixty_four_clients_of_chaos(kind: Kind) {
    let seed = seeds("sixty_four_clients_of_chaos", &[])[0];
    let (servers, secs) = if kind.is_cluster() {
        let secs = std::env::var("LOCKD_CHAOS_CLUSTER_SECS")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(3);
        (common::etcd::nodes(2, |_| {}), secs)
    } else {
        (vec![TestServer::start()], chaos_seconds())
    };
    let clients = if kind.is_cluster() {
        CLUSTER_CLIENTS
    } else {
        CLIENTS
    };
    println!(
        "chaos: {clients} clients for {secs} s through {} server(s)",
        servers.len()
    );
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let mut rng = Rng::new(seed);
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let rng = rng.fork();
            thread::Builder::new()
                .name(format!("chaos-{i}"))
                .stack_size(256 * 1024)
                .spawn({
                    let addrs = addrs.clone();
                    move || client(i, &addrs, rng, start, until)
                })
                .expect("spawn client")
        })
        .collect();
    let mut history = Vec::new();
    let mut tally = Tally::default();
    let mut errors = Vec::new();
    for thread in threads {
        let (h, t, error) = thread.join().expect("client thread");
        history.extend(h);
        tally.add(&t);
        errors.extend(error);
    }
    println!("chaos: {tally:?} in {:?}", start.elapsed());
    let problems = check(&history);
    assert!(
        errors.is_empty() && problems.is_empty(),
        "seed {seed:#x}: clients saw {errors:#?}\nthe history shows {problems:#?}"
    );
    // Every grant through a node costs etcd round trips (a hand-over
    // three): far fewer happen there in the same time.
    let least = if kind.is_cluster() { 25 } else { 100 };
    assert!(tally.grants > least, "too little happened: {tally:?}");

    // Everything left behind is cleaned up (the lock gauges count the
    // cluster, `connections` and the counters each node).
    let mut conns: Vec<_> = servers.iter().map(TestServer::connect).collect();
    for conn in &mut conns {
        assert!(conn.cmd("hello 2").starts_with("2 lockd "));
    }
    let want = [
        ("locks", 0),
        ("shared_locks", 0),
        ("read_locks", 0),
        ("waiting", 0),
        ("connections", 1),
    ];
    for conn in &mut conns {
        common::poll_until(common::PATIENCE, || {
            let got: Vec<(&str, u64)> = want.iter().map(|(k, _)| (*k, conn.stat(k))).collect();
            common::check(got == want, || {
                format!("seed {seed:#x}: left behind: {got:?}")
            })
        });
    }
    let mut total = |key: &str| conns.iter_mut().map(|c| c.stat(key)).sum::<u64>();
    assert_eq!(total("wait_timeouts"), tally.timeouts, "wait_timeouts");
    assert_eq!(total("ttl_expirations"), tally.expired, "ttl_expirations");
    assert!(total("deadlocks") >= tally.deadlocks, "deadlocks");
    let exclusive = history.iter().filter(|h| h.token.is_some()).count() as u64;
    assert!(total("grants") >= exclusive, "grants");
}
