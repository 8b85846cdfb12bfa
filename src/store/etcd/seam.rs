//! [`EtcdStore`] behind the session's seam, [`LockStore`].
//!
//! Every call that asks etcd something fails with a [`StoreError`] when
//! etcd does not answer ([`StoreError::Etcd`]: the session tells the
//! client so) or the node lost its lease ([`StoreError::LocksLost`]: the
//! session closes the connection). Nothing is answered as if it were
//! known. A call that only lets go of something (a release, a cancelled
//! wait, a disconnect) succeeds for the client at once; a delete etcd did
//! not take is retried as soon as it answers. A lost lease is also
//! reported on [`EtcdStore::lease_lost`], on which the server closes every
//! connection of the node.

use super::EtcdStore;
use crate::store::{
    ClientId, ClientNames, Counts, ExclusiveView, Grant, LockStore, ReadView, Released, SharedView,
    StoreError, WaitStart, WatchEvent, Watcher,
};
use crossbeam_channel::Sender;

impl LockStore for EtcdStore {
    fn connect(&self, id: ClientId, default_name: Box<[u8]>, notify: Sender<Grant>) {
        // Without a lease the client is recorded all the same, and each of
        // its calls fails with `LocksLost`, which closes its connection.
        let _ = EtcdStore::connect(self, id, default_name, notify);
    }

    fn disconnect(&self, id: ClientId) -> Released {
        EtcdStore::disconnect(self, id)
    }

    fn lock_or_queue(
        &self,
        id: ClientId,
        name: &[u8],
        queue: bool,
    ) -> Result<WaitStart, StoreError> {
        EtcdStore::lock_or_queue(self, id, name, queue)
    }

    fn release(&self, id: ClientId, name: &[u8]) -> Result<bool, StoreError> {
        EtcdStore::release(self, id, name)
    }

    fn is_locked(&self, name: &[u8]) -> Result<bool, StoreError> {
        EtcdStore::is_locked(self, name)
    }

    fn token(&self, id: ClientId, name: &[u8]) -> Result<Option<u64>, StoreError> {
        EtcdStore::token(self, id, name)
    }

    fn lock_shared(&self, id: ClientId, name: &[u8]) -> Result<usize, StoreError> {
        EtcdStore::lock_shared(self, id, name)
    }

    fn lock_shared_or_queue(
        &self,
        id: ClientId,
        name: &[u8],
        limit: u32,
        queue: bool,
    ) -> Result<WaitStart, StoreError> {
        EtcdStore::lock_shared_or_queue(self, id, name, limit, queue)
    }

    fn release_shared(&self, id: ClientId, name: &[u8]) -> Result<bool, StoreError> {
        EtcdStore::release_shared(self, id, name)
    }

    fn shared_count(&self, name: &[u8]) -> Result<usize, StoreError> {
        EtcdStore::shared_count(self, name)
    }

    fn release_all(&self, id: ClientId) -> Result<Released, StoreError> {
        EtcdStore::release_all(self, id)
    }

    fn cancel_wait(&self, id: ClientId) -> bool {
        EtcdStore::cancel_wait(self, id)
    }

    fn register(&self, id: ClientId, name: &[u8]) -> Result<(), StoreError> {
        EtcdStore::register(self, id, name)
    }

    fn names(&self, id: ClientId) -> Option<ClientNames> {
        EtcdStore::names(self, id)
    }

    fn registered(&self, filter: &[u8]) -> Result<Vec<ClientNames>, StoreError> {
        EtcdStore::registered(self, filter)
    }

    fn exclusive_locks(&self, filter: &[u8]) -> Result<Vec<ExclusiveView>, StoreError> {
        EtcdStore::exclusive_locks(self, filter)
    }

    fn shared_locks(&self, filter: &[u8]) -> Result<Vec<SharedView>, StoreError> {
        EtcdStore::shared_locks(self, filter)
    }

    fn counts(&self) -> Result<Counts, StoreError> {
        EtcdStore::counts(self)
    }

    fn token_marks(&self) -> (u64, Option<u64>) {
        EtcdStore::token_marks(self)
    }

    fn read_or_queue(
        &self,
        id: ClientId,
        name: &[u8],
        queue: bool,
    ) -> Result<WaitStart, StoreError> {
        EtcdStore::read_or_queue(self, id, name, queue)
    }

    fn release_read(&self, id: ClientId, name: &[u8]) -> Result<bool, StoreError> {
        EtcdStore::release_read(self, id, name)
    }

    fn read_locks(&self, filter: &[u8]) -> Result<Vec<ReadView>, StoreError> {
        EtcdStore::read_locks(self, filter)
    }

    fn watch(
        &self,
        id: ClientId,
        pattern: &[u8],
    ) -> Result<(Vec<WatchEvent>, Option<Watcher>), StoreError> {
        EtcdStore::watch(self, id, pattern)
    }
}
