//! In-process holds: what gives a [`Client`](super::Client)'s guards
//! `Mutex` semantics across the threads that share its connection.
//!
//! The server sees one holder per connection, so the client keeps its own
//! table of which thread holds which name through it:
//!
//! * exclusive (`lock`): one guard per name in the whole process-side
//!   client; a second caller waits here, before any command is sent;
//! * read (`read`): any number of guards share the connection's one read
//!   hold; the first takes it on the server, the last drop gives it back.
//!   A writer waiting here stops new readers from joining, so writers are
//!   not starved, as on the server;
//! * shared (`lock_shared`): as read, on the shared namespace.
//!
//! A thread asking again for a name it holds through the same client is
//! refused with [`Error::Reentrant`]: it would otherwise wait for itself.

use crate::error::Error;
use crate::name::LockName;
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::thread::{self, ThreadId};
use std::time::Instant;

/// Which hold a guard has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `g`/`wg`: one holder.
    Write,
    /// `wr`: many readers, on the exclusive namespace.
    Read,
    /// `sg`/`wsg`: many holders, on the shared namespace.
    Shared,
}

/// How long a caller waits here for another thread's guard.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wait {
    /// Not at all.
    No,
    /// Until the instant.
    Until(Instant),
    /// As long as it takes.
    Forever,
}

/// One name held (or being taken) through the connection.
#[derive(Debug)]
struct Hold {
    kind: Kind,
    /// The threads holding it (one for `Write`).
    threads: Threads,
    /// False while the first holder's command is on its way: the others
    /// wait for its answer.
    granted: bool,
    /// What the server said when it granted it (holder count or token).
    number: u64,
}

/// A set of threads, kept without allocating while it has one member
/// (every exclusive hold, and most others).
#[derive(Debug)]
struct Threads {
    first: Option<ThreadId>,
    more: Vec<ThreadId>,
}

impl Threads {
    fn one(thread: ThreadId) -> Threads {
        Threads {
            first: Some(thread),
            more: Vec::new(),
        }
    }

    fn contains(&self, thread: &ThreadId) -> bool {
        self.first.as_ref() == Some(thread) || self.more.contains(thread)
    }

    fn push(&mut self, thread: ThreadId) {
        if self.first.is_none() {
            self.first = Some(thread);
        } else {
            self.more.push(thread);
        }
    }

    fn remove(&mut self, thread: ThreadId) {
        if self.first == Some(thread) {
            self.first = self.more.pop();
        } else if let Some(i) = self.more.iter().position(|&t| t == thread) {
            self.more.swap_remove(i);
        }
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }
}

#[derive(Default)]
struct Table {
    exclusive: HashMap<LockName, Hold>,
    shared: HashMap<LockName, Hold>,
    /// Writers of this client waiting for a name, by name: while any
    /// waits, new readers of that name wait too.
    writers_waiting: HashMap<LockName, u32>,
}

impl Table {
    fn space(&mut self, kind: Kind) -> &mut HashMap<LockName, Hold> {
        match kind {
            Kind::Write | Kind::Read => &mut self.exclusive,
            Kind::Shared => &mut self.shared,
        }
    }
}

/// What [`Holds::enter`] decided.
pub(crate) enum Entry {
    /// The caller must take the hold on the server, then call
    /// [`Holds::granted`] or [`Holds::refused`].
    Take,
    /// The caller joins the connection's existing hold (read or shared);
    /// nothing to send. Carries the number the server granted it with.
    Joined(u64),
    /// The wait here ran out.
    Busy,
}

/// The table, and the condition its waiters sleep on.
#[derive(Default)]
pub(crate) struct Holds {
    table: Mutex<Table>,
    changed: Condvar,
}

impl Holds {
    /// Waits (as `wait` allows) until this thread may hold `name` as
    /// `kind` through the connection.
    pub(crate) fn enter(&self, name: &LockName, kind: Kind, wait: Wait) -> Result<Entry, Error> {
        let me = thread::current().id();
        let mut table = self.table.lock();
        let mut waiting_writer = false;
        let mut expired = false;
        let result = loop {
            let writers_waiting = match kind {
                Kind::Read => table.writers_waiting.get(name).copied().unwrap_or(0),
                Kind::Write | Kind::Shared => 0,
            };
            let space = table.space(kind);
            let Some(hold) = space.get_mut(name) else {
                space.insert(
                    name.clone(),
                    Hold {
                        kind,
                        threads: Threads::one(me),
                        granted: false,
                        number: 0,
                    },
                );
                break Ok(Entry::Take);
            };
            if hold.threads.contains(&me) {
                break Err(Error::Reentrant { name: name.clone() });
            }
            if kind != Kind::Write && hold.kind == kind && hold.granted && writers_waiting == 0 {
                hold.threads.push(me);
                break Ok(Entry::Joined(hold.number));
            }
            if expired || matches!(wait, Wait::No) {
                break Ok(Entry::Busy);
            }
            if kind == Kind::Write && !waiting_writer {
                waiting_writer = true;
                *table.writers_waiting.entry(name.clone()).or_default() += 1;
            }
            match wait {
                Wait::Until(deadline) => {
                    expired = self.changed.wait_until(&mut table, deadline).timed_out();
                }
                Wait::Forever | Wait::No => self.changed.wait(&mut table),
            }
        };
        if waiting_writer {
            if let Some(n) = table.writers_waiting.get_mut(name) {
                *n -= 1;
                if *n == 0 {
                    table.writers_waiting.remove(name);
                }
            }
            // Readers held back for this writer may join again.
            drop(table);
            self.changed.notify_all();
        }
        result
    }

    /// The server granted the hold the caller entered for.
    pub(crate) fn granted(&self, name: &LockName, kind: Kind, number: u64) {
        let mut table = self.table.lock();
        if let Some(hold) = table.space(kind).get_mut(name) {
            hold.granted = true;
            hold.number = number;
        }
        drop(table);
        self.changed.notify_all();
    }

    /// The server did not grant it (or the call failed): the name is free
    /// here again.
    pub(crate) fn refused(&self, name: &LockName, kind: Kind) {
        let mut table = self.table.lock();
        table.space(kind).remove(name);
        drop(table);
        self.changed.notify_all();
    }

    /// A guard leaves; `holder` is the thread that entered (guards can
    /// move between threads). True when it was the last holder: then the
    /// server must hear the release, and until [`Holds::released`] nobody
    /// here may join or take the name, so a later taker's command follows
    /// the release on the wire.
    pub(crate) fn leave(&self, name: &LockName, kind: Kind, holder: ThreadId) -> bool {
        let mut table = self.table.lock();
        let Some(hold) = table.space(kind).get_mut(name) else {
            return false;
        };
        hold.threads.remove(holder);
        if hold.threads.is_empty() {
            // Not joinable while the release is on its way.
            hold.granted = false;
            true
        } else {
            false
        }
    }

    /// The last holder's release is queued or answered: the name is free
    /// here.
    pub(crate) fn released(&self, name: &LockName, kind: Kind) {
        self.refused(name, kind);
    }
}
