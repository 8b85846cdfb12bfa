//! The server: binds listeners, runs an accept loop per listener on its own
//! thread, and a thread per connection over one shared lock store. Embed it
//! with [`Server::bind`] and [`Server::spawn`]; the `lockd` daemon is a thin
//! shell over the same calls.
//!
//! Inside: [`config`](ServerConfig) says how it is set up; `listen` binds
//! and accepts; `stream` is the one stream type (TCP, Unix, TLS); `conn`
//! is the one connection loop, over the framings of lines and `websocket`
//! messages; `liveness` notices closed peers; `workers` keeps a
//! connection's thread, once its connection ends, for the next one.

mod config;
mod conn;
mod listen;
mod liveness;
mod permits;
mod stream;
mod websocket;
mod workers;

pub use crate::secret::Secret;
pub use config::{ServerConfig, Shutdown, DEFAULT_MAX_OUTPUT};
pub use listen::Listener;

use crate::error::Error;
use crate::http::{HttpListener, HttpServer, Observe, Parts};
use crate::metrics::Metrics;
use crate::session::{self, Host, Settings};
use crate::stats::{bump, Stats};
#[cfg(feature = "cluster")]
use crate::store::etcd::{self, EtcdStore};
use crate::store::{LockStore, Table};
use crate::token::TokenCounter;
use listen::{bind_tcp, bind_unix, Peer};
use liveness::{Liveness, Presence, Signal};
use parking_lot::Mutex;
use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use stream::Socket;

/// Stack size of a connection thread: small, so that ten thousand idle
/// connections cost little memory (only touched pages are resident).
const CONNECTION_STACK: usize = 128 * 1024;

/// Stack size of the liveness thread.
const LIVENESS_STACK: usize = 128 * 1024;

/// Most connections a `q` accepts on its own (see [`State::accept_pending`]).
const ACCEPT_PENDING_MAX: usize = 64;

/// What the sessions of one server share: the store below the seam, the
/// counters, the settings. The session layer sees it as a [`Host`].
struct Core {
    store: Box<dyn LockStore>,
    stats: Stats,
    metrics: Metrics,
    settings: Settings,
    /// To accept queued connections before `q` counts them.
    server: Weak<State>,
}

impl Host for Core {
    fn store(&self) -> &dyn LockStore {
        &*self.store
    }

    fn stats(&self) -> &Stats {
        &self.stats
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn closing(&self) -> bool {
        (self.server.upgrade()).is_none_or(|state| state.closing_all.load(Ordering::SeqCst))
    }

    fn settings(&self) -> &Settings {
        &self.settings
    }

    fn before_stats(&self) {
        if let Some(state) = self.server.upgrade() {
            state.accept_pending();
        }
    }
}

impl Observe for Core {
    fn parts(&self) -> Parts<'_> {
        Parts {
            store: &*self.store,
            stats: &self.stats,
            metrics: &self.metrics,
            max_connections: self.settings.max_connections,
            dump: self.settings.dump,
        }
    }
}

/// What every thread of one server shares.
pub(crate) struct State {
    pub(crate) config: ServerConfig,
    host: Arc<Core>,
    /// Its own `Arc`, so a connection thread can let go of the state
    /// before it leaves the set.
    pub(crate) liveness: Arc<Liveness>,
    next_id: AtomicU64,
    unix_peers: AtomicU64,
    stopping: AtomicBool,
    /// Set by an immediate shutdown before any socket is closed: a lock
    /// orphaned by the teardown must not be handed to a waiter that is
    /// about to be disconnected too.
    pub(crate) closing_all: AtomicBool,
    listeners: Vec<Arc<Listener>>,
    /// Listings being made at once (see `permits`).
    pub(crate) listings: permits::Permits,
    /// Cluster mode's store, to refuse clients while it has no lease.
    #[cfg(feature = "cluster")]
    cluster: Option<EtcdStore>,
    /// Raised at shutdown, so the accept loops leave `poll`.
    wake: Signal,
    last_reject_log: Mutex<Option<Instant>>,
    /// The connections' threads (see `workers`).
    workers: workers::Workers,
}

impl State {
    /// Stops counting a connection in `connections` (once).
    pub(crate) fn uncount(&self, presence: &Presence) {
        if presence.uncount() {
            self.host.stats.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Orphans a connection on its thread's behalf: its peer hung up while
    /// the thread was idle or waiting.
    pub(crate) fn reap(&self, presence: &Presence) {
        self.uncount(presence);
        session::orphan(&*self.host, presence.id());
    }

    /// Accepts, without blocking, connections already queued on the
    /// listeners, so that `q` counts every client whose connect completed.
    /// At most [`ACCEPT_PENDING_MAX`] per listener: during a flood the accept
    /// loops carry on, and `q` stays quick.
    fn accept_pending(self: &Arc<State>) {
        for listener in &self.listeners {
            for _ in 0..ACCEPT_PENDING_MAX {
                match listener.accept() {
                    Ok((socket, peer)) => admit(self, socket, peer),
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
        // Only the wake signal: a listener inherited from systemd must stay
        // usable for the next start, so it is never shut down.
        if !self.stopping.swap(true, Ordering::SeqCst) {
            self.wake.raise();
        }
        if mode == Shutdown::Immediate {
            self.closing_all.store(true, Ordering::SeqCst);
            self.liveness.shutdown_all();
        }
    }
}

/// Where a server listens: what [`Server`] (bound) and [`ServerHandle`]
/// (running) both tell, through `Deref`.
pub struct Addresses {
    state: Arc<State>,
    http: Option<SocketAddr>,
}

impl Addresses {
    /// The address of the `--http` listener, if there is one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
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
}

/// A bound server, not yet running. Its addresses: see [`Addresses`].
pub struct Server {
    addresses: Addresses,
    http: Option<HttpListener>,
}

impl std::ops::Deref for Server {
    type Target = Addresses;

    fn deref(&self) -> &Addresses {
        &self.addresses
    }
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
            listeners.push(bind_tcp(addr, config.listen_backlog, Listener::Tcp)?);
        }
        for addr in &config.websocket {
            listeners.push(bind_tcp(addr, config.listen_backlog, Listener::WebSocket)?);
        }
        for path in &config.unix {
            listeners.push(bind_unix(path, config.unix_mode, config.listen_backlog)?);
        }
        Server::with_listeners(config, listeners)
    }

    /// A server on listeners bound elsewhere (socket activation); the
    /// `listen` and `unix` fields of `config` are ignored.
    ///
    /// # Errors
    /// An unusable state directory, or no epoll for the close watcher.
    pub fn with_listeners(config: ServerConfig, listeners: Vec<Listener>) -> Result<Server, Error> {
        let memory = |config: &ServerConfig| -> Result<Box<dyn LockStore>, Error> {
            let tokens = match &config.state_dir {
                Some(dir) => TokenCounter::open(dir)?,
                None => TokenCounter::in_memory(),
            };
            Ok(Box::new(Table::with_limits(tokens, config.limits)))
        };
        #[cfg(feature = "cluster")]
        let (store, cluster): (Box<dyn LockStore>, _) = match &config.cluster {
            Some(cluster) => {
                let store = EtcdStore::open(cluster).map_err(|e| Error::Cluster {
                    reason: e.to_string(),
                })?;
                (Box::new(store.clone()), Some(store))
            }
            None => (memory(&config)?, None),
        };
        #[cfg(not(feature = "cluster"))]
        let store = memory(&config)?;
        let liveness =
            Arc::new(Liveness::new().map_err(|e| Error::io("cannot create an epoll set", e))?);
        let wake = Signal::new().map_err(|e| Error::io("cannot create an eventfd", e))?;
        let http = match &config.http {
            Some(addr) => Some(HttpListener::bind(addr, config.auth_secret.clone())?),
            None => None,
        };
        let metrics = Metrics::new(&config.metrics_locks);
        for listener in &listeners {
            listener
                .set_nonblocking()
                .map_err(|e| Error::io("cannot make a listener non-blocking", e))?;
            listener
                .set_connection_options(config.tcp_keepalive, config.write_timeout)
                .map_err(|e| Error::io("cannot set TCP options on a listener", e))?;
        }
        let settings = Settings {
            dump: config.dump,
            registry: config.registry,
            verbose: config.verbose,
            auth_secret: config.auth_secret.clone(),
            idle_timeout: config.idle_timeout,
            max_connections: config.max_connections,
        };
        let workers = workers::Workers::new("lockd-conn", CONNECTION_STACK, config.thread_linger);
        let state = Arc::new_cyclic(|weak: &Weak<State>| State {
            config,
            host: Arc::new(Core {
                store,
                stats: Stats::default(),
                metrics,
                settings,
                server: weak.clone(),
            }),
            liveness,
            next_id: AtomicU64::new(1),
            unix_peers: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            closing_all: AtomicBool::new(false),
            listeners: listeners.into_iter().map(Arc::new).collect(),
            listings: permits::Permits::per_core(),
            #[cfg(feature = "cluster")]
            cluster,
            wake,
            last_reject_log: Mutex::new(None),
            workers,
        });
        #[cfg(feature = "cluster")]
        if let Some(cluster) = &state.cluster {
            close_on_lease_loss(&state, cluster)?;
        }
        let addresses = Addresses {
            state,
            http: http.as_ref().and_then(HttpListener::local_addr),
        };
        Ok(Server { addresses, http })
    }

    /// Starts the accept loops on their own threads.
    ///
    /// # Errors
    /// A thread could not be started.
    pub fn spawn(self) -> Result<ServerHandle, Error> {
        let liveness = Arc::clone(&self.addresses.state.liveness);
        let server = Arc::downgrade(&self.addresses.state);
        let liveness_thread = thread::Builder::new()
            .name("lockd-liveness".into())
            .stack_size(LIVENESS_STACK)
            .spawn(move || {
                liveness.run(|| match server.upgrade() {
                    Some(state) => {
                        state.liveness.sweep(&|p| state.reap(p));
                        true
                    }
                    None => false,
                });
            })
            .map_err(|e| Error::io("cannot start the liveness thread", e))?;
        let mut accept_threads = Vec::new();
        for listener in &self.addresses.state.listeners {
            let state = Arc::clone(&self.addresses.state);
            let listener = Arc::clone(listener);
            let thread = thread::Builder::new()
                .name("lockd-accept".into())
                .spawn(move || accept_loop(&state, &listener))
                .map_err(|e| Error::io("cannot start an accept thread", e))?;
            accept_threads.push(thread);
        }
        let http = match self.http {
            Some(http) => {
                Some(http.spawn(Arc::clone(&self.addresses.state.host) as Arc<dyn Observe>)?)
            }
            None => None,
        };
        Ok(ServerHandle {
            addresses: self.addresses,
            accept_threads,
            liveness_thread: Some(liveness_thread),
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
/// threads to finish. Its addresses: see [`Addresses`].
pub struct ServerHandle {
    addresses: Addresses,
    accept_threads: Vec<JoinHandle<()>>,
    /// Joined last: while it sweeps, it holds the state.
    liveness_thread: Option<JoinHandle<()>>,
    http: Option<HttpServer>,
}

impl std::ops::Deref for ServerHandle {
    type Target = Addresses;

    fn deref(&self) -> &Addresses {
        &self.addresses
    }
}

impl ServerHandle {
    /// A cheap handle that can stop the server from another thread (a
    /// signal handler thread, say).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            state: Arc::clone(&self.addresses.state),
        }
    }

    /// Starts stopping the server; returns at once. See [`Shutdown`].
    pub fn shutdown(&self, mode: Shutdown) {
        self.addresses.state.shutdown(mode);
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
        self.addresses.state.liveness.wait_drained();
        self.addresses.state.liveness.stop();
        if let Some(thread) = self.liveness_thread.take() {
            let _ = thread.join();
        }
        for listener in &self.addresses.state.listeners {
            if let Some(path) = listener.owned_socket_file() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if self.liveness_thread.is_some() {
            self.addresses.state.shutdown(Shutdown::Immediate);
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
        self.state.host.stats.connections.load(Ordering::Relaxed) as usize
    }
}

/// Blocks in `poll` on the listener and the wake signal, then accepts
/// every queued connection.
fn accept_loop(state: &Arc<State>, listener: &Listener) {
    // The last accept took a connection: try for the next before waiting
    // (under a stream of connects, one system call instead of two each).
    let mut took = false;
    loop {
        if state.stopping.load(Ordering::SeqCst) {
            return;
        }
        if !took {
            let mut fds = [
                PollFd::new(listener, PollFlags::IN),
                PollFd::new(&state.wake, PollFlags::IN),
            ];
            let _ = poll(&mut fds, None);
            if state.stopping.load(Ordering::SeqCst) {
                return;
            }
        }
        let accepted = listener.accept();
        took = accepted.is_ok();
        match accepted {
            Ok((socket, peer)) => admit(state, socket, peer),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => match Errno::from_io_error(&e) {
                Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM) => {
                    // Out of descriptors or memory: never quit the loop;
                    // pause so the flood can drain, then go on.
                    log_rejection(state, &format!("cannot accept: {e}; pausing 100 ms"));
                    thread::sleep(Duration::from_millis(100));
                }
                Some(Errno::INVAL | Errno::BADF) => return,
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
        ::log::warn!("{message}");
    }
}

#[cfg(feature = "cluster")]
/// Cluster mode's safety rule: when the node's lease is lost, every
/// connection is closed at once, before etcd may give its locks to others.
fn close_on_lease_loss(state: &Arc<State>, cluster: &EtcdStore) -> Result<(), Error> {
    let lost = cluster.lease_lost();
    let state = Arc::downgrade(state);
    thread::Builder::new()
        .name("lockd-cluster".into())
        .spawn(move || {
            // Ends when the store goes (its senders with it).
            for () in lost.iter() {
                let Some(state) = state.upgrade() else { return };
                crate::log::log(
                    crate::log::Priority::Warning,
                    "cluster lease lost (etcd does not answer): closing every connection",
                );
                state.liveness.shutdown_all();
            }
        })
        .map(|_| ())
        .map_err(|e| Error::io("cannot start the cluster lease thread", e))
}

fn admit(state: &Arc<State>, socket: Socket, peer: Peer) {
    if state.stopping.load(Ordering::SeqCst) {
        return;
    }
    let limit = state.config.max_connections;
    let stats = &state.host.stats;
    if stats.connections.load(Ordering::Relaxed) >= limit as u64 {
        bump(&stats.rejected_connections);
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
        let _ = socket.set_write_timeout(Some(Duration::from_millis(100)));
        let _ = (&socket).write_all(refusal);
        socket.drain_input();
        return;
    }
    #[cfg(feature = "cluster")]
    if state.cluster.as_ref().is_some_and(|c| !c.is_serving()) {
        bump(&stats.rejected_connections);
        log_rejection(
            state,
            "connection refused: no cluster lease (etcd does not answer)",
        );
        let _ = socket.set_write_timeout(Some(Duration::from_millis(100)));
        let _ = (&socket).write_all(etcd::NOT_SERVING);
        socket.drain_input();
        return;
    }
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let presence = match state.liveness.add(id, Arc::new(socket)) {
        Ok(presence) => presence,
        Err(e) => {
            // Closing (an immediate shutdown has begun), or out of memory.
            if !state.stopping.load(Ordering::SeqCst) {
                log_rejection(state, &format!("cannot watch a connection: {e}"));
            }
            return;
        }
    };
    stats.connections.fetch_add(1, Ordering::Relaxed);
    let websocket = matches!(peer, Peer::WebSocket(_));
    let name = match peer {
        Peer::Tcp(addr) | Peer::WebSocket(addr) => listen::peer_name(addr),
        Peer::Unix => format!(
            "unix:{}",
            state.unix_peers.fetch_add(1, Ordering::Relaxed) + 1
        ),
    };
    let thread_state = Arc::clone(state);
    let thread_presence = Arc::clone(&presence);
    let job = Box::new(move || conn::serve(thread_state, thread_presence, websocket, name));
    if let Err(e) = state.workers.run(job) {
        // The job (and its `Arc`s) is dropped; the socket closes once the
        // liveness module forgets it.
        log_rejection(state, &format!("cannot start a connection thread: {e}"));
        state.uncount(&presence);
        state.liveness.forget(id);
    }
}

/// For the server's unit tests: polls `done` until it holds, and fails
/// after 10 s.
#[cfg(test)]
fn poll_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpStream;

    /// Connections that waited, hung up while waiting, or held locks and
    /// closed with half a command sent all leave the liveness module, and
    /// every lock they held is released (issues 8 and 17).
    #[test]
    fn every_connection_that_ends_is_forgotten_and_its_locks_released() {
        let config = ServerConfig {
            listen: vec!["127.0.0.1:0".into()],
            ..ServerConfig::default()
        };
        let handle = Server::bind(config).expect("bind").spawn().expect("spawn");
        let state = Arc::clone(&handle.state);
        let store = || state.host.store.counts().expect("memory counts");
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
            poll_until("a waiter", || store().waiting == i + 1);
        }
        // Half hang up while waiting, the rest are granted in turn and
        // then close while idle.
        let leaving: Vec<_> = waiters.drain(20..).collect();
        drop(leaving);
        poll_until("20 waiters", || store().waiting == 20);
        assert_eq!(call(&mut holder, "r L\n"), "1 Lock Release Success: L\n");
        for waiter in &mut waiters {
            let mut granted = String::new();
            waiter.read_line(&mut granted).expect("grant");
            assert!(granted.ends_with(" Lock Get Success: L\n"), "{granted}");
            assert_eq!(call(waiter, "r L\n"), "1 Lock Release Success: L\n");
        }
        drop(waiters);
        // Holders that close with part of a line sent, all at once.
        let mut holders: Vec<_> = (0..200).map(|_| connect()).collect();
        for (i, conn) in holders.iter_mut().enumerate() {
            let reply = call(conn, &format!("g h{i}\n"));
            assert_eq!(reply, format!("1 Lock Get Success: h{i}\n"));
            conn.get_mut().write_all(b"i h").expect("send");
        }
        assert_eq!(store().locks, 200);
        drop(holders);
        drop(holder);
        poll_until("every connection to end", || state.liveness.len() == 0);
        assert_eq!(store().locks, 0);
        assert_eq!(store().waiting, 0);
        handle.stop(Shutdown::Immediate);
    }
}
