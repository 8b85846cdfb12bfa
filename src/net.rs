//! Name resolution, binding TCP listeners and outgoing TCP connections:
//! the socket code that the server's listeners, its HTTP listener and the
//! client share, kept below all of them.

use crate::error::Error;
use std::net::{SocketAddr, ToSocketAddrs};
#[cfg(feature = "client")]
use std::{io, net::TcpStream, time::Duration};

/// Resolves `HOST:PORT` to its addresses.
///
/// # Errors
/// [`Error::BadAddress`] when it does not parse or resolves to nothing.
pub(crate) fn resolve(addr: &str) -> Result<Vec<SocketAddr>, Error> {
    let bad = |reason: String| Error::BadAddress {
        addr: addr.to_string(),
        reason,
    };
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(bad("it resolves to no address".into()));
    }
    Ok(addrs)
}

/// Binds a TCP listener on `addr`: `HOST:PORT`, or `:PORT` as Go and node
/// spell "every interface" (IPv6 dual-stack when the host has IPv6, else
/// IPv4). Port 0 picks a free port.
///
/// # Errors
/// [`Error::BadAddress`] for an address that does not parse or resolve,
/// [`Error::AddressInUse`], or [`Error::Bind`] with the cause.
#[cfg(feature = "server")]
pub(crate) fn bind_tcp(addr: &str) -> Result<std::net::TcpListener, Error> {
    use std::net::TcpListener;
    if let Some(port) = addr.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| Error::BadAddress {
            addr: addr.to_string(),
            reason: "the port must be a number from 0 to 65535".into(),
        })?;
        return match TcpListener::bind(("::", port)) {
            Ok(l) => Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(bind_error(addr, e)),
            Err(_) => TcpListener::bind(("0.0.0.0", port)).map_err(|e| bind_error(addr, e)),
        };
    }
    TcpListener::bind(&resolve(addr)?[..]).map_err(|e| bind_error(addr, e))
}

/// What binding `addr` failed with, as the crate's error.
#[cfg(feature = "server")]
pub(crate) fn bind_error(addr: &str, source: std::io::Error) -> Error {
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
}

/// Connects to each address in turn until one answers, as
/// `TcpStream::connect` does, but with `timeout` (if any) for each try;
/// Nagle's algorithm is turned off, since every command is a short line
/// that waits for its reply. A zero timeout gives no time at all: it is a
/// `TimedOut` error without a try.
///
/// # Errors
/// The last address's error (`TimedOut` or `WouldBlock` for a timeout);
/// `InvalidInput` if there is no address.
#[cfg(feature = "client")]
pub(crate) fn connect_tcp(
    addrs: impl IntoIterator<Item = SocketAddr>,
    timeout: Option<Duration>,
) -> io::Result<TcpStream> {
    if timeout == Some(Duration::ZERO) {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "a zero connect timeout leaves no time to connect",
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::{io, time::Duration};

    #[test]
    #[cfg(feature = "client")]
    fn connects_with_any_timeout_and_refuses_zero() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        for timeout in [None, Some(Duration::from_secs(1)), Some(Duration::MAX)] {
            assert!(connect_tcp([addr], timeout).is_ok(), "{timeout:?}");
        }
        let err = connect_tcp([addr], Some(Duration::ZERO)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(resolve("no port")
            .unwrap_err()
            .to_string()
            .contains("no port"));
    }
}
