//! Listeners: binding TCP, WebSocket and Unix sockets, the accept loops,
//! and the socket options each accepted connection starts with.

use super::stream::Socket;
use crate::error::Error;
use socket2::{SockRef, TcpKeepalive};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// WebSocket: TCP whose connections begin with an HTTP upgrade.
    WebSocket(TcpListener),
    /// A Unix stream socket at `path`.
    Unix {
        /// The listener.
        listener: UnixListener,
        /// Its socket file (for an abstract socket, `@` and its name).
        path: PathBuf,
        /// Whether the server removes the file when it stops: true when it
        /// bound the socket itself, false for one inherited from systemd,
        /// which owns the file.
        remove_on_exit: bool,
    },
}

/// How a connection identifies itself before any `iam`.
pub(crate) enum Peer {
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A WebSocket peer, by the address of its TCP connection.
    WebSocket(SocketAddr),
    /// A Unix-socket peer (named `unix:N` by the server).
    Unix,
}

impl Listener {
    /// Accepts one connection.
    ///
    /// # Errors
    /// As `accept(2)`.
    pub(crate) fn accept(&self) -> io::Result<(Socket, Peer)> {
        match self {
            Listener::Tcp(l) => {
                let (s, addr) = l.accept()?;
                Ok((Socket::Tcp(s), Peer::Tcp(addr)))
            }
            Listener::WebSocket(l) => {
                let (s, addr) = l.accept()?;
                Ok((Socket::Tcp(s), Peer::WebSocket(addr)))
            }
            Listener::Unix { listener, .. } => {
                let (s, _) = listener.accept()?;
                Ok((Socket::Unix(s), Peer::Unix))
            }
        }
    }

    /// The TCP address, if this is a TCP listener.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::WebSocket(_) | Listener::Unix { .. } => None,
        }
    }

    /// The address, if this is a WebSocket listener.
    pub fn websocket_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::WebSocket(l) => l.local_addr().ok(),
            Listener::Tcp(_) | Listener::Unix { .. } => None,
        }
    }

    /// The socket file, if this is a Unix listener.
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            Listener::Tcp(_) | Listener::WebSocket(_) => None,
            Listener::Unix { path, .. } => Some(path),
        }
    }

    /// The socket file the server created and removes when it stops.
    pub fn owned_socket_file(&self) -> Option<&Path> {
        match self {
            Listener::Unix {
                path,
                remove_on_exit: true,
                ..
            } => Some(path),
            _ => None,
        }
    }

    /// Makes `accept` return `WouldBlock` instead of blocking (the accept
    /// loop polls first).
    ///
    /// # Errors
    /// As `fcntl(2)`.
    pub fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Listener::Tcp(l) | Listener::WebSocket(l) => l.set_nonblocking(true),
            Listener::Unix { listener, .. } => listener.set_nonblocking(true),
        }
    }
}

impl Listener {
    /// Sets on a TCP listener the options its connections start with:
    /// Linux copies a listening socket's options to each socket it
    /// accepts, so no connection pays these system calls itself.
    /// `TCP_NODELAY` (replies go out at once), keepalive when `keepalive`
    /// is set (see [`set_keepalive`]), and `write_timeout`. A Unix
    /// listener passes nothing on: its connections set their own.
    ///
    /// # Errors
    /// As `setsockopt(2)`.
    pub(crate) fn set_connection_options(
        &self,
        keepalive: Option<Duration>,
        write_timeout: Duration,
    ) -> io::Result<()> {
        let (Listener::Tcp(l) | Listener::WebSocket(l)) = self else {
            return Ok(());
        };
        let socket = SockRef::from(l);
        socket.set_tcp_nodelay(true)?;
        socket.set_write_timeout(Some(write_timeout))?;
        match keepalive {
            Some(idle) => set_keepalive(&socket, idle),
            None => Ok(()),
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) | Listener::WebSocket(l) => l.as_fd(),
            Listener::Unix { listener, .. } => listener.as_fd(),
        }
    }
}

/// The name of a TCP peer: `IP:PORT`, `[v6]:PORT`, with IPv4-mapped IPv6
/// peers of a dual-stack listener shown as plain IPv4.
pub(crate) fn peer_name(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => format!("{v4}:{}", v6.port()),
            None => format!("[{}]:{}", v6.ip(), v6.port()),
        },
        SocketAddr::V4(v4) => v4.to_string(),
    }
}

/// Turns on TCP keepalive so a peer that vanished without a FIN is noticed:
/// first probe after `idle`, then every `idle / 3` (at least 1 s), 3 probes;
/// `TCP_USER_TIMEOUT` bounds unacknowledged data the same way.
///
/// # Errors
/// As `setsockopt(2)`.
fn set_keepalive(socket: &SockRef<'_>, idle: Duration) -> io::Result<()> {
    let idle = Duration::from_secs(idle.as_secs().clamp(1, 32767));
    let interval = (idle / 3).max(Duration::from_secs(1));
    let count = 3;
    socket.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(idle)
            .with_interval(interval)
            .with_retries(count),
    )?;
    socket.set_tcp_user_timeout(Some(idle + interval * count))
}

/// Listens again with `backlog` (Linux updates the backlog of a socket
/// that listens already; std binds with 128).
fn with_backlog<L: AsFd>(listener: L, backlog: u32) -> io::Result<L> {
    SockRef::from(&listener).listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(listener)
}

/// Binds a TCP socket with `backlog` for a listener of the kind `kind`
/// makes of it.
pub(crate) fn bind_tcp(
    addr: &str,
    backlog: u32,
    kind: fn(TcpListener) -> Listener,
) -> Result<Listener, Error> {
    let listener = crate::net::bind_tcp(addr)?;
    with_backlog(listener, backlog)
        .map(kind)
        .map_err(|e| crate::net::bind_error(addr, e))
}

/// Binds a Unix socket listener at `path` with the permission bits `mode`
/// and `backlog`.
pub(crate) fn bind_unix(path: &Path, mode: Option<u32>, backlog: u32) -> Result<Listener, Error> {
    bind_unix_socket(path, mode, backlog).map_err(|source| match source.kind() {
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

/// Binds a Unix socket at `path`. A stale socket file (nobody listening) is
/// replaced; a live one is refused, never stolen; a file that is not a
/// socket is never removed.
///
/// # Errors
/// `AddrInUse` for a live socket, `AlreadyExists` for a file that is not a
/// socket, else as `bind(2)`.
fn bind_unix_socket(path: &Path, mode: Option<u32>, backlog: u32) -> io::Result<Listener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            ));
        }
        match UnixStream::connect(path) {
            Ok(_) => return Err(io::Error::from(io::ErrorKind::AddrInUse)),
            Err(_) => std::fs::remove_file(path)?,
        }
    }
    let listener = with_backlog(UnixListener::bind(path)?, backlog)?;
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(Listener::Unix {
        listener,
        path: path.to_path_buf(),
        remove_on_exit: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    /// The options set on a listener are the accepted socket's own, with
    /// no call on it (what `admit` and `start_session` rely on).
    #[test]
    fn accepted_tcp_sockets_start_with_the_listeners_options() {
        let listener = bind_tcp("127.0.0.1:0", 16, Listener::Tcp).expect("bind");
        let idle = Duration::from_secs(30);
        let write_timeout = Duration::from_secs(7);
        listener
            .set_connection_options(Some(idle), write_timeout)
            .expect("options");
        let addr = listener.tcp_addr().expect("address");
        let _client = TcpStream::connect(addr).expect("connect");
        let (Socket::Tcp(accepted), _) = listener.accept().expect("accept") else {
            panic!("a TCP listener accepted something else");
        };
        let socket = SockRef::from(&accepted);
        assert!(socket.tcp_nodelay().expect("nodelay"));
        assert!(socket.keepalive().expect("keepalive"));
        assert_eq!(socket.tcp_keepalive_time().expect("idle"), idle);
        assert_eq!(socket.tcp_keepalive_interval().expect("interval"), idle / 3);
        assert_eq!(socket.tcp_keepalive_retries().expect("retries"), 3);
        assert_eq!(
            socket.tcp_user_timeout().expect("user timeout"),
            Some(idle * 2)
        );
        assert_eq!(
            socket.write_timeout().expect("write timeout"),
            Some(write_timeout)
        );
        assert_eq!(socket.read_timeout().expect("read timeout"), None);
    }
}
