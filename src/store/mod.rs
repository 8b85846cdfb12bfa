//! The lock semantics of `PROTOCOL.md` Parts 1 and 2, behind one seam.
//!
//! [`memory::Table`] is the in-memory store of a single server.

pub mod etcd;
pub mod memory;

pub use memory::{
    ClientId, ClientNames, Counts, ExclusiveView, Grant, Released, SharedView, Table, WaitStart,
};
