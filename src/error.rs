//! `lockd::Error`: every failure the library reports, with predicates so
//! callers never match on message text.

use crate::token::TokenError;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// An error of the server or the client. `Display` is lowercase and says
/// what to do about it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A listen address is taken by another process.
    AddressInUse {
        /// The address.
        addr: String,
    },
    /// A listen address could not be parsed or resolved.
    BadAddress {
        /// The address as given.
        addr: String,
        /// Why.
        reason: String,
    },
    /// Binding a listener failed for another reason.
    Bind {
        /// The address or socket path.
        addr: String,
        /// The cause.
        source: io::Error,
    },
    /// A Unix socket path has a live server behind it.
    SocketInUse {
        /// The socket file.
        path: PathBuf,
    },
    /// A Unix socket path is taken by a file that is not a socket.
    NotASocket {
        /// The file.
        path: PathBuf,
    },
    /// The fencing-token state could not be used.
    TokenState(TokenError),
    /// Another I/O failure, with what was being done.
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: io::Error,
    },
}

impl Error {
    /// True when a listen address or socket is taken by another process.
    pub fn is_address_in_use(&self) -> bool {
        matches!(self, Error::AddressInUse { .. } | Error::SocketInUse { .. })
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::AddressInUse { addr } => write!(
                f,
                "cannot listen on {addr}: address already in use (is another lockd running? choose another port with --listen)"
            ),
            Error::BadAddress { addr, reason } => {
                write!(f, "bad address {addr:?}: {reason} (use HOST:PORT, e.g. 127.0.0.1:9999 or [::1]:9999)")
            }
            Error::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            Error::SocketInUse { path } => write!(
                f,
                "unix socket {} is in use by a running server (stop it, or choose another path with --unix)",
                path.display()
            ),
            Error::NotASocket { path } => write!(
                f,
                "{} exists and is not a socket (remove it or choose another path with --unix)",
                path.display()
            ),
            Error::TokenState(e) => e.fmt(f),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Bind { source, .. } | Error::Io { source, .. } => Some(source),
            Error::TokenState(e) => Some(e),
            _ => None,
        }
    }
}

impl From<TokenError> for Error {
    fn from(e: TokenError) -> Error {
        Error::TokenState(e)
    }
}
