//! `lockd::Error`: every failure the library reports, with predicates so
//! callers never match on message text.

use crate::name::LockName;
#[cfg(feature = "server")]
use crate::token::TokenError;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// Which part of a client's exchange with the server ran out of time (see
/// [`Error::Timeout`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Opening the connection (`ClientConfig::connect_timeout`).
    Connect,
    /// Sending a command (`ClientConfig::write_timeout`).
    Write,
    /// Waiting for a reply (`ClientConfig::read_timeout`).
    Read,
    /// Waiting in line for a lock on the server: the lock stayed busy. The
    /// connection is fine.
    Wait,
}

/// Why the server refused a command for want of authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// The server needs `auth SECRET` first (`0 Auth Required`).
    Required,
    /// The secret was wrong (`0 Auth Failure`).
    Failure,
}

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
    #[cfg(feature = "server")]
    TokenState(TokenError),
    /// Cluster mode: etcd did not answer or refused the node's lease at
    /// start.
    Cluster {
        /// What failed, naming the endpoints.
        reason: String,
    },
    /// Another I/O failure, with what was being done. From a client, the
    /// connection is closed and its locks are gone.
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: io::Error,
    },
    /// A client could not connect to the server.
    Connect {
        /// The address as given.
        addr: String,
        /// The cause.
        source: io::Error,
    },
    /// This connection does not hold the lock it tried to release, or whose
    /// token it asked for.
    NotHeld {
        /// The lock.
        name: LockName,
    },
    /// Something took too long. Unless `phase` is [`Phase::Wait`], the
    /// connection is closed and its locks are gone.
    Timeout {
        /// Which part ran out of time.
        phase: Phase,
        /// What was being done (`reading the reply to g foo`).
        context: String,
    },
    /// Waiting for the lock would close a cycle of waiters: the server
    /// refused at once instead of waiting forever.
    Deadlock {
        /// The lock.
        name: LockName,
    },
    /// This thread already holds the lock through the same client (or a
    /// clone of it). Taking it again would wait for itself forever, since
    /// a client's guards exclude each other like a `Mutex`'s; the client
    /// refuses at once instead. Nothing was sent.
    Reentrant {
        /// The lock.
        name: LockName,
    },
    /// The server has the feature behind this command turned off
    /// (`0 disabled`).
    Disabled {
        /// The command.
        command: &'static str,
    },
    /// The server wants authentication, or refused the secret.
    Auth(AuthError),
    /// The server sent a reply that makes no sense here. The connection is
    /// closed, since its replies can no longer be trusted to line up.
    Protocol {
        /// The command that was answered.
        command: String,
        /// The reply, escaped.
        reply: String,
    },
    /// The connection is closed: every lock it held has been released by
    /// the server.
    Disconnected {
        /// Why, as far as the client knows.
        reason: String,
    },
    /// A protocol-2 command on a server that speaks only the classic
    /// protocol.
    NotSupported {
        /// The command.
        command: &'static str,
    },
    /// A lock name, client name or secret that cannot be sent (it holds a
    /// newline).
    InvalidArgument {
        /// What was refused, escaped.
        what: String,
    },
}

impl Error {
    /// True when a listen address or socket is taken by another process.
    pub fn is_address_in_use(&self) -> bool {
        matches!(self, Error::AddressInUse { .. } | Error::SocketInUse { .. })
    }

    /// True for every [`Error::Timeout`]: connecting, sending, reading, or
    /// waiting in line.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// True when the connection is closed ([`Error::Disconnected`]); later
    /// calls on the same client fail the same way.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Error::Disconnected { .. })
    }

    /// True when this error means the connection is gone and with it every
    /// lock it held: a disconnect, an I/O error, a protocol error, or a
    /// timeout while sending or reading. Take the locks again on a new
    /// connection before touching what they protect.
    pub fn locks_lost(&self) -> bool {
        match self {
            Error::Disconnected { .. } | Error::Io { .. } | Error::Protocol { .. } => true,
            Error::Timeout { phase, .. } => matches!(phase, Phase::Write | Phase::Read),
            _ => false,
        }
    }

    /// True when this connection does not hold the lock.
    pub fn is_not_held(&self) -> bool {
        matches!(self, Error::NotHeld { .. })
    }

    /// True when the server refused a wait that would deadlock.
    pub fn is_deadlock(&self) -> bool {
        matches!(self, Error::Deadlock { .. })
    }

    /// True when this thread asked again for a lock it holds through the
    /// same client ([`Error::Reentrant`]).
    pub fn is_reentrant(&self) -> bool {
        matches!(self, Error::Reentrant { .. })
    }

    /// True when the server needs authentication or refused the secret.
    pub fn is_auth(&self) -> bool {
        matches!(self, Error::Auth(_))
    }

    /// True when the server has the feature turned off.
    pub fn is_disabled(&self) -> bool {
        matches!(self, Error::Disabled { .. })
    }

    /// True when the server speaks only the classic protocol and the
    /// command needs protocol 2.
    pub fn is_not_supported(&self) -> bool {
        matches!(self, Error::NotSupported { .. })
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
            #[cfg(feature = "server")]
            Error::TokenState(e) => e.fmt(f),
            Error::Cluster { reason } => write!(f, "cluster mode: {reason}"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Connect { addr, source } => {
                write!(f, "cannot connect to {addr}: {source} (is lockd running there?)")
            }
            Error::NotHeld { name } => write!(
                f,
                "this connection does not hold lock {name:?} (it was never taken, already released, or taken on another connection)"
            ),
            Error::Timeout { phase, context } => match phase {
                Phase::Connect => write!(
                    f,
                    "timed out {context} (check the address and the network, or raise the connect timeout)"
                ),
                Phase::Write | Phase::Read => write!(
                    f,
                    "timed out {context}; the connection is closed and every lock it held is released (check the server, or raise the {} timeout)",
                    if *phase == Phase::Read { "read" } else { "write" }
                ),
                Phase::Wait => write!(
                    f,
                    "timed out {context}: the lock stayed busy (wait longer or try later)"
                ),
            },
            Error::Deadlock { name } => write!(
                f,
                "waiting for lock {name:?} would deadlock: its holder waits for a lock this connection holds (release yours first, or take locks in a fixed order)"
            ),
            Error::Reentrant { name } => write!(
                f,
                "this thread already holds lock {name:?} through this client; taking it again would wait for itself forever (drop the first guard first)"
            ),
            Error::Disabled { command } => write!(
                f,
                "the server has `{command}` turned off (its operator disabled dump or the registry)"
            ),
            Error::Auth(AuthError::Required) => f.write_str(
                "the server requires authentication (set a secret in ClientConfig or call authenticate)",
            ),
            Error::Auth(AuthError::Failure) => {
                f.write_str("the server refused the secret (check the secret it was started with)")
            }
            Error::Protocol { command, reply } => write!(
                f,
                "unexpected reply to `{command}` from the server: \"{reply}\"; the connection is closed and its locks are gone (is that a lockd server?)"
            ),
            Error::Disconnected { reason } => write!(
                f,
                "disconnected from the lock server ({reason}); every lock this connection held is released (connect again and take them again)"
            ),
            Error::NotSupported { command } => write!(
                f,
                "`{command}` needs protocol 2, but the server speaks only the classic protocol (upgrade the server to lockd)"
            ),
            Error::InvalidArgument { what } => {
                write!(f, "cannot send \"{what}\": it holds a newline (remove it)")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Bind { source, .. }
            | Error::Io { source, .. }
            | Error::Connect { source, .. } => Some(source),
            #[cfg(feature = "server")]
            Error::TokenState(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(feature = "server")]
impl From<TokenError> for Error {
    fn from(e: TokenError) -> Error {
        Error::TokenState(e)
    }
}
