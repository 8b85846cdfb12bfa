//! # lockd: connection-bound locks over a line protocol
//!
//! A lock lives exactly as long as the connection that took it: when a
//! client goes away, its locks are released at once, so a stale lock cannot
//! exist. Exclusive locks have one holder; shared locks have any number,
//! counted, so they work as throttles and semaphores.
//!
//! The server speaks the classic protocol of glockd and node lockd byte for
//! byte (so existing clients keep working) plus protocol 2: waiting in line,
//! semaphores with limits, fencing tokens, deadlock detection, leases.
//!
//! ```
//! use lockd::Client;
//!
//! let mut config = lockd::ServerConfig::default();
//! config.listen = vec!["127.0.0.1:0".into()];
//! let server = lockd::Server::bind(config)?.spawn()?;
//! let addr = server.local_addr().expect("a TCP listener");
//!
//! let client = Client::connect(addr.to_string())?;
//! let report = client.lock("nightly-report")?; // Err if someone holds it
//! assert!(client.is_locked("nightly-report")?);
//! drop(report); // released
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The [`client`] module has the blocking [`Client`]; [`server`] embeds the
//! server.
//!
//! ## Layers
//!
//! Each layer uses only those below it (`grep -rn "use crate::" src/`):
//! 1. `protocol`: pure parsing of lines into commands and encoding of every reply.
//! 2. `store`: the lock semantics behind the [`store::LockStore`] seam (the in-memory table).
//! 3. `session`: one connection's protocol state over a store; no I/O.
//! 4. `server`: config, listeners and accept, the one connection loop, liveness, streams.
//! 5. `client`, `local` and `systemd` sit on top; `transport` is shared plumbing.

#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod client;
mod error;
pub mod local;
pub mod log;
mod name;
pub mod protocol;
mod secret;
pub mod server;
mod session;
mod stats;
pub mod store;
pub mod systemd;
pub mod token;
pub mod transport;

pub use client::{Client, ClientConfig, LockGuard, SharedGuard};
pub use error::{AuthError, Error, Phase};
pub use name::LockName;
pub use server::{Secret, Server, ServerConfig, ServerHandle, Shutdown, ShutdownHandle};
