//! The server: binds listeners, runs an accept loop per listener on its own
//! thread, and a thread per connection over one shared lock table. Embed it
//! with [`Server::bind`] and [`Server::spawn`]; the `lockd` daemon is a thin
//! shell over the same calls.

mod conn;
mod liveness;
mod watch;
mod websocket;

use conn as connection;
use liveness::Reaper;
use watch::CloseWatcher;
use crate::error::Error;
use crate::http::{HttpListener, HttpServer, Observe, Parts};
use crate::metrics::{Metrics, Transport};
use crate::stats::{bump, Stats};
use crate::store::Table;
use crate::token::TokenCounter;
use crate::transport::tls::TlsConfig;
use crate::transport::{self, Listener, Peer, Stream};
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Stack size of a connection thread: small, so that ten thousand idle
/// connections cost little memory (only touched pages are resident).
const CONNECTION_STACK: usize = 128 * 1024;

/// How long a thread serving a command waits for a hung-up peer's thread
/// to finish answering and release its locks (see [`State::reap_closed`]).
const REAP_WAIT: Duration = Duration::from_millis(100);

/// Most connections a `q` accepts on its own (see [`State::accept_pending`]).
const ACCEPT_PENDING_MAX: usize = 64;

pub use crate::secret::Secret;

/// How the server is set up. Start from `ServerConfig::default()` and set
/// fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// TCP addresses, `HOST:PORT` (port 0 picks a free port; `:PORT` means
    /// every interface, IPv6 and IPv4). Default `127.0.0.1:9999`.
    pub listen: Vec<String>,
    /// Unix socket paths.
    pub unix: Vec<PathBuf>,
    /// WebSocket addresses, `HOST:PORT` or `:PORT` as for `listen`. Default
    /// none.
    pub websocket: Vec<String>,
    /// TLS for every TCP listener of `listen` (not WebSocket, not Unix).
    pub tls: Option<TlsConfig>,
    /// Permission bits for the Unix socket files (e.g. `0o660`).
    pub unix_mode: Option<u32>,
    /// Serve `d`, `sd`, `dump`, `dj` (else they answer `0 disabled`).
    pub dump: bool,
    /// Serve `iam` and `who` (else they answer `0 disabled`).
    pub registry: bool,
    /// Connections past this are told `0 Too Many Connections` and closed.
    pub max_connections: usize,
    /// Longest accepted line in bytes, `\n` not counted.
    pub max_line: usize,
    /// Log every command to stderr.
    pub verbose: bool,
    /// When set, every verb but `hello` and `auth` needs `auth` first.
    pub auth_secret: Option<Secret>,
    /// Where the fencing-token high-water mark lives; `None` keeps tokens
    /// in memory only (they restart at 1).
    pub state_dir: Option<PathBuf>,
    /// TCP keepalive idle time; `None` turns keepalive off.
    pub tcp_keepalive: Option<Duration>,
    /// Close connections silent for this long (waiting ones excepted).
    pub idle_timeout: Option<Duration>,
    /// A write that cannot complete for this long drops the connection.
    pub write_timeout: Duration,
    /// Serve `/metrics`, `/locks.json` and the status page on this
    /// `HOST:PORT` (see [`crate::http`]).
    pub http: Option<String>,
    /// Per-lock histograms for names matching these patterns (a name, or
    /// a prefix ending in `*`), capped at [`crate::metrics::MAX_LOCK_SERIES`].
    pub metrics_locks: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: vec!["127.0.0.1:9999".to_string()],
            unix: Vec::new(),
            websocket: Vec::new(),
            tls: None,
            unix_mode: None,
            dump: true,
            registry: true,
            max_connections: 10_000,
            max_line: 4096,
            verbose: false,
            auth_secret: None,
            state_dir: None,
            tcp_keepalive: Some(Duration::from_secs(60)),
            idle_timeout: None,
            write_timeout: Duration::from_secs(60),
            http: None,
            metrics_locks: Vec::new(),
        }
    }
}

/// How to stop a running server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// Stop accepting; let connected clients finish and leave.
    Graceful,
    /// Stop accepting and disconnect everyone now (their locks released).
    Immediate,
}

/// What every thread of one server shares.
pub(crate) struct State {
    pub(crate) config: ServerConfig,
    pub(crate) table: Table,
    pub(crate) stats: Stats,
    pub(crate) metrics: Metrics,
    pub(crate) watcher: CloseWatcher,
    next_id: AtomicU64,
    unix_peers: AtomicU64,
    stopping: AtomicBool,
    /// Set by an immediate shutdown before any socket is closed: a lock
    /// orphaned by the teardown must not be handed to a waiter that is
    /// about to be disconnected too.
    pub(crate) closing_all: AtomicBool,
    listeners: Vec<Arc<Listener>>,
    /// Wakes the accept loops out of `poll` at shutdown.
    wake: WakePipe,
    /// Live connections, so an immediate shutdown can close them and a
    /// hang-up can be reaped. Its own `Arc`, so a connection thread can let
    /// go of the state before it signals that it has ended.
    pub(crate) live: Arc<LiveSet>,
    reaper: Reaper,
    last_reject_log: Mutex<Option<Instant>>,
}

/// The live connections, and a signal for when none is left.
#[derive(Default)]
pub(crate) struct LiveSet {
    conns: Mutex<HashMap<u64, LiveConnection>>,
    drained: Condvar,
}

impl LiveSet {
    /// Called as a connection ends, after it has dropped its `Arc<State>`
    /// and before its socket closes: once the set is empty, nothing but
    /// the handle holds the state (its listeners, its state-dir lock).
    pub(crate) fn forget(&self, id: u64) {
        let mut conns = self.conns.lock();
        conns.remove(&id);
        if conns.is_empty() {
            self.drained.notify_all();
        }
    }
}

/// What the server knows of a live connection's socket and thread.
struct LiveConnection {
    fd: RawFd,
    transport: Transport,
    presence: Arc<Presence>,
    /// Orphaned by another thread (see [`State::reap_closed`]) or ending:
    /// no longer counted in `connections`.
    reaped: bool,
}

/// Where a connection's thread is, for reaping: `IDLE` (about to block, or
/// blocked, with no partial line buffered), `BUSY`, or `REAPED` (orphaned by
/// another thread: the owner then only closes, unless its read brought the
/// peer's last commands, which it answers after [`Presence::rejoin`]).
#[derive(Debug, Default)]
pub(crate) struct Presence(AtomicU8);

impl Presence {
    const BUSY: u8 = 0;
    const IDLE: u8 = 1;
    const REAPED: u8 = 2;

    /// The owner is about to block with no partial line buffered.
    pub(crate) fn idle(&self) {
        self.0.store(Self::IDLE, Ordering::SeqCst);
    }

    /// The owner woke up; `false` if it was reaped meanwhile.
    pub(crate) fn busy(&self) -> bool {
        self.0
            .compare_exchange(Self::IDLE, Self::BUSY, Ordering::SeqCst, Ordering::SeqCst)
            .map_or_else(|current| current != Self::REAPED, |_| true)
    }

    /// The owner read input just as another thread reaped it (the peer's
    /// last commands, sent before its hang-up): it serves them after all.
    pub(crate) fn rejoin(&self) {
        self.0.store(Self::BUSY, Ordering::SeqCst);
    }

    fn reap(&self) -> bool {
        self.0
            .compare_exchange(Self::IDLE, Self::REAPED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
}

/// A self-pipe: written once at shutdown so `poll` in the accept loops
/// returns.
struct WakePipe {
    read: RawFd,
    write: RawFd,
}

impl WakePipe {
    fn new() -> std::io::Result<WakePipe> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array given.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(WakePipe {
            read: fds[0],
            write: fds[1],
        })
    }

    fn wake(&self) {
        // SAFETY: writes one byte from a live buffer to our own pipe.
        unsafe {
            libc::write(self.write, [1u8].as_ptr().cast(), 1);
        }
    }
}

impl Drop for WakePipe {
    fn drop(&mut self) {
        // SAFETY: closes the two descriptors this struct owns, once.
        unsafe {
            libc::close(self.read);
            libc::close(self.write);
        }
    }
}

impl State {
    /// Stops counting a connection that is ending (unless a reaper
    /// already did).
    pub(crate) fn uncount_connection(&self, id: u64) {
        if let Some(conn) = self.live.conns.lock().get_mut(&id) {
            if !std::mem::replace(&mut conn.reaped, true) {
                self.stats.connections.fetch_sub(1, Ordering::Relaxed);
                self.metrics.disconnected(conn.transport);
            }
        }
    }

    /// Called for a connection whose thread never started.
    fn forget_connection(&self, id: u64) {
        self.uncount_connection(id);
        self.live.forget(id);
    }

    /// Releases everything a client held and forgets it; counts orphans.
    /// Idempotent: a second call for the same client finds nothing.
    pub(crate) fn orphan(&self, id: u64) {
        let released = self.table.disconnect(id);
        let stats = &self.stats;
        stats
            .orphans
            .fetch_add(released.exclusive as u64, Ordering::Relaxed);
        stats
            .shared_orphans
            .fetch_add(released.shared as u64, Ordering::Relaxed);
    }

    /// Orphans, on their owners' behalf, connections whose peer hung up
    /// while their threads sat idle, so that no command served after a
    /// client's close can see its locks. Cheap when nobody hung up: one
    /// non-blocking `epoll_wait`.
    ///
    /// A hung-up connection whose thread is still answering what its peer
    /// sent before closing is about to end by itself: wait for it, briefly.
    /// One that does not end within [`REAP_WAIT`] (say its thread is stuck
    /// writing to a peer that reads nothing) is left to its thread and
    /// never waited for again, so no client can slow the others down.
    pub(crate) fn reap_closed(&self, caller: u64) {
        let mut finishing: Vec<u64> = Vec::new();
        self.reaper.poll(|id| {
            // The caller's own peer may have hung up too: it is busy
            // answering, and ends by itself.
            if id != caller && !self.try_reap(id) {
                finishing.push(id);
            }
        });
        if finishing.is_empty() {
            return;
        }
        finishing.sort_unstable();
        finishing.dedup();
        let deadline = Instant::now() + REAP_WAIT;
        loop {
            finishing.retain(|id| !self.try_reap(*id));
            if finishing.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                break;
            }
            thread::sleep(Duration::from_micros(50));
        }
        let mut live = self.live.conns.lock();
        for id in finishing {
            if let Some(conn) = live.get_mut(&id) {
                self.reaper.remove(conn.fd);
            }
        }
    }

    /// Orphans connection `id` if its peer is gone and its thread idle.
    /// `true` once the connection is orphaned (now or before) or gone.
    fn try_reap(&self, id: u64) -> bool {
        let mut live = self.live.conns.lock();
        let Some(conn) = live.get_mut(&id) else {
            return true;
        };
        if conn.reaped {
            return true;
        }
        // Unread input means the owner still has commands to answer.
        if liveness::unread_bytes(conn.fd) > 0 || !conn.presence.reap() {
            return false;
        }
        conn.reaped = true;
        self.reaper.remove(conn.fd);
        self.stats.connections.fetch_sub(1, Ordering::Relaxed);
        self.metrics.disconnected(conn.transport);
        drop(live);
        self.orphan(id);
        true
    }

    /// Accepts, without blocking, connections already queued on the
    /// listeners, so that `q` counts every client whose connect completed.
    /// At most [`ACCEPT_PENDING_MAX`] per listener: during a flood the accept
    /// loops carry on, and `q` stays quick.
    pub(crate) fn accept_pending(self: &Arc<State>) {
        for listener in &self.listeners {
            for _ in 0..ACCEPT_PENDING_MAX {
                match listener.accept() {
                    Ok((stream, peer)) => admit(self, stream, peer),
                    Err(_) => break,
                }
            }
        }
    }

    fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().filter_map(|l| l.tcp_addr()).collect()
    }

    fn websocket_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.websocket_addr())
            .collect()
    }

    fn shutdown(&self, mode: Shutdown) {
        // Only the wake pipe: a listener inherited from systemd must stay
        // usable for the next start, so it is never shut down.
        if !self.stopping.swap(true, Ordering::SeqCst) {
            self.wake.wake();
        }
        if mode == Shutdown::Immediate {
            self.closing_all.store(true, Ordering::SeqCst);
            for conn in self.live.conns.lock().values() {
                // SAFETY: the fd stays open while it is in `live` (a
                // connection leaves `live` before closing its socket), and
                // shutdown(2) touches no memory.
                unsafe {
                    libc::shutdown(conn.fd, libc::SHUT_RDWR);
                }
            }
        }
    }
}

impl Observe for State {
    fn parts(&self) -> Parts<'_> {
        Parts {
            table: &self.table,
            stats: &self.stats,
            metrics: &self.metrics,
            max_connections: self.config.max_connections,
            dump: self.config.dump,
        }
    }
}

/// A bound server, not yet running.
pub struct Server {
    state: Arc<State>,
    http: Option<HttpListener>,
}

impl Server {
    /// Binds every listener of `config` and opens the token state.
    ///
    /// # Errors
    /// An address in use or unusable, a live Unix socket at a path, an
    /// unusable state directory.
    pub fn bind(config: ServerConfig) -> Result<Server, Error> {
        Server::bind_adding(config, Vec::new())
    }

    /// Takes `inherited` listeners, bound elsewhere (systemd's socket
    /// activation), and binds every listener of `config` besides them.
    ///
    /// # Errors
    /// As [`Server::bind`].
    pub fn bind_adding(config: ServerConfig, inherited: Vec<Listener>) -> Result<Server, Error> {
        let mut listeners = inherited;
        for addr in &config.listen {
            listeners.push(bind_tcp(addr, Listener::Tcp)?);
        }
        for addr in &config.websocket {
            listeners.push(bind_tcp(addr, Listener::WebSocket)?);
        }
        for path in &config.unix {
            listeners.push(bind_unix(path, config.unix_mode)?);
        }
        Server::with_listeners(config, listeners)
    }

    /// A server on listeners bound elsewhere (socket activation); the
    /// `listen` and `unix` fields of `config` are ignored.
    ///
    /// # Errors
    /// An unusable state directory, or no epoll for the close watcher.
    pub fn with_listeners(config: ServerConfig, listeners: Vec<Listener>) -> Result<Server, Error> {
        let tokens = match &config.state_dir {
            Some(dir) => TokenCounter::open(dir)?,
            None => TokenCounter::in_memory(),
        };
        let watcher =
            CloseWatcher::start().map_err(|e| Error::io("cannot start the close watcher", e))?;
        let reaper = Reaper::new().map_err(|e| Error::io("cannot create an epoll set", e))?;
        let wake = WakePipe::new().map_err(|e| Error::io("cannot create a pipe", e))?;
        let http = match &config.http {
            Some(addr) => Some(HttpListener::bind(addr, config.auth_secret.clone())?),
            None => None,
        };
        let metrics = Metrics::new(&config.metrics_locks);
        for listener in &listeners {
            listener
                .set_nonblocking()
                .map_err(|e| Error::io("cannot make a listener non-blocking", e))?;
        }
        Ok(Server {
            state: Arc::new(State {
                config,
                table: Table::new(tokens),
                stats: Stats::default(),
                metrics,
                watcher,
                next_id: AtomicU64::new(1),
                unix_peers: AtomicU64::new(0),
                stopping: AtomicBool::new(false),
                closing_all: AtomicBool::new(false),
                listeners: listeners.into_iter().map(Arc::new).collect(),
                wake,
                live: Arc::default(),
                reaper,
                last_reject_log: Mutex::new(None),
            }),
            http,
        })
    }

    /// The address of the `--http` listener, if there is one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(HttpListener::local_addr)
    }

    /// The first TCP address, with the real port when bound to port 0.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addrs().into_iter().next()
    }

    /// Every TCP address.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.state.tcp_addrs()
    }

    /// Every WebSocket address.
    pub fn websocket_addrs(&self) -> Vec<SocketAddr> {
        self.state.websocket_addrs()
    }

    /// Every Unix socket path.
    pub fn unix_paths(&self) -> Vec<PathBuf> {
        self.state
            .listeners
            .iter()
            .filter_map(|l| l.unix_path().map(Path::to_path_buf))
            .collect()
    }

    /// The Unix socket files this server created, which it removes when it
    /// stops (not those of inherited listeners).
    pub fn socket_files(&self) -> Vec<PathBuf> {
        self.state
            .listeners
            .iter()
            .filter_map(|l| l.owned_socket_file().map(Path::to_path_buf))
            .collect()
    }

    /// Starts the accept loops on their own threads.
    ///
    /// # Errors
    /// A thread could not be started.
    pub fn spawn(self) -> Result<ServerHandle, Error> {
        let mut accept_threads = Vec::new();
        for listener in &self.state.listeners {
            let state = Arc::clone(&self.state);
            let listener = Arc::clone(listener);
            let thread = thread::Builder::new()
                .name("lockd-accept".into())
                .spawn(move || accept_loop(&state, &listener))
                .map_err(|e| Error::io("cannot start an accept thread", e))?;
            accept_threads.push(thread);
        }
        let http = match self.http {
            Some(http) => Some(http.spawn(Arc::clone(&self.state) as Arc<dyn Observe>)?),
            None => None,
        };
        Ok(ServerHandle {
            state: self.state,
            accept_threads,
            http,
        })
    }

    /// Runs until shut down through a [`ShutdownHandle`] taken from the
    /// handle of [`Server::spawn`]; equivalent to `spawn()?.wait()`.
    ///
    /// # Errors
    /// As [`Server::spawn`].
    pub fn run(self) -> Result<(), Error> {
        self.spawn()?.wait();
        Ok(())
    }
}

/// A running server. Dropping it disconnects everyone and waits for the
/// threads to finish.
pub struct ServerHandle {
    state: Arc<State>,
    accept_threads: Vec<JoinHandle<()>>,
    http: Option<HttpServer>,
}

impl ServerHandle {
    /// The address of the `--http` listener, if there is one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(HttpServer::local_addr)
    }

    /// The first TCP address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addrs().into_iter().next()
    }

    /// Every TCP address.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.state.tcp_addrs()
    }

    /// Every WebSocket address.
    pub fn websocket_addrs(&self) -> Vec<SocketAddr> {
        self.state.websocket_addrs()
    }

    /// A cheap handle that can stop the server from another thread (a
    /// signal handler thread, say).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            state: Arc::clone(&self.state),
        }
    }

    /// Starts stopping the server; returns at once. See [`Shutdown`].
    pub fn shutdown(&self, mode: Shutdown) {
        self.state.shutdown(mode);
    }

    /// Blocks until the server has been shut down and every connection has
    /// ended, then removes the Unix socket files it created.
    pub fn wait(mut self) {
        self.join();
    }

    /// `shutdown(mode)` then `wait()`.
    pub fn stop(self, mode: Shutdown) {
        self.shutdown(mode);
        self.wait();
    }

    fn join(&mut self) {
        for thread in self.accept_threads.drain(..) {
            let _ = thread.join();
        }
        drop(self.http.take());
        let mut live = self.state.live.conns.lock();
        while !live.is_empty() {
            self.state.live.drained.wait(&mut live);
        }
        drop(live);
        for listener in &self.state.listeners {
            if let Some(path) = listener.owned_socket_file() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if !self.accept_threads.is_empty() {
            self.state.shutdown(Shutdown::Immediate);
            self.join();
        }
    }
}

/// Stops a running server from any thread. Cheap to clone.
#[derive(Clone)]
pub struct ShutdownHandle {
    state: Arc<State>,
}

impl ShutdownHandle {
    /// Starts stopping the server; returns at once. See [`Shutdown`].
    pub fn shutdown(&self, mode: Shutdown) {
        self.state.shutdown(mode);
    }

    /// Live connections now (as `q` counts them: a reaped connection whose
    /// thread is still finishing is gone already).
    pub fn connections(&self) -> usize {
        self.state.stats.connections.load(Ordering::Relaxed) as usize
    }
}

/// Binds a TCP socket for a listener of the kind `kind` makes of it.
fn bind_tcp(addr: &str, kind: fn(TcpListener) -> Listener) -> Result<Listener, Error> {
    let bind_error = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            Error::AddressInUse {
                addr: addr.to_string(),
            }
        } else {
            Error::Bind {
                addr: addr.to_string(),
                source,
            }
        }
    };
    // `:PORT`, as Go and node spell "every interface": IPv6 dual-stack when
    // the host has IPv6, else IPv4.
    if let Some(port) = addr.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| Error::BadAddress {
            addr: addr.to_string(),
            reason: "the port must be a number from 0 to 65535".into(),
        })?;
        return match TcpListener::bind(("::", port)) {
            Ok(l) => Ok(kind(l)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(bind_error(e)),
            Err(_) => TcpListener::bind(("0.0.0.0", port))
                .map(kind)
                .map_err(bind_error),
        };
    }
    let addrs = transport::resolve(addr)?;
    TcpListener::bind(&addrs[..]).map(kind).map_err(bind_error)
}

fn bind_unix(path: &Path, mode: Option<u32>) -> Result<Listener, Error> {
    transport::bind_unix(path, mode).map_err(|source| match source.kind() {
        std::io::ErrorKind::AddrInUse => Error::SocketInUse {
            path: path.to_path_buf(),
        },
        std::io::ErrorKind::AlreadyExists => Error::NotASocket {
            path: path.to_path_buf(),
        },
        _ => Error::Bind {
            addr: path.display().to_string(),
            source,
        },
    })
}

/// Blocks in `poll` on the listener and the wake pipe, then accepts every
/// queued connection.
fn accept_loop(state: &Arc<State>, listener: &Listener) {
    loop {
        if state.stopping.load(Ordering::SeqCst) {
            return;
        }
        let mut fds = [
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: state.wake.read,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: the array outlives the call and its length is passed.
        unsafe {
            libc::poll(fds.as_mut_ptr(), 2, -1);
        }
        if state.stopping.load(Ordering::SeqCst) {
            return;
        }
        match listener.accept() {
            Ok((stream, peer)) => admit(state, stream, peer),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => match e.raw_os_error() {
                Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                    // Out of descriptors or memory: never quit the loop;
                    // pause so the flood can drain, then go on.
                    log_rejection(state, &format!("cannot accept: {e}; pausing 100 ms"));
                    thread::sleep(Duration::from_millis(100));
                }
                Some(libc::EINVAL | libc::EBADF) => return,
                _ => {}
            },
        }
    }
}

/// Logs at most once a second, so a flood cannot flood the log.
fn log_rejection(state: &State, message: &str) {
    let mut last = state.last_reject_log.lock();
    if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
        *last = Some(Instant::now());
        crate::log::log(crate::log::Priority::Warning, message);
    }
}

fn admit(state: &Arc<State>, mut stream: Stream, peer: Peer) {
    let limit = state.config.max_connections;
    let mut live = state.live.conns.lock();
    if state.stopping.load(Ordering::SeqCst) {
        // Shutting down: an immediate shutdown has walked `live` already
        // and would never close this one.
        return;
    }
    if state.stats.connections.load(Ordering::Relaxed) >= limit as u64 {
        drop(live);
        bump(&state.stats.rejected_connections);
        log_rejection(
            state,
            &format!("connection refused: --max-connections {limit} reached"),
        );
        // A WebSocket client is still in its HTTP handshake: it gets the
        // line as the body of a 503.
        let refusal = match peer {
            Peer::WebSocket(_) => crate::protocol::reply::TOO_MANY_CONNECTIONS_HTTP,
            _ => crate::protocol::reply::TOO_MANY_CONNECTIONS,
        };
        let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
        let _ = stream.write_all(refusal);
        stream.drain_input();
        return;
    }
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let presence = Arc::new(Presence::default());
    let fd = stream.as_raw_fd();
    let transport = match peer {
        Peer::Tcp(_) if state.config.tls.is_some() => Transport::Tls,
        Peer::Tcp(_) => Transport::Tcp,
        Peer::WebSocket(_) => Transport::WebSocket,
        Peer::Unix => Transport::Unix,
    };
    state.metrics.connected(transport);
    live.insert(
        id,
        LiveConnection {
            fd,
            transport,
            presence: Arc::clone(&presence),
            reaped: false,
        },
    );
    state.stats.connections.fetch_add(1, Ordering::Relaxed);
    let _ = state.reaper.add(fd, id);
    drop(live);

    let websocket = matches!(peer, Peer::WebSocket(_));
    let name = match peer {
        Peer::Tcp(addr) | Peer::WebSocket(addr) => {
            if let Stream::Tcp(tcp) = &stream {
                let _ = tcp.set_nodelay(true);
                if let Some(idle) = state.config.tcp_keepalive {
                    let _ = transport::set_keepalive(tcp, idle);
                }
            }
            transport::peer_name(addr)
        }
        Peer::Unix => format!(
            "unix:{}",
            state.unix_peers.fetch_add(1, Ordering::Relaxed) + 1
        ),
    };
    let thread_state = Arc::clone(state);
    let spawned = thread::Builder::new()
        .name(format!("lockd-conn-{id}"))
        .stack_size(CONNECTION_STACK)
        .spawn(move || match stream {
            Stream::Tcp(tcp) if websocket => {
                websocket::serve(thread_state, tcp, id, name, &presence);
            }
            stream => connection::serve(thread_state, stream, id, name, &presence),
        });
    if let Err(e) = spawned {
        // The closure (and so the stream) is dropped: the socket closes.
        log_rejection(state, &format!("cannot start a connection thread: {e}"));
        state.forget_connection(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpStream;

    fn poll_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Connections that waited keep their socket in the close watcher until
    /// they end, and no longer (issue 8): nothing is left behind.
    #[test]
    fn the_close_watcher_forgets_every_connection_that_ends() {
        let config = ServerConfig {
            listen: vec!["127.0.0.1:0".into()],
            ..ServerConfig::default()
        };
        let handle = Server::bind(config).expect("bind").spawn().expect("spawn");
        let state = Arc::clone(&handle.state);
        let addr = handle.local_addr().expect("addr");
        let connect = || {
            let stream = TcpStream::connect(addr).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            BufReader::new(stream)
        };
        let call = |conn: &mut BufReader<TcpStream>, command: &str| {
            conn.get_mut().write_all(command.as_bytes()).expect("send");
            let mut reply = String::new();
            conn.read_line(&mut reply).expect("reply");
            reply
        };
        let mut holder = connect();
        assert_eq!(call(&mut holder, "g L\n"), "1 Lock Get Success: L\n");
        let mut waiters: Vec<_> = (0..40).map(|_| connect()).collect();
        // One at a time, so the line is in this order.
        for (i, waiter) in waiters.iter_mut().enumerate() {
            waiter.get_mut().write_all(b"wg 30000 L\n").expect("send");
            poll_until("a waiter", || state.table.counts().waiting == i + 1);
        }
        // Each waiter is queued in the table before it watches its socket.
        poll_until("40 watched waiters", || state.watcher.watched() == 40);
        // Half hang up while waiting, the rest are granted in turn and
        // then close while idle.
        let leaving: Vec<_> = waiters.drain(20..).collect();
        drop(leaving);
        poll_until("20 waiters", || state.table.counts().waiting == 20);
        assert_eq!(call(&mut holder, "r L\n"), "1 Lock Release Success: L\n");
        for waiter in &mut waiters {
            let mut granted = String::new();
            waiter.read_line(&mut granted).expect("grant");
            assert!(granted.ends_with(" Lock Get Success: L\n"), "{granted}");
            assert_eq!(call(waiter, "r L\n"), "1 Lock Release Success: L\n");
        }
        drop(waiters);
        drop(holder);
        poll_until("every connection to end", || {
            state.live.conns.lock().is_empty()
        });
        assert_eq!(state.watcher.watched(), 0);
        handle.stop(Shutdown::Immediate);
    }
}
