//! The server's TLS settings ([`tls::TlsConfig`]). The server's listeners
//! and streams live in `server`; the client's connect and streams in
//! `client` and `net`.

pub mod tls;
