//! [`ClientConfig`]: how a client connects and how long it waits.

use super::conn::Timeouts;
#[cfg(doc)]
use super::Client;
use crate::secret::Secret;
use std::path::PathBuf;
use std::time::Duration;

/// How a [`Client`] connects and how long it waits. Builder style:
///
/// ```
/// use std::time::Duration;
/// let config = lockd::ClientConfig::new()
///     .connect_timeout(Some(Duration::from_secs(1)))
///     .read_timeout(Some(Duration::from_secs(10)));
/// ```
///
/// Any `Duration` is accepted: `Duration::MAX` (or any deadline too far to
/// represent) means no deadline, and zero means no time at all (the call
/// fails with a timeout at once).
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub(super) connect_timeout: Option<Duration>,
    pub(super) read_timeout: Option<Duration>,
    pub(super) write_timeout: Option<Duration>,
    pub(super) classic_quiet: Duration,
    pub(super) secret: Option<Secret>,
    pub(super) tls_ca: Option<PathBuf>,
    pub(super) tls_client_cert: Option<(PathBuf, PathBuf)>,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            connect_timeout: Some(Duration::from_secs(5)),
            read_timeout: Some(Duration::from_secs(30)),
            write_timeout: Some(Duration::from_secs(30)),
            classic_quiet: Duration::from_millis(100),
            secret: None,
            tls_ca: None,
            tls_client_cert: None,
        }
    }
}

impl ClientConfig {
    /// The defaults: 5 s to connect, 30 s for a reply, 30 s to send, 100 ms
    /// of quiet ending a classic multi-line reply, no secret.
    pub fn new() -> ClientConfig {
        ClientConfig::default()
    }

    /// How long opening a connection may take; `None` waits as long as
    /// the operating system does.
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> ClientConfig {
        self.connect_timeout = timeout;
        self
    }

    /// How long the server may take to answer a call (on top of the time
    /// a lock call asked to wait in line); `None` waits forever. When it
    /// runs out, the connection is closed and its locks are gone: a late
    /// reply could no longer be matched to its call.
    pub fn read_timeout(mut self, timeout: Option<Duration>) -> ClientConfig {
        self.read_timeout = timeout;
        self
    }

    /// How long sending a command may block; `None` blocks forever. When it
    /// runs out, the connection is closed.
    pub fn write_timeout(mut self, timeout: Option<Duration>) -> ClientConfig {
        self.write_timeout = timeout;
        self
    }

    /// On a classic server (no protocol 2), a multi-line reply
    /// ([`Client::holders`], [`Client::shared_holders`],
    /// [`Client::registrations`]) has no end marker: it is taken to be
    /// over once no line has arrived for this long, as node lockd's client
    /// did. Such a call therefore takes at least this long.
    pub fn classic_quiet(mut self, quiet: Duration) -> ClientConfig {
        self.classic_quiet = quiet;
        self
    }

    /// A secret sent with `auth` as the connection opens (for a server run
    /// with `--auth-file`). It must not hold a newline.
    pub fn secret(mut self, secret: impl Into<Vec<u8>>) -> ClientConfig {
        self.secret = Some(Secret::new(secret));
        self
    }

    /// For `tls://HOST:PORT` addresses: trust the CA certificates in this
    /// PEM file instead of the system's CA bundle.
    pub fn tls_ca(mut self, ca_pem: impl Into<PathBuf>) -> ClientConfig {
        self.tls_ca = Some(ca_pem.into());
        self
    }

    /// For `tls://HOST:PORT` addresses: present this client certificate
    /// (PEM chain and key), for a server run with `--tls-client-ca`.
    pub fn tls_client_cert(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> ClientConfig {
        self.tls_client_cert = Some((cert.into(), key.into()));
        self
    }

    pub(super) fn timeouts(&self) -> Timeouts {
        Timeouts {
            read: self.read_timeout,
            write: self.write_timeout,
            quiet: self.classic_quiet,
        }
    }
}
