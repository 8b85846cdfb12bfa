//! The blocking client: [`Client`] talks to a lockd server (or a classic
//! glockd / node lockd server) over TCP, a Unix socket, or TLS.
//!
//! A lock belongs to the connection that took it, and a `Client` is one
//! connection shared by all its clones. Guards give `Mutex` semantics
//! inside the process: a name held by one guard is not handed to a second
//! caller of the same client, who waits (`lock`), gives up (`try_lock`) or
//! waits a while (`try_lock_for`). When the connection ends, for whatever
//! reason, the server releases every lock it held;
//! [`Client::on_disconnect`] tells you the moment that happens.
//!
//! ```
//! # let mut config = lockd::ServerConfig::default();
//! # config.listen = vec!["127.0.0.1:0".into()];
//! # let server = lockd::Server::bind(config)?.spawn()?;
//! # let addr = server.local_addr().expect("a TCP listener").to_string();
//! use lockd::Client;
//!
//! let client = Client::connect(&addr)?;
//! {
//!     let report = client.lock("nightly-report")?; // waits its turn
//!     println!("fencing token {:?}", report.token());
//! } // released here
//! # Ok::<(), lockd::Error>(())
//! ```
//!
//! # Threads
//!
//! `Client` is `Clone + Send + Sync`; a clone is an `Arc` bump and shares
//! the one connection. A call does its I/O on the caller's thread: it
//! takes the connection, sends its command, reads the reply and gives the
//! connection back. Callers queue for it first come, first served, so
//! replies never cross.
//!
//! The server answers a connection's commands in order, so a call that
//! waits on the server ([`Client::lock`] on a busy name,
//! [`Client::try_lock_for`]) holds up every call queued behind it on the
//! same client (guards' drops excepted: they queue their release and
//! return at once). Give a thread that waits on busy locks a client of
//! its own.
//!
//! # Holds inside the process
//!
//! * Exclusive ([`Client::lock`]): one guard per name per client. Another
//!   thread asking for it waits inside the process, before anything is
//!   sent.
//! * Read ([`Client::read`]) and shared ([`Client::lock_shared`]): the
//!   guards of one client share the connection's one hold; the first takes
//!   it on the server, the last drop gives it back. A semaphore's limit
//!   therefore counts connections: threads that must each count against
//!   it need a client each. A thread waiting for [`Client::lock`] of a
//!   read-held name keeps new readers of the same client out.
//! * Re-entrancy is refused: a thread asking again, through the same
//!   client, for a name it holds gets [`Error::Reentrant`] at once, since
//!   it would otherwise wait forever for itself. (A guard moved to another
//!   thread still counts as its taker's.)

mod acquire;
mod config;
mod conn;
mod guard;
mod info;
mod local;
mod stream;
#[cfg(feature = "tls")]
pub mod tls;
mod watch;

pub use crate::error::{AuthError, Phase};
pub use acquire::CLASSIC_POLL_MAX;
pub use config::ClientConfig;
pub use guard::{LockGuard, ReadGuard, SharedGuard};
pub use info::{Identity, Registration, Stats};
pub use stream::RawStream;
pub use watch::{HoldKind, LockEvent, Watch, WatchEvent};

use crate::error::Error;
use crate::name::LockName;
use crate::protocol::normalize;
use crate::protocol::reply::{self, parse_status, push_number};
use crate::secret::Secret;
use conn::Conn;
use local::{Holds, Kind};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// The README's example compiles with the doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// Opens a connection as a [`Client`] would (`HOST:PORT`, `tls://`,
/// `unix:`), but speaks no protocol on it: for tools that pass lines
/// through, like `lockctl shell`.
///
/// # Errors
/// As [`Client::connect`].
pub fn connect_raw(addr: &str, config: &ClientConfig) -> Result<RawStream, Error> {
    stream::open(addr, config)
}

/// A connection to a lock server, shared by every clone. See the
/// [module docs](self) for threads and holds.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    holds: Holds,
    addr: String,
    config: ClientConfig,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.inner.addr)
            .field("protocol", &self.protocol())
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl Client {
    /// Connects with the default [`ClientConfig`]. `addr` is `HOST:PORT`,
    /// `tls://HOST:PORT` (TLS, see [`ClientConfig::tls_ca`]), or a Unix
    /// socket: `unix:/path`, or a path starting with `/` or `.`.
    ///
    /// # Errors
    /// [`Error::Connect`] or a connect [`Error::Timeout`] when the server
    /// cannot be reached; [`Error::BadAddress`] for an address that does
    /// not resolve; [`Error::Auth`] for a refused secret.
    pub fn connect(addr: impl AsRef<str>) -> Result<Client, Error> {
        Client::connect_with(addr, ClientConfig::default())
    }

    /// Connects with the given configuration, then learns whether the
    /// server speaks protocol 2: it sends `hello 2` and then `me`, which
    /// every server answers. A lockd server answers `hello 2` first; a
    /// classic server ignores it, so the first line back answers `me`.
    /// That decides it without waiting on any timeout.
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub fn connect_with(addr: impl AsRef<str>, config: ClientConfig) -> Result<Client, Error> {
        let addr = addr.as_ref();
        let conn = open_conn(addr, &config)?;
        Ok(Client {
            inner: Arc::new(Inner {
                conn,
                holds: Holds::default(),
                addr: addr.to_string(),
                config,
            }),
        })
    }

    /// The protocol the server speaks on this connection: 2 for lockd, 1
    /// for a classic server.
    pub fn protocol(&self) -> u32 {
        self.inner.conn.version
    }

    /// False once the connection has ended (its locks are gone).
    pub fn is_connected(&self) -> bool {
        !self.inner.conn.health.is_closed()
    }

    /// A receiver that gets `()` once, the moment the connection ends: the
    /// server closed it, a call failed or timed out, or
    /// [`Client::disconnect`] was called; at once if it already has. Use
    /// `recv_timeout` to work in steps and stop when it fires.
    ///
    /// The first call (of this or [`Client::on_disconnect_call`]) starts a
    /// thread that watches the socket for the server's close without
    /// reading from it, so this fires even while no call is in flight.
    pub fn on_disconnect(&self) -> mpsc::Receiver<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.on_disconnect_call(move || {
            let _ = tx.try_send(());
        });
        rx
    }

    /// Runs `callback` once, the moment the connection ends (at once, on
    /// this thread, if it already has); as [`Client::on_disconnect`]. It
    /// runs on whichever thread saw the end: keep it short.
    pub fn on_disconnect_call(&self, callback: impl FnOnce() + Send + 'static) {
        self.inner.conn.on_end(Box::new(callback));
    }

    /// Closes the connection for every clone: the server releases all its
    /// locks. Waits its turn behind calls already queued; later calls fail
    /// with [`Error::Disconnected`]. Returns once the server has closed
    /// its side (so the locks are released), or after the read timeout.
    pub fn disconnect(&self) {
        self.inner.conn.disconnect();
    }

    /// Takes the exclusive lock, waiting as long as it takes: first for
    /// any other guard of this client, then in the server's line (`wg`,
    /// first come, first served). The guard carries the fencing token.
    ///
    /// On a classic server, which cannot wait in line, this polls: `g`
    /// again after 10 ms, 20 ms, ... up to [`CLASSIC_POLL_MAX`] between
    /// tries, so it is not first come, first served there.
    ///
    /// # Errors
    /// [`Error::Reentrant`] when this thread already holds it through this
    /// client; [`Error::Deadlock`] when waiting would close a cycle of
    /// waiters; the connection errors ([`Error::locks_lost`]).
    pub fn lock(&self, name: impl AsRef<[u8]>) -> Result<LockGuard, Error> {
        let name = wire_name(name.as_ref())?;
        let token = self.hold_forever(&name, Kind::Write, 0)?;
        Ok(LockGuard::new(self.clone(), name, self.token_of(token)))
    }

    /// Takes the exclusive lock if it is free now; `Ok(None)` when another
    /// connection, or another guard of this client, holds it.
    ///
    /// # Errors
    /// As [`Client::lock`].
    pub fn try_lock(&self, name: impl AsRef<[u8]>) -> Result<Option<LockGuard>, Error> {
        self.try_lock_for(name, Duration::ZERO)
    }

    /// Takes the exclusive lock, waiting up to `timeout` for it (in this
    /// process, then in the server's line); `Ok(None)` when it stayed busy.
    /// A zero timeout tries once; `Duration::MAX` waits forever.
    ///
    /// # Errors
    /// As [`Client::lock`].
    pub fn try_lock_for(
        &self,
        name: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Result<Option<LockGuard>, Error> {
        let name = wire_name(name.as_ref())?;
        match self.hold(&name, Kind::Write, 0, Some(timeout))? {
            Some(token) => Ok(Some(LockGuard::new(
                self.clone(),
                name,
                self.token_of(token),
            ))),
            None => Ok(None),
        }
    }

    /// Takes a place among the holders of a shared lock, with at most
    /// `limit` holders (connections) in all: a counting semaphore; 0 is no
    /// limit. Waits as long as it takes (`wsg`). Guards of this client
    /// share one place (see the [module docs](self)).
    ///
    /// On a classic server: `sg`, which never fails without a limit; with
    /// one, polling as [`Client::lock`] does, stepping back out when the
    /// count goes over the limit.
    ///
    /// # Errors
    /// As [`Client::lock`].
    pub fn lock_shared(&self, name: impl AsRef<[u8]>, limit: u32) -> Result<SharedGuard, Error> {
        let name = wire_name(name.as_ref())?;
        let holders = self.hold_forever(&name, Kind::Shared, limit)?;
        Ok(SharedGuard::new(self.clone(), name, holders))
    }

    /// [`Client::lock_shared`] if a place is free now, else `Ok(None)`.
    ///
    /// # Errors
    /// As [`Client::lock`].
    pub fn try_lock_shared(
        &self,
        name: impl AsRef<[u8]>,
        limit: u32,
    ) -> Result<Option<SharedGuard>, Error> {
        self.try_lock_shared_for(name, limit, Duration::ZERO)
    }

    /// [`Client::lock_shared`], waiting up to `timeout`; `Ok(None)` when no
    /// place came free.
    ///
    /// # Errors
    /// As [`Client::lock`].
    pub fn try_lock_shared_for(
        &self,
        name: impl AsRef<[u8]>,
        limit: u32,
        timeout: Duration,
    ) -> Result<Option<SharedGuard>, Error> {
        let name = wire_name(name.as_ref())?;
        Ok(self
            .hold(&name, Kind::Shared, limit, Some(timeout))?
            .map(|n| SharedGuard::new(self.clone(), name, n)))
    }

    /// Read-holds the lock (many readers, or one writer from
    /// [`Client::lock`], on the same name), waiting as long as it takes
    /// (`wr`). Guards of this client share one read hold.
    ///
    /// # Errors
    /// [`Error::NotSupported`] on a classic server; otherwise as
    /// [`Client::lock`].
    pub fn read(&self, name: impl AsRef<[u8]>) -> Result<ReadGuard, Error> {
        let name = wire_name(name.as_ref())?;
        self.require_v2("wr")?;
        let readers = self.hold_forever(&name, Kind::Read, 0)?;
        Ok(ReadGuard::new(self.clone(), name, readers))
    }

    /// [`Client::read`] if no writer holds or waits for it now, else
    /// `Ok(None)`.
    ///
    /// # Errors
    /// As [`Client::read`].
    pub fn try_read(&self, name: impl AsRef<[u8]>) -> Result<Option<ReadGuard>, Error> {
        self.try_read_for(name, Duration::ZERO)
    }

    /// [`Client::read`], waiting up to `timeout`; `Ok(None)` when it
    /// stayed write-held.
    ///
    /// # Errors
    /// As [`Client::read`].
    pub fn try_read_for(
        &self,
        name: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Result<Option<ReadGuard>, Error> {
        let name = wire_name(name.as_ref())?;
        self.require_v2("wr")?;
        Ok(self
            .hold(&name, Kind::Read, 0, Some(timeout))?
            .map(|n| ReadGuard::new(self.clone(), name, n)))
    }

    /// Watches the locks `pattern` matches (a name, or a prefix ending in
    /// `*`; `*` alone is every lock) on a new connection of its own, with
    /// this client's address and settings. See [`Watch`].
    ///
    /// # Errors
    /// [`Error::Disabled`] when the server has dump off;
    /// [`Error::NotSupported`] on a classic server; the errors of
    /// [`Client::connect`].
    pub fn watch(&self, pattern: impl AsRef<[u8]>) -> Result<Watch, Error> {
        self.require_v2("watch")?;
        let pattern = wire_name(pattern.as_ref())?;
        let mut config = self.inner.config.clone();
        // Events come when they come.
        config.read_timeout = None;
        let conn = open_conn(&self.inner.addr, &config)?;
        let mut line = b"watch ".to_vec();
        line.extend_from_slice(pattern.as_bytes());
        line.push(b'\n');
        conn.send_only(&line)?;
        let first = conn.next_line()?.unwrap_or_default();
        let unexpected = || Error::Protocol {
            command: conn::show_command(&line[..line.len() - 1]),
            reply: first.escape_ascii().to_string(),
        };
        if first == reply::DISABLED.trim_ascii_end() {
            return Err(Error::Disabled { command: "watch" });
        }
        if first == reply::AUTH_REQUIRED.trim_ascii_end() {
            return Err(Error::Auth(AuthError::Required));
        }
        match parse_status(&first) {
            Some(s) if s.number == 1 && s.text == b"Watching" => Ok(Watch::new(conn)),
            _ => Err(unexpected()),
        }
    }

    /// `i`: is the exclusive lock held by anyone (this connection
    /// included, and read holds too)?
    ///
    /// # Errors
    /// The connection errors.
    pub fn is_locked(&self, name: impl AsRef<[u8]>) -> Result<bool, Error> {
        let name = wire_name(name.as_ref())?;
        self.ask(b"i", &name, |n, text| match (n, text) {
            (1, reply::LOCK_IS_LOCKED) => Some(true),
            (0, reply::LOCK_NOT_LOCKED) => Some(false),
            _ => None,
        })
    }

    /// The fencing token of an exclusive lock this connection holds
    /// (protocol 2). A guard has it already: [`LockGuard::token`].
    ///
    /// # Errors
    /// [`Error::NotHeld`]; [`Error::NotSupported`] on a classic server; the
    /// connection errors.
    pub fn token(&self, name: impl AsRef<[u8]>) -> Result<u64, Error> {
        let name = wire_name(name.as_ref())?;
        self.require_v2("t")?;
        let token = self.ask(b"t", &name, |n, text| match (n, text) {
            (t, reply::LOCK_TOKEN) if t >= 1 => Some(Some(t)),
            (0, reply::LOCK_NOT_HELD) => Some(None),
            _ => None,
        })?;
        token.ok_or(Error::NotHeld { name })
    }

    /// How many connections hold the shared lock (0: none).
    ///
    /// # Errors
    /// The connection errors.
    pub fn shared_count(&self, name: impl AsRef<[u8]>) -> Result<u64, Error> {
        let name = wire_name(name.as_ref())?;
        self.ask(b"si", &name, |n, text| match (n, text) {
            (n, reply::SHARED_IS_LOCKED) if n >= 1 => Some(n),
            (0, reply::SHARED_NOT_LOCKED) => Some(0),
            _ => None,
        })
    }

    /// Every exclusive lock and its holder (the holder's registered name,
    /// else its default name). A line is split at its first `: `, so a
    /// lock name holding `: ` is misread; avoid such names.
    ///
    /// # Errors
    /// [`Error::Disabled`] when the server has dump off; the connection
    /// errors.
    pub fn holders(&self) -> Result<BTreeMap<LockName, LockName>, Error> {
        let lines = self.block(b"d", "d", false)?;
        let mut map = BTreeMap::new();
        for line in &lines {
            let (name, holder) = self.pair(b"d", line)?;
            map.insert(LockName::from(name), LockName::from(holder));
        }
        Ok(map)
    }

    /// Every shared lock and its holders, in the order they got it. Lines
    /// are split as in [`Client::holders`].
    ///
    /// # Errors
    /// As [`Client::holders`].
    pub fn shared_holders(&self) -> Result<BTreeMap<LockName, Vec<LockName>>, Error> {
        let lines = self.block(b"sd", "sd", false)?;
        let mut map: BTreeMap<LockName, Vec<LockName>> = BTreeMap::new();
        for line in &lines {
            let (name, holder) = self.pair(b"sd", line)?;
            map.entry(LockName::from(name))
                .or_default()
                .push(LockName::from(holder));
        }
        Ok(map)
    }

    /// Every exclusive and shared lock with holders, tokens and waiters,
    /// as the server's one line of JSON (`dj`, protocol 2; without its
    /// `\n`). See PROTOCOL.md for its shape.
    ///
    /// # Errors
    /// [`Error::Disabled`] when the server has dump off;
    /// [`Error::NotSupported`] on a classic server; the connection errors.
    pub fn dump_json(&self) -> Result<Vec<u8>, Error> {
        self.require_v2("dj")?;
        let line = self.raw_line(b"dj", |line| {
            (line == reply::DISABLED.trim_ascii_end() || line.starts_with(b"{"))
                .then(|| line.to_vec())
        })?;
        if line == reply::DISABLED.trim_ascii_end() {
            return Err(Error::Disabled { command: "dj" });
        }
        Ok(line)
    }

    /// This connection's default and registered names (`me`).
    ///
    /// # Errors
    /// The connection errors.
    #[doc(alias = "me")]
    pub fn identity(&self) -> Result<Identity, Error> {
        self.raw_line(b"me", |line| {
            let rest = line.strip_prefix(b"1 ")?;
            let space = rest.iter().position(|&b| b == b' ')?;
            Some(Identity {
                default: LockName::from(&rest[..space]),
                name: LockName::from(&rest[space + 1..]),
            })
        })
    }

    /// Registers a name for this connection, shown by
    /// [`Client::holders`] and [`Client::registrations`] (`iam`); the
    /// empty name removes the registration. Whitespace runs become single
    /// spaces, as for every argument.
    ///
    /// # Errors
    /// [`Error::Disabled`] when the server has the registry off;
    /// [`Error::InvalidArgument`] for a name with a newline; the connection
    /// errors.
    #[doc(alias = "iam")]
    pub fn register(&self, name: impl AsRef<[u8]>) -> Result<(), Error> {
        let name = wire_name(name.as_ref())?;
        let ok = self.inner.conn.call(
            |out| {
                out.extend_from_slice(b"iam ");
                out.extend_from_slice(name.as_bytes());
            },
            Some(Duration::ZERO),
            |line| {
                if line == reply::OK.trim_ascii_end() {
                    Some(true)
                } else {
                    (line == reply::DISABLED.trim_ascii_end()).then_some(false)
                }
            },
        )?;
        if ok {
            Ok(())
        } else {
            Err(Error::Disabled { command: "iam" })
        }
    }

    /// The connections with a registered name, oldest registration first
    /// (`who`).
    ///
    /// # Errors
    /// [`Error::Disabled`] unless the server has both dump and registry
    /// on; the connection errors.
    #[doc(alias = "who")]
    pub fn registrations(&self) -> Result<Vec<Registration>, Error> {
        let lines = self.block(b"who", "who", false)?;
        lines
            .iter()
            .map(|line| {
                let (default, name) = self.pair(b"who", line)?;
                Ok(Registration {
                    default: LockName::from(default),
                    name: LockName::from(name),
                })
            })
            .collect()
    }

    /// The server's counters (`q`).
    ///
    /// # Errors
    /// The connection errors.
    pub fn stats(&self) -> Result<Stats, Error> {
        let lines = self.block(b"q", "q", true)?;
        let mut counters = BTreeMap::new();
        for line in &lines {
            let (key, value) = self.pair(b"q", line)?;
            let value = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| self.unexpected(b"q", line))?;
            counters.insert(String::from_utf8_lossy(key).into_owned(), value);
        }
        Ok(Stats::new(counters))
    }

    /// Releases every lock this connection holds on the server (`ra`,
    /// protocol 2); returns how many. Guards still alive keep their names
    /// held inside the process until dropped (their release then finds
    /// nothing to release).
    ///
    /// # Errors
    /// [`Error::NotSupported`] on a classic server; the connection errors.
    pub fn release_all(&self) -> Result<u64, Error> {
        self.require_v2("ra")?;
        self.raw_line(b"ra", |line| match parse_status(line) {
            Some(s) if s.text == b"Released" && s.name.is_none() => Some(s.number),
            _ => None,
        })
    }

    /// The round trip of `ping` (protocol 2), including any wait behind
    /// calls queued ahead of this one.
    ///
    /// # Errors
    /// [`Error::NotSupported`] on a classic server; the connection errors.
    pub fn ping(&self) -> Result<Duration, Error> {
        self.require_v2("ping")?;
        let start = Instant::now();
        self.raw_line(b"ping", |line| {
            (line == reply::PONG.trim_ascii_end()).then_some(())
        })?;
        Ok(start.elapsed())
    }

    /// From now on the server closes this connection (releasing its
    /// locks) if it sends nothing for `ttl` while not waiting in line: a
    /// lease, renewed by any call, e.g. [`Client::ping`] (`ttl`, protocol
    /// 2). Whole seconds, rounded up; zero turns the lease off.
    ///
    /// # Errors
    /// [`Error::NotSupported`] on a classic server; the connection errors.
    pub fn set_ttl(&self, ttl: Duration) -> Result<(), Error> {
        self.require_v2("ttl")?;
        let seconds = ttl
            .as_secs()
            .saturating_add(u64::from(ttl.subsec_nanos() > 0))
            .min(999_999_999_999_999_999);
        let mut expected = b"1 ttl ".to_vec();
        push_number(&mut expected, seconds);
        self.inner.conn.call(
            |out| {
                out.extend_from_slice(b"ttl ");
                push_number(out, seconds);
            },
            Some(Duration::ZERO),
            |line| (line == expected).then_some(()),
        )
    }

    /// Sends the secret of a server run with `--auth-file` (`auth`,
    /// protocol 2). [`ClientConfig::secret`] does this at connect time.
    ///
    /// # Errors
    /// [`Error::Auth`] when refused; [`Error::NotSupported`] on a classic
    /// server (which has no authentication); the connection errors.
    pub fn authenticate(&self, secret: impl AsRef<[u8]>) -> Result<(), Error> {
        let secret = secret.as_ref();
        if secret.contains(&b'\n') {
            return Err(Error::InvalidArgument {
                what: "<secret>".into(),
            });
        }
        self.require_v2("auth")?;
        let ok = self.inner.conn.call(
            |out| {
                out.extend_from_slice(b"auth ");
                out.extend_from_slice(secret);
            },
            Some(Duration::ZERO),
            |line| {
                if line == reply::AUTH_OK.trim_ascii_end() {
                    Some(true)
                } else {
                    (line == reply::AUTH_FAILURE.trim_ascii_end()).then_some(false)
                }
            },
        )?;
        if ok {
            Ok(())
        } else {
            Err(Error::Auth(AuthError::Failure))
        }
    }

    fn token_of(&self, number: u64) -> Option<u64> {
        (self.protocol() >= 2).then_some(number)
    }

    /// `VERB NAME`, answered by `N TEXT: NAME`; `parse` maps the number and
    /// text to a value (`None`: nonsense).
    fn ask<T>(
        &self,
        verb: &[u8],
        name: &LockName,
        parse: impl FnOnce(u64, &str) -> Option<T>,
    ) -> Result<T, Error> {
        self.inner.conn.call(
            |out| {
                out.extend_from_slice(verb);
                out.push(b' ');
                out.extend_from_slice(name.as_bytes());
            },
            Some(Duration::ZERO),
            |line| {
                let (n, text) = named(line, name)?;
                parse(n, text)
            },
        )
    }

    /// A verb without argument and its one-line reply.
    fn raw_line<T>(&self, verb: &[u8], parse: impl FnOnce(&[u8]) -> Option<T>) -> Result<T, Error> {
        self.inner.conn.call(
            |out| out.extend_from_slice(verb),
            Some(Duration::ZERO),
            parse,
        )
    }

    /// A multi-line reply, `0 disabled` and `0 Auth Required` checked.
    fn block(
        &self,
        command: &[u8],
        verb: &'static str,
        stats: bool,
    ) -> Result<Vec<Vec<u8>>, Error> {
        let lines = self.inner.conn.block(command, stats)?;
        if let [only] = lines.as_slice() {
            if only == reply::DISABLED.trim_ascii_end() {
                return Err(Error::Disabled { command: verb });
            }
            if only == reply::AUTH_REQUIRED.trim_ascii_end() {
                return Err(Error::Auth(AuthError::Required));
            }
        }
        Ok(lines)
    }

    /// Splits `KEY: VALUE` at the first `: `.
    fn pair<'a>(&self, command: &[u8], line: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), Error> {
        match line.windows(2).position(|w| w == b": ") {
            Some(i) => Ok((&line[..i], &line[i + 2..])),
            None => Err(self.unexpected(command, line)),
        }
    }

    /// A block line that makes no sense. The block was read whole, so the
    /// connection's replies still line up; the error only reports it.
    fn unexpected(&self, command: &[u8], line: &[u8]) -> Error {
        Error::Protocol {
            command: conn::show_command(command),
            reply: line.escape_ascii().to_string(),
        }
    }

    fn require_v2(&self, command: &'static str) -> Result<(), Error> {
        if self.protocol() >= 2 {
            Ok(())
        } else {
            Err(Error::NotSupported { command })
        }
    }
}

/// Connects and says hello.
fn open_conn(addr: &str, config: &ClientConfig) -> Result<Conn, Error> {
    let secret = config.secret.as_ref().map(Secret::expose);
    if secret.is_some_and(|s| s.contains(&b'\n')) {
        return Err(Error::InvalidArgument {
            what: "<secret>".into(),
        });
    }
    let stream = stream::open(addr, config)?;
    Conn::handshake(stream, config.timeouts(), secret)
}

/// The number and text of `N TEXT: NAME`, checking that NAME is the name
/// asked about (a reply to someone else's call would not be).
fn named<'a>(line: &'a [u8], name: &LockName) -> Option<(u64, &'a str)> {
    let status = parse_status(line).filter(|s| s.name == Some(name.as_bytes()))?;
    Some((status.number, std::str::from_utf8(status.text).ok()?))
}

/// The name as the server will hold it: whitespace runs become single
/// spaces. A newline cannot be sent.
fn wire_name(name: &[u8]) -> Result<LockName, Error> {
    if name.contains(&b'\n') {
        return Err(Error::InvalidArgument {
            what: name.escape_ascii().to_string(),
        });
    }
    // The common case, printable ASCII with single inner spaces, is
    // already normal: no second copy.
    let plain = name.iter().all(|&b| (0x21..0x7f).contains(&b) || b == b' ')
        && !name.starts_with(b" ")
        && !name.ends_with(b" ")
        && !name.windows(2).any(|w| w == b"  ");
    if plain {
        Ok(LockName::new(name))
    } else {
        Ok(LockName::from(normalize(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_and_newlines_refused() {
        assert_eq!(wire_name(b"  a \t b ").unwrap().as_bytes(), b"a b");
        assert_eq!(wire_name(b"a b").unwrap().as_bytes(), b"a b");
        assert_eq!(wire_name(b"a  b").unwrap().as_bytes(), b"a b");
        assert_eq!(wire_name(b"").unwrap().as_bytes(), b"");
        assert!(wire_name(b"a\nb").is_err());
    }
}
