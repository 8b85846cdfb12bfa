//! systemd integration, without libsystemd: readiness notification (the
//! protocol of `sd_notify(3)`) and socket activation (`sd_listen_fds(3)`).
//! Both do nothing when the process was not started by systemd.
//!
//! ```no_run
//! let inherited = lockd::systemd::listeners()?; // empty unless activated
//! let server = lockd::Server::bind_adding(lockd::ServerConfig::default(), inherited)?;
//! let handle = server.spawn()?;
//! lockd::systemd::ready("serving")?; // READY=1 once every accept loop runs
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::error::Error;
use crate::server::Listener;
use rustix::io::FdFlags;
use rustix::net::{sockopt, AddressFamily, SocketType};
use std::ffi::OsString;
use std::io;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Sends `READY=1`, our pid as `MAINPID=` and `STATUS=status` to the
/// service manager. Call it once every listener is bound and accepting.
/// Returns whether a notification was sent (false without
/// `$NOTIFY_SOCKET`).
///
/// # Errors
/// `$NOTIFY_SOCKET` is malformed, or the datagram could not be sent.
pub fn ready(status: &str) -> io::Result<bool> {
    notify(&format!(
        "READY=1\nMAINPID={}\nSTATUS={}\n",
        std::process::id(),
        one_line(status)
    ))
}

/// Sends `STOPPING=1` and `STATUS=status`: the service is shutting down.
///
/// # Errors
/// As [`ready`].
pub fn stopping(status: &str) -> io::Result<bool> {
    notify(&format!("STOPPING=1\nSTATUS={}\n", one_line(status)))
}

/// Sends `state` (newline-separated `KEY=VALUE` assignments) as one
/// datagram to `$NOTIFY_SOCKET`: a socket path, or `@NAME` for Linux's
/// abstract namespace. Returns false, sending nothing, when the variable is
/// unset or empty.
///
/// # Errors
/// `$NOTIFY_SOCKET` is neither a path nor `@NAME` (systemd's `vsock:`
/// form is not supported), or the datagram could not be sent.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()) else {
        return Ok(false);
    };
    let addr = notify_addr(&target)?;
    let socket = UnixDatagram::unbound()?;
    let sent = socket.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "the notification was truncated",
        ));
    }
    Ok(true)
}

fn notify_addr(target: &OsString) -> io::Result<SocketAddr> {
    let bytes = target.as_bytes();
    match bytes.first() {
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        Some(b'/') => SocketAddr::from_pathname(PathBuf::from(target)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "NOTIFY_SOCKET={} is neither an absolute path nor @NAME",
                target.to_string_lossy()
            ),
        )),
    }
}

/// A `STATUS=` value must fit on its line.
fn one_line(status: &str) -> String {
    status.replace('\n', " ")
}

/// The listening sockets systemd passed (`$LISTEN_FDS` descriptors from 3
/// on, meant for us when `$LISTEN_PID` is our pid), as listeners, with
/// their names from `$LISTEN_FDNAMES` (`unknown` when missing). TCP
/// (IPv4, IPv6) and Unix stream sockets are accepted; each is made
/// close-on-exec. A Unix socket's file belongs to systemd: the server never
/// removes it.
///
/// Empty when the variables are unset or name another process. Only the
/// first call takes the descriptors; later calls return nothing.
///
/// # Errors
/// `$LISTEN_FDS` is not a number, or a descriptor is not a listening
/// stream socket of a supported family (check `ListenStream=` in the
/// `.socket` unit).
pub fn listeners() -> Result<Vec<Listener>, Error> {
    Ok(named_listeners()?.into_iter().map(|(_, l)| l).collect())
}

/// As [`listeners`], each with its name from `$LISTEN_FDNAMES`.
///
/// # Errors
/// As [`listeners`].
pub fn named_listeners() -> Result<Vec<(String, Listener)>, Error> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        == Some(std::process::id());
    if !for_us {
        return Ok(Vec::new());
    }
    let count = match std::env::var("LISTEN_FDS") {
        Ok(n) => n.trim().parse::<RawFd>().map_err(|_| {
            activation_error(format!("LISTEN_FDS={n:?} is not a number of descriptors"))
        })?,
        Err(_) => return Ok(Vec::new()),
    };
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(Vec::new());
    }
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let mut names = names.split(':');
    let mut listeners = Vec::new();
    for fd in LISTEN_FDS_START..LISTEN_FDS_START.saturating_add(count) {
        let name = names
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or("unknown")
            .to_string();
        listeners.push((name, adopt(fd)?));
    }
    Ok(listeners)
}

fn activation_error(message: String) -> Error {
    Error::io(
        "cannot use the sockets systemd passed",
        io::Error::new(io::ErrorKind::InvalidInput, message),
    )
}

/// Takes ownership of inherited descriptor `fd` as a listener.
fn adopt(fd: RawFd) -> Result<Listener, Error> {
    // Open? Asked of /proc, so that no descriptor is claimed before it is
    // known to exist.
    if std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).is_err() {
        return Err(activation_error(format!("fd {fd}: not an open descriptor")));
    }
    // SAFETY: systemd passed descriptors 3 to 3 + $LISTEN_FDS to this
    // process ($LISTEN_PID is ours, checked by the caller), `fd` is open
    // (checked just above), and nothing else in the process owns it: the
    // caller's TAKEN flag makes this happen once per descriptor.
    #[allow(unsafe_code)]
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let fail = |what: &str, e: rustix::io::Errno| {
        activation_error(format!("fd {fd}: {what}: {}", io::Error::from(e)))
    };
    rustix::io::fcntl_setfd(&owned, FdFlags::CLOEXEC).map_err(|e| fail("fcntl", e))?;
    let kind = sockopt::socket_type(&owned).map_err(|e| fail("not a socket", e))?;
    if kind != SocketType::STREAM {
        return Err(activation_error(format!(
            "fd {fd} is not a stream socket (use ListenStream=)"
        )));
    }
    if !sockopt::socket_acceptconn(&owned).map_err(|e| fail("not a socket", e))? {
        return Err(activation_error(format!(
            "fd {fd} is not listening (set Accept=no in the .socket unit)"
        )));
    }
    let family = rustix::net::getsockname(&owned)
        .map_err(|e| fail("getsockname", e))?
        .address_family();
    if family == AddressFamily::INET || family == AddressFamily::INET6 {
        return Ok(Listener::Tcp(TcpListener::from(owned)));
    }
    if family != AddressFamily::UNIX {
        return Err(activation_error(format!(
            "fd {fd} has address family {}; lockd takes TCP and Unix sockets",
            family.as_raw()
        )));
    }
    let listener = UnixListener::from(owned);
    let path = match listener.local_addr() {
        Ok(addr) => match (addr.as_pathname(), addr.as_abstract_name()) {
            (Some(path), _) => path.to_path_buf(),
            (None, Some(name)) => {
                let mut shown = OsString::from("@");
                shown.push(std::ffi::OsStr::from_bytes(name));
                PathBuf::from(shown)
            }
            (None, None) => PathBuf::from("(unnamed)"),
        },
        Err(_) => PathBuf::from("(unnamed)"),
    };
    Ok(Listener::Unix {
        listener,
        path,
        remove_on_exit: false,
    })
}

/// Threads besides the connections' own: accept loops, liveness, signals.
const BASE_THREADS: u64 = 16;

/// The task limit of our cgroup (`TasksMax=` of a systemd unit, the
/// cgroup v2 `pids.max`), if there is one: `None` when unlimited or
/// unknown.
pub fn tasks_max() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    // cgroup v2: the one line `0::/PATH`.
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    let limit = std::fs::read_to_string(format!("/sys/fs/cgroup{}/pids.max", path.trim())).ok()?;
    limit.trim().parse().ok()
}

/// A start-up warning when `TasksMax=` (the cgroup's `pids.max`) leaves no
/// room for `max_connections` connections, a thread each.
pub fn tasks_max_warning(max_connections: usize) -> Option<String> {
    tasks_warning(tasks_max(), max_connections)
}

fn tasks_warning(limit: Option<u64>, max_connections: usize) -> Option<String> {
    let limit = limit?;
    let needed = (max_connections as u64).saturating_add(BASE_THREADS);
    (limit < needed).then(|| {
        format!(
            "the task limit (TasksMax=, cgroup pids.max) is {limit}, below --max-connections \
             {max_connections} (a thread each): raise TasksMax= to {needed} or more, or lower \
             --max-connections"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_max_must_fit_a_thread_per_connection() {
        assert_eq!(tasks_warning(None, 10_000), None);
        assert_eq!(tasks_warning(Some(11_000), 10_000), None);
        let warning = tasks_warning(Some(4_915), 10_000).expect("a warning");
        assert!(
            warning.contains("is 4915, below --max-connections 10000"),
            "{warning}"
        );
        assert!(warning.contains("TasksMax= to 10016"), "{warning}");
    }
}
