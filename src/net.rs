//! Name resolution and outgoing TCP connections: the one piece of socket
//! code that both the server (binding its listeners) and the client
//! (connecting) need, kept below both.

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
