//! TLS on TCP connections, with rustls and its `ring` provider (pure Rust,
//! no OpenSSL).
//!
//! The server side is [`TlsConfig`]: a certificate chain and key from PEM
//! files, and optionally a CA whose signature every client certificate must
//! carry. [`ServerConfig::tls`](crate::ServerConfig::tls) set to one makes
//! every TCP listener speak TLS; the handshake runs on the connection's own
//! thread, bounded by a 10 s deadline in total, never in the accept loop.
//!
//! The client side is [`TlsClientConfig`] and [`connect_tls`], for
//! `lockd::Client` and tests:
//!
//! ```no_run
//! use lockd::transport::tls::{connect_tls, TlsClientConfig};
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

use super::connect_tcp;
use crate::error::Error;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConnection, RootCertStore, ServerConnection, StreamOwned};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
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

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An error about a TLS file or setting, as `Error::Io` with `InvalidData`.
fn invalid(context: String, why: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::Io {
        context,
        source: io::Error::new(io::ErrorKind::InvalidData, why),
    }
}

fn read_file(what: &str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Io {
        context: format!("cannot read {what} {}", path.display()),
        source,
    })
}

fn load_certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = read_file(what, path)?;
    let context = || format!("cannot use {what} {}", path.display());
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(context(), e.to_string()))?;
    if certs.is_empty() {
        return Err(invalid(
            context(),
            "no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

fn load_key(what: &str, path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let pem = read_file(what, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        invalid(
            format!("cannot use {what} {}", path.display()),
            format!("{e} (expected a PEM private key: PKCS#8, PKCS#1 or SEC1)"),
        )
    })
}

fn load_roots(what: &str, path: &Path) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(what, path)? {
        roots
            .add(cert)
            .map_err(|e| invalid(format!("cannot use {what} {}", path.display()), e))?;
    }
    Ok(roots)
}

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

/// Drives a handshake to its end, by `deadline` as a whole (a peer that
/// trickles bytes cannot stretch it). A peer that hangs up midway is an
/// `UnexpectedEof`; one that is not speaking TLS an `InvalidData`; one too
/// slow a `TimedOut`.
fn handshake<C, S>(conn: &mut C, sock: &mut TcpStream, deadline: Option<Instant>) -> io::Result<()>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<S>>,
    S: rustls::SideData,
{
    while conn.is_handshaking() {
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the TLS handshake took too long",
                ));
            }
            sock.set_read_timeout(Some(left))?;
        }
        let (read, written) = conn.complete_io(sock)?;
        if read == 0 && written == 0 && conn.is_handshaking() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "peer closed during the TLS handshake",
            ));
        }
    }
    // TLS 1.3 session tickets and the like go out now, not with the first
    // reply.
    while conn.wants_write() {
        conn.complete_io(sock)?;
    }
    Ok(())
}

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
    let deadline = timeout.map(|t| Instant::now() + t);
    handshake(&mut conn, &mut sock, deadline).map_err(|e| io_error("handshake", e))?;
    set(&sock, None).map_err(|e| io_error("socket options", e))?;
    Ok(StreamOwned::new(conn, sock))
}

/// Runs a TLS client stream behind a plain Unix socket pair, so code that
/// reads on one thread and writes on another (the [`Client`]'s reader and
/// owner threads) can use it: a bridge thread moves plaintext between the
/// returned socket and the TLS stream. Closing the returned socket (or its
/// write side) ends the TLS session with `close_notify`; the server's close
/// closes the returned socket.
///
/// [`Client`]: crate::Client
///
/// # Errors
/// The socket pair or the thread cannot be created.
pub(crate) fn bridge(stream: TlsClientStream) -> io::Result<std::os::unix::net::UnixStream> {
    let (near, far) = std::os::unix::net::UnixStream::pair()?;
    std::thread::Builder::new()
        .name("lockd-tls-bridge".into())
        .spawn(move || {
            let StreamOwned { conn, sock } = stream;
            let _ = pump(conn, sock, far);
        })?;
    Ok(near)
}

/// Moves bytes both ways until either side closes.
fn pump(
    mut conn: ClientConnection,
    mut sock: TcpStream,
    mut plain: std::os::unix::net::UnixStream,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let end = |sock: &TcpStream, plain: &std::os::unix::net::UnixStream| {
        let _ = sock.shutdown(std::net::Shutdown::Both);
        let _ = plain.shutdown(std::net::Shutdown::Both);
    };
    let mut buf = vec![0u8; 16 * 1024];
    let mut plain_open = true;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: plain.as_raw_fd(),
                events: if plain_open { libc::POLLIN } else { 0 },
                revents: 0,
            },
        ];
        // Once our side is done, the server gets a while to close its own.
        let wait_ms = if plain_open { -1 } else { 5000 };
        // SAFETY: the array outlives the call and its length is passed.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, wait_ms) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            end(&sock, &plain);
            return Err(e);
        }
        if ready == 0 {
            end(&sock, &plain);
            return Ok(());
        }
        if fds[1].revents != 0 {
            match plain.read(&mut buf) {
                Ok(0) | Err(_) => {
                    // Our side is done: say so to the server, then keep
                    // reading its last replies until it closes.
                    plain_open = false;
                    conn.send_close_notify();
                    while conn.wants_write() {
                        conn.write_tls(&mut sock)?;
                    }
                    let _ = sock.shutdown(std::net::Shutdown::Write);
                }
                Ok(n) => {
                    conn.writer().write_all(&buf[..n])?;
                    while conn.wants_write() {
                        conn.write_tls(&mut sock)?;
                    }
                }
            }
        }
        if fds[0].revents != 0 {
            let read = match conn.read_tls(&mut sock) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            let state = conn.process_new_packets().map_err(|e| {
                end(&sock, &plain);
                io::Error::new(io::ErrorKind::InvalidData, e)
            })?;
            let mut pending = state.plaintext_bytes_to_read();
            while pending > 0 {
                let len = pending.min(buf.len());
                let n = conn.reader().read(&mut buf[..len])?;
                if n == 0 {
                    break;
                }
                if plain.write_all(&buf[..n]).is_err() {
                    end(&sock, &plain);
                    return Ok(());
                }
                pending -= n;
            }
            while conn.wants_write() {
                conn.write_tls(&mut sock)?;
            }
            if read == 0 || state.peer_has_closed() {
                end(&sock, &plain);
                return Ok(());
            }
        }
    }
}
