//! Local mode: lockd's locks between the processes of one machine, with no
//! daemon to install or run.
//!
//! Processes that agree on a socket path share one lock namespace. The
//! first to [`open`] the path binds a Unix socket there and serves an
//! embedded lockd ([`Server`]) on its own threads, for as long as the
//! process lives; the others connect to it as ordinary clients. Each gets
//! a plain [`Client`], so waiting in line, fencing tokens, shared and
//! reader/writer holds, guards and [`Client::on_disconnect`] are exactly
//! those of the network client.
//!
//! When the serving process exits, cleanly or by `SIGKILL`, its socket
//! stops answering: every client's connection ends, so each holder learns
//! through the lost-lock signal that its locks are gone, and the next
//! [`open`] of the path takes over.
//!
//! # Why the takeover is sound
//!
//! Serving the path means holding an exclusive `flock(2)` on `PATH.lock`
//! for the whole life of the serving process. Only the holder of that lock
//! may remove the socket file or bind a new one. The kernel drops the lock
//! when its process dies, however it dies, and never while it lives, so:
//! two processes racing to take over cannot both serve (one of them gets
//! the lock, the other waits and connects); a live socket is never
//! stolen (its server holds the lock); and a stale one (its server died)
//! is replaced by whoever gets the lock next. The lock file is opened
//! close-on-exec, so a command the server runs does not inherit it.
//!
//! Fencing tokens stay monotonic per path across takeovers: each server
//! keeps the token high-water mark in `PATH.state/`, reserved ahead, as the
//! daemon does with `--state-dir`.
//!
//! # Permissions
//!
//! The directory must belong to the user and be closed to others (`0700`);
//! the socket and the state files are created `0600`. A group-shared mode
//! ([`Options::mode`] `0o660`) creates them `0660` in a directory of mode
//! `0770` that the group can use. A socket owned by another user is
//! refused, never connected to blindly (in the group mode, it must belong
//! to one of the user's groups).

use crate::client::{Client, ClientConfig};
use crate::server::{Server, ServerConfig, ServerHandle, Shutdown};
use crate::Error;
use parking_lot::Mutex;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often [`Options::serve_until_idle`] looks at the connection count.
const IDLE_CHECK: Duration = Duration::from_millis(50);
/// The file name of the socket in the default directory.
const DEFAULT_SOCKET: &str = "local.sock";

/// Why a local path could not be served or connected to.
#[derive(Debug)]
#[non_exhaustive]
pub enum LocalError {
    /// The directory or a file in it is owned by someone else, or open to
    /// users it should not be.
    Permissions {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// A file that is not a socket is at the path.
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// A file system call failed.
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        source: io::Error,
    },
    /// Another process held the takeover lock for the whole wait, without
    /// ever serving the socket.
    TakeoverTimedOut {
        /// The socket path.
        path: PathBuf,
    },
    /// Nobody serves the path ([`Options::connect`] never serves it).
    NotServed {
        /// The socket path.
        path: PathBuf,
    },
    /// The embedded server or the client failed.
    Lockd(Error),
}

impl fmt::Display for LocalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalError::Permissions { path, reason } => {
                write!(f, "refusing {}: {reason}", path.display())
            }
            LocalError::NotASocket { path } => write!(
                f,
                "{} is not a socket: remove it or choose another local path",
                path.display()
            ),
            LocalError::Io { context, source } => write!(f, "{context}: {source}"),
            LocalError::TakeoverTimedOut { path } => write!(
                f,
                "{} is being taken over by another process that never started serving it (is a process stuck holding {}?)",
                path.display(),
                lock_path(path).display()
            ),
            LocalError::NotServed { path } => write!(
                f,
                "nobody serves {} (the first process to open it serves it)",
                path.display()
            ),
            LocalError::Lockd(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for LocalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LocalError::Io { source, .. } => Some(source),
            LocalError::Lockd(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Error> for LocalError {
    fn from(e: Error) -> LocalError {
        LocalError::Lockd(e)
    }
}

/// How to open a local path. [`open`] uses the defaults.
#[derive(Clone, Debug)]
pub struct Options {
    mode: u32,
    patience: Duration,
    client: ClientConfig,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            mode: 0o600,
            patience: Duration::from_secs(10),
            client: ClientConfig::default(),
        }
    }
}

impl Options {
    /// The defaults: private (`0600`), 10 s of patience for a takeover.
    pub fn new() -> Options {
        Options::default()
    }

    /// The permission bits of the socket and state files: `0o600` (the
    /// default, this user only) or `0o660` (the user's group too; the
    /// directory must then be `0770` and belong to that group).
    pub fn mode(mut self, mode: u32) -> Options {
        self.mode = mode & 0o660;
        self
    }

    /// How long to wait while another process takes the path over.
    pub fn patience(mut self, patience: Duration) -> Options {
        self.patience = patience;
        self
    }

    /// The settings of the client connection (timeouts).
    pub fn client_config(mut self, config: ClientConfig) -> Options {
        self.client = config;
        self
    }

    /// Connects to the lockd serving `path`, first serving it from this
    /// process when nobody does (see the module docs).
    ///
    /// # Errors
    /// The directory or the socket fails the permission checks, a file
    /// that is not a socket is in the way, a takeover by another process
    /// did not finish within the patience, or the server or client failed.
    pub fn open(&self, path: impl AsRef<Path>) -> Result<Client, LocalError> {
        self.connect_or(path.as_ref(), |path| self.try_serve(path))
    }

    /// Connects to the lockd serving `path`, waiting up to the patience
    /// for one to serve it, but never serves it from this process: for a
    /// client whose process may exit while others rely on the server (see
    /// [`Options::serve_until_idle`]).
    ///
    /// # Errors
    /// As [`Options::open`]; [`LocalError::NotServed`] when nobody served
    /// the path within the patience.
    pub fn connect(&self, path: impl AsRef<Path>) -> Result<Client, LocalError> {
        self.connect_or(path.as_ref(), |_| Ok(false))
    }

    /// Connects to `path` after the checks, calling `serve` whenever
    /// nobody answers there: true when the path is served now, false to
    /// wait and try again, until the patience runs out.
    fn connect_or(
        &self,
        path: &Path,
        serve: impl Fn(&Path) -> Result<bool, LocalError>,
    ) -> Result<Client, LocalError> {
        let addr = match path.to_str() {
            Some(p) => format!("unix:{p}"),
            None => {
                return Err(LocalError::Permissions {
                    path: path.to_path_buf(),
                    reason: "the path is not valid UTF-8; choose another".into(),
                })
            }
        };
        check_dir(parent_dir(path), self.mode)?;
        let deadline = Instant::now().checked_add(self.patience);
        let mut last_error = None;
        loop {
            if socket_present(path, self.mode)? {
                match Client::connect_with(&addr, self.client.clone()) {
                    Ok(client) => return Ok(client),
                    // Our own server: nothing to take over.
                    Err(e) if serves(path) => return Err(e.into()),
                    Err(e) => last_error = Some(e),
                }
            }
            if !serve(path)? {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(match last_error {
                        Some(e) => e.into(),
                        None if lock_held(path) => LocalError::TakeoverTimedOut {
                            path: path.to_path_buf(),
                        },
                        None => LocalError::NotServed {
                            path: path.to_path_buf(),
                        },
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Serves `path` from this process until it has been idle (no
    /// connection at all) for `idle`, then stops serving: for a helper
    /// process that serves a path on behalf of short-lived clients (as
    /// `lockctl run --local` starts one), so that no client's locks depend
    /// on the life of another client.
    ///
    /// When idle, the server stops accepting and lets any connection that
    /// raced in finish before it returns, so no lock is lost by stopping.
    /// Returns false at once when another process serves `path`.
    ///
    /// # Errors
    /// As [`Options::open`].
    pub fn serve_until_idle(
        &self,
        path: impl AsRef<Path>,
        idle: Duration,
    ) -> Result<bool, LocalError> {
        let path = path.as_ref();
        check_dir(parent_dir(path), self.mode)?;
        if socket_present(path, self.mode)? && UnixStream::connect(path).is_ok() {
            return Ok(false);
        }
        if !self.try_serve(path)? {
            return Ok(false);
        }
        let serving = {
            let mut all = SERVING.lock();
            match all.iter().position(|s| s.path == path) {
                Some(i) => all.swap_remove(i),
                // A lockd daemon serves it.
                None => return Ok(false),
            }
        };
        let server = serving.server.shutdown_handle();
        let mut idle_since: Option<Instant> = None;
        loop {
            std::thread::sleep(IDLE_CHECK);
            if server.connections() > 0 {
                idle_since = None;
            } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= idle {
                break;
            }
        }
        serving.server.stop(Shutdown::Graceful);
        Ok(true)
    }

    /// Serves `path` from this process if nobody does: true when the path
    /// is served now (by this process or, as found under the lock, by a
    /// live server), false when another process holds the takeover lock.
    fn try_serve(&self, path: &Path) -> Result<bool, LocalError> {
        let mut serving = SERVING.lock();
        if serving.iter().any(|s| s.path == path) {
            return Ok(true);
        }
        let lock_file = lock_path(path);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(self.mode)
            .open(&lock_file)
            .map_err(io_error(format!("cannot open {}", lock_file.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(false),
            Err(TryLockError::Error(e)) => {
                return Err(io_error(format!("cannot lock {}", lock_file.display()))(e))
            }
        }
        let state_dir = state_path(path);
        DirBuilder::new()
            .recursive(true)
            .mode(if self.mode & 0o060 == 0 { 0o700 } else { 0o770 })
            .create(&state_dir)
            .map_err(io_error(format!("cannot create {}", state_dir.display())))?;
        let config = ServerConfig {
            listen: Vec::new(),
            unix: vec![path.to_path_buf()],
            unix_mode: Some(self.mode),
            state_dir: Some(state_dir),
            tcp_keepalive: None,
            ..ServerConfig::default()
        };
        let server = match Server::bind(config) {
            Ok(server) => server,
            // A lockd daemon (not a local-mode process) serves the path.
            Err(Error::SocketInUse { .. }) => return Ok(true),
            Err(e) => return Err(e.into()),
        };
        serving.push(Serving {
            path: path.to_path_buf(),
            server: server.spawn()?,
            _lock: lock,
        });
        Ok(true)
    }
}

/// A path this process serves, until it exits.
struct Serving {
    path: PathBuf,
    server: ServerHandle,
    /// The takeover lock, held for the life of the process.
    _lock: File,
}

/// The paths this process serves. Never emptied: the server must live as
/// long as the process, because other processes' locks live in it.
static SERVING: Mutex<Vec<Serving>> = Mutex::new(Vec::new());

/// Connects to the lockd serving `path`, serving it from this process when
/// nobody does, with the default [`Options`].
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("lockd-local-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// # std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
/// let client = lockd::local::open(dir.join("app.sock"))?;
/// let _nightly = client.lock("nightly")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// As [`Options::open`].
pub fn open(path: impl AsRef<Path>) -> Result<Client, LocalError> {
    Options::new().open(path)
}

/// Whether this process serves `path`.
pub fn serves(path: impl AsRef<Path>) -> bool {
    let path = path.as_ref();
    SERVING.lock().iter().any(|s| s.path == path)
}

/// The default socket path: `$XDG_RUNTIME_DIR/lockd/local.sock`, else
/// `/tmp/lockd-UID/local.sock`. Its directory is created `0700` when
/// missing.
///
/// # Errors
/// The directory cannot be created.
pub fn default_path() -> Result<PathBuf, LocalError> {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(runtime) => PathBuf::from(runtime).join("lockd"),
        None => std::env::temp_dir().join(format!("lockd-{}", rustix::process::geteuid().as_raw())),
    };
    match DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_error(format!("cannot create {}", dir.display()))(e)),
    }
    Ok(dir.join(DEFAULT_SOCKET))
}

/// Whether some process holds the takeover lock of `socket` now.
fn lock_held(socket: &Path) -> bool {
    File::open(lock_path(socket)).is_ok_and(|lock| match lock.try_lock() {
        Ok(()) => false,
        Err(TryLockError::WouldBlock) => true,
        Err(TryLockError::Error(_)) => false,
    })
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

fn lock_path(socket: &Path) -> PathBuf {
    with_suffix(socket, ".lock")
}

fn state_path(socket: &Path) -> PathBuf {
    with_suffix(socket, ".state")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

fn io_error(context: String) -> impl FnOnce(io::Error) -> LocalError {
    move |source| LocalError::Io { context, source }
}

/// Whether `gid` is one of this process's groups.
fn in_my_groups(gid: u32) -> bool {
    rustix::process::getegid().as_raw() == gid
        || rustix::process::getgroups()
            .map(|groups| groups.iter().any(|g| g.as_raw() == gid))
            .unwrap_or(false)
}

/// The directory must be ours and closed to others (private mode), or
/// ours or our group's and closed to the world (group mode).
fn check_dir(dir: &Path, mode: u32) -> Result<(), LocalError> {
    let meta = fs::metadata(dir).map_err(io_error(format!("cannot use {}", dir.display())))?;
    let me = rustix::process::geteuid().as_raw();
    let bits = meta.permissions().mode() & 0o777;
    let refuse = |reason: String| {
        Err(LocalError::Permissions {
            path: dir.to_path_buf(),
            reason,
        })
    };
    if mode & 0o060 == 0 {
        if meta.uid() != me {
            return refuse(format!(
                "the directory belongs to uid {}, not to you: use a directory of your own",
                meta.uid()
            ));
        }
        if bits & 0o077 != 0 {
            return refuse(format!(
                "the directory has mode {bits:04o}, open to other users: chmod 700 it, or use the group-shared mode (--mode 0660)"
            ));
        }
    } else {
        if meta.uid() != me && !in_my_groups(meta.gid()) {
            return refuse("the directory belongs to neither you nor your groups".into());
        }
        if bits & 0o007 != 0 {
            return refuse(format!(
                "the directory has mode {bits:04o}, open to every user: chmod 770 it"
            ));
        }
    }
    Ok(())
}

/// Whether a socket is at `path`; refuses a socket of another user (of
/// another group, in the group mode) and a file that is not a socket.
fn socket_present(path: &Path, mode: u32) -> Result<bool, LocalError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_error(format!("cannot use {}", path.display()))(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(LocalError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    let mine = meta.uid() == rustix::process::geteuid().as_raw();
    let group_ok = mode & 0o060 != 0 && in_my_groups(meta.gid());
    if !mine && !group_ok {
        return Err(LocalError::Permissions {
            path: path.to_path_buf(),
            reason: format!(
                "the socket belongs to uid {}: another user's lockd is never connected to (use a path of your own)",
                meta.uid()
            ),
        });
    }
    Ok(true)
}
