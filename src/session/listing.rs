//! The listings `d`, `sd`, `dump`, `dump shared`, `dj` and `who`, written
//! a piece at a time: the connection loop asks for the next piece only
//! once the socket took the last, so a listing of any size costs a
//! connection one bounded buffer, never the whole reply. The store hands
//! the entries out in pages (see [`crate::store::PAGE`]), each copied
//! under one short acquisition of its lock and formatted outside it.

use crate::name::LockName;
use crate::protocol::reply::{self, ExclusiveEntry, ReadEntry, SharedEntry};
use crate::store::{ClientNames, ExclusiveView, LockStore, ReadView, SharedView, StoreError};
use std::collections::VecDeque;

/// Which listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum What {
    /// `d`: `NAME HOLDER` lines.
    Holders,
    /// `sd`: `NAME HOLDER` lines, one per holder.
    SharedHolders,
    /// `dump`: one Go-map line.
    Dump,
    /// `dump shared`: one Go-map line of holder lists.
    DumpShared,
    /// `dj`: one line of JSON.
    Json,
    /// `who`: `DEFAULT NAME` lines.
    Who,
}

/// Which part of the table a listing is going through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Exclusive,
    Shared,
    Read,
    Clients,
    /// Nothing left but the closing bytes.
    End,
}

/// Entries of the current page not yet formatted.
#[derive(Debug)]
enum Pending {
    Exclusive(VecDeque<ExclusiveView>),
    Shared(VecDeque<SharedView>),
    Read(VecDeque<ReadView>),
    Clients(VecDeque<ClientNames>),
}

/// A listing under way. See the module docs.
#[derive(Debug)]
pub struct Listing {
    what: What,
    part: Part,
    pending: Pending,
    /// Whether the current page is the last of its part.
    last_page: bool,
    /// The name (or registration) the next page starts after.
    after: Option<LockName>,
    after_registration: u64,
    /// No entry of the current part written yet.
    first: bool,
    /// Closing bytes of a multi-line listing (the empty line of protocol 2).
    end: &'static [u8],
    /// Bytes of the opening, while no page has been read (see
    /// [`Listing::retract`]); `None` after.
    opening: Option<usize>,
}

impl Listing {
    /// Starts a listing, writing its opening bytes. `end` closes a
    /// multi-line listing.
    pub(crate) fn start(what: What, end: &'static [u8], out: &mut Vec<u8>) -> Listing {
        let part = match what {
            What::Holders | What::Dump | What::Json => Part::Exclusive,
            What::SharedHolders | What::DumpShared => Part::Shared,
            What::Who => Part::Clients,
        };
        let before = out.len();
        match what {
            What::Dump | What::DumpShared => out.extend_from_slice(reply::DUMP_OPEN),
            What::Json => out.extend_from_slice(reply::JSON_OPEN),
            What::Holders | What::SharedHolders | What::Who => {}
        }
        Listing {
            opening: Some(out.len() - before),
            what,
            part,
            pending: Pending::Clients(VecDeque::new()),
            last_page: false,
            after: None,
            after_registration: 0,
            first: true,
            end,
        }
    }

    /// Appends about `bound` more bytes of the listing to `out` (at least
    /// one entry, whatever its size). `false` once the listing is complete.
    ///
    /// # Errors
    /// The store could not hand out the next page.
    pub(crate) fn fill(
        &mut self,
        store: &dyn LockStore,
        out: &mut Vec<u8>,
        bound: usize,
    ) -> Result<bool, StoreError> {
        let limit = out.len().saturating_add(bound.max(1));
        while out.len() < limit {
            if self.part == Part::End {
                return Ok(false);
            }
            if !self.write_one(out) {
                self.next_page(store, out)?;
            }
        }
        Ok(self.part != Part::End)
    }

    /// After the first [`Listing::fill`] failed: takes the opening back out
    /// of `out` (where it still is, the last bytes, since nothing was read
    /// to follow it), so that a failure reply goes in its place. Returns
    /// the bytes that close the reply; `None` once a page was read and the
    /// listing can only be cut short.
    pub(crate) fn retract(&self, out: &mut Vec<u8>) -> Option<&'static [u8]> {
        let opening = self.opening?;
        out.truncate(out.len().saturating_sub(opening));
        Some(self.end)
    }

    /// Formats the next pending entry; `false` when none is pending.
    fn write_one(&mut self, out: &mut Vec<u8>) -> bool {
        let first = self.first;
        match &mut self.pending {
            Pending::Exclusive(locks) => {
                let Some(lock) = locks.pop_front() else {
                    return false;
                };
                let entry = exclusive_entry(&lock);
                match self.what {
                    What::Holders => {
                        reply::pair_line(out, lock.name.as_bytes(), lock.holder.display())
                    }
                    What::Dump => reply::dump_exclusive_item(out, first, &entry),
                    _ => reply::json_exclusive_item(out, first, &entry),
                }
            }
            Pending::Shared(locks) => {
                let Some(lock) = locks.pop_front() else {
                    return false;
                };
                match self.what {
                    What::SharedHolders => {
                        for holder in &lock.holders {
                            reply::pair_line(out, lock.name.as_bytes(), holder.display());
                        }
                    }
                    What::DumpShared => reply::dump_shared_item(out, first, &shared_entry(&lock)),
                    _ => reply::json_shared_item(out, first, &shared_entry(&lock)),
                }
            }
            Pending::Read(locks) => {
                let Some(lock) = locks.pop_front() else {
                    return false;
                };
                reply::json_read_item(out, first, &read_entry(&lock));
            }
            Pending::Clients(clients) => {
                let Some(client) = clients.pop_front() else {
                    return false;
                };
                reply::pair_line(out, &client.default, client.display());
            }
        }
        self.first = false;
        true
    }

    /// Copies the next page out of the store, or moves on to the next part
    /// when the current one is done.
    fn next_page(&mut self, store: &dyn LockStore, out: &mut Vec<u8>) -> Result<(), StoreError> {
        if self.last_page {
            self.next_part(out);
            return Ok(());
        }
        let after = self.after.as_ref().map(LockName::as_bytes);
        match self.part {
            Part::Exclusive => {
                let page = store.exclusive_page(after)?;
                self.pending = Pending::Exclusive(page.items.into());
                self.resume_after(page.next);
            }
            Part::Shared => {
                let page = store.shared_page(after)?;
                self.pending = Pending::Shared(page.items.into());
                self.resume_after(page.next);
            }
            Part::Read => {
                let page = store.read_page(after)?;
                self.pending = Pending::Read(page.items.into());
                self.resume_after(page.next);
            }
            Part::Clients => {
                let page = store.registered_page(self.after_registration)?;
                self.pending = Pending::Clients(page.items.into());
                self.last_page = page.next.is_none();
                self.after_registration = page.next.unwrap_or(u64::MAX);
            }
            Part::End => {}
        }
        self.opening = None;
        Ok(())
    }

    fn resume_after(&mut self, next: Option<LockName>) {
        self.last_page = next.is_none();
        self.after = next;
    }

    /// Closes the part just finished and opens the next.
    fn next_part(&mut self, out: &mut Vec<u8>) {
        let next = match (self.what, self.part) {
            (What::Json, Part::Exclusive) => {
                out.extend_from_slice(reply::JSON_SHARED);
                Part::Shared
            }
            (What::Json, Part::Shared) => {
                out.extend_from_slice(reply::JSON_SHARED_CLOSE);
                Part::Read
            }
            (What::Json, _) => {
                if !self.first {
                    out.extend_from_slice(reply::JSON_READERS_CLOSE);
                }
                out.extend_from_slice(reply::JSON_CLOSE);
                Part::End
            }
            (What::Dump | What::DumpShared, _) => {
                out.extend_from_slice(reply::DUMP_CLOSE);
                Part::End
            }
            (What::Holders | What::SharedHolders | What::Who, _) => {
                out.extend_from_slice(self.end);
                Part::End
            }
        };
        self.part = next;
        self.first = true;
        self.last_page = false;
        self.after = None;
    }
}

fn exclusive_entry(lock: &ExclusiveView) -> ExclusiveEntry<'_> {
    ExclusiveEntry {
        name: lock.name.as_bytes(),
        holder: &lock.holder.default,
        registered: lock.holder.registered.as_deref(),
        token: lock.token,
        waiters: lock.waiters.iter().map(|w| &w[..]).collect(),
    }
}

fn shared_entry(lock: &SharedView) -> SharedEntry<'_> {
    SharedEntry {
        name: lock.name.as_bytes(),
        holders: lock.holders.iter().map(|h| &h.default[..]).collect(),
        waiters: lock.waiters.iter().map(|(w, l)| (&w[..], *l)).collect(),
    }
}

fn read_entry(lock: &ReadView) -> ReadEntry<'_> {
    ReadEntry {
        name: lock.name.as_bytes(),
        readers: lock.readers.iter().map(|r| &r[..]).collect(),
        waiters: lock.waiters.iter().map(|w| &w[..]).collect(),
    }
}
