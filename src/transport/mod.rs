//! Transports the client and the server share: address resolution, the
//! client's TCP connect, a client stream over TCP or Unix, and TLS
//! settings. The server's listeners and streams live in `server`.

// The client's TLS bridge polls two descriptors with libc (issue 16
// replaces the bridge).
#[allow(unsafe_code)]
pub mod tls;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
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
