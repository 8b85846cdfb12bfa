//! The blocking client: [`Client`] talks to a lockd server (or a classic
//! glockd / node lockd server) over TCP or a Unix socket.
//!
//! A lock belongs to the connection that took it. While the [`Client`]
//! (any clone of it) is alive, so is its connection and so are its locks;
//! when the connection ends, for whatever reason, the server releases
//! every lock it held. [`Client::on_disconnect`] tells you the moment that
//! happens, so you can stop touching what the locks protected.
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
//!     let _report = client.lock("nightly-report")?; // Err if someone holds it
//!     // ... run the report ...
//! } // released here
//! # Ok::<(), lockd::Error>(())
//! ```
//!
//! # Threads
//!
//! `Client` is `Clone + Send + Sync`; a clone is an `Arc` bump and shares
//! the one connection. Calls from any number of threads queue first come,
//! first served, and one thread owns the socket: it sends a call, reads
//! its whole reply and hands it to that caller alone before it sends the
//! next call. Replies never cross.
//!
//! Two consequences of sharing one connection:
//!
//! * Locks belong to the connection, not to a thread. Two threads of one
//!   client that both `lock("x")` both succeed (the server sees the same
//!   holder twice), and either guard's drop releases it. To exclude each
//!   other, threads need a client each (or a local mutex).
//! * The server answers a connection's commands in order, so a
//!   [`Client::lock_wait`] that waits holds up every call queued behind it.
//!   Give a thread that waits its own client.

mod conn;
mod guard;

pub use crate::error::{AuthError, Phase};
pub use guard::{LockGuard, SharedGuard};

use crate::error::Error;
use crate::name::LockName;
use crate::protocol::normalize;
use crate::protocol::reply::{self, parse_status};
use crate::server::Secret;
use crate::transport::tls::{self, connect_tls, TlsClientConfig};
use crate::transport::{connect_tcp, resolve, Stream};
use conn::{Call, Expect, Msg, Owner, Reply, Shared};
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Longest wait `wg`/`wsg` can carry: the server takes at most 18 digits.
const MAX_WAIT_MS: u128 = 100_000_000_000_000_000;

/// How a [`Client`] connects and how long it waits. Builder style:
///
/// ```
/// use std::time::Duration;
/// let config = lockd::ClientConfig::new()
///     .connect_timeout(Some(Duration::from_secs(1)))
///     .read_timeout(Some(Duration::from_secs(10)));
/// ```
#[derive(Clone, Debug)]
pub struct ClientConfig {
    connect_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    classic_quiet: Duration,
    secret: Option<Secret>,
    tls_ca: Option<PathBuf>,
    tls_client_cert: Option<(PathBuf, PathBuf)>,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            connect_timeout: Some(Duration::from_secs(5)),
            read_timeout: Some(Duration::from_secs(30)),
            write_timeout: Some(Duration::from_secs(30)),
            classic_quiet: Duration::from_millis(100),
            secret: None,
            tls_ca: None,
            tls_client_cert: None,
        }
    }
}

impl ClientConfig {
    /// The defaults: 5 s to connect, 30 s for a reply, 30 s to send, 100 ms
    /// of quiet ending a classic multi-line reply, no secret.
    pub fn new() -> ClientConfig {
        ClientConfig::default()
    }

    /// How long opening a TCP connection may take; `None` waits as long as
    /// the operating system does.
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> ClientConfig {
        self.connect_timeout = timeout;
        self
    }

    /// How long the server may take to answer a call (for `lock_wait` and
    /// `lock_shared_limited`, on top of the time they wait in line); `None`
    /// waits forever. When it runs out, the connection is closed and its
    /// locks are gone: a late reply could no longer be matched to its call.
    pub fn read_timeout(mut self, timeout: Option<Duration>) -> ClientConfig {
        self.read_timeout = timeout;
        self
    }

    /// How long sending a command may block; `None` blocks forever. When it
    /// runs out, the connection is closed.
    pub fn write_timeout(mut self, timeout: Option<Duration>) -> ClientConfig {
        self.write_timeout = timeout;
        self
    }

    /// On a classic server (no protocol 2), a multi-line reply (`holders`,
    /// `shared_holders`, `clients`) has no end marker: it is taken to be
    /// over once no line has arrived for this long, as node lockd's client
    /// did. Such a call therefore takes at least this long.
    pub fn classic_quiet(mut self, quiet: Duration) -> ClientConfig {
        self.classic_quiet = quiet;
        self
    }

    /// A secret sent with `auth` as the connection opens (for a server run
    /// with `--auth-file`). It must not hold a newline.
    pub fn secret(mut self, secret: impl Into<Vec<u8>>) -> ClientConfig {
        self.secret = Some(Secret::new(secret));
        self
    }

    /// For `tls://HOST:PORT` addresses: trust the CA certificates in this
    /// PEM file instead of the system's CA bundle.
    pub fn tls_ca(mut self, ca_pem: impl Into<PathBuf>) -> ClientConfig {
        self.tls_ca = Some(ca_pem.into());
        self
    }

    /// For `tls://HOST:PORT` addresses: present this client certificate
    /// (PEM chain and key), for a server run with `--tls-client-ca`.
    pub fn tls_client_cert(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> ClientConfig {
        self.tls_client_cert = Some((cert.into(), key.into()));
        self
    }
}

/// A connection to a lock server, shared by every clone. See the
/// [module docs](self) for threads.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    calls: Sender<Msg>,
    shared: Arc<Shared>,
    version: u32,
    addr: String,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.inner.addr)
            .field("protocol", &self.inner.version)
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// What `me` says about this connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The server's name for the connection: `IP:PORT` or `unix:N`.
    pub default: Vec<u8>,
    /// The registered name, or the default one again if none.
    pub name: Vec<u8>,
}

/// A connection with a registered name, as `who` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The server's name for the connection: `IP:PORT` or `unix:N`.
    pub default: Vec<u8>,
    /// The name it registered.
    pub name: Vec<u8>,
}

/// The server's counters (`q`): the 19 classic ones as fields, and every
/// key the server sent in `all` (protocol 2 adds more).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// `d` commands received.
    pub command_d: u64,
    /// `dump` commands received.
    pub command_dump: u64,
    /// `g` commands received.
    pub command_g: u64,
    /// `i` commands received.
    pub command_i: u64,
    /// `iam` commands received.
    pub command_iam: u64,
    /// `me` commands received.
    pub command_me: u64,
    /// `q` commands received (not counting this one).
    pub command_q: u64,
    /// `r` commands received.
    pub command_r: u64,
    /// `sd` commands received.
    pub command_sd: u64,
    /// `sg` commands received.
    pub command_sg: u64,
    /// `si` commands received.
    pub command_si: u64,
    /// `sr` commands received.
    pub command_sr: u64,
    /// `who` commands received.
    pub command_who: u64,
    /// Live connections.
    pub connections: u64,
    /// Unknown verbs (and over-long lines) received.
    pub invalid_commands: u64,
    /// Exclusive locks held now.
    pub locks: u64,
    /// Exclusive locks released because their holder disconnected.
    pub orphans: u64,
    /// Shared locks held now.
    pub shared_locks: u64,
    /// Shared holds released because their holder disconnected.
    pub shared_orphans: u64,
    /// Every counter the server sent, by key.
    pub all: BTreeMap<String, u64>,
}

impl Stats {
    /// A counter by key (`waiting`, `grants`, ...), if the server sent it.
    pub fn get(&self, key: &str) -> Option<u64> {
        self.all.get(key).copied()
    }

    fn from_pairs(all: BTreeMap<String, u64>) -> Stats {
        let get = |key: &str| all.get(key).copied().unwrap_or(0);
        Stats {
            command_d: get("command_d"),
            command_dump: get("command_dump"),
            command_g: get("command_g"),
            command_i: get("command_i"),
            command_iam: get("command_iam"),
            command_me: get("command_me"),
            command_q: get("command_q"),
            command_r: get("command_r"),
            command_sd: get("command_sd"),
            command_sg: get("command_sg"),
            command_si: get("command_si"),
            command_sr: get("command_sr"),
            command_who: get("command_who"),
            connections: get("connections"),
            invalid_commands: get("invalid_commands"),
            locks: get("locks"),
            orphans: get("orphans"),
            shared_locks: get("shared_locks"),
            shared_orphans: get("shared_orphans"),
            all,
        }
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
        let stream = open(addr, &config)?;
        let setup = |e| Error::io(format!("cannot set up the connection to {addr}"), e);
        stream
            .set_write_timeout(config.write_timeout)
            .map_err(setup)?;
        let reader_stream = try_clone(&stream).map_err(setup)?;
        let shared = Arc::new(Shared::new(try_clone(&stream).map_err(setup)?));
        let (line_tx, line_rx) = unbounded();
        let reader_shared = Arc::clone(&shared);
        thread::Builder::new()
            .name("lockd-client-read".into())
            .spawn(move || conn::read_lines(reader_stream, line_tx, reader_shared))
            .map_err(|e| Error::io("cannot start the client's reader thread", e))?;
        let mut owner = Owner {
            stream,
            lines: line_rx,
            shared: Arc::clone(&shared),
            read_timeout: config.read_timeout,
            quiet: config.classic_quiet,
            version: 1,
        };
        let secret = config.secret.as_ref().map(Secret::expose);
        if let Some(secret) = secret {
            if secret.contains(&b'\n') {
                shared.close("the secret holds a newline");
                return Err(Error::InvalidArgument {
                    what: "<secret>".into(),
                });
            }
        }
        if let Err(e) = owner.handshake(secret) {
            shared.close(&conn::close_reason(&e));
            return Err(e);
        }
        let version = owner.version;
        let (calls, queue) = unbounded();
        let spawned = thread::Builder::new()
            .name("lockd-client".into())
            .spawn(move || owner.run(queue));
        if let Err(e) = spawned {
            shared.close("cannot start the client thread");
            return Err(Error::io("cannot start the client thread", e));
        }
        Ok(Client {
            inner: Arc::new(Inner {
                calls,
                shared,
                version,
                addr: addr.to_string(),
            }),
        })
    }

    /// The protocol the server speaks on this connection: 2 for lockd, 1
    /// for a classic server.
    pub fn protocol(&self) -> u32 {
        self.inner.version
    }

    /// False once the connection has ended (its locks are gone).
    pub fn is_connected(&self) -> bool {
        !self.inner.shared.is_closed()
    }

    /// A channel that receives `()` once, the moment the connection ends:
    /// the server closed it, it failed, a call timed out, or
    /// [`Client::disconnect`] was called. A reader thread watches the
    /// socket all the time, so this fires even while no call is in flight.
    /// Fires at once if the connection has already ended. Each call makes
    /// a new receiver; use it in `crossbeam_channel::select!`.
    pub fn on_disconnect(&self) -> Receiver<()> {
        self.inner.shared.subscribe()
    }

    /// Closes the connection for every clone: the server releases all its
    /// locks. Calls queued before this one are answered first; later calls
    /// fail with [`Error::Disconnected`]. Returns once the server has
    /// closed its side (so the locks are released), or after the read
    /// timeout.
    pub fn disconnect(&self) {
        let (tx, rx) = bounded(1);
        if self.inner.calls.send(Msg::Close(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// `g`: takes the exclusive lock, or fails at once if another
    /// connection holds it. Taking a lock this connection already holds
    /// succeeds (and the two guards share it).
    ///
    /// # Errors
    /// [`Error::AlreadyLocked`] when another connection holds it; the
    /// connection errors ([`Error::locks_lost`]).
    pub fn lock(&self, name: impl AsRef<[u8]>) -> Result<LockGuard, Error> {
        let name = wire_name(name.as_ref())?;
        match self.get(&name)? {
            Some(guard) => Ok(guard),
            None => Err(Error::AlreadyLocked { name }),
        }
    }

    /// `g`: like [`Client::lock`], but a lock held elsewhere is `Ok(None)`
    /// rather than an error.
    ///
    /// # Errors
    /// The connection errors ([`Error::locks_lost`]).
    pub fn try_lock(&self, name: impl AsRef<[u8]>) -> Result<Option<LockGuard>, Error> {
        let name = wire_name(name.as_ref())?;
        self.get(&name)
    }

    fn get(&self, name: &LockName) -> Result<Option<LockGuard>, Error> {
        let command = command("g", name.as_bytes());
        let line = self.line(&command)?;
        match self.named(&command, &line, name)? {
            (1, reply::LOCK_GET_SUCCESS) => {
                Ok(Some(LockGuard::new(self.clone(), name.clone(), None)))
            }
            (0, reply::LOCK_GET_FAILURE) => Ok(None),
            _ => Err(self.unexpected(&command, &line)),
        }
    }

    /// `wg` (protocol 2): waits up to `timeout` in line for the exclusive
    /// lock; waiters are served first come, first served. The guard
    /// carries the lock's fencing token. A zero timeout tries once.
    ///
    /// # Errors
    /// A [`Phase::Wait`] [`Error::Timeout`] when the lock stayed busy;
    /// [`Error::Deadlock`] when waiting would close a cycle of waiters;
    /// [`Error::NotSupported`] on a classic server; the connection errors.
    pub fn lock_wait(&self, name: impl AsRef<[u8]>, timeout: Duration) -> Result<LockGuard, Error> {
        let name = wire_name(name.as_ref())?;
        self.require_v2("wg")?;
        let ms = wait_ms(timeout);
        let command = command(&format!("wg {ms}"), name.as_bytes());
        let line = self.call_line(&command, Duration::from_millis(ms))?;
        match self.named(&command, &line, &name)? {
            (token, reply::LOCK_GET_SUCCESS) if token >= 1 => {
                Ok(LockGuard::new(self.clone(), name, Some(token)))
            }
            (0, reply::LOCK_GET_TIMEOUT) => Err(Error::Timeout {
                phase: Phase::Wait,
                context: format!("waiting {ms} ms for lock {name:?}"),
            }),
            (0, reply::LOCK_GET_DEADLOCK) => Err(Error::Deadlock { name }),
            _ => Err(self.unexpected(&command, &line)),
        }
    }

    /// `r`: releases an exclusive lock this connection holds. Usually a
    /// guard does this; a guard whose lock was released here sends a
    /// harmless second `r` when dropped.
    ///
    /// # Errors
    /// [`Error::NotHeld`] when this connection does not hold it; the
    /// connection errors.
    pub fn release(&self, name: impl AsRef<[u8]>) -> Result<(), Error> {
        let name = wire_name(name.as_ref())?;
        let command = command("r", name.as_bytes());
        let line = self.line(&command)?;
        match self.named(&command, &line, &name)? {
            (1, reply::LOCK_RELEASE_SUCCESS) => Ok(()),
            (0, reply::LOCK_RELEASE_FAILURE) => Err(Error::NotHeld { name }),
            _ => Err(self.unexpected(&command, &line)),
        }
    }

    /// `i`: is the exclusive lock held by anyone (this connection
    /// included)?
    ///
    /// # Errors
    /// The connection errors.
    pub fn is_locked(&self, name: impl AsRef<[u8]>) -> Result<bool, Error> {
        let name = wire_name(name.as_ref())?;
        let command = command("i", name.as_bytes());
        let line = self.line(&command)?;
        match self.named(&command, &line, &name)? {
            (1, reply::LOCK_IS_LOCKED) => Ok(true),
            (0, reply::LOCK_NOT_LOCKED) => Ok(false),
            _ => Err(self.unexpected(&command, &line)),
        }
    }

    /// `t` (protocol 2): the fencing token of an exclusive lock this
    /// connection holds. Pass it to the resource the lock protects, which
    /// should refuse a token lower than one it has seen.
    ///
    /// # Errors
    /// [`Error::NotHeld`]; [`Error::NotSupported`] on a classic server; the
    /// connection errors.
    pub fn token(&self, name: impl AsRef<[u8]>) -> Result<u64, Error> {
        let name = wire_name(name.as_ref())?;
        self.require_v2("t")?;
        let command = command("t", name.as_bytes());
        let line = self.line(&command)?;
        match self.named(&command, &line, &name)? {
            (token, reply::LOCK_TOKEN) if token >= 1 => Ok(token),
            (0, reply::LOCK_NOT_HELD) => Err(Error::NotHeld { name }),
            _ => Err(self.unexpected(&command, &line)),
        }
    }

    /// `d`: every exclusive lock and its holder (the holder's registered
    /// name, else its default name). A line is split at its first `: `, so
    /// a lock name holding `: ` is misread; avoid such names.
    ///
    /// # Errors
    /// [`Error::Disabled`] when the server has dump off; the connection
    /// errors.
    pub fn holders(&self) -> Result<BTreeMap<LockName, Vec<u8>>, Error> {
        let lines = self.block(b"d", "d", false)?;
        let mut map = BTreeMap::new();
        for line in &lines {
            let (name, holder) = self.pair(b"d", line)?;
            map.insert(LockName::from(name), holder.to_vec());
        }
        Ok(map)
    }

    /// `sg`: takes a place among the holders of a shared lock (no limit;
    /// never fails). The guard carries the holder count.
    ///
    /// # Errors
    /// The connection errors.
    pub fn lock_shared(&self, name: impl AsRef<[u8]>) -> Result<SharedGuard, Error> {
        let name = wire_name(name.as_ref())?;
        let command = command("sg", name.as_bytes());
        let line = self.line(&command)?;
        match self.named(&command, &line, &name)? {
            (n, reply::SHARED_GET_SUCCESS) if n >= 1 => Ok(SharedGuard::new(self.clone(), name, n)),
            _ => Err(self.unexpected(&command, &line)),
        }
    }

    /// `wsg` (protocol 2): waits up to `timeout` for a place among at most
    /// `limit` holders of a shared lock (0: no limit): a counting
    /// semaphore. A zero timeout tries once.
    ///
    /// # Errors
    /// A [`Phase::Wait`] [`Error::Timeout`] when no place came free;
    /// [`Error::NotSupported`] on a classic server; the connection errors.
    pub fn lock_shared_limited(
        &self,
        name: impl AsRef<[u8]>,
        limit: u32,
        timeout: Duration,
    ) -> Result<SharedGuard, Error> {
        let name = wire_name(name.as_ref())?;
        self.require_v2("wsg")?;
        let ms = wait_ms(timeout);
        let command = command(&format!("wsg {ms} {limit}"), name.as_bytes());
        let line = self.call_line(&command, Duration::from_millis(ms))?;
        match self.named(&command, &line, &name)? {
            (n, reply::SHARED_GET_SUCCESS) if n >= 1 => Ok(SharedGuard::new(self.clone(), name, n)),
            (0, reply::SHARED_GET_TIMEOUT) => Err(Error::Timeout {
                phase: Phase::Wait,
                context: format!("waiting {ms} ms for a place in shared lock {name:?}"),
            }),
            _ => Err(self.unexpected(&command, &line)),
        }
    }

    /// `sr`: gives up this connection's place in a shared lock.
    ///
    /// # Errors
    /// [`Error::NotHeld`] when it had none; the connection errors.
    pub fn release_shared(&self, name: impl AsRef<[u8]>) -> Result<(), Error> {
        let name = wire_name(name.as_ref())?;
        let command = command("sr", name.as_bytes());
        let line = self.line(&command)?;
        match self.named(&command, &line, &name)? {
            (1, reply::SHARED_RELEASE_SUCCESS) => Ok(()),
            (0, reply::SHARED_RELEASE_FAILURE) => Err(Error::NotHeld { name }),
            _ => Err(self.unexpected(&command, &line)),
        }
    }

    /// `si`: how many connections hold the shared lock (0: none).
    ///
    /// # Errors
    /// The connection errors.
    pub fn shared_count(&self, name: impl AsRef<[u8]>) -> Result<u64, Error> {
        let name = wire_name(name.as_ref())?;
        let command = command("si", name.as_bytes());
        let line = self.line(&command)?;
        match self.named(&command, &line, &name)? {
            (n, reply::SHARED_IS_LOCKED) if n >= 1 => Ok(n),
            (0, reply::SHARED_NOT_LOCKED) => Ok(0),
            _ => Err(self.unexpected(&command, &line)),
        }
    }

    /// `sd`: every shared lock and its holders, in the order they got it.
    /// Lines are split as in [`Client::holders`].
    ///
    /// # Errors
    /// [`Error::Disabled`] when the server has dump off; the connection
    /// errors.
    pub fn shared_holders(&self) -> Result<BTreeMap<LockName, Vec<Vec<u8>>>, Error> {
        let lines = self.block(b"sd", "sd", false)?;
        let mut map: BTreeMap<LockName, Vec<Vec<u8>>> = BTreeMap::new();
        for line in &lines {
            let (name, holder) = self.pair(b"sd", line)?;
            map.entry(LockName::from(name))
                .or_default()
                .push(holder.to_vec());
        }
        Ok(map)
    }

    /// `dj` (protocol 2): every exclusive and shared lock with holders,
    /// tokens and waiters, as the server's one line of JSON (without its
    /// `\n`). See PROTOCOL.md for its shape.
    ///
    /// # Errors
    /// [`Error::Disabled`] when the server has dump off;
    /// [`Error::NotSupported`] on a classic server; the connection errors.
    pub fn dump_json(&self) -> Result<Vec<u8>, Error> {
        self.require_v2("dj")?;
        let line = self.line(b"dj")?;
        if line == reply::DISABLED.trim_ascii_end() {
            Err(Error::Disabled { command: "dj" })
        } else if line.starts_with(b"{") {
            Ok(line)
        } else {
            Err(self.unexpected(b"dj", &line))
        }
    }

    /// `me`: this connection's default and registered names.
    ///
    /// # Errors
    /// The connection errors.
    pub fn name(&self) -> Result<Identity, Error> {
        let line = self.line(b"me")?;
        let names = line.strip_prefix(b"1 ").and_then(|rest| {
            let space = rest.iter().position(|&b| b == b' ')?;
            Some(Identity {
                default: rest[..space].to_vec(),
                name: rest[space + 1..].to_vec(),
            })
        });
        names.ok_or_else(|| self.unexpected(b"me", &line))
    }

    /// `iam`: registers a name for this connection (shown by `d` and
    /// `who`); the empty name removes the registration. Whitespace runs
    /// become single spaces, as for every argument.
    ///
    /// # Errors
    /// [`Error::Disabled`] when the server has the registry off;
    /// [`Error::InvalidArgument`] for a name with a newline; the connection
    /// errors.
    pub fn set_name(&self, name: impl AsRef<[u8]>) -> Result<(), Error> {
        let name = wire_name(name.as_ref())?;
        let command = command("iam", name.as_bytes());
        let line = self.line(&command)?;
        if line == reply::OK.trim_ascii_end() {
            Ok(())
        } else if line == reply::DISABLED.trim_ascii_end() {
            Err(Error::Disabled { command: "iam" })
        } else {
            Err(self.unexpected(&command, &line))
        }
    }

    /// `who`: the connections with a registered name, oldest registration
    /// first.
    ///
    /// # Errors
    /// [`Error::Disabled`] unless the server has both dump and registry
    /// on; the connection errors.
    pub fn clients(&self) -> Result<Vec<Registration>, Error> {
        let lines = self.block(b"who", "who", false)?;
        lines
            .iter()
            .map(|line| {
                let (default, name) = self.pair(b"who", line)?;
                Ok(Registration {
                    default: default.to_vec(),
                    name: name.to_vec(),
                })
            })
            .collect()
    }

    /// `q`: the server's counters.
    ///
    /// # Errors
    /// The connection errors.
    pub fn stats(&self) -> Result<Stats, Error> {
        let lines = self.block(b"q", "q", true)?;
        let mut all = BTreeMap::new();
        for line in &lines {
            let (key, value) = self.pair(b"q", line)?;
            let value = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| self.unexpected(b"q", line))?;
            all.insert(String::from_utf8_lossy(key).into_owned(), value);
        }
        Ok(Stats::from_pairs(all))
    }

    /// `ra` (protocol 2): releases every exclusive and shared lock this
    /// connection holds; returns how many. Outstanding guards then send a
    /// harmless release when dropped.
    ///
    /// # Errors
    /// [`Error::NotSupported`] on a classic server; the connection errors.
    pub fn release_all(&self) -> Result<u64, Error> {
        self.require_v2("ra")?;
        let line = self.line(b"ra")?;
        match parse_status(&line) {
            Some(s) if s.text == b"Released" && s.name.is_none() => Ok(s.number),
            _ => Err(self.unexpected(b"ra", &line)),
        }
    }

    /// `ping` (protocol 2): the round trip, including any wait behind
    /// calls queued ahead of this one.
    ///
    /// # Errors
    /// [`Error::NotSupported`] on a classic server; the connection errors.
    pub fn ping(&self) -> Result<Duration, Error> {
        self.require_v2("ping")?;
        let start = Instant::now();
        let line = self.line(b"ping")?;
        if line == reply::PONG.trim_ascii_end() {
            Ok(start.elapsed())
        } else {
            Err(self.unexpected(b"ping", &line))
        }
    }

    /// `ttl` (protocol 2): from now on the server closes this connection
    /// (releasing its locks) if it sends nothing for `ttl` while not
    /// waiting in line: a lease, renewed by any call, e.g. [`Client::ping`].
    /// Whole seconds, rounded up; zero turns the lease off.
    ///
    /// # Errors
    /// [`Error::NotSupported`] on a classic server; the connection errors.
    pub fn set_ttl(&self, ttl: Duration) -> Result<(), Error> {
        self.require_v2("ttl")?;
        let mut seconds = ttl.as_secs();
        if ttl.subsec_nanos() > 0 {
            seconds += 1;
        }
        let seconds = seconds.min(999_999_999_999_999_999);
        let command = format!("ttl {seconds}").into_bytes();
        let line = self.line(&command)?;
        if line == command_reply_ttl(seconds) {
            Ok(())
        } else {
            Err(self.unexpected(&command, &line))
        }
    }

    /// `auth` (protocol 2): sends the secret of a server run with
    /// `--auth-file`. [`ClientConfig::secret`] does this at connect time.
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
        let command = command("auth", secret);
        let line = self.call(&command, Expect::Line, Duration::ZERO)?;
        let Reply::Line(line) = line else {
            return Err(self.unexpected(&command, b""));
        };
        if line == reply::AUTH_OK.trim_ascii_end() {
            Ok(())
        } else if line == reply::AUTH_FAILURE.trim_ascii_end() {
            Err(Error::Auth(AuthError::Failure))
        } else {
            Err(self.unexpected(&command, &line))
        }
    }

    /// Queues a command whose reply nobody wants (a guard's drop): never
    /// blocks on the network.
    pub(crate) fn forget(&self, line: Vec<u8>) {
        if self.inner.shared.is_closed() {
            return;
        }
        let _ = self.inner.calls.send(Msg::Call(Call {
            line,
            expect: Expect::Line,
            extra: Duration::ZERO,
            reply: None,
        }));
    }

    /// Queues a call and waits for its reply.
    fn call(&self, line: &[u8], expect: Expect, extra: Duration) -> Result<Reply, Error> {
        let shared = &self.inner.shared;
        if shared.is_closed() {
            return Err(shared.disconnected());
        }
        let (tx, rx) = bounded(1);
        let call = Call {
            line: line.to_vec(),
            expect,
            extra,
            reply: Some(tx),
        };
        if self.inner.calls.send(Msg::Call(call)).is_err() {
            return Err(shared.disconnected());
        }
        // The owner thread enforces the timeouts; if it stops, the reply
        // channel closes.
        rx.recv().unwrap_or_else(|_| Err(shared.disconnected()))
    }

    /// A one-line reply, with the replies any command may get checked.
    fn line(&self, command: &[u8]) -> Result<Vec<u8>, Error> {
        self.call_line(command, Duration::ZERO)
    }

    fn call_line(&self, command: &[u8], extra: Duration) -> Result<Vec<u8>, Error> {
        match self.call(command, Expect::Line, extra)? {
            Reply::Line(line) => {
                if line == reply::AUTH_REQUIRED.trim_ascii_end() {
                    return Err(Error::Auth(AuthError::Required));
                }
                Ok(line)
            }
            Reply::Block(_) => Err(self.unexpected(command, b"")),
        }
    }

    /// A multi-line reply, `0 disabled` and `0 Auth Required` checked.
    fn block(
        &self,
        command: &[u8],
        verb: &'static str,
        stats: bool,
    ) -> Result<Vec<Vec<u8>>, Error> {
        match self.call(command, Expect::Block { stats }, Duration::ZERO)? {
            Reply::Block(lines) => {
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
            Reply::Line(line) => Err(self.unexpected(command, &line)),
        }
    }

    /// Splits `KEY: VALUE` at the first `: `.
    fn pair<'a>(&self, command: &[u8], line: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), Error> {
        match line.windows(2).position(|w| w == b": ") {
            Some(i) => Ok((&line[..i], &line[i + 2..])),
            None => Err(self.unexpected(command, line)),
        }
    }

    /// The number and text of `N TEXT: NAME`, checking that NAME is the
    /// name asked about (a reply to someone else's call would not be).
    fn named<'a>(
        &self,
        command: &[u8],
        line: &'a [u8],
        name: &LockName,
    ) -> Result<(u64, &'a str), Error> {
        let status = parse_status(line)
            .filter(|s| s.name == Some(name.as_bytes()))
            .ok_or_else(|| self.unexpected(command, line))?;
        let text = std::str::from_utf8(status.text).map_err(|_| self.unexpected(command, line))?;
        Ok((status.number, text))
    }

    /// A reply that makes no sense: the connection can no longer be
    /// trusted, so it is closed.
    fn unexpected(&self, command: &[u8], line: &[u8]) -> Error {
        let error = Error::Protocol {
            command: conn::show_command(command),
            reply: line.escape_ascii().to_string(),
        };
        self.inner.shared.close(&conn::close_reason(&error));
        error
    }

    fn require_v2(&self, command: &'static str) -> Result<(), Error> {
        if self.inner.version >= 2 {
            Ok(())
        } else {
            Err(Error::NotSupported { command })
        }
    }
}

/// The name as the server will hold it: whitespace runs become single
/// spaces. A newline cannot be sent.
fn wire_name(name: &[u8]) -> Result<LockName, Error> {
    if name.contains(&b'\n') {
        return Err(Error::InvalidArgument {
            what: name.escape_ascii().to_string(),
        });
    }
    Ok(LockName::from(normalize(name)))
}

/// `VERB NAME`.
fn command(verb: &str, arg: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(verb.len() + 1 + arg.len());
    line.extend_from_slice(verb.as_bytes());
    line.push(b' ');
    line.extend_from_slice(arg);
    line
}

fn command_reply_ttl(seconds: u64) -> Vec<u8> {
    format!("1 ttl {seconds}").into_bytes()
}

fn wait_ms(timeout: Duration) -> u64 {
    timeout.as_millis().min(MAX_WAIT_MS) as u64
}

/// A Unix socket path for `unix:/path`, `/path` or `./path`.
pub(crate) fn unix_path(addr: &str) -> Option<&str> {
    if let Some(path) = addr.strip_prefix("unix:") {
        return Some(path);
    }
    (addr.starts_with('/') || addr.starts_with('.')).then_some(addr)
}

/// Opens `tls://HOST:PORT`, `unix:/path` (or a path) or `HOST:PORT`. A TLS
/// session runs behind a Unix socket pair (see `transport::tls::bridge`),
/// so the rest of the client handles one kind of stream either way.
///
/// Public for tools that speak the protocol themselves over the client's
/// addressing and TLS (`lockctl shell`).
///
/// # Errors
/// A bad address, a refused connection, a TLS failure or a timeout.
pub fn open(addr: &str, config: &ClientConfig) -> Result<Stream, Error> {
    let connect_error = |source| Error::Connect {
        addr: addr.to_string(),
        source,
    };
    if let Some(path) = unix_path(addr) {
        return UnixStream::connect(path)
            .map(Stream::Unix)
            .map_err(connect_error);
    }
    if let Some(host_port) = addr.strip_prefix("tls://") {
        let bad = |reason: &str| Error::BadAddress {
            addr: addr.to_string(),
            reason: reason.to_string(),
        };
        let (host, port) = host_port
            .rsplit_once(':')
            .ok_or_else(|| bad("it needs a port: tls://HOST:PORT"))?;
        let port: u16 = port.parse().map_err(|_| bad("the port must be a number"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let mut tls = TlsClientConfig::new(config.tls_ca.as_deref())?;
        if let Some((cert, key)) = &config.tls_client_cert {
            tls = tls.with_client_cert(cert, key)?;
        }
        let stream = connect_tls(host, port, &tls, config.connect_timeout)?;
        return tls::bridge(stream)
            .map(Stream::Unix)
            .map_err(|e| Error::io("cannot set up the TLS connection", e));
    }
    match connect_tcp(resolve(addr)?, config.connect_timeout) {
        Ok(stream) => Ok(Stream::Tcp(stream)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) =>
        {
            Err(Error::Timeout {
                phase: Phase::Connect,
                context: format!("connecting to {addr}"),
            })
        }
        Err(e) => Err(connect_error(e)),
    }
}

fn try_clone(stream: &Stream) -> std::io::Result<Stream> {
    Ok(match stream {
        Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        Stream::Unix(s) => Stream::Unix(s.try_clone()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_addresses() {
        assert_eq!(unix_path("unix:/run/lockd.sock"), Some("/run/lockd.sock"));
        assert_eq!(unix_path("/run/lockd.sock"), Some("/run/lockd.sock"));
        assert_eq!(unix_path("./lockd.sock"), Some("./lockd.sock"));
        assert_eq!(unix_path("127.0.0.1:9999"), None);
    }

    #[test]
    fn names_are_normalised_and_newlines_refused() {
        assert_eq!(wire_name(b"  a \t b ").unwrap().as_bytes(), b"a b");
        assert!(wire_name(b"a\nb").is_err());
        assert_eq!(command("g", b""), b"g ");
        assert_eq!(wait_ms(Duration::from_secs(u64::MAX)), MAX_WAIT_MS as u64);
    }
}
