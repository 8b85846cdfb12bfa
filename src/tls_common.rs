//! TLS pieces both sides use: the rustls crypto provider, PEM files of
//! certificates and keys, and driving a handshake to its end by a deadline.
//! The server's settings live in `transport::tls`, the client's in
//! `client::tls`.

use crate::error::Error;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;
use std::io;
use std::path::Path;
use std::sync::Arc;

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An error about a TLS file or setting, as `Error::Io` with `InvalidData`.
pub(crate) fn invalid(
    context: String,
    why: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    Error::Io {
        context,
        source: io::Error::new(io::ErrorKind::InvalidData, why),
    }
}

pub(crate) fn read_file(what: &str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Io {
        context: format!("cannot read {what} {}", path.display()),
        source,
    })
}

pub(crate) fn load_certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
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

pub(crate) fn load_key(what: &str, path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let pem = read_file(what, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        invalid(
            format!("cannot use {what} {}", path.display()),
            format!("{e} (expected a PEM private key: PKCS#8, PKCS#1 or SEC1)"),
        )
    })
}

pub(crate) fn load_roots(what: &str, path: &Path) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(what, path)? {
        roots
            .add(cert)
            .map_err(|e| invalid(format!("cannot use {what} {}", path.display()), e))?;
    }
    Ok(roots)
}

/// Drives a handshake to its end, by `deadline` as a whole (a peer that
/// trickles bytes cannot stretch it). A peer that hangs up midway is an
/// `UnexpectedEof`; one that is not speaking TLS an `InvalidData`; one too
/// slow a `TimedOut`. (The server runs its own, over its shared socket.)
#[cfg(feature = "client")]
pub(crate) fn handshake<C, S>(
    conn: &mut C,
    sock: &mut std::net::TcpStream,
    deadline: Option<std::time::Instant>,
) -> io::Result<()>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<S>>,
    S: rustls::SideData,
{
    while conn.is_handshaking() {
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
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
