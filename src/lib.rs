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
//! let report = client.lock("nightly-report")?; // waits its turn
//! assert!(client.is_locked("nightly-report")?);
//! drop(report); // released
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The [`client`] module has the blocking [`Client`]. Its mental model in
//! five lines: a lock belongs to the connection that took it; a `Client`
//! is one connection, shared by all its clones and threads; guards give
//! `Mutex` semantics inside the process (a name held by one guard is not
//! handed to a second caller, who waits); when the connection ends, the
//! server releases every lock it held. [`server`] embeds the server.
//!
//! ## Layers
//!
//! Each layer uses only those below it (`grep -rn "use crate::" src/`):
//! 1. `protocol`: pure parsing of lines into commands and encoding of every reply.
//! 2. `store`: the lock semantics behind the [`store::LockStore`] seam (the in-memory table).
//! 3. `session`: one connection's protocol state over a store; no I/O.
//! 4. `server`: config, listeners and accept, the one connection loop, liveness, streams.
//! 5. `client` beside the server (sharing `net`), `local` and `systemd` on top.

#![deny(missing_docs)]
#![deny(unsafe_code)]

#[cfg(feature = "client")]
pub mod client;
mod error;
#[cfg(feature = "server")]
mod events;
#[cfg(feature = "server")]
pub mod http;
#[cfg(all(feature = "client", feature = "server"))]
pub mod local;
#[cfg(feature = "server")]
pub mod log;
#[cfg(feature = "server")]
pub mod metrics;
mod name;
#[cfg(any(feature = "client", feature = "server"))]
mod net;
pub mod protocol;
mod secret;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
mod session;
#[cfg(feature = "server")]
mod stats;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod systemd;
#[cfg(feature = "tls")]
mod tls_common;
#[cfg(feature = "server")]
pub mod token;
#[cfg(feature = "server")]
pub mod transport;

#[cfg(feature = "client")]
pub use client::{Client, ClientConfig, LockGuard, ReadGuard, SharedGuard};
pub use error::{AuthError, Error, Phase};
pub use name::LockName;
pub use secret::Secret;
#[cfg(feature = "server")]
pub use server::{Addresses, Server, ServerConfig, ServerHandle, Shutdown, ShutdownHandle};
