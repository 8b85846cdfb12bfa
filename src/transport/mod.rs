//! The server's TLS settings ([`tls::TlsConfig`]), kept at this path for
//! the daemon and embedders. The server's listeners, streams and the rest
//! of its plumbing live in [`server`](crate::server).

pub mod tls;
