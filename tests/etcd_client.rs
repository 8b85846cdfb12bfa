//! The blocking etcd client against a real three-member etcd (issue 15).

mod common;

use common::etcd::EtcdCluster;
use lockd::store::etcd::client::{
    Client, ClientConfig, Compare, EtcdError, Event, Op, OpResult, Order, Range, Relation, Target,
    Txn, WatchMessage,
};
use std::time::Duration;

fn client_of(endpoints: Vec<String>) -> Client {
    Client::new(&ClientConfig {
        endpoints,
        request_timeout: Duration::from_secs(2),
        watch_idle: Duration::from_secs(5),
    })
}

#[test]
fn put_range_delete_round_trip_bytes() {
    let etcd = EtcdCluster::start();
    let client = client_of(etcd.endpoints());
    let key = b"/t/a\0\xFF b".to_vec();
    let first = client.put(&key, b"v\x00\xFE", 0).expect("put");
    let second = client.put(b"/t/c", b"w", 0).expect("put");
    assert!(second > first, "revisions grow: {first} then {second}");
    let (revision, kvs) = client
        .range(&Range::prefix(b"/t/", Order::Created))
        .expect("range");
    assert_eq!(revision, second);
    assert_eq!(kvs.len(), 2);
    assert_eq!(kvs[0].key, key);
    assert_eq!(kvs[0].value, b"v\x00\xFE".to_vec());
    assert_eq!(kvs[0].create_revision, first);
    assert_eq!(kvs[1].key, b"/t/c".to_vec());
    assert_eq!(client.delete(&key, None).expect("delete"), 1);
    assert_eq!(client.delete(&key, None).expect("delete"), 0);
    let (_, kvs) = client
        .range(&Range::prefix(b"/t/", Order::Key))
        .expect("range");
    assert_eq!(kvs.len(), 1);
}

#[test]
fn txn_compares_a_whole_range_and_runs_one_branch() {
    let etcd = EtcdCluster::start();
    let client = client_of(etcd.endpoints());
    let prefix = b"/t/lock/".to_vec();
    let nobody_there = Compare {
        key: prefix.clone(),
        range_end: Some(lockd::store::etcd::client::prefix_end(&prefix)),
        relation: Relation::Equal,
        target: Target::CreateRevision(0),
    };
    let take = |me: &[u8]| {
        let mut key = prefix.clone();
        key.extend_from_slice(me);
        client
            .txn(
                std::slice::from_ref(&nobody_there),
                &[Op::Put {
                    key,
                    value: me.to_vec(),
                    lease: 0,
                }],
                &[Op::Range(Range {
                    limit: 1,
                    ..Range::prefix(&prefix, Order::Created)
                })],
            )
            .expect("txn")
    };
    let a = take(b"a");
    assert!(a.succeeded);
    assert!(matches!(a.results[..], [OpResult::Put]));
    let b = take(b"b");
    assert!(!b.succeeded);
    match &b.results[..] {
        [OpResult::Range { kvs, count }] => {
            assert_eq!(*count, 1);
            assert_eq!(kvs[0].value, b"a".to_vec());
            assert_eq!(kvs[0].create_revision, a.revision);
        }
        other => panic!("failure branch: {other:?}"),
    }
}

#[test]
fn keys_on_a_revoked_lease_vanish_and_keepalive_then_fails() {
    let etcd = EtcdCluster::start();
    let client = client_of(etcd.endpoints());
    let (lease, ttl) = client.lease_grant(5).expect("grant");
    assert_eq!(ttl, 5);
    client.put(b"/t/leased", b"x", lease).expect("put on lease");
    assert_eq!(client.lease_keep_alive(lease).expect("keepalive"), 5);
    client.lease_revoke(lease).expect("revoke");
    let (_, kvs) = client
        .range(&Range::prefix(b"/t/", Order::Key))
        .expect("range");
    assert!(kvs.is_empty(), "leased key survived: {kvs:?}");
    let err = client.lease_keep_alive(lease).expect_err("dead lease");
    assert!(err.is_not_found(), "{err}");
    let err = client.put(b"/t/late", b"x", lease).expect_err("dead lease");
    assert!(err.is_not_found(), "{err}");
}

#[test]
fn watch_streams_puts_and_deletes_from_a_revision() {
    let etcd = EtcdCluster::start();
    let client = client_of(etcd.endpoints());
    let before = client.put(b"/w/a", b"1", 0).expect("put");
    client.delete(b"/w/a", None).expect("delete");
    client.put(b"/other", b"x", 0).expect("put");
    let mut watch = client.watch_prefix(b"/w/", before).expect("watch");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match watch.next_message().expect("message") {
            WatchMessage::Created { .. } => {
                if seen.is_empty() {
                    client.put(b"/w/b", b"2", 0).expect("put");
                }
            }
            WatchMessage::Events { events, .. } => seen.extend(events),
            WatchMessage::Cancelled { .. } => panic!("cancelled"),
        }
    }
    assert!(matches!(&seen[0], Event::Put(kv) if kv.key == b"/w/a"));
    assert!(matches!(&seen[1], Event::Delete { key, .. } if key == b"/w/a"));
    assert!(matches!(&seen[2], Event::Put(kv) if kv.key == b"/w/b" && kv.value == b"2"));
}

#[test]
fn requests_fail_over_to_a_live_member() {
    let mut etcd = EtcdCluster::start();
    let client = client_of(etcd.endpoints());
    client.put(b"/f/a", b"1", 0).expect("put");
    etcd.kill(0);
    client
        .put(b"/f/b", b"2", 0)
        .expect("put after a member died");
    let (_, kvs) = client
        .range(&Range::prefix(b"/f/", Order::Key))
        .expect("range");
    assert_eq!(kvs.len(), 2);
}

#[test]
fn no_member_up_is_an_unreachable_error_naming_the_endpoints() {
    let mut etcd = EtcdCluster::start();
    let endpoints = etcd.endpoints();
    for i in 0..common::etcd::MEMBERS {
        etcd.kill(i);
    }
    let client = client_of(endpoints.clone());
    let err = client.put(b"/x", b"1", 0).expect_err("nobody up");
    assert!(err.is_unreachable(), "{err}");
    let text = err.to_string();
    assert!(text.contains(&endpoints.join(",")), "{text}");
}

/// What group commit relies on: nested transactions each keep their own
/// compare, all apply at one revision, reads see the writes before them,
/// and etcd refuses the whole request when two of them write one key.
#[test]
fn nested_transactions_keep_their_own_compares_and_share_one_revision() {
    let etcd = EtcdCluster::start();
    let client = client_of(etcd.endpoints());
    let taken = client.put(b"/t/a/holder", b"", 0).expect("put");
    let put_if_free = |lock: &[u8], me: &[u8]| {
        let mut key = lock.to_vec();
        key.extend_from_slice(me);
        Txn {
            compares: vec![Compare {
                key: lock.to_vec(),
                range_end: Some(lockd::store::etcd::client::prefix_end(lock)),
                relation: Relation::Equal,
                target: Target::CreateRevision(0),
            }],
            success: vec![Op::Put {
                key,
                value: Vec::new(),
                lease: 0,
            }],
            failure: vec![Op::Range(Range::prefix(lock, Order::Created))],
        }
    };
    let read_b = Txn {
        success: vec![Op::Range(Range::prefix(b"/t/b/", Order::Created))],
        ..Txn::default()
    };
    let answers = client
        .txns(&[
            put_if_free(b"/t/a/", b"me"),
            put_if_free(b"/t/b/", b"me"),
            read_b,
            put_if_free(b"/t/c/", b"me"),
        ])
        .expect("txns");
    assert_eq!(answers.len(), 4);
    assert!(!answers[0].succeeded, "a is taken: its failure branch ran");
    match &answers[0].results[..] {
        [OpResult::Range { kvs, .. }] => assert_eq!(kvs[0].create_revision, taken),
        other => panic!("a's head: {other:?}"),
    }
    assert!(answers[1].succeeded && answers[3].succeeded);
    let revision = answers[1].revision;
    assert!(revision > taken);
    assert!(answers.iter().all(|a| a.revision == revision));
    match &answers[2].results[..] {
        [OpResult::Range { kvs, .. }] => {
            assert_eq!(kvs.len(), 1, "a read sees the writes nested before it");
            assert_eq!(kvs[0].create_revision, revision);
        }
        other => panic!("b's line: {other:?}"),
    }
    let twice = client.txns(&[put_if_free(b"/t/d/", b"x"), put_if_free(b"/t/d/", b"x")]);
    assert!(
        matches!(twice, Err(EtcdError::Status { code: 3, .. })),
        "one key written twice: the whole request is refused: {twice:?}"
    );
    let (_, kvs) = client
        .range(&Range::prefix(b"/t/d/", Order::Key))
        .expect("range");
    assert!(kvs.is_empty(), "nothing of a refused request is applied");
}
