//! The client's one stream type: TCP, a Unix socket, or TLS over TCP, all
//! driven on the caller's thread. Opening one from an address string.

use super::ClientConfig;
use crate::error::{Error, Phase};
use crate::net::{connect_tcp, resolve};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// A connection to a lock server, as [`connect_raw`](super::connect_raw)
/// opens it: bytes in, bytes out, with no protocol on top (`lockctl shell`
/// uses it). Writes go out whole: `write_all` then `flush` (TLS buffers
/// until flushed; the other kinds ignore `flush`).
#[derive(Debug)]
#[non_exhaustive]
pub enum RawStream {
    /// TCP.
    Tcp(TcpStream),
    /// A Unix stream socket.
    Unix(UnixStream),
    /// TLS over TCP (`tls://HOST:PORT`).
    #[cfg(feature = "tls")]
    Tls(Box<super::tls::TlsClientStream>),
}

impl RawStream {
    /// Sets how long one read may block (`None`: forever). A zero duration
    /// is refused by the operating system; pass at least a microsecond.
    ///
    /// # Errors
    /// As the socket call.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            RawStream::Tcp(s) => s.set_read_timeout(timeout),
            RawStream::Unix(s) => s.set_read_timeout(timeout),
            #[cfg(feature = "tls")]
            RawStream::Tls(s) => s.sock.set_read_timeout(timeout),
        }
    }

    /// Sets how long one write may block (`None`: forever).
    ///
    /// # Errors
    /// As the socket call.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            RawStream::Tcp(s) => s.set_write_timeout(timeout),
            RawStream::Unix(s) => s.set_write_timeout(timeout),
            #[cfg(feature = "tls")]
            RawStream::Tls(s) => s.sock.set_write_timeout(timeout),
        }
    }

    /// Shuts the socket down (TLS: the TCP socket under it).
    pub(crate) fn shutdown(&self, how: Shutdown) {
        let _ = match self {
            RawStream::Tcp(s) => s.shutdown(how),
            RawStream::Unix(s) => s.shutdown(how),
            #[cfg(feature = "tls")]
            RawStream::Tls(s) => s.sock.shutdown(how),
        };
    }

    /// Ends our side: TLS says `close_notify` first. The server then
    /// finishes its replies and closes.
    pub(crate) fn close_write(&mut self) {
        #[cfg(feature = "tls")]
        if let RawStream::Tls(s) = self {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
        self.shutdown(Shutdown::Write);
    }
}

impl AsFd for RawStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            RawStream::Tcp(s) => s.as_fd(),
            RawStream::Unix(s) => s.as_fd(),
            #[cfg(feature = "tls")]
            RawStream::Tls(s) => s.sock.as_fd(),
        }
    }
}

impl Read for RawStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            RawStream::Tcp(s) => s.read(buf),
            RawStream::Unix(s) => s.read(buf),
            // A server that closes TCP without `close_notify` has simply
            // closed, as over plain TCP.
            #[cfg(feature = "tls")]
            RawStream::Tls(s) => match s.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

impl Write for RawStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            RawStream::Tcp(s) => s.write(buf),
            RawStream::Unix(s) => s.write(buf),
            #[cfg(feature = "tls")]
            RawStream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            RawStream::Tcp(_) | RawStream::Unix(_) => Ok(()),
            #[cfg(feature = "tls")]
            RawStream::Tls(s) => s.flush(),
        }
    }
}

/// A Unix socket path for `unix:/path`, `/path` or `./path`.
pub(crate) fn unix_path(addr: &str) -> Option<&str> {
    if let Some(path) = addr.strip_prefix("unix:") {
        return Some(path);
    }
    (addr.starts_with('/') || addr.starts_with('.')).then_some(addr)
}

/// Opens `tls://HOST:PORT`, `unix:/path` (or a path) or `HOST:PORT`, with
/// the config's write timeout set.
pub(crate) fn open(addr: &str, config: &ClientConfig) -> Result<RawStream, Error> {
    let connect_error = |source| Error::Connect {
        addr: addr.to_string(),
        source,
    };
    let stream = if let Some(path) = unix_path(addr) {
        UnixStream::connect(path)
            .map(RawStream::Unix)
            .map_err(connect_error)?
    } else if let Some(host_port) = addr.strip_prefix("tls://") {
        open_tls(addr, host_port, config)?
    } else {
        match connect_tcp(resolve(addr)?, config.connect_timeout) {
            Ok(stream) => RawStream::Tcp(stream),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                return Err(Error::Timeout {
                    phase: Phase::Connect,
                    context: format!("connecting to {addr}"),
                })
            }
            Err(e) => return Err(connect_error(e)),
        }
    };
    // The OS refuses a zero timeout; a zero write timeout is checked by
    // the caller's deadline instead.
    let write_timeout = config.write_timeout.filter(|t| !t.is_zero());
    stream
        .set_write_timeout(write_timeout)
        .map_err(|e| Error::io(format!("cannot set up the connection to {addr}"), e))?;
    Ok(stream)
}

#[cfg(feature = "tls")]
fn open_tls(addr: &str, host_port: &str, config: &ClientConfig) -> Result<RawStream, Error> {
    use super::tls::{connect_tls, TlsClientConfig};
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
    Ok(RawStream::Tls(Box::new(stream)))
}

#[cfg(not(feature = "tls"))]
fn open_tls(addr: &str, _: &str, _: &ClientConfig) -> Result<RawStream, Error> {
    Err(Error::BadAddress {
        addr: addr.to_string(),
        reason: "this build of lockd has no TLS (enable the crate's `tls` feature)".into(),
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
}
