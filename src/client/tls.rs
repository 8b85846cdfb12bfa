//! TLS for the client (`tls://HOST:PORT` addresses), with rustls and its
//! `ring` provider: [`TlsClientConfig`] says what the client trusts, and
//! [`connect_tls`] opens a TLS stream. A [`Client`](crate::Client) runs
//! the stream itself, on its callers' threads, like TCP or a Unix socket.
//!
//! ```no_run
//! use lockd::client::tls::{connect_tls, TlsClientConfig};
//! use std::io::{BufRead, BufReader, Write};
//! use std::path::Path;
//! use std::time::Duration;
//!
//! let config = TlsClientConfig::new(Some(Path::new("/etc/lockd/ca.pem")))?;
//! let mut stream = connect_tls("locks.example.com", 9999, &config, Some(Duration::from_secs(5)))?;
//! stream.write_all(b"g nightly-report\n")?;
//! stream.flush()?; // rustls buffers: flush sends the record
//! let mut reply = String::new();
//! BufReader::new(&mut stream).read_line(&mut reply)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::error::Error;
use crate::net::connect_tcp;
use crate::tls_common::{
    handshake, invalid, load_certs, load_key, load_roots, provider, read_file,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConnection, RootCertStore, StreamOwned};
use std::fmt;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A client-side TLS stream over TCP, as [`connect_tls`] returns it.
/// Writes are buffered by rustls: call `flush` after each request.
pub type TlsClientStream = StreamOwned<ClientConnection, TcpStream>;

/// Where the system's CA bundle usually is (Debian, Fedora, Alpine, SUSE).
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// What a TLS client trusts, and the certificate it shows if any. Cheap to
/// clone; build once and reuse for every connection.
#[derive(Clone)]
pub struct TlsClientConfig {
    roots: Arc<RootCertStore>,
    config: Arc<rustls::ClientConfig>,
}

impl TlsClientConfig {
    /// Trusts the CA certificates of the PEM file `ca_pem` or, with `None`,
    /// the system's CA bundle (`/etc/ssl/certs/ca-certificates.crt` and the
    /// like).
    ///
    /// # Errors
    /// A file that cannot be read or holds no certificate; no system bundle.
    pub fn new(ca_pem: Option<&Path>) -> Result<TlsClientConfig, Error> {
        let roots = match ca_pem {
            Some(path) => load_roots("CA file", path)?,
            None => system_roots()?,
        };
        let roots = Arc::new(roots);
        let config = client_builder(&roots)?.with_no_client_auth();
        Ok(TlsClientConfig {
            roots,
            config: Arc::new(config),
        })
    }

    /// Also presents the PEM certificate chain `cert` with its PEM key `key`
    /// (for a server started with `--tls-client-ca`).
    ///
    /// # Errors
    /// A file that cannot be read or parsed, a key that does not match.
    pub fn with_client_cert(self, cert: &Path, key: &Path) -> Result<TlsClientConfig, Error> {
        let chain = load_certs("client certificate", cert)?;
        let key_der = load_key("client key", key)?;
        let config = client_builder(&self.roots)?
            .with_client_auth_cert(chain, key_der)
            .map_err(|e| {
                invalid(
                    format!("cannot use client certificate {}", cert.display()),
                    e,
                )
            })?;
        Ok(TlsClientConfig {
            roots: self.roots,
            config: Arc::new(config),
        })
    }
}

impl fmt::Debug for TlsClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClientConfig")
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

fn client_builder(
    roots: &Arc<RootCertStore>,
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>, Error> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("cannot set up TLS".into(), e))?
        .with_root_certificates(Arc::clone(roots)))
}

fn system_roots() -> Result<RootCertStore, Error> {
    for bundle in SYSTEM_CA_BUNDLES {
        let path = Path::new(bundle);
        if !path.exists() {
            continue;
        }
        let mut roots = RootCertStore::empty();
        let pem = read_file("CA bundle", path)?;
        // A bundle may hold a certificate webpki cannot use; skip it.
        let (added, _) =
            roots.add_parsable_certificates(CertificateDer::pem_slice_iter(&pem).flatten());
        if added > 0 {
            return Ok(roots);
        }
    }
    Err(invalid(
        "cannot find the system's CA certificates".into(),
        "no CA bundle in /etc/ssl or /etc/pki (give the server's CA file)",
    ))
}

/// Connects to `host:port` over TCP and completes a TLS handshake, checking
/// the server's certificate against `config` for the name `host` (a DNS
/// name or an IP address). `timeout` bounds the connect and, separately,
/// the handshake; the stream is left with no read or write timeout.
///
/// # Errors
/// `Error::Io` whose source has kind `TimedOut`/`WouldBlock` for a timeout,
/// `InvalidData` for a certificate the server or we refused, or the
/// connect error.
pub fn connect_tls(
    host: &str,
    port: u16,
    config: &TlsClientConfig,
    timeout: Option<Duration>,
) -> Result<TlsClientStream, Error> {
    let context = |what: &str| format!("cannot connect to {host}:{port} over TLS: {what}");
    let io_error = |what: &str, source| Error::Io {
        context: context(what),
        source,
    };
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| invalid(context("bad server name"), e))?;
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| io_error("cannot resolve the host", e))?
        .collect();
    let mut sock = connect_tcp(addrs, timeout).map_err(|e| io_error("connect", e))?;
    let set = |sock: &TcpStream, t| {
        sock.set_read_timeout(t)
            .and_then(|()| sock.set_write_timeout(t))
    };
    set(&sock, timeout).map_err(|e| io_error("socket options", e))?;
    let mut conn = ClientConnection::new(Arc::clone(&config.config), name)
        .map_err(|e| invalid(context("TLS setup"), e))?;
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    handshake(&mut conn, &mut sock, deadline).map_err(|e| io_error("handshake", e))?;
    set(&sock, None).map_err(|e| io_error("socket options", e))?;
    Ok(StreamOwned::new(conn, sock))
}
