//! Transports: TCP, Unix-socket and WebSocket listeners and streams as enums
//! (no trait objects), TLS for TCP, and the socket options the server sets.

pub mod tls;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A connected client socket.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// A Unix stream socket.
    Unix(UnixStream),
}

impl Stream {
    /// Sets the read timeout (`None`: block forever).
    ///
    /// # Errors
    /// As the socket call.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(timeout),
            Stream::Unix(s) => s.set_read_timeout(timeout),
        }
    }

    /// Sets the write timeout (`None`: block forever).
    ///
    /// # Errors
    /// As the socket call.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(timeout),
            Stream::Unix(s) => s.set_write_timeout(timeout),
        }
    }

    /// Shuts the socket down in both directions.
    pub fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }

    /// Discards whatever the peer has sent that is already buffered, so
    /// that closing does not turn into a reset that could eat our last
    /// reply.
    pub fn drain_input(&mut self) {
        let nonblocking = match self {
            Stream::Tcp(s) => s.set_nonblocking(true),
            Stream::Unix(s) => s.set_nonblocking(true),
        };
        if nonblocking.is_err() {
            return;
        }
        let mut sink = [0u8; 4096];
        for _ in 0..16 {
            match self.read(&mut sink) {
                Ok(n) if n > 0 => continue,
                _ => break,
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).read(buf),
            Stream::Unix(s) => (&*s).read(buf),
        }
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).write(buf),
            Stream::Unix(s) => (&*s).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

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
pub enum Peer {
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
    pub fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Listener::Tcp(l) => {
                let (s, addr) = l.accept()?;
                Ok((Stream::Tcp(s), Peer::Tcp(addr)))
            }
            Listener::WebSocket(l) => {
                let (s, addr) = l.accept()?;
                Ok((Stream::Tcp(s), Peer::WebSocket(addr)))
            }
            Listener::Unix { listener, .. } => {
                let (s, _) = listener.accept()?;
                Ok((Stream::Unix(s), Peer::Unix))
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

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) | Listener::WebSocket(l) => l.as_raw_fd(),
            Listener::Unix { listener, .. } => listener.as_raw_fd(),
        }
    }
}

/// The name of a TCP peer: `IP:PORT`, `[v6]:PORT`, with IPv4-mapped IPv6
/// peers of a dual-stack listener shown as plain IPv4.
pub fn peer_name(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => format!("{v4}:{}", v6.port()),
            None => format!("[{}]:{}", v6.ip(), v6.port()),
        },
        SocketAddr::V4(v4) => v4.to_string(),
    }
}

fn setsockopt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its size, as setsockopt(2)
    // requires.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Resolves `HOST:PORT` to its addresses.
///
/// # Errors
/// `BadAddress` when it does not parse or resolves to nothing.
pub(crate) fn resolve(addr: &str) -> Result<Vec<SocketAddr>, crate::Error> {
    let bad = |reason: String| crate::Error::BadAddress {
        addr: addr.to_string(),
        reason,
    };
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(addr)
        .map_err(|e| bad(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(bad("it resolves to no address".into()));
    }
    Ok(addrs)
}

/// Connects to each address in turn until one answers, as
/// `TcpStream::connect` does, but with `timeout` (if any) for each try;
/// Nagle's algorithm is turned off, since every command is a short line
/// that waits for its reply.
///
/// # Errors
/// The last address's error (`TimedOut` or `WouldBlock` for a timeout);
/// `InvalidInput` if there is no address.
pub(crate) fn connect_tcp(
    addrs: impl IntoIterator<Item = SocketAddr>,
    timeout: Option<Duration>,
) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "it resolves to no address");
    for addr in addrs {
        let attempt = match timeout {
            Some(t) => TcpStream::connect_timeout(&addr, t),
            None => TcpStream::connect(addr),
        };
        match attempt {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Turns on TCP keepalive so a peer that vanished without a FIN is noticed:
/// first probe after `idle`, then every `idle / 3` (at least 1 s), 3 probes;
/// `TCP_USER_TIMEOUT` bounds unacknowledged data the same way.
///
/// # Errors
/// As `setsockopt(2)`.
pub fn set_keepalive(stream: &TcpStream, idle: Duration) -> io::Result<()> {
    let fd = stream.as_raw_fd();
    let idle_s = idle.as_secs().clamp(1, 32767) as libc::c_int;
    let interval = (idle_s / 3).max(1);
    let count = 3;
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, idle_s)?;
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, interval)?;
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, count)?;
    let user_timeout_ms = (idle_s + interval * count).saturating_mul(1000);
    setsockopt(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_USER_TIMEOUT,
        user_timeout_ms,
    )
}

/// Binds a Unix socket at `path`. A stale socket file (nobody listening) is
/// replaced; a live one is refused, never stolen; a file that is not a
/// socket is never removed.
///
/// # Errors
/// `AddrInUse` for a live socket, `AlreadyExists` for a file that is not a
/// socket, else as `bind(2)`.
pub fn bind_unix(path: &Path, mode: Option<u32>) -> io::Result<Listener> {
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
    let listener = UnixListener::bind(path)?;
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(Listener::Unix {
        listener,
        path: path.to_path_buf(),
        remove_on_exit: true,
    })
}
