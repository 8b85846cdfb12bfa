//! [`EtcdStore`] behind the session's seam, [`LockStore`].
//!
//! The seam's methods cannot fail, so a failed etcd call is logged and
//! answered the safe way: nothing granted (`g` fails, `wg`/`wsg` time out),
//! nothing held (`t`, `i` and `si` answer no), empty listings. Keys a
//! failed call may have left are deleted once etcd answers again. A lost
//! lease is reported on [`EtcdStore::lease_lost`], on which the server
//! must close the node's connections.

use super::{EtcdStore, StoreError, NOT_SUPPORTED, UNSUPPORTED_VERBS};
use crate::log::{log, Priority};
use crate::store::{
    ClientId, ClientNames, Counts, ExclusiveView, Grant, LimitError, LockStore, ReadView, Released,
    SharedView, WaitStart, WatchEvent, Watcher,
};
use crossbeam_channel::Sender;

/// The value of `result`, or `fallback` after logging what failed.
fn or_log<T>(what: &str, result: Result<T, StoreError>, fallback: T) -> T {
    result.unwrap_or_else(|e| {
        log(
            Priority::Warning,
            format_args!("cluster store: {what}: {e}"),
        );
        fallback
    })
}

impl LockStore for EtcdStore {
    fn connect(&self, id: ClientId, default_name: Box<[u8]>, notify: Sender<Grant>) {
        or_log(
            "connect",
            EtcdStore::connect(self, id, default_name, notify),
            (),
        );
    }

    fn disconnect(&self, id: ClientId) -> Released {
        or_log(
            "disconnect",
            EtcdStore::disconnect(self, id),
            Released::default(),
        )
    }

    fn lock_or_queue(&self, id: ClientId, name: &[u8], queue: bool) -> WaitStart {
        let result = EtcdStore::lock_or_queue(self, id, name, queue);
        or_log("g/wg", result, WaitStart::Busy)
    }

    fn release(&self, id: ClientId, name: &[u8]) -> bool {
        // A failed delete is retried in the background: the lock is going.
        match EtcdStore::release(self, id, name) {
            Err(StoreError::Etcd(e)) => {
                log(Priority::Warning, format_args!("cluster store: r: {e}"));
                true
            }
            result => or_log("r", result, false),
        }
    }

    fn is_locked(&self, name: &[u8]) -> bool {
        or_log("i", EtcdStore::is_locked(self, name), false)
    }

    fn token(&self, id: ClientId, name: &[u8]) -> Option<u64> {
        or_log("t", EtcdStore::token(self, id, name), None)
    }

    fn lock_shared(&self, id: ClientId, name: &[u8]) -> Result<usize, LimitError> {
        Ok(or_log("sg", EtcdStore::lock_shared(self, id, name), 0))
    }

    fn lock_shared_or_queue(
        &self,
        id: ClientId,
        name: &[u8],
        limit: u32,
        queue: bool,
    ) -> WaitStart {
        let result = EtcdStore::lock_shared_or_queue(self, id, name, limit, queue);
        or_log("wsg", result, WaitStart::Busy)
    }

    fn release_shared(&self, id: ClientId, name: &[u8]) -> bool {
        match EtcdStore::release_shared(self, id, name) {
            Err(StoreError::Etcd(e)) => {
                log(Priority::Warning, format_args!("cluster store: sr: {e}"));
                true
            }
            result => or_log("sr", result, false),
        }
    }

    fn shared_count(&self, name: &[u8]) -> usize {
        or_log("si", EtcdStore::shared_count(self, name), 0)
    }

    fn release_all(&self, id: ClientId) -> Released {
        or_log("ra", EtcdStore::release_all(self, id), Released::default())
    }

    fn cancel_wait(&self, id: ClientId) -> bool {
        // On an etcd error the wait is over all the same (its key goes in
        // the background), so the answer is still "cancelled".
        match EtcdStore::cancel_wait(self, id) {
            Err(StoreError::Etcd(e)) => {
                log(Priority::Warning, format_args!("cluster store: wait: {e}"));
                true
            }
            result => or_log("wait", result, true),
        }
    }

    fn register(&self, id: ClientId, name: &[u8]) {
        or_log("iam", EtcdStore::register(self, id, name), ());
    }

    fn names(&self, id: ClientId) -> Option<ClientNames> {
        EtcdStore::names(self, id)
    }

    fn registered(&self, filter: &[u8]) -> Vec<ClientNames> {
        or_log("who", EtcdStore::registered(self, filter), Vec::new())
    }

    fn exclusive_locks(&self, filter: &[u8]) -> Vec<ExclusiveView> {
        or_log("d", EtcdStore::exclusive_locks(self, filter), Vec::new())
    }

    fn shared_locks(&self, filter: &[u8]) -> Vec<SharedView> {
        or_log("sd", EtcdStore::shared_locks(self, filter), Vec::new())
    }

    fn counts(&self) -> Counts {
        or_log("q", EtcdStore::counts(self), Counts::default())
    }

    fn token_marks(&self) -> (u64, Option<u64>) {
        EtcdStore::token_marks(self)
    }

    fn unsupported(&self, verb: &str) -> Option<&'static str> {
        UNSUPPORTED_VERBS.contains(&verb).then_some(NOT_SUPPORTED)
    }

    fn watch(&self, id: ClientId, pattern: &[u8]) -> (Vec<WatchEvent>, Option<Watcher>) {
        EtcdStore::watch(self, id, pattern).unwrap_or_else(|e| {
            log(Priority::Warning, format_args!("cluster store: watch: {e}"));
            // The seam cannot fail: a queue already cut off ends the
            // connection rather than leave it believing it watches.
            (Vec::new(), Some(Watcher::cut_off()))
        })
    }

    // Reader/writer locks are not in cluster mode yet: the session refuses
    // `wr` and `rr` through `unsupported` before it would call these, which
    // answer as a store with no read holds.

    fn read_or_queue(&self, _id: ClientId, _name: &[u8], _queue: bool) -> WaitStart {
        WaitStart::Busy
    }

    fn release_read(&self, _id: ClientId, _name: &[u8]) -> bool {
        false
    }

    fn read_locks(&self, _filter: &[u8]) -> Vec<ReadView> {
        Vec::new()
    }
}
