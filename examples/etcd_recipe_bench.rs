//! The baseline for cluster mode's benchmark: clients taking locks with
//! etcd's own lock recipe (its `concurrency.Mutex`), straight against etcd,
//! through the same JSON gateway lockd uses.
//!
//! Each client holds a lease (its session). To lock NAME it puts
//! `NAME/<lease>` if absent and reads the line's first key in one
//! transaction; if it is not first it waits, through a watch, for the key
//! created just before its own to be deleted, and looks again. To unlock
//! it deletes its key. In W2 one lock and one unlock count as two
//! operations, as `g` and `r` do in `lockctl bench`; in W4 each grant
//! counts once, as in `lockctl bench` and `cluster_bench`.
//!
//! ```text
//! cargo run --release --example etcd_recipe_bench -- ENDPOINTS W1|W2|W4 CLIENTS SECONDS
//! cargo run --release --example etcd_recipe_bench -- 127.0.0.1:2379 W2 64 3
//! ```
//! W2 (W1 on one connection): every client on a lock of its own; W4: every
//! client on one lock.
//! `scripts/cluster-bench.sh` runs it beside `lockctl bench` on one etcd.

mod common;

use lockd::store::etcd::client::{
    Client, ClientConfig, Compare, Event, Op, OpResult, Order, Range, Relation, Target,
    WatchMessage,
};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args = match common::args("etcd_recipe_bench ENDPOINTS(H:P,...) W1|W2|W4 CLIENTS SECONDS") {
        Ok(args) => args,
        Err(code) => return code,
    };
    let (contended, clients, seconds) = (args.contended, args.clients, args.seconds);
    let client = Arc::new(Client::new(&ClientConfig {
        endpoints: args.targets.clone(),
        request_timeout: Duration::from_secs(5),
        watch_idle: Duration::from_secs(5),
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let (client, stop) = (Arc::clone(&client), Arc::clone(&stop));
            let name = if contended {
                "/recipe/W4/".to_string()
            } else {
                format!("/recipe/W2-{i}/")
            };
            std::thread::spawn(move || run(&client, &name, contended, &stop))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    common::report(
        &format!("etcd recipe {}", args.workload),
        clients,
        threads,
        start,
    )
}

/// Locks and unlocks `prefix` until `stop`; returns the time of each lock
/// and unlock, or with `grants_only` of each lock.
fn run(
    client: &Client,
    prefix: &str,
    grants_only: bool,
    stop: &AtomicBool,
) -> Result<Vec<Duration>, lockd::store::etcd::client::EtcdError> {
    let (lease, _) = client.lease_grant(60)?;
    let key = format!("{prefix}{lease:x}").into_bytes();
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let began = Instant::now();
        lock(client, prefix.as_bytes(), &key, lease)?;
        latencies.push(began.elapsed());
        let began = Instant::now();
        client.delete(&key, None)?;
        if !grants_only {
            latencies.push(began.elapsed());
        }
    }
    client.lease_revoke(lease)?;
    Ok(latencies)
}

/// The recipe's lock: put-if-absent plus the line's head in one txn, then
/// wait for each predecessor's delete.
fn lock(
    client: &Client,
    prefix: &[u8],
    key: &[u8],
    lease: i64,
) -> Result<(), lockd::store::etcd::client::EtcdError> {
    let absent = Compare {
        key: key.to_vec(),
        range_end: None,
        relation: Relation::Equal,
        target: Target::CreateRevision(0),
    };
    let line = Op::Range(Range::prefix(prefix, Order::Created));
    let put = Op::Put {
        key: key.to_vec(),
        value: Vec::new(),
        lease,
    };
    let txn = client.txn(&[absent], &[put, line.clone()], &[line])?;
    let mut kvs = match txn.results.last() {
        Some(OpResult::Range { kvs, .. }) => kvs.clone(),
        _ => Vec::new(),
    };
    loop {
        let Some(mine) = kvs.iter().position(|kv| kv.key == key) else {
            return Ok(());
        };
        if mine == 0 {
            return Ok(());
        }
        let before = &kvs[mine - 1];
        let mut watch = client.watch_prefix(&before.key, before.mod_revision + 1)?;
        'wait: loop {
            if let WatchMessage::Events { events, .. } = watch.next_message()? {
                for event in events {
                    if matches!(&event, Event::Delete { key, .. } if *key == before.key) {
                        break 'wait;
                    }
                }
            }
        }
        kvs = client.range(&Range::prefix(prefix, Order::Created))?.1;
    }
}
