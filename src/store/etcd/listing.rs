//! The listings of the etcd store (`d`, `dump`, `dj`, `sd`, `who`, `q`):
//! each reads the lines it shows and the registry in one transaction, so
//! every line is seen at one revision.

use super::client::{KeyValue, Op, Order, Range};
use super::keys::{self, Family};
use super::rw::{self, Status};
use super::{holding, ranged, EtcdStore, Shared, StoreError};
use crate::name::LockName;
use crate::store::{ClientNames, Counts, ExclusiveView, LimitCounts, ReadView, SharedView};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

impl EtcdStore {
    /// `who`: registered clients of every node, oldest registration first;
    /// only those registered exactly as `filter` unless it is empty.
    ///
    /// # Errors
    /// See [`StoreError`].
    pub fn registered(&self, filter: &[u8]) -> Result<Vec<ClientNames>, StoreError> {
        let s = &self.shared;
        let (_, kvs) = s
            .client
            .range(&Range::prefix(&s.layout.registry(), Order::Modified))?;
        Ok(kvs
            .iter()
            .filter_map(|kv| registration(&kv.value))
            .filter(|names| filter.is_empty() || names.registered.as_deref() == Some(filter))
            .collect())
    }

    /// Write-held locks of the cluster, sorted by name; only `filter`
    /// unless it is empty. One read: every line is seen at one revision.
    ///
    /// # Errors
    /// See [`StoreError`].
    pub fn exclusive_locks(&self, filter: &[u8]) -> Result<Vec<ExclusiveView>, StoreError> {
        Ok(self.exclusive_namespace(filter)?.0)
    }

    /// Read-held locks of the cluster, sorted by name; only `filter`
    /// unless it is empty.
    ///
    /// # Errors
    /// See [`StoreError`].
    pub fn read_locks(&self, filter: &[u8]) -> Result<Vec<ReadView>, StoreError> {
        Ok(self.exclusive_namespace(filter)?.1)
    }

    /// The write-held and the read-held locks, from one read. The waiters
    /// of a line are listed in line order, an upgrading reader first.
    fn exclusive_namespace(
        &self,
        filter: &[u8],
    ) -> Result<(Vec<ExclusiveView>, Vec<ReadView>), StoreError> {
        let s = &self.shared;
        let (lines, registry) = s.snapshot(Family::Exclusive, filter)?;
        let (mut written, mut read) = (Vec::new(), Vec::new());
        let default = |kv: &KeyValue| s.names_of(Family::Exclusive, kv, &registry).default;
        for (name, kvs) in lines {
            let status = rw::statuses(&kvs);
            let waiters = (kvs.iter().zip(&status))
                .filter(|(_, status)| status.waits())
                .map(|(kv, _)| default(kv))
                .collect();
            match status.first() {
                Some(Status::Write) => written.push(ExclusiveView {
                    holder: s.names_of(Family::Exclusive, &kvs[0], &registry),
                    token: kvs[0].mod_revision as u64,
                    waiters,
                    name,
                }),
                Some(_) => read.push(ReadView {
                    readers: (kvs.iter().zip(&status))
                        .filter(|(_, status)| matches!(status, Status::Read | Status::Upgrading))
                        .map(|(kv, _)| default(kv))
                        .collect(),
                    waiters,
                    name,
                }),
                None => {}
            }
        }
        Ok((written, read))
    }

    /// Shared locks of the cluster with at least one holder, sorted by
    /// name; only `filter` unless it is empty.
    ///
    /// # Errors
    /// See [`StoreError`].
    pub fn shared_locks(&self, filter: &[u8]) -> Result<Vec<SharedView>, StoreError> {
        let s = &self.shared;
        let (lines, registry) = s.snapshot(Family::Shared, filter)?;
        Ok(lines
            .into_iter()
            .filter_map(|(name, kvs)| {
                let holds = holding(&kvs);
                let mut view = SharedView {
                    name,
                    holders: Vec::new(),
                    waiters: Vec::new(),
                };
                for (kv, held) in kvs.iter().zip(holds) {
                    let names = s.names_of(Family::Shared, kv, &registry);
                    if held {
                        view.holders.push(names);
                    } else {
                        let limit = keys::parse_value(&kv.value).map_or(0, |(l, _)| l);
                        view.waiters.push((names.default, limit));
                    }
                }
                (!view.holders.is_empty()).then_some(view)
            })
            .collect())
    }

    /// Gauges for `q`: `locks` and `shared_locks` count the cluster;
    /// `waiting` and `grants` this node.
    ///
    /// # Errors
    /// See [`StoreError`].
    pub fn counts(&self) -> Result<Counts, StoreError> {
        let (written, read) = self.exclusive_namespace(b"")?;
        let shared_locks = self.shared_locks(b"")?.len();
        let waiting = (self.shared.clients.lock().values())
            .filter(|c| c.waiting.is_some())
            .count();
        Ok(Counts {
            locks: written.len(),
            read_locks: read.len(),
            shared_locks,
            waiting,
            grants: self.shared.grants.load(Ordering::Relaxed),
            refused: LimitCounts::default(),
        })
    }
}

impl Shared {
    /// The lines of a family (of one name if `filter` is not empty) and
    /// the registry, read at one revision.
    #[allow(clippy::type_complexity)]
    fn snapshot(
        &self,
        family: Family,
        filter: &[u8],
    ) -> Result<(BTreeMap<LockName, Vec<KeyValue>>, HashMap<Vec<u8>, Vec<u8>>), StoreError> {
        let lines = if filter.is_empty() {
            Range::prefix(&self.layout.family(family), Order::Created)
        } else {
            Range::prefix(&self.layout.lock(family, filter), Order::Created)
        };
        let registry = Range::prefix(&self.layout.registry(), Order::Key);
        let txn = self
            .client
            .txn(&[], &[Op::Range(lines), Op::Range(registry)], &[])?;
        let mut by_name: BTreeMap<LockName, Vec<KeyValue>> = BTreeMap::new();
        for kv in ranged(&txn.results, 0) {
            if let Some((name, _)) = self.layout.parse_entry(family, &kv.key) {
                by_name.entry(name).or_default().push(kv);
            }
        }
        let registered = ranged(&txn.results, 1)
            .into_iter()
            .filter_map(|kv| {
                let owner = self.layout.parse_registration(&kv.key)?.to_vec();
                Some((owner, kv.value))
            })
            .collect();
        Ok((by_name, registered))
    }

    /// The names of the client behind a lock key.
    fn names_of(
        &self,
        family: Family,
        kv: &KeyValue,
        registry: &HashMap<Vec<u8>, Vec<u8>>,
    ) -> ClientNames {
        let default = keys::parse_value(&kv.value).map_or(&b""[..], |(_, d)| d);
        let registered = self
            .layout
            .parse_entry(family, &kv.key)
            .and_then(|(_, owner)| registry.get(owner))
            .and_then(|value| registration(value))
            .and_then(|names| names.registered);
        ClientNames {
            default: default.into(),
            registered,
        }
    }
}

/// A registration value: `<default>\n<registered name>`.
fn registration(value: &[u8]) -> Option<ClientNames> {
    let newline = value.iter().position(|&b| b == b'\n')?;
    Some(ClientNames {
        default: value[..newline].into(),
        registered: Some(value[newline + 1..].into()),
    })
}
