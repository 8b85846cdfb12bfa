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
//! use std::io::{BufRead, BufReader, Write};
//! use std::net::TcpStream;
//!
//! let mut config = lockd::ServerConfig::default();
//! config.listen = vec!["127.0.0.1:0".into()];
//! let server = lockd::Server::bind(config)?.spawn()?;
//! let addr = server.local_addr().expect("a TCP listener");
//!
//! let mut conn = TcpStream::connect(addr)?;
//! conn.write_all(b"g nightly-report\n")?;
//! let mut reply = String::new();
//! BufReader::new(&conn).read_line(&mut reply)?;
//! assert_eq!(reply, "1 Lock Get Success: nightly-report\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

pub mod bench;
pub mod cli;
mod connection;
mod error;
mod name;
pub mod protocol;
pub mod server;
pub mod session;
mod stats;
pub mod table;
pub mod token;
pub mod transport;

pub use error::Error;
pub use name::LockName;
pub use server::{Secret, Server, ServerConfig, ServerHandle, Shutdown, ShutdownHandle};
