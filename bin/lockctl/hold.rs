//! Taking a lock as `flock` would, for `lockctl run` and `lockctl hold`,
//! and `lockctl hold` itself: keep a lock for the rest of a shell script.
//!
//! Three kinds of hold, as the command line asks:
//!
//! * exclusive (`-x`, the default): `wg`, or `g` polled with backoff on a
//!   classic server (by `lockd::Client`);
//! * read (`-s`, flock's shared): `wr`, PROTOCOL.md Part 2, many readers or
//!   one writer of the same name; a classic server, which has no `wr`, gets
//!   the exclusive lock instead, which excludes more but never less, and
//!   lockctl says so;
//! * a place in a counted semaphore (`--semaphore`, `--limit N`): `wsg`,
//!   or `sg` polled on a classic server.

use crate::connect::{connect, exit, in_cli_terms, Global};
use crossbeam_channel::{bounded, select, Receiver};
use lockd::{Client, Error, LockGuard, ReadGuard, SharedGuard};
use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;
use std::io::{self, Write};
use std::os::fd::AsFd;
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

/// A lock held.
pub enum Held {
    /// `-x`.
    Exclusive(LockGuard),
    /// `--semaphore`.
    Shared(SharedGuard),
    /// `-s`.
    Read(ReadGuard),
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
            Held::Read(r) => ("rd", r.readers()),
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
            Held::Read(r) => format!(
                "a read hold on {:?} ({} readers)",
                lossy(r.name().as_bytes()),
                r.readers()
            ),
        }
    }

    /// Gives the lock back (`r`, `sr`, `rr`); with `verbose`, says so.
    pub fn release(self, verbose: bool) {
        let shown = self.shown();
        let released = match self {
            Held::Exclusive(g) => g.release(),
            Held::Shared(g) => g.release(),
            Held::Read(r) => r.release(),
        };
        if verbose {
            match released {
                Ok(()) => eprintln!("lockctl: released {shown}"),
                Err(e) => eprintln!("lockctl: releasing {shown}: {}", in_cli_terms(&e)),
            }
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
    client: Client,
}

impl Taken {
    /// Why the connection ended, as well as it can be told.
    pub fn why_lost(&self) -> String {
        self.client
            .identity()
            .err()
            .map(|e| in_cli_terms(&e))
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
        if e.is_timeout() && !e.locks_lost() {
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
    let result = take_with_client(global, options, &me)?;
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

fn take_with_client(global: &Global, options: &LockOptions, me: &str) -> Result<Attempt, u8> {
    let client = connect(global)?;
    // Registering a name lets `d` and `lockctl status` show who holds it;
    // a server with the registry off just says so.
    let _ = client.register(me);
    let mut mode = options.mode;
    if mode == Mode::Read && client.protocol() < 2 {
        eprintln!(
            "lockctl: a classic server has no read holds: taking the exclusive lock {:?} instead",
            options.name
        );
        mode = Mode::Exclusive;
    }
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
    // The client tells a callback when the connection ends; run and hold
    // `select!` on a channel.
    let (lost_tx, lost) = bounded(1);
    client.on_disconnect_call(move || {
        let _ = lost_tx.try_send(());
    });
    Ok(result.map(|held| Taken { held, lost, client }))
}

/// Takes the lock on `client`, waiting at most `timeout` (the client polls
/// a classic server with backoff).
fn acquire(client: &Client, name: &str, mode: Mode, timeout: Duration) -> Result<Held, NotHeld> {
    let held = match mode {
        Mode::Exclusive => client.try_lock_for(name, timeout)?.map(Held::Exclusive),
        Mode::Read => client.try_read_for(name, timeout)?.map(Held::Read),
        Mode::Semaphore(limit) => client
            .try_lock_shared_for(name, limit.unwrap_or(0), timeout)?
            .map(Held::Shared),
    };
    held.ok_or(NotHeld::Busy)
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
            reader_gone(io::stdout());
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
fn reader_gone(fd: impl AsFd) {
    let gone = PollFlags::ERR | PollFlags::HUP | PollFlags::NVAL;
    loop {
        let mut fds = [PollFd::new(&fd, PollFlags::empty())];
        match poll(&mut fds, None) {
            Ok(n) if n > 0 && fds[0].revents().intersects(gone) => return,
            Err(e) if e != Errno::INTR => return,
            _ => {}
        }
    }
}
