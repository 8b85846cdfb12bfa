//! The lock semantics of `PROTOCOL.md` Parts 1 and 2, behind one seam.
//!
//! [`memory::Table`] is the in-memory store of a single server.

pub mod limits;
pub mod memory;

pub use limits::{LimitCounts, LimitError, LimitHit, Limits};

pub use memory::{
    ClientId, ClientNames, Counts, ExclusiveView, Grant, ReadView, Released, SharedView, Table,
    WaitStart,
};
