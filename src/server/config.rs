//! How a server is set up and how it stops.

use crate::secret::Secret;
#[cfg(feature = "cluster")]
use crate::store::etcd::EtcdConfig;
use crate::store::Limits;
use crate::transport::tls::TlsConfig;
use std::path::PathBuf;
use std::time::Duration;

/// The default of [`ServerConfig::max_output`]: writes this big make the
/// cost of the system call vanish next to the bytes, and a thousand
/// connections listing at once hold no more than 1 GB between them.
pub const DEFAULT_MAX_OUTPUT: usize = 1024 * 1024;

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
    /// Caps on locks held and waiters in line (`--max-locks`,
    /// `--max-locks-per-connection`, `--max-waiters`).
    pub limits: Limits,
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
    /// A block of output (a batch of replies, a piece of a listing) not
    /// taken by the client within this long in total, however slowly it
    /// reads, drops the connection and releases its locks.
    pub write_timeout: Duration,
    /// Reply bytes a connection may hold unsent (`--max-output`): a
    /// listing bigger than this is made and sent a piece of this size at a
    /// time, each once the socket took the last. Default 1 MiB.
    pub max_output: usize,
    /// Cluster mode: keep the locks in etcd instead of this process
    /// (fencing tokens are then etcd revisions; `state_dir` is unused).
    #[cfg(feature = "cluster")]
    pub cluster: Option<EtcdConfig>,
    /// The listen backlog of the sockets the server binds: connections the
    /// kernel queues before they are accepted (capped by
    /// `net.core.somaxconn`), so a burst of connects is not refused or left
    /// hanging. Default 4096.
    pub listen_backlog: u32,
    /// Serve `/metrics`, `/locks.json` and the status page on this
    /// `HOST:PORT` (see [`crate::http`]).
    pub http: Option<String>,
    /// Per-lock histograms for names matching these patterns (a name, or
    /// a prefix ending in `*`), capped at [`crate::metrics::MAX_LOCK_SERIES`].
    pub metrics_locks: Vec<String>,
    /// How long a connection's thread, once its connection has ended,
    /// waits for a new connection to serve before it ends. Threads that
    /// waited this long end one per millisecond at most, so a mass close
    /// is not followed by a storm of exits. Default 10 s.
    pub thread_linger: Duration,
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
            limits: Limits::default(),
            max_line: 4096,
            verbose: false,
            auth_secret: None,
            state_dir: None,
            tcp_keepalive: Some(Duration::from_secs(60)),
            idle_timeout: None,
            write_timeout: Duration::from_secs(60),
            max_output: DEFAULT_MAX_OUTPUT,
            #[cfg(feature = "cluster")]
            cluster: None,
            listen_backlog: 4096,
            http: None,
            metrics_locks: Vec::new(),
            thread_linger: Duration::from_secs(10),
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
