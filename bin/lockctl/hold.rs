//! Taking a lock as `flock` would, for `lockctl run` and `lockctl hold`,
//! and `lockctl hold` itself: keep a lock for the rest of a shell script.
//!
//! Three kinds of hold, as the command line asks:
//!
//! * exclusive (`-x`, the default): `wg`, or `g` polled with backoff on a
//!   classic server;
//! * read (`-s`, flock's shared): `wr`, PROTOCOL.md Part 2, many readers or
//!   one writer of the same name. `lockd::Client` has no read holds yet, so
//!   they go over a raw connection ([`Wire`]); a server without `wr` (a
//!   classic one, or an older lockd) gets the exclusive lock instead, which
//!   excludes more but never less, and lockctl says so;
//! * a place in a counted semaphore (`--semaphore`, `--limit N`): `wsg`,
//!   or `sg` polled on a classic server.

use crate::connect::{connect, exit, in_cli_terms, Global};
use crate::wire::{Wire, FOREVER_MS};
use crossbeam_channel::{bounded, select, Receiver};
use lockd::transport::Stream;
use lockd::{Client, Error, LockGuard, SharedGuard};
use std::io::{self, Write};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How long to wait for a busy lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Try once (`-n`).
    No,
    /// Wait in line up to this long (`-w`).
    For(Duration),
    /// Wait in line as long as it takes (the default).
    Forever,
}

/// Which hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `-x`: the one writer.
    Exclusive,
    /// `-s`: one of many readers.
    Read,
    /// `--semaphore`: one of at most `limit` holders (`None`: no limit).
    Semaphore(Option<u32>),
}

impl Mode {
    fn described(self) -> &'static str {
        match self {
            Mode::Exclusive => "the exclusive lock",
            Mode::Read => "a read hold on",
            Mode::Semaphore(_) => "a place in semaphore",
        }
    }
}

/// What to take, and how.
#[derive(Clone, Debug)]
pub struct LockOptions {
    /// The lock.
    pub name: String,
    /// `-x`, `-s` or `--semaphore`.
    pub mode: Mode,
    /// `-w` / `-n`.
    pub wait: Wait,
    /// `-E`: the exit status when the lock is busy.
    pub conflict_exit_code: u8,
    /// `--verbose`: say on stderr when lockctl waits, gets and releases.
    pub verbose: bool,
}

impl LockOptions {
    fn timeout(&self) -> Duration {
        match self.wait {
            Wait::No => Duration::ZERO,
            Wait::For(d) => d,
            Wait::Forever => Duration::MAX,
        }
    }

    fn say(&self, what: std::fmt::Arguments<'_>) {
        if self.verbose {
            eprintln!("lockctl: {what}");
        }
    }
}

/// The longest a classic server is polled between tries.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A read hold taken over a [`Wire`]: a thread reads the connection, so
/// its end is noticed at once.
pub struct ReadHold {
    stream: Arc<Stream>,
    replies: Receiver<Vec<u8>>,
    name: String,
    readers: u64,
    timeout: Duration,
}

/// A lock held.
pub enum Held {
    /// `-x`.
    Exclusive(LockGuard),
    /// `--semaphore`.
    Shared(SharedGuard),
    /// `-s`.
    Read(ReadHold),
}

impl Held {
    /// The fencing token of an exclusive lock on a protocol-2 server.
    pub fn token(&self) -> Option<u64> {
        match self {
            Held::Exclusive(g) => g.token(),
            _ => None,
        }
    }

    /// The kind and number of a `hold` line: the token for `x` (0 when the
    /// server gives none), the holders for `s` and `rd`.
    fn kind_and_number(&self) -> (&'static str, u64) {
        match self {
            Held::Exclusive(g) => ("x", g.token().unwrap_or(0)),
            Held::Shared(g) => ("s", g.holders()),
            Held::Read(r) => ("rd", r.readers),
        }
    }

    fn shown(&self) -> String {
        match self {
            Held::Exclusive(g) => match g.token() {
                Some(t) => format!(
                    "the exclusive lock {:?} (token {t})",
                    lossy(g.name().as_bytes())
                ),
                None => format!("the exclusive lock {:?}", lossy(g.name().as_bytes())),
            },
            Held::Shared(g) => format!(
                "a place in semaphore {:?} ({} holders)",
                lossy(g.name().as_bytes()),
                g.holders()
            ),
            Held::Read(r) => format!("a read hold on {:?} ({} readers)", r.name, r.readers),
        }
    }

    /// Gives the lock back (`r`, `sr`, `rr`); with `verbose`, says so.
    pub fn release(self, verbose: bool) {
        let shown = self.shown();
        let released = match self {
            Held::Exclusive(g) => g.release().map_err(|e| e.to_string()),
            Held::Shared(g) => g.release().map_err(|e| e.to_string()),
            Held::Read(r) => r.release(),
        };
        if verbose {
            match released {
                Ok(()) => eprintln!("lockctl: released {shown}"),
                Err(e) => eprintln!("lockctl: releasing {shown}: {e}"),
            }
        }
    }
}

impl ReadHold {
    fn release(self) -> Result<(), String> {
        let mut line = b"rr ".to_vec();
        line.extend_from_slice(self.name.as_bytes());
        line.push(b'\n');
        (&*self.stream)
            .write_all(&line)
            .map_err(|e| e.to_string())?;
        match self.replies.recv_timeout(self.timeout) {
            Ok(reply) if reply.starts_with(b"1 ") => Ok(()),
            Ok(reply) => Err(lossy(reply.trim_ascii_end())),
            Err(_) => Err("the server did not answer rr".into()),
        }
    }
}

/// A lock taken, with the connection that holds it.
pub struct Taken {
    /// The lock.
    pub held: Held,
    /// Ready once the connection has ended: the server has then given
    /// the lock to someone else.
    pub lost: Receiver<()>,
    client: Option<Client>,
}

impl Taken {
    /// Why the connection ended, as well as it can be told.
    pub fn why_lost(&self) -> String {
        self.client
            .as_ref()
            .and_then(|c| c.name().err())
            .map(|e| e.to_string())
            .unwrap_or_else(|| "the connection to the server ended".into())
    }
}

/// Why no lock: busy (exit `-E`), or an error (exit 69).
enum NotHeld {
    Busy,
    Failed(String),
}

impl From<Error> for NotHeld {
    fn from(e: Error) -> NotHeld {
        if (e.is_timeout() && !e.locks_lost()) || e.is_already_locked() {
            NotHeld::Busy
        } else {
            NotHeld::Failed(in_cli_terms(&e))
        }
    }
}

/// Connects and takes the lock as `options` say. On failure, prints why
/// and returns the exit status: `-E`'s when busy.
pub fn take(global: &Global, options: &LockOptions) -> Result<Taken, u8> {
    let me = format!("lockctl[{}]", std::process::id());
    let started = Instant::now();
    let result = if options.mode == Mode::Read {
        match take_read(global, options, &me)? {
            Some(result) => result,
            None => take_with_client(global, options, Mode::Exclusive, &me)?,
        }
    } else {
        take_with_client(global, options, options.mode, &me)?
    };
    match result {
        Ok(taken) => {
            options.say(format_args!(
                "got {} after {:.3}s",
                taken.held.shown(),
                started.elapsed().as_secs_f64()
            ));
            Ok(taken)
        }
        Err(NotHeld::Busy) => {
            eprintln!("lockctl: lock {:?} is busy", options.name);
            Err(options.conflict_exit_code)
        }
        Err(NotHeld::Failed(e)) => {
            eprintln!("lockctl: cannot take lock {:?}: {e}", options.name);
            Err(exit::UNAVAILABLE)
        }
    }
}

type Attempt = Result<Taken, NotHeld>;

fn take_with_client(
    global: &Global,
    options: &LockOptions,
    mode: Mode,
    me: &str,
) -> Result<Attempt, u8> {
    let client = connect(global)?;
    // Registering a name lets `d` and `lockctl status` show who holds it;
    // a server with the registry off just says so.
    let _ = client.set_name(me);
    let mut result = Err(NotHeld::Busy);
    if options.verbose && options.wait != Wait::No {
        result = acquire(&client, &options.name, mode, Duration::ZERO);
        if matches!(result, Err(NotHeld::Busy)) {
            options.say(format_args!(
                "waiting for {} {:?}",
                mode.described(),
                options.name
            ));
        }
    }
    if matches!(result, Err(NotHeld::Busy)) {
        result = acquire(&client, &options.name, mode, options.timeout());
    }
    Ok(result.map(|held| Taken {
        held,
        lost: client.on_disconnect(),
        client: Some(client),
    }))
}

/// Takes the lock on `client`. On a classic server (no `wg`, `wsg`),
/// waiting is polling with backoff.
fn acquire(client: &Client, name: &str, mode: Mode, timeout: Duration) -> Result<Held, NotHeld> {
    let v2 = client.protocol() >= 2;
    match mode {
        Mode::Exclusive | Mode::Read if v2 => Ok(Held::Exclusive(client.lock_wait(name, timeout)?)),
        Mode::Exclusive | Mode::Read => {
            poll(timeout, || Ok(client.try_lock(name)?.map(Held::Exclusive)))
        }
        Mode::Semaphore(None) => Ok(Held::Shared(client.lock_shared(name)?)),
        Mode::Semaphore(Some(limit)) if v2 => Ok(Held::Shared(
            client.lock_shared_limited(name, limit, timeout)?,
        )),
        Mode::Semaphore(Some(limit)) => poll(timeout, || {
            // `sg` counts us in: if that makes too many, step back out.
            let guard = client.lock_shared(name)?;
            if guard.holders() <= u64::from(limit) {
                Ok(Some(Held::Shared(guard)))
            } else {
                guard.release()?;
                Ok(None)
            }
        }),
    }
}

/// Tries until `attempt` succeeds or `timeout` passes, sleeping 10 ms,
/// 20 ms, ... up to 1 s between tries.
fn poll(
    timeout: Duration,
    mut attempt: impl FnMut() -> Result<Option<Held>, Error>,
) -> Result<Held, NotHeld> {
    let deadline = Instant::now().checked_add(timeout);
    let mut backoff = Duration::from_millis(10);
    loop {
        if let Some(held) = attempt()? {
            return Ok(held);
        }
        let left = match deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => Duration::MAX,
        };
        if left.is_zero() {
            return Err(NotHeld::Busy);
        }
        thread::sleep(backoff.min(left));
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A read hold with `wr`. `Ok(None)`: the server has no `wr`, so the
/// caller takes the exclusive lock instead.
fn take_read(global: &Global, options: &LockOptions, me: &str) -> Result<Option<Attempt>, u8> {
    let mut wire = match Wire::connect(global) {
        Ok(wire) => wire,
        Err(e) => {
            eprintln!("lockctl: {}", e.message);
            return Err(if e.usage {
                exit::USAGE
            } else {
                exit::UNAVAILABLE
            });
        }
    };
    let io_timeout = wire.timeout();
    let failed = |e: io::Error| Ok(Some(Err(NotHeld::Failed(e.to_string()))));
    if !wire.v2 {
        eprintln!(
            "lockctl: a classic server has no read holds: taking the exclusive lock {:?} instead",
            options.name
        );
        return Ok(None);
    }
    let mut iam = b"iam ".to_vec();
    iam.extend_from_slice(me.as_bytes());
    if let Err(e) = wire.call(&iam, Some(io_timeout)) {
        return failed(e);
    }
    let mut tries = vec![options.timeout()];
    if options.verbose && options.wait != Wait::No {
        tries.insert(0, Duration::ZERO);
    }
    for (i, wait) in tries.iter().enumerate() {
        if i > 0 {
            options.say(format_args!(
                "waiting for a read hold on {:?}",
                options.name
            ));
        }
        let ms = u64::try_from(wait.as_millis()).map_or(FOREVER_MS, |ms| ms.min(FOREVER_MS));
        let mut line = format!("wr {ms} ").into_bytes();
        line.extend_from_slice(options.name.as_bytes());
        let reply_within = wait.checked_add(io_timeout).filter(|_| ms < FOREVER_MS);
        let reply = match wire.call(&line, reply_within) {
            Ok(reply) => reply,
            Err(e) => return failed(e),
        };
        let reply = reply.trim_ascii_end();
        let text = lossy(reply);
        if text.contains(" Read Lock Get Success: ") {
            let readers = text
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            return Ok(Some(Ok(read_hold(wire, options, readers))));
        }
        if text.starts_with("0 Read Lock Get Timeout") {
            continue;
        }
        if text.starts_with("0 Error") {
            eprintln!(
                "lockctl: this server has no read holds ({text}): taking the exclusive lock {:?} instead",
                options.name
            );
            return Ok(None);
        }
        return Ok(Some(Err(NotHeld::Failed(text))));
    }
    Ok(Some(Err(NotHeld::Busy)))
}

/// Hands the connection to a thread that reads it: the reply to `rr`
/// goes to the release, and the connection's end makes `lost` ready.
fn read_hold(wire: Wire, options: &LockOptions, readers: u64) -> Taken {
    let timeout = wire.timeout();
    let (stream, mut read) = wire.split();
    let (replies_tx, replies) = bounded(1);
    let (lost_tx, lost) = bounded(1);
    // Should the thread not start, the senders are dropped with it and
    // `lost` is ready at once: the lock then counts as lost, so nothing
    // runs unguarded.
    let _ = thread::Builder::new()
        .name("lockctl-read-hold".into())
        .spawn(move || {
            while let Ok(line) = read() {
                if replies_tx.try_send(line).is_err() {
                    break;
                }
            }
            let _ = lost_tx.send(());
        });
    Taken {
        held: Held::Read(ReadHold {
            stream,
            replies,
            name: options.name.clone(),
            readers,
            timeout,
        }),
        lost,
        client: None,
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `lockctl hold`: takes the lock, prints `held KIND N NAME` (with
/// `--json`, an object) on standard output, and keeps the lock until
/// whoever reads standard output closes it, which for
/// `exec {fd}< <(lockctl hold NAME)` is when the calling shell exits (or
/// closes the descriptor). Returns the exit status.
pub fn hold(global: &Global, options: &LockOptions, json: bool) -> u8 {
    let taken = match take(global, options) {
        Ok(taken) => taken,
        Err(code) => return code,
    };
    let (kind, number) = taken.held.kind_and_number();
    let line = if json {
        let mut object = serde_json::json!({"event": "held", "kind": kind, "name": options.name});
        object[if kind == "x" { "token" } else { "count" }] = number.into();
        object.to_string()
    } else {
        format!("held {kind} {number} {}", options.name)
    };
    let mut out = io::stdout();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        taken.held.release(options.verbose);
        return 0;
    }
    let (gone_tx, gone) = bounded(1);
    let watcher = thread::Builder::new()
        .name("lockctl-stdout".into())
        .spawn(move || {
            reader_gone(libc::STDOUT_FILENO);
            let _ = gone_tx.send(());
        });
    if let Err(e) = watcher {
        eprintln!("lockctl: cannot start a thread to watch standard output: {e}");
        taken.held.release(options.verbose);
        return exit::UNAVAILABLE;
    }
    select! {
        recv(gone) -> _ => {
            taken.held.release(options.verbose);
            0
        }
        recv(taken.lost) -> _ => {
            eprintln!("lockctl: lost lock {:?}: {}", options.name, taken.why_lost());
            exit::LOCK_LOST
        }
    }
}

/// Returns once nobody reads the pipe on `fd` any more (POLLERR or
/// POLLHUP on its write end). On a terminal or a file it never returns.
fn reader_gone(fd: libc::c_int) {
    let mut poll = libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    };
    loop {
        // SAFETY: one pollfd that lives across the call.
        let n = unsafe { libc::poll(&mut poll, 1, -1) };
        if n > 0 && poll.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            return;
        }
        if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}
