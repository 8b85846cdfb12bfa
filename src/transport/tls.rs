//! TLS on TCP listeners, with rustls and its `ring` provider (pure Rust,
//! no OpenSSL).
//!
//! The server side is [`TlsConfig`]: a certificate chain and key from PEM
//! files, and optionally a CA whose signature every client certificate must
//! carry. [`ServerConfig::tls`](crate::ServerConfig::tls) set to one makes
//! every TCP listener speak TLS; the handshake runs on the connection's own
//! thread, bounded by a 10 s deadline in total, never in the accept loop.
//! The client side is `lockd::client::tls`.

use crate::error::Error;
use crate::tls_common::{invalid, load_certs, load_key, load_roots, provider};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConnection;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert", &self.cert)
            .field("client_ca", &self.client_ca)
            .finish_non_exhaustive()
    }
}
