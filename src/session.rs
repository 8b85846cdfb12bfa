//! One connection's protocol state and the execution of its commands. No
//! I/O here: replies are appended to a buffer, and a wait in line is handed
//! back to the connection loop. Dropping a session releases everything the
//! connection held (the "orphaning" of `PROTOCOL.md`).

mod listing;
#[cfg(all(test, feature = "cluster"))]
mod tests;

pub use listing::Listing;
use listing::What;

use crate::events;
use crate::metrics::{Holds, LockKind, Metrics, Outcome};
use crate::name::LockName;
use crate::protocol::reply::{self, status};
use crate::protocol::{self, Command, Name, Parsed, Verb};
use crate::secret::Secret;
use crate::stats::{bump, Stats};
use crate::store::{
    ClientId, Event, Grant, HoldKind, LimitError, LockStore, StoreError, WaitStart, WatchEvent,
    Watcher,
};
use crossbeam_channel::{bounded, Receiver};
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which kind of lock a connection waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `wg`
    Exclusive,
    /// `wsg`
    Shared,
    /// `wr`
    Read,
}

/// A wait the connection loop must carry out.
#[derive(Debug)]
pub struct Wait {
    /// What kind of lock.
    pub kind: Kind,
    /// The lock.
    pub name: LockName,
    /// When to give up.
    pub deadline: Instant,
    /// When it began.
    pub started: Instant,
}

/// What to do after a command.
#[derive(Debug)]
pub enum Step {
    /// The reply is in the buffer.
    Done,
    /// Wait for a grant, then call [`Session::finish_wait`].
    Wait(Wait),
    /// A failed `auth`: pause this long before reading on, so guessing
    /// is slow (the reply is in the buffer).
    Pause(Duration),
    /// Send the reply, then close the connection, for this reason (too
    /// many failed `auth`, or the store no longer vouches for its locks).
    Close(&'static str),
    /// A listing: its opening is in the buffer; call [`Session::list`]
    /// for the rest, a bounded piece at a time.
    List(Listing),
}

/// The pause after the first failed `auth` on a connection; it doubles
/// with each further failure.
const AUTH_PAUSE: Duration = Duration::from_millis(100);

/// Failed `auth` attempts after which the connection is closed.
pub(crate) const MAX_AUTH_FAILURES: u32 = 5;

/// The settings a session obeys, taken from the server's configuration.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// Serve `d`, `sd`, `dump`, `dj`.
    pub(crate) dump: bool,
    /// Serve `iam` and `who`.
    pub(crate) registry: bool,
    /// Log every command.
    pub(crate) verbose: bool,
    /// Every verb but `hello` and `auth` needs `auth` first.
    pub(crate) auth_secret: Option<Secret>,
    /// Connections silent for this long are closed.
    pub(crate) idle_timeout: Option<Duration>,
    /// Shown by `q` as `max_connections`.
    pub(crate) max_connections: usize,
}

/// What a session needs of the server it runs in: the store below the
/// seam, the counters, the settings, and a hook before `q` answers.
pub(crate) trait Host: Send + Sync {
    /// The lock store.
    fn store(&self) -> &dyn LockStore;
    /// The counters behind `q`.
    fn stats(&self) -> &Stats;
    /// The histograms and gauges behind `/metrics`.
    fn metrics(&self) -> &Metrics;
    /// The server is disconnecting everyone (an immediate shutdown): its
    /// orphans are not events worth a log line each.
    fn closing(&self) -> bool;
    /// The settings.
    fn settings(&self) -> &Settings;
    /// Called before `q` counts connections, so that it counts every
    /// client whose connect completed.
    fn before_stats(&self);
}

/// Releases everything client `id` held and forgets it; counts orphans.
/// Idempotent: a second call for the same client finds nothing.
pub(crate) fn orphan(host: &dyn Host, id: ClientId) {
    let released = host.store().disconnect(id);
    let stats = host.stats();
    stats.orphans.fetch_add(
        (released.exclusive + released.read) as u64,
        Ordering::Relaxed,
    );
    stats
        .shared_orphans
        .fetch_add(released.shared as u64, Ordering::Relaxed);
}

/// One connection's state. See the module docs.
pub struct Session {
    host: Arc<dyn Host>,
    id: ClientId,
    name: String,
    version: u32,
    authenticated: bool,
    /// Failed `auth` attempts on this connection.
    auth_failures: u32,
    lease: Option<Duration>,
    lease_changed: bool,
    grants: Receiver<Grant>,
    /// Set by the first `watch`: the connection is an event stream now.
    watcher: Option<Watcher>,
    holds: Holds,
    registered: Option<Box<[u8]>>,
    /// `--verbose`, read once: every command asks.
    verbose: bool,
}

impl Session {
    pub(crate) fn new(host: Arc<dyn Host>, id: ClientId, name: String) -> Session {
        let (notify, grants) = bounded(1);
        host.store()
            .connect(id, name.clone().into_bytes().into_boxed_slice(), notify);
        let holds = host.metrics().holds(name.as_bytes());
        Session {
            authenticated: host.settings().auth_secret.is_none(),
            verbose: host.settings().verbose,
            auth_failures: 0,
            host,
            id,
            name,
            version: 1,
            lease: None,
            lease_changed: false,
            grants,
            watcher: None,
            holds,
            registered: None,
        }
    }

    /// Joins the table again after another thread orphaned this connection
    /// on a hang-up it saw just as this thread read the peer's last
    /// commands: those are still answered, and whatever they take is
    /// released when the connection ends, like any lock.
    pub(crate) fn rejoin(&mut self) {
        let (notify, grants) = bounded(1);
        self.grants = grants;
        let name = self.name.clone().into_bytes().into_boxed_slice();
        self.host.store().connect(self.id, name, notify);
    }

    /// `IP:PORT` or `unix:N`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where grants for this connection's waits arrive.
    pub fn grants(&self) -> &Receiver<Grant> {
        &self.grants
    }

    /// The read timeout the connection should use, when it changed since
    /// the last call: the `ttl` lease or the idle timeout, whichever is
    /// shorter.
    pub fn take_read_timeout_change(&mut self) -> Option<Option<Duration>> {
        if !std::mem::take(&mut self.lease_changed) {
            return None;
        }
        Some(match (self.lease, self.host.settings().idle_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Counts and logs a read timeout: a `ttl` expiry when the lease is
    /// what ran out (it is set and no longer than the idle timeout), else
    /// idleness.
    pub fn lease_expired(&self) {
        let lease_first = match (self.lease, self.host.settings().idle_timeout) {
            (Some(lease), Some(idle)) => lease <= idle,
            (lease, _) => lease.is_some(),
        };
        if lease_first {
            bump(&self.host.stats().ttl_expirations);
        }
        if self.host.settings().verbose {
            ::log::info!("{}: closed: lease or idle timeout ran out", self.name);
        }
    }

    /// Handles a line longer than the limit.
    pub fn line_too_long(&mut self, out: &mut Vec<u8>) {
        bump(&self.host.stats().invalid_commands);
        bump(&self.host.stats().lines_too_long);
        if self.version >= 2 {
            reply::error(out, &reply::LINE_TOO_LONG);
        }
    }

    /// The next command was read from the peer just now (not buffered
    /// behind others): it starts a new batch for the hold-time clock.
    pub fn fresh_input(&mut self) {
        self.holds.new_batch();
    }

    /// Executes one line, appending its reply to `out`. `settle` releases
    /// what clients that hung up held (see `server::liveness`): it is
    /// called before a command that can show other clients (see
    /// [`Verb::sees_others`]), and by a `g` or `wg` when the lock is not
    /// free at once (it then asks again: a refusal or a place in line may
    /// reflect a client that has left).
    pub fn execute(&mut self, line: &[u8], out: &mut Vec<u8>, settle: &mut dyn FnMut()) -> Step {
        let step = self.execute_line(line, out, settle);
        if !matches!(step, Step::Done) {
            // A wait, a pause or a listing: time passes before the next
            // command.
            self.holds.new_batch();
        }
        step
    }

    fn execute_line(&mut self, line: &[u8], out: &mut Vec<u8>, settle: &mut dyn FnMut()) -> Step {
        let command = match protocol::parse_line(line) {
            Parsed::Empty => return Step::Done,
            Parsed::Command(command) => command,
            Parsed::Unknown => {
                bump(&self.host.stats().invalid_commands);
                self.log_line(line, None);
                if self.version >= 2 {
                    reply::error(out, &protocol::UNKNOWN_VERB);
                }
                return Step::Done;
            }
            Parsed::Malformed(verb, error) => {
                bump(&self.host.stats().invalid_commands);
                self.log_line(line, Some(verb));
                if self.version >= 2 {
                    reply::error(out, &error);
                }
                return Step::Done;
            }
        };
        let verb = command.verb();
        self.log_line(line, Some(verb));
        if verb != Verb::Stats {
            self.host.stats().count_command(verb);
        }
        if !self.authenticated && !matches!(verb, Verb::Hello | Verb::Auth) {
            if verb == Verb::Stats {
                self.host.stats().count_command(verb);
            }
            out.extend_from_slice(reply::AUTH_REQUIRED);
            self.end_block(verb, out);
            return Step::Done;
        }
        if self.watcher.is_some() && verb != Verb::Watch {
            if self.version >= 2 {
                reply::error(out, &reply::WATCHING);
            }
            return Step::Done;
        }
        if verb.sees_others() {
            settle();
        }
        self.run(command, out, settle)
    }

    /// The event queue once this connection watches locks: the connection
    /// loop streams it (see [`Session::write_event`]).
    pub fn watcher(&self) -> Option<&Watcher> {
        self.watcher.as_ref()
    }

    /// Appends one event line of `watch`.
    pub fn write_event(&self, event: &WatchEvent, out: &mut Vec<u8>) {
        let what = match event.event {
            Event::Held => "held",
            Event::Locked => "locked",
            Event::Released => "released",
            Event::Orphaned => "orphaned",
        };
        let kind = match event.kind {
            HoldKind::Exclusive => "x",
            HoldKind::Shared => "s",
            HoldKind::Read => "rd",
        };
        reply::watch_event(
            out,
            what,
            kind,
            event.n,
            &event.holder,
            event.name.as_bytes(),
        );
    }

    fn run(&mut self, command: Command<'_>, out: &mut Vec<u8>, settle: &mut dyn FnMut()) -> Step {
        let host = &*self.host;
        let table = host.store();
        let config = host.settings();
        let id = self.id;
        match command {
            Command::Get(name) => match table.lock_if_free(id, name.as_bytes()) {
                // Granted before settling: a grant shows no other client.
                Some(_) => self.get_granted(name.as_bytes(), out),
                None => {
                    settle();
                    return self.get(name, out);
                }
            },
            Command::Release(name) => match table.release(id, name.as_bytes()) {
                Ok(true) => {
                    let kind = LockKind::Exclusive;
                    self.holds.released(host.metrics(), kind, name.as_bytes());
                    status(out, 1, reply::LOCK_RELEASE_SUCCESS, name.as_bytes());
                }
                Ok(false) => status(out, 0, reply::LOCK_RELEASE_FAILURE, name.as_bytes()),
                Err(e) => {
                    let classic = Some((reply::LOCK_RELEASE_FAILURE, name.as_bytes()));
                    return self.failed(e, Verb::Release, classic, out);
                }
            },
            Command::IsLocked(name) => match table.is_locked(name.as_bytes()) {
                Ok(true) => status(out, 1, reply::LOCK_IS_LOCKED, name.as_bytes()),
                Ok(false) => status(out, 0, reply::LOCK_NOT_LOCKED, name.as_bytes()),
                // Either classic answer would claim to know.
                Err(e) => return self.failed(e, Verb::IsLocked, None, out),
            },
            Command::Holders(filter) if config.dump && filter.as_bytes().is_empty() => {
                return self.listing(What::Holders, Verb::Holders, out);
            }
            Command::Holders(filter) => {
                if config.dump {
                    let locks = match table.exclusive_locks(filter.as_bytes()) {
                        Ok(locks) => locks,
                        Err(e) => return self.failed(e, Verb::Holders, None, out),
                    };
                    for lock in locks {
                        reply::pair_line(out, lock.name.as_bytes(), lock.holder.display());
                    }
                } else {
                    out.extend_from_slice(reply::DISABLED);
                }
                self.end_block(Verb::Holders, out);
            }
            Command::Dump { shared } => {
                if !config.dump {
                    out.extend_from_slice(reply::DISABLED);
                } else if shared {
                    return self.listing(What::DumpShared, Verb::Dump, out);
                } else {
                    return self.listing(What::Dump, Verb::Dump, out);
                }
            }
            Command::SharedGet(name) => match table.lock_shared(id, name.as_bytes()) {
                Ok(holders) => {
                    self.holds.granted(LockKind::Shared, name.as_bytes());
                    status(
                        out,
                        holders as u64,
                        reply::SHARED_GET_SUCCESS,
                        name.as_bytes(),
                    )
                }
                Err(StoreError::Limit(error)) => {
                    self.refuse(error, reply::SHARED_GET_FAILURE, name.as_bytes(), out)
                }
                Err(e) => {
                    let classic = Some((reply::SHARED_GET_FAILURE, name.as_bytes()));
                    return self.failed(e, Verb::SharedGet, classic, out);
                }
            },
            Command::SharedRelease(name) => match table.release_shared(id, name.as_bytes()) {
                Ok(true) => {
                    let kind = LockKind::Shared;
                    self.holds.released(host.metrics(), kind, name.as_bytes());
                    status(out, 1, reply::SHARED_RELEASE_SUCCESS, name.as_bytes());
                }
                Ok(false) => status(out, 0, reply::SHARED_RELEASE_FAILURE, name.as_bytes()),
                Err(e) => {
                    let classic = Some((reply::SHARED_RELEASE_FAILURE, name.as_bytes()));
                    return self.failed(e, Verb::SharedRelease, classic, out);
                }
            },
            Command::SharedIsLocked(name) => match table.shared_count(name.as_bytes()) {
                Ok(0) => status(out, 0, reply::SHARED_NOT_LOCKED, name.as_bytes()),
                Ok(n) => status(out, n as u64, reply::SHARED_IS_LOCKED, name.as_bytes()),
                Err(e) => return self.failed(e, Verb::SharedIsLocked, None, out),
            },
            Command::SharedHolders(filter) if config.dump && filter.as_bytes().is_empty() => {
                return self.listing(What::SharedHolders, Verb::SharedHolders, out);
            }
            Command::SharedHolders(filter) => {
                if config.dump {
                    let locks = match table.shared_locks(filter.as_bytes()) {
                        Ok(locks) => locks,
                        Err(e) => return self.failed(e, Verb::SharedHolders, None, out),
                    };
                    for lock in locks {
                        for holder in &lock.holders {
                            reply::pair_line(out, lock.name.as_bytes(), holder.display());
                        }
                    }
                } else {
                    out.extend_from_slice(reply::DISABLED);
                }
                self.end_block(Verb::SharedHolders, out);
            }
            Command::Me => {
                out.extend_from_slice(b"1 ");
                out.extend_from_slice(self.name.as_bytes());
                out.push(b' ');
                match table.names(id).and_then(|n| n.registered) {
                    Some(registered) => out.extend_from_slice(&registered),
                    None => out.extend_from_slice(self.name.as_bytes()),
                }
                out.push(b'\n');
            }
            Command::Iam(name) => {
                if config.registry {
                    if let Err(e) = table.register(id, &name) {
                        return self.failed(e, Verb::Iam, None, out);
                    }
                    // For the orphan log line: a hang-up may be reaped, and
                    // the store forget the name, before this session ends.
                    self.registered = (!name.is_empty()).then(|| name.into());
                    out.extend_from_slice(reply::OK);
                } else {
                    out.extend_from_slice(reply::DISABLED);
                }
            }
            Command::Who(filter) if config.dump && config.registry && filter.is_empty() => {
                return self.listing(What::Who, Verb::Who, out);
            }
            Command::Who(filter) => {
                if config.dump && config.registry {
                    let clients = match table.registered(&filter) {
                        Ok(clients) => clients,
                        Err(e) => return self.failed(e, Verb::Who, None, out),
                    };
                    for client in clients {
                        reply::pair_line(out, &client.default, client.display());
                    }
                } else {
                    out.extend_from_slice(reply::DISABLED);
                }
                self.end_block(Verb::Who, out);
            }
            Command::Stats => {
                host.before_stats();
                let counts = match table.counts() {
                    Ok(counts) => counts,
                    Err(e) => {
                        host.stats().count_command(Verb::Stats);
                        return self.failed(e, Verb::Stats, None, out);
                    }
                };
                let report = host
                    .stats()
                    .report(counts, config.max_connections, self.version >= 2);
                reply::stats(out, report.iter().map(|(k, v)| (k.as_str(), *v)));
                // A `q` reply does not count that `q` itself.
                host.stats().count_command(Verb::Stats);
                self.end_block(Verb::Stats, out);
            }
            Command::Hello(version) => {
                self.version = if version >= 2 { 2 } else { 1 };
                reply::push_number(out, u64::from(self.version));
                out.extend_from_slice(
                    concat!(" lockd ", env!("CARGO_PKG_VERSION"), "\n").as_bytes(),
                );
            }
            Command::WaitGet { timeout_ms, name } => {
                // As `g`: granted at once shows nobody else.
                if let Some(grant) = table.lock_if_free(id, name.as_bytes()) {
                    let name = name.as_bytes();
                    let kind = LockKind::Exclusive;
                    (host.metrics()).observe_wait(kind, name, Outcome::Granted, Duration::ZERO);
                    self.reply_grant(grant, name, out);
                    return Step::Done;
                }
                settle();
                return self.start_wait(Kind::Exclusive, name, 0, timeout_ms, out);
            }
            Command::WaitSharedGet {
                timeout_ms,
                limit,
                name,
            } => return self.start_wait(Kind::Shared, name, limit, timeout_ms, out),
            Command::WaitRead { timeout_ms, name } => {
                return self.start_wait(Kind::Read, name, 0, timeout_ms, out)
            }
            Command::ReadRelease(name) => match table.release_read(id, name.as_bytes()) {
                Ok(true) => {
                    let kind = LockKind::Read;
                    self.holds.released(host.metrics(), kind, name.as_bytes());
                    status(out, 1, reply::READ_RELEASE_SUCCESS, name.as_bytes());
                }
                Ok(false) => status(out, 0, reply::READ_RELEASE_FAILURE, name.as_bytes()),
                Err(e) => {
                    let classic = Some((reply::READ_RELEASE_FAILURE, name.as_bytes()));
                    return self.failed(e, Verb::ReadRelease, classic, out);
                }
            },
            Command::Token(name) => match table.token(id, name.as_bytes()) {
                Ok(Some(token)) => status(out, token, reply::LOCK_TOKEN, name.as_bytes()),
                Ok(None) => status(out, 0, reply::LOCK_NOT_HELD, name.as_bytes()),
                Err(e) => {
                    let classic = Some((reply::LOCK_NOT_HELD, name.as_bytes()));
                    return self.failed(e, Verb::Token, classic, out);
                }
            },
            Command::ReleaseAll => match table.release_all(id) {
                Ok(released) => {
                    self.holds.release_all(host.metrics());
                    reply::push_number(out, released.total() as u64);
                    out.extend_from_slice(b" Released\n");
                }
                Err(e) => return self.failed(e, Verb::ReleaseAll, None, out),
            },
            Command::Ping => out.extend_from_slice(reply::PONG),
            Command::Ttl(seconds) => {
                self.lease = (seconds > 0).then(|| Duration::from_secs(seconds));
                self.lease_changed = true;
                out.extend_from_slice(b"1 ttl ");
                reply::push_number(out, seconds);
                out.push(b'\n');
            }
            Command::DumpJson => {
                if config.dump {
                    return self.listing(What::Json, Verb::DumpJson, out);
                }
                out.extend_from_slice(reply::DISABLED);
            }
            Command::Watch(pattern) => {
                if config.dump {
                    let (held, watcher) = match table.watch(id, pattern.as_bytes()) {
                        Ok(watch) => watch,
                        Err(e) => return self.failed(e, Verb::Watch, None, out),
                    };
                    if watcher.is_some() {
                        self.watcher = watcher;
                    }
                    reply::watching(out, pattern.as_bytes());
                    for event in &held {
                        self.write_event(event, out);
                    }
                    out.extend_from_slice(reply::SYNCED);
                } else {
                    out.extend_from_slice(reply::DISABLED);
                }
            }
            Command::Auth(guess) => match &config.auth_secret {
                Some(secret) if !secret.matches(&guess) => {
                    out.extend_from_slice(reply::AUTH_FAILURE);
                    return self.auth_failed();
                }
                _ => {
                    self.authenticated = true;
                    out.extend_from_slice(reply::AUTH_OK);
                }
            },
        }
        Step::Done
    }

    /// `g` once clients that hung up are settled: the store's answer
    /// stands, a refusal by a cap counted.
    fn get(&mut self, name: Name<'_>, out: &mut Vec<u8>) -> Step {
        let name = name.as_bytes();
        match self.host.store().lock_or_queue(self.id, name, false) {
            Ok(WaitStart::Granted(_)) => self.get_granted(name, out),
            Ok(WaitStart::Limit(error)) => self.refuse(error, reply::LOCK_GET_FAILURE, name, out),
            Ok(_) => status(out, 0, reply::LOCK_GET_FAILURE, name),
            Err(e) => {
                let classic = Some((reply::LOCK_GET_FAILURE, name));
                return self.failed(e, Verb::Get, classic, out);
            }
        }
        Step::Done
    }

    /// Records and answers a granted `g`.
    fn get_granted(&mut self, name: &[u8], out: &mut Vec<u8>) {
        self.holds.granted_write(self.host.metrics(), name);
        status(out, 1, reply::LOCK_GET_SUCCESS, name)
    }

    /// Starts a listing (see [`Session::list`]).
    fn listing(&self, what: What, verb: Verb, out: &mut Vec<u8>) -> Step {
        let end: &'static [u8] = if self.version >= 2 && verb.is_multi_line() {
            b"\n"
        } else {
            b""
        };
        Step::List(Listing::start(what, end, out))
    }

    /// Appends about `bound` more bytes of a listing to `out`; `false`
    /// once it is complete. The caller sends `out` between calls.
    ///
    /// A store that fails before the first page gets a failure reply in
    /// place of the listing, as any verb would (see [`Session::failed`]).
    ///
    /// # Errors
    /// The store failed in the middle of the listing (the reply cannot be
    /// completed), or a failure reply is not enough: the connection must
    /// end.
    pub fn list(&self, listing: &mut Listing, out: &mut Vec<u8>, bound: usize) -> io::Result<bool> {
        let error = match listing.fill(self.host.store(), out, bound) {
            Ok(more) => return Ok(more),
            Err(error) => error,
        };
        self.log_failure(&error);
        let Some(end) = listing.retract(out) else {
            return Err(io::Error::other(format!("listing cut short: {error}")));
        };
        if self.version < 2 {
            return Err(io::Error::other(CLASSIC_CANNOT_SAY));
        }
        reply::error(out, &error);
        out.extend_from_slice(end);
        if error.locks_lost() {
            return Err(io::Error::other(LOCKS_LOST));
        }
        Ok(false)
    }

    /// Counts and logs a failed `auth` (at most one line a second for the
    /// whole server); the connection pauses, longer each time, and closes
    /// after [`MAX_AUTH_FAILURES`].
    fn auth_failed(&mut self) -> Step {
        self.auth_failures += 1;
        let stats = self.host.stats();
        bump(&stats.auth_failures);
        if stats.log_allowed(&stats.auth_failure_logged) {
            ::log::warn!(
                "{}: failed auth ({} on this connection, {} in all)",
                self.name,
                self.auth_failures,
                stats.auth_failures.load(Ordering::Relaxed)
            );
        }
        if self.auth_failures >= MAX_AUTH_FAILURES {
            return Step::Close("too many failed auth attempts");
        }
        Step::Pause(AUTH_PAUSE * (1 << (self.auth_failures - 1)))
    }

    fn start_wait(
        &mut self,
        kind: Kind,
        name: Name<'_>,
        limit: u32,
        timeout_ms: u64,
        out: &mut Vec<u8>,
    ) -> Step {
        let table = self.host.store();
        let queue = timeout_ms > 0;
        let start = match kind {
            Kind::Exclusive => table.lock_or_queue(self.id, name.as_bytes(), queue),
            Kind::Read => table.read_or_queue(self.id, name.as_bytes(), queue),
            Kind::Shared => table.lock_shared_or_queue(self.id, name.as_bytes(), limit, queue),
        };
        let start = match start {
            Ok(start) => start,
            Err(e) => {
                // Not granted: on a classic connection, the timeout reply.
                let classic = Some((timeout_text(kind), name.as_bytes()));
                return self.failed(e, kind.verb(), classic, out);
            }
        };
        let metrics = self.host.metrics();
        match start {
            WaitStart::Granted(grant) => {
                let name = name.as_bytes();
                metrics.observe_wait(kind.into(), name, Outcome::Granted, Duration::ZERO);
                self.reply_grant(grant, name, out);
            }
            WaitStart::Busy => {
                let name = name.as_bytes();
                metrics.observe_wait(kind.into(), name, Outcome::Timeout, Duration::ZERO);
                self.reply_timeout(kind, name, out);
            }
            WaitStart::Deadlock => {
                bump(&self.host.stats().deadlocks);
                let holder = match kind {
                    Kind::Exclusive => (table.exclusive_locks(name.as_bytes()).ok())
                        .and_then(|mut locks| locks.pop()),
                    Kind::Read | Kind::Shared => None,
                };
                let holder = holder.map(|lock| lock.holder.default);
                events::deadlock_refused(
                    &self.name,
                    kind.into(),
                    name.as_bytes(),
                    holder.as_deref(),
                );
                let text = match kind {
                    Kind::Exclusive | Kind::Read => reply::LOCK_GET_DEADLOCK,
                    Kind::Shared => reply::SHARED_GET_DEADLOCK,
                };
                status(out, 0, text, name.as_bytes());
            }
            WaitStart::Limit(error) => {
                self.refuse(error, timeout_text(kind), name.as_bytes(), out);
            }
            WaitStart::Queued => {
                return Step::Wait(Wait {
                    kind,
                    name: name.to_lock_name(),
                    deadline: Instant::now() + Duration::from_millis(timeout_ms),
                    started: Instant::now(),
                })
            }
        }
        Step::Done
    }

    /// Ends a wait: `grant` if one came, else it timed out (unless the
    /// grant won the race with the timeout).
    pub fn finish_wait(&mut self, wait: Wait, grant: Option<Grant>, out: &mut Vec<u8>) {
        self.holds.new_batch();
        let grant = match grant {
            Some(grant) => Some(grant),
            None if self.host.store().cancel_wait(self.id) => None,
            None => self.grants.recv().ok(),
        };
        let outcome = match grant {
            Some(_) => Outcome::Granted,
            None => Outcome::Timeout,
        };
        let waited = wait.started.elapsed();
        (self.host.metrics()).observe_wait(wait.kind.into(), wait.name.as_bytes(), outcome, waited);
        match grant {
            Some(grant) => self.reply_grant(grant, wait.name.as_bytes(), out),
            None => self.reply_timeout(wait.kind, wait.name.as_bytes(), out),
        }
    }

    fn reply_grant(&mut self, grant: Grant, name: &[u8], out: &mut Vec<u8>) {
        let kind = match grant {
            Grant::Exclusive { .. } => LockKind::Exclusive,
            Grant::Read { .. } => LockKind::Read,
            Grant::Shared { .. } => LockKind::Shared,
        };
        if kind == LockKind::Exclusive {
            self.holds.granted_write(self.host.metrics(), name);
        } else {
            self.holds.granted(kind, name);
        }
        match grant {
            Grant::Exclusive { token } => status(out, token, reply::LOCK_GET_SUCCESS, name),
            Grant::Read { readers } => status(out, readers as u64, reply::READ_GET_SUCCESS, name),
            Grant::Shared { holders } => {
                status(out, holders as u64, reply::SHARED_GET_SUCCESS, name)
            }
        }
    }

    fn reply_timeout(&self, kind: Kind, name: &[u8], out: &mut Vec<u8>) {
        bump(&self.host.stats().wait_timeouts);
        status(out, 0, timeout_text(kind), name);
    }

    /// A store call failed. Protocol 2 hears `0 Error: WHY` (a multi-line
    /// verb's block closed as usual). A classic connection, which has no
    /// error line, gets `classic` (`0 TEXT: NAME`) when the verb has a
    /// failure reply that stays true (`g`: not granted); where every
    /// answer would claim to know the locks (`i`, `d`, `q`, ...) the
    /// connection ends instead. It ends on either protocol when the store
    /// no longer vouches for this connection's locks.
    fn failed(
        &self,
        error: StoreError,
        verb: Verb,
        classic: Option<(&str, &[u8])>,
        out: &mut Vec<u8>,
    ) -> Step {
        self.log_failure(&error);
        if self.version >= 2 {
            reply::error(out, &error);
            self.end_block(verb, out);
        } else if let Some((text, name)) = classic {
            status(out, 0, text, name);
        } else {
            return Step::Close(CLASSIC_CANNOT_SAY);
        }
        if error.locks_lost() {
            return Step::Close(LOCKS_LOST);
        }
        Step::Done
    }

    /// Logs a failed store call, at most once a second for the server.
    fn log_failure(&self, error: &StoreError) {
        let stats = self.host.stats();
        if stats.log_allowed(&stats.store_failure_logged) {
            ::log::warn!("{}: lock store: {error}", self.name);
        }
    }

    /// A request a cap refused: `0 Error: limit reached: ...` on protocol
    /// 2, else the classic refusal `0 TEXT: NAME`.
    fn refuse(&self, error: LimitError, text: &str, name: &[u8], out: &mut Vec<u8>) {
        if self.version >= 2 {
            reply::error(out, &error);
        } else {
            status(out, 0, text, name);
        }
    }

    /// Protocol 2 ends every multi-line reply with an empty line.
    fn end_block(&self, verb: Verb, out: &mut Vec<u8>) {
        if self.version >= 2 && verb.is_multi_line() {
            out.push(b'\n');
        }
    }

    /// With `--verbose`, one log line per command, never a secret: the
    /// argument of any line whose verb is `auth` in any case (`auth<TAB>x`
    /// included), every unknown verb (a bare secret is one), and every line
    /// after a failed `auth` until one succeeds are logged by length only.
    fn log_line(&self, line: &[u8], verb: Option<Verb>) {
        if !self.verbose {
            return;
        }
        let line = protocol::trim(line);
        let auth = line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"auth");
        if verb == Some(Verb::Auth) || auth {
            ::log::info!("{}: auth <secret redacted>", self.name);
        } else if verb.is_none() {
            ::log::info!("{}: unknown command of {} bytes", self.name, line.len());
        } else if self.auth_failures > 0 && !self.authenticated {
            ::log::info!("{}: a line of {} bytes", self.name, line.len());
        } else {
            ::log::info!("{}: {}", self.name, line.escape_ascii());
        }
    }
}

/// Why a classic connection ends when its store failed (see
/// [`Session::failed`]).
const CLASSIC_CANNOT_SAY: &str = "the lock store failed and a classic reply would claim to know";

/// Why a connection ends when its store no longer vouches for its locks.
const LOCKS_LOST: &str = "the lock store no longer vouches for this connection's locks";

/// The timeout reply of a wait of `kind`.
fn timeout_text(kind: Kind) -> &'static str {
    match kind {
        Kind::Exclusive => reply::LOCK_GET_TIMEOUT,
        Kind::Shared => reply::SHARED_GET_TIMEOUT,
        Kind::Read => reply::READ_GET_TIMEOUT,
    }
}

impl Kind {
    /// The verb that waits for this kind.
    fn verb(self) -> Verb {
        match self {
            Kind::Exclusive => Verb::WaitGet,
            Kind::Shared => Verb::WaitSharedGet,
            Kind::Read => Verb::WaitRead,
        }
    }
}

impl From<Kind> for LockKind {
    fn from(kind: Kind) -> LockKind {
        match kind {
            Kind::Exclusive => LockKind::Exclusive,
            Kind::Read => LockKind::Read,
            Kind::Shared => LockKind::Shared,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        orphan(&*self.host, self.id);
        let lost = self.holds.release_all(self.host.metrics());
        self.host.metrics().leave(&self.holds);
        if !lost.is_empty() && !self.host.closing() {
            events::orphaned(&self.name, self.registered.as_deref(), &lost);
        }
    }
}
