//! TLS on TCP listeners, with rustls and its `ring` provider (pure Rust,
//! no OpenSSL).
//!
//! The server side is [`TlsConfig`]: a certificate chain and key from PEM
//! files, and optionally a CA whose signature every client certificate must
//! carry. [`ServerConfig::tls`](crate::ServerConfig::tls) set to one makes
//! every TCP listener speak TLS; the handshake runs on the connection's own
//! thread, bounded by [`HANDSHAKE_TIMEOUT`], never in the accept loop. The
//! client side is `lockd::client::tls`.

use crate::error::Error;
use crate::tls_common::{handshake, invalid, load_certs, load_key, load_roots, provider};
use rustls::server::WebPkiClientVerifier;
use rustls::{ServerConnection, StreamOwned};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a client has to complete the TLS handshake before the server
/// drops it, so a silent client cannot hold a thread.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A server-side TLS stream over TCP.
pub type TlsServerStream = StreamOwned<ServerConnection, TcpStream>;

/// The server's TLS settings: certificate chain, key, and optionally the CA
/// that client certificates must be signed by. Cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    config: Arc<rustls::ServerConfig>,
    cert: PathBuf,
    client_ca: Option<PathBuf>,
}

impl TlsConfig {
    /// Loads a PEM certificate chain (leaf first) and its PEM private key;
    /// with `client_ca`, a PEM file of CA certificates, every client must
    /// present a certificate signed by one of them.
    ///
    /// # Errors
    /// A file that cannot be read, holds no usable PEM item, or a key that
    /// does not match the certificate.
    pub fn from_pem_files(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<TlsConfig, Error> {
        let chain = load_certs("--tls-cert", cert)?;
        let key_der = load_key("--tls-key", key)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("cannot set up TLS".into(), e))?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let roots = load_roots("--tls-client-ca", path)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| {
                            invalid(format!("cannot use --tls-client-ca {}", path.display()), e)
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder.with_single_cert(chain, key_der).map_err(|e| {
            invalid(
                format!(
                    "cannot use --tls-cert {} with --tls-key {}",
                    cert.display(),
                    key.display()
                ),
                format!("{e} (does the key belong to the certificate?)"),
            )
        })?;
        Ok(TlsConfig {
            config: Arc::new(config),
            cert: cert.to_path_buf(),
            client_ca: client_ca.map(Path::to_path_buf),
        })
    }

    /// True when clients must present a certificate.
    pub fn requires_client_cert(&self) -> bool {
        self.client_ca.is_some()
    }

    /// A fresh server-side TLS state for one connection (no I/O yet).
    pub(crate) fn connection(&self) -> io::Result<ServerConnection> {
        ServerConnection::new(Arc::clone(&self.config)).map_err(io::Error::other)
    }
}

/// Runs the server side of the handshake, with `HANDSHAKE_TIMEOUT` as its
/// read and write deadline; the caller sets its own timeouts afterwards.
pub(crate) fn accept(stream: &mut TlsServerStream) -> io::Result<()> {
    stream.sock.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    stream.sock.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    handshake(&mut stream.conn, &mut stream.sock, Some(deadline))
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert", &self.cert)
            .field("client_ca", &self.client_ca)
            .finish_non_exhaustive()
    }
}

/// Whether rustls holds decrypted input that the connection has not read
/// yet: while it does, the connection is not idle.
pub(crate) fn has_plaintext(stream: &mut TlsServerStream) -> bool {
    stream
        .conn
        .process_new_packets()
        .map_or(true, |state| state.plaintext_bytes_to_read() > 0)
}

/// Reads from a server-side TLS stream; a peer that closes the TCP
/// connection without a TLS `close_notify` (most clients, when they just
/// drop the socket) is an ordinary end of input, as it is over plain TCP.
pub(crate) fn read_plain_eof(stream: &mut TlsServerStream, buf: &mut [u8]) -> io::Result<usize> {
    match stream.read(buf) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
        other => other,
    }
}

/// Writes all of `buf` and sends it (rustls buffers until flushed).
pub(crate) fn write_flush(stream: &mut TlsServerStream, buf: &[u8]) -> io::Result<()> {
    stream.write_all(buf)?;
    stream.flush()
}
