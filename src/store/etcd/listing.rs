//! The listings of the etcd store (`d`, `dump`, `dj`, `sd`, `who`, `q`):
//! each reads the lines it shows and the registry in one transaction, so
//! every line is seen at one revision.

use super::client::{KeyValue, Op, Order, Range};
use super::keys::{self, Family};
use super::rw::{self, Status};
use super::{ranged, EtcdStore, Shared, StoreError};
use crate::name::LockName;
use crate::store::{ClientNames, ExclusiveView, ReadView};
use std::collections::{BTreeMap, HashMap};

impl EtcdStore {
    /// The write-held and the read-held locks, from one read. The waiters
    /// of a line are listed in line order, an upgrading reader first.
    pub(super) fn exclusive_namespace(
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
                    token: keys::held_token(&kvs[0]),
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
}

impl Shared {
    /// The lines of a family (of one name if `filter` is not empty) and
    /// the registry, read at one revision.
    #[allow(clippy::type_complexity)]
    pub(super) fn snapshot(
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
    pub(super) fn names_of(
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
pub(super) fn registration(value: &[u8]) -> Option<ClientNames> {
    let newline = value.iter().position(|&b| b == b'\n')?;
    Some(ClientNames {
        default: value[..newline].into(),
        registered: Some(value[newline + 1..].into()),
    })
}
