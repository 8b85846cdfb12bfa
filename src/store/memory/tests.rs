use super::*;
use crate::store::limits::LimitCounts;
use crossbeam_channel::{bounded, Receiver};

fn table() -> Table {
    Table::new(TokenCounter::in_memory())
}

fn join(table: &Table, id: ClientId) -> Receiver<Grant> {
    let (tx, rx) = bounded(1);
    table.connect(id, format!("c{id}").into_bytes().into(), tx);
    rx
}

fn empty(t: &Table) -> bool {
    let c = t.counts().unwrap();
    c.locks + c.read_locks + c.shared_locks + c.waiting == 0 && t.inner.read().locks.is_empty()
}

#[test]
fn exclusive_lock_and_tokens() {
    let t = table();
    let _a = join(&t, 1);
    let _b = join(&t, 2);
    let first = t.try_lock(1, b"x").expect("free");
    assert_eq!(t.try_lock(1, b"x"), Some(first), "re-get keeps its token");
    assert_eq!(t.try_lock(2, b"x"), None);
    assert!(!t.release(2, b"x").unwrap());
    assert!(t.release(1, b"x").unwrap());
    let second = t.try_lock(2, b"x").expect("free again");
    assert!(second > first);
    assert_eq!(t.counts().unwrap().locks, 1);
}

#[test]
fn handoff_in_order_and_on_disconnect() {
    let t = table();
    let _a = join(&t, 1);
    let b = join(&t, 2);
    let c = join(&t, 3);
    t.try_lock(1, b"x").expect("free");
    assert_eq!(t.lock_or_queue(2, b"x", true).unwrap(), WaitStart::Queued);
    assert_eq!(t.lock_or_queue(3, b"x", true).unwrap(), WaitStart::Queued);
    assert_eq!(t.counts().unwrap().waiting, 2);
    assert_eq!(
        t.disconnect(1),
        Released {
            exclusive: 1,
            ..Released::default()
        }
    );
    assert!(matches!(b.try_recv(), Ok(Grant::Exclusive { .. })));
    assert!(c.try_recv().is_err());
    assert!(t.token(2, b"x").unwrap().is_some());
    t.disconnect(3);
    assert_eq!(t.counts().unwrap().waiting, 0);
    assert!(t.release(2, b"x").unwrap());
    assert!(empty(&t));
}

#[test]
fn deadlock_cycle_refused_chain_allowed() {
    let t = table();
    let rx: Vec<_> = (1..=3).map(|id| join(&t, id)).collect();
    t.try_lock(1, b"a").expect("free");
    t.try_lock(2, b"b").expect("free");
    t.try_lock(3, b"c").expect("free");
    assert_eq!(t.lock_or_queue(1, b"b", true).unwrap(), WaitStart::Queued);
    assert_eq!(t.lock_or_queue(2, b"c", true).unwrap(), WaitStart::Queued);
    assert_eq!(t.lock_or_queue(3, b"a", true).unwrap(), WaitStart::Deadlock);
    assert!(t.cancel_wait(2));
    assert_eq!(t.lock_or_queue(3, b"a", true).unwrap(), WaitStart::Queued);
    drop(rx);
}

#[test]
fn semaphore_limit_and_order() {
    let t = table();
    let rx: Vec<_> = (1..=4).map(|id| join(&t, id)).collect();
    let grant = |holders| WaitStart::Granted(Grant::Shared { holders });
    assert_eq!(t.lock_shared_or_queue(1, b"s", 2, true).unwrap(), grant(1));
    assert_eq!(t.lock_shared_or_queue(2, b"s", 2, true).unwrap(), grant(2));
    assert_eq!(
        t.lock_shared_or_queue(3, b"s", 2, true).unwrap(),
        WaitStart::Queued
    );
    assert_eq!(
        t.lock_shared_or_queue(4, b"s", 3, false).unwrap(),
        WaitStart::Busy
    );
    assert!(t.release_shared(1, b"s").unwrap());
    assert_eq!(rx[2].try_recv(), Ok(Grant::Shared { holders: 2 }));
    assert_eq!(t.shared_count(b"s").unwrap(), 2);
    assert!(!t.cancel_wait(3));
    t.disconnect(2);
    t.disconnect(3);
    assert!(empty(&t));
}

#[test]
fn registry_order() {
    let t = table();
    let _rx: Vec<_> = (1..=3).map(|id| join(&t, id)).collect();
    t.register(2, b"x").unwrap();
    t.register(1, b"y").unwrap();
    t.register(2, b"x").unwrap();
    let who: Vec<_> = t
        .registered(b"")
        .unwrap()
        .into_iter()
        .map(|n| n.default)
        .collect();
    assert_eq!(who, vec![b"c1"[..].into(), b"c2"[..].into()]);
    t.register(1, b"").unwrap();
    assert_eq!(t.registered(b"").unwrap().len(), 1);
    assert_eq!(t.registered(b"y").unwrap().len(), 0);
}

fn read(readers: usize) -> WaitStart {
    WaitStart::Granted(Grant::Read { readers })
}

#[test]
fn readers_share_and_exclude_writers() {
    let t = table();
    let rx: Vec<_> = (1..=3).map(|id| join(&t, id)).collect();
    assert_eq!(t.read_or_queue(1, b"x", false).unwrap(), read(1));
    assert_eq!(
        t.read_or_queue(1, b"x", false).unwrap(),
        read(1),
        "not counted twice"
    );
    assert_eq!(t.read_or_queue(2, b"x", false).unwrap(), read(2));
    assert!(t.is_locked(b"x").unwrap());
    assert_eq!(t.try_lock(3, b"x"), None);
    assert_eq!(t.counts().unwrap().read_locks, 1);
    assert_eq!(t.counts().unwrap().locks, 0);
    assert!(
        t.exclusive_locks(b"").unwrap().is_empty(),
        "d lists writers only"
    );
    assert_eq!(t.read_locks(b"x").unwrap()[0].readers.len(), 2);
    assert!(!t.release_read(3, b"x").unwrap());
    assert!(t.release_read(1, b"x").unwrap());
    assert!(t.release_read(2, b"x").unwrap());
    assert!(!t.is_locked(b"x").unwrap());
    let token = t.try_lock(3, b"x").expect("free");
    assert_eq!(t.read_or_queue(1, b"x", false).unwrap(), WaitStart::Busy);
    assert_eq!(
        t.read_or_queue(3, b"x", true).unwrap(),
        WaitStart::Deadlock,
        "own writer"
    );
    assert_eq!(t.token(3, b"x").unwrap(), Some(token));
    drop(rx);
}

#[test]
fn one_line_serves_a_writer_or_the_readers_up_to_the_next_writer() {
    let t = table();
    let rx: Vec<_> = (1..=6).map(|id| join(&t, id)).collect();
    t.try_lock(1, b"x").expect("free");
    assert_eq!(t.read_or_queue(2, b"x", true).unwrap(), WaitStart::Queued);
    assert_eq!(t.read_or_queue(3, b"x", true).unwrap(), WaitStart::Queued);
    assert_eq!(t.lock_or_queue(4, b"x", true).unwrap(), WaitStart::Queued);
    assert_eq!(t.read_or_queue(5, b"x", true).unwrap(), WaitStart::Queued);
    assert!(t.release(1, b"x").unwrap());
    assert_eq!(rx[1].try_recv(), Ok(Grant::Read { readers: 1 }));
    assert_eq!(rx[2].try_recv(), Ok(Grant::Read { readers: 2 }));
    assert!(rx[3].try_recv().is_err() && rx[4].try_recv().is_err());
    // No writer starvation: a newcomer reader queues behind the writer.
    assert_eq!(t.read_or_queue(6, b"x", false).unwrap(), WaitStart::Busy);
    assert!(t.release_read(2, b"x").unwrap());
    assert!(rx[3].try_recv().is_err());
    t.disconnect(3);
    assert!(matches!(rx[3].try_recv(), Ok(Grant::Exclusive { .. })));
    assert!(t.release(4, b"x").unwrap());
    assert_eq!(rx[4].try_recv(), Ok(Grant::Read { readers: 1 }));
    assert_eq!(
        t.release_all(5).unwrap(),
        Released {
            read: 1,
            ..Released::default()
        }
    );
    assert!(empty(&t));
}

#[test]
fn a_writer_leaving_the_head_of_the_line_lets_readers_in() {
    let t = table();
    let rx: Vec<_> = (1..=3).map(|id| join(&t, id)).collect();
    assert_eq!(t.read_or_queue(1, b"x", false).unwrap(), read(1));
    assert_eq!(t.lock_or_queue(2, b"x", true).unwrap(), WaitStart::Queued);
    assert_eq!(t.read_or_queue(3, b"x", true).unwrap(), WaitStart::Queued);
    assert!(t.cancel_wait(2));
    assert_eq!(rx[2].try_recv(), Ok(Grant::Read { readers: 2 }));
    t.disconnect(1);
    t.disconnect(3);
    assert!(empty(&t));
}

#[test]
fn upgrade_from_a_read_hold() {
    let t = table();
    let rx: Vec<_> = (1..=4).map(|id| join(&t, id)).collect();
    // The only reader upgrades at once, even with `g`.
    assert_eq!(t.read_or_queue(1, b"x", false).unwrap(), read(1));
    let token = t.try_lock(1, b"x").expect("upgrade");
    assert_eq!(t.counts().unwrap().read_locks, 0);
    assert!(t.release(1, b"x").unwrap());
    assert!(
        !t.release_read(1, b"x").unwrap(),
        "the read hold became the write hold"
    );
    // With another reader, the upgrader waits at the head of the line.
    assert_eq!(t.read_or_queue(1, b"x", false).unwrap(), read(1));
    assert_eq!(t.read_or_queue(2, b"x", false).unwrap(), read(2));
    assert_eq!(t.lock_or_queue(3, b"x", true).unwrap(), WaitStart::Queued);
    assert_eq!(t.lock_or_queue(1, b"x", true).unwrap(), WaitStart::Queued);
    // A second upgrader closes a cycle.
    assert_eq!(t.lock_or_queue(2, b"x", true).unwrap(), WaitStart::Deadlock);
    assert!(t.release_read(2, b"x").unwrap());
    match rx[0].try_recv() {
        Ok(Grant::Exclusive { token: t2 }) => assert!(t2 > token),
        other => panic!("{other:?}"),
    }
    assert!(rx[2].try_recv().is_err());
    assert_eq!(t.release_all(1).unwrap().total(), 1);
    assert!(matches!(rx[2].try_recv(), Ok(Grant::Exclusive { .. })));
    t.disconnect(3);
    assert!(empty(&t));
}

#[test]
fn cycles_through_read_holds_and_full_semaphores() {
    let t = table();
    let _rx: Vec<_> = (1..=4).map(|id| join(&t, id)).collect();
    // 1 reads a; 2 waits to write a (depends on 1).
    assert_eq!(t.read_or_queue(1, b"a", false).unwrap(), read(1));
    t.try_lock(2, b"b").expect("free");
    assert_eq!(t.lock_or_queue(2, b"a", true).unwrap(), WaitStart::Queued);
    // 1 asking for b (held by 2) closes 1 -> 2 -> 1.
    assert_eq!(t.lock_or_queue(1, b"b", true).unwrap(), WaitStart::Deadlock);
    assert_eq!(t.read_or_queue(1, b"b", true).unwrap(), WaitStart::Deadlock);
    // Through a full semaphore: 3 holds s (limit 1) and waits for b.
    assert_eq!(
        t.lock_shared_or_queue(3, b"s", 1, false).unwrap(),
        WaitStart::Granted(Grant::Shared { holders: 1 })
    );
    assert_eq!(t.read_or_queue(3, b"b", true).unwrap(), WaitStart::Queued);
    // 1 -> s (held by 3) -> b (held by 2) -> a (read by 1): length 3.
    assert_eq!(
        t.lock_shared_or_queue(1, b"s", 1, true).unwrap(),
        WaitStart::Deadlock
    );
    // 4 holds nothing anyone waits for: no cycle, it just waits.
    assert_eq!(
        t.lock_shared_or_queue(4, b"s", 1, true).unwrap(),
        WaitStart::Queued
    );
    assert_eq!(t.counts().unwrap().waiting, 3);
}

#[test]
fn caps_refuse_and_change_nothing() {
    let t = Table::with_limits(
        TokenCounter::in_memory(),
        Limits {
            max_locks: 3,
            max_locks_per_connection: 2,
            max_waiters: 1,
        },
    );
    let _rx: Vec<_> = (1..=4).map(|id| join(&t, id)).collect();
    let limit = |hit, cap| WaitStart::Limit(LimitError { hit, cap });
    t.try_lock(1, b"a").expect("free");
    assert_eq!(t.read_or_queue(1, b"b", false).unwrap(), read(1));
    // Per connection: a third lock, a place in a line, an sg.
    assert_eq!(
        t.lock_or_queue(1, b"c", false).unwrap(),
        limit(LimitHit::LocksPerConnection, 2)
    );
    assert_eq!(
        t.try_lock(1, b"a").map(|_| ()),
        Some(()),
        "a re-get is no new lock"
    );
    assert!(matches!(
        t.lock_shared(1, b"s"),
        Err(StoreError::Limit(LimitError {
            hit: LimitHit::LocksPerConnection,
            cap: 2
        }))
    ));
    // The whole table: a third name is fine, a fourth is not.
    assert_eq!(
        t.lock_shared_or_queue(2, b"s", 0, false).unwrap(),
        WaitStart::Granted(Grant::Shared { holders: 1 })
    );
    assert_eq!(
        t.read_or_queue(2, b"d", true).unwrap(),
        limit(LimitHit::Locks, 3)
    );
    assert_eq!(
        t.read_or_queue(2, b"b", false).unwrap(),
        read(2),
        "an existing name"
    );
    // Waiters: one in line, the second refused.
    assert_eq!(t.lock_or_queue(3, b"a", true).unwrap(), WaitStart::Queued);
    assert_eq!(
        t.lock_or_queue(4, b"a", true).unwrap(),
        limit(LimitHit::Waiters, 1)
    );
    let c = t.counts().unwrap();
    assert_eq!(
        (c.locks, c.read_locks, c.shared_locks, c.waiting),
        (1, 1, 1, 1)
    );
    assert_eq!(
        c.refused,
        LimitCounts {
            locks: 1,
            locks_per_connection: 2,
            waiters: 1
        }
    );
    assert!(t.exclusive_locks(b"c").unwrap().is_empty() && t.read_locks(b"d").unwrap().is_empty());
}

fn line(e: &WatchEvent) -> String {
    let event = format!("{:?}", e.event).to_lowercase();
    let kind = match e.kind {
        HoldKind::Exclusive => "x",
        HoldKind::Shared => "s",
        HoldKind::Read => "rd",
    };
    let holder = String::from_utf8_lossy(&e.holder);
    format!("{event} {kind} {} {holder} {}", e.n, e.name)
}

#[test]
fn watch_snapshot_then_events_in_order() {
    let t = table();
    let _rx: Vec<_> = (1..=4).map(|id| join(&t, id)).collect();
    let token = t.try_lock(1, b"a1").expect("free");
    assert_eq!(t.read_or_queue(2, b"a2", false).unwrap(), read(1));
    assert_eq!(t.read_or_queue(3, b"a2", false).unwrap(), read(2));
    t.lock_shared(2, b"a3").expect("no cap");
    t.try_lock(2, b"b").expect("free");
    let (held, watcher) = t.watch(4, b"a*").unwrap();
    let held: Vec<String> = held.iter().map(line).collect();
    assert_eq!(
        held,
        [
            format!("held x {token} c1 a1"),
            "held rd 1 c2 a2".into(),
            "held rd 2 c3 a2".into(),
            "held s 1 c2 a3".into(),
        ]
    );
    let watcher = watcher.expect("first pattern");
    let (more, again) = t.watch(4, b"b").unwrap();
    assert_eq!(more.len(), 1);
    assert!(again.is_none(), "one queue per client");
    assert!(t.release(1, b"a1").unwrap());
    assert_eq!(t.lock_or_queue(1, b"a2", true).unwrap(), WaitStart::Queued);
    assert_eq!(t.release_all(3).unwrap().total(), 1);
    t.disconnect(2);
    t.lock_shared(1, b"zzz").expect("no cap");
    let got: Vec<String> = watcher.events.try_iter().map(|e| line(&e)).collect();
    // b drew the second token, so c1's write grant on a2 the third.
    let t2 = token + 2;
    assert_eq!(
        got[..2],
        [
            format!("released x {token} c1 a1"),
            "released rd 1 c3 a2".to_string()
        ]
    );
    // c2 leaves: its read hold goes, which lets c1 write; the rest of its
    // locks go in the table's order.
    let rest = &got[2..];
    assert!(
        rest.contains(&"orphaned rd 0 c2 a2".to_string()),
        "{rest:?}"
    );
    assert!(rest.contains(&format!("locked x {t2} c1 a2")), "{rest:?}");
    assert!(rest.contains(&"orphaned s 0 c2 a3".to_string()), "{rest:?}");
    assert!(rest
        .iter()
        .any(|l| l.starts_with("orphaned x ") && l.ends_with(" c2 b")));
    let orphaned = rest.iter().position(|l| l == "orphaned rd 0 c2 a2");
    let locked = rest
        .iter()
        .position(|l| *l == format!("locked x {t2} c1 a2"));
    assert!(orphaned < locked, "{rest:?}");
    assert_eq!(rest.len(), 4, "nothing for zzz: {rest:?}");
    assert!(!watcher.overflowed());
}

#[test]
fn a_watcher_that_falls_behind_is_dropped_and_the_table_goes_on() {
    let t = table();
    let _rx: Vec<_> = (1..=2).map(|id| join(&t, id)).collect();
    let (_, watcher) = t.watch(2, b"*").unwrap();
    let watcher = watcher.expect("queue");
    for _ in 0..WATCH_QUEUE / 2 {
        t.try_lock(1, b"x").expect("free");
        assert!(t.release(1, b"x").unwrap());
    }
    assert!(!watcher.overflowed());
    t.try_lock(1, b"x").expect("free");
    assert!(watcher.overflowed());
    assert_eq!(watcher.events.len(), WATCH_QUEUE);
    assert!(t.release(1, b"x").unwrap());
    assert!(t.inner.read().watchers.is_empty());
}

/// Pages of `exclusive_page` (and `shared_page`) from the first to the
/// last, with `between` run after each: the names listed, in order.
fn all_pages(t: &Table, shared: bool, mut between: impl FnMut(usize)) -> Vec<LockName> {
    let mut listed = Vec::new();
    let mut after: Option<LockName> = None;
    for page_no in 0.. {
        let next = if shared {
            let page = t
                .shared_page(after.as_ref().map(LockName::as_bytes))
                .unwrap();
            listed.extend(page.items.into_iter().map(|l| l.name));
            page.next
        } else {
            let page = t
                .exclusive_page(after.as_ref().map(LockName::as_bytes))
                .unwrap();
            listed.extend(page.items.into_iter().map(|l| l.name));
            page.next
        };
        between(page_no);
        match next {
            Some(name) => after = Some(name),
            None => break,
        }
    }
    listed
}

#[test]
fn listings_page_a_big_namespace_in_order_and_miss_no_steady_lock() {
    let t = table();
    let _a = join(&t, 1);
    let _b = join(&t, 2);
    let n = 3 * PAGE + 17;
    let name = |i: usize| LockName::from(format!("k{i:06}").as_str());
    for i in 0..n {
        t.try_lock(1, name(i).as_bytes()).expect("free");
        assert_eq!(t.lock_shared(1, name(i).as_bytes()).unwrap(), 1);
    }
    assert!(t.inner.read().lock_index.is_built());
    let expected: Vec<LockName> = (0..n).map(name).collect();
    assert_eq!(all_pages(&t, false, |_| {}), expected);
    assert_eq!(all_pages(&t, true, |_| {}), expected);
    let whole: Vec<LockName> = t
        .exclusive_locks(b"")
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(whole, expected, "the whole listing is its pages end to end");

    // Between pages, client 2 takes and drops names before and after the
    // cursor: every name held throughout is listed once, in order.
    let listed = all_pages(&t, false, |page| {
        for i in 0..50 {
            let churn = format!("k{:06}x{page}", i * (n / 50));
            t.try_lock(2, churn.as_bytes()).expect("free");
        }
        t.release_all(2).unwrap();
    });
    let steady: Vec<&LockName> = listed
        .iter()
        .filter(|l| !l.as_bytes().contains(&b'x'))
        .collect();
    assert_eq!(steady, expected.iter().collect::<Vec<_>>());
    assert!(listed.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");

    // Back under the threshold, the index goes, and a page is the rest.
    t.release_all(1).unwrap();
    assert!(!t.inner.read().lock_index.is_built());
    t.try_lock(1, b"b").expect("free");
    t.try_lock(1, b"a").expect("free");
    let names = all_pages(&t, false, |_| {});
    assert_eq!(names, [LockName::from("a"), LockName::from("b")]);
    let rest = t.exclusive_page(Some(b"a")).unwrap();
    assert_eq!((rest.items.len(), rest.next), (1, None));
}

#[test]
fn who_pages_by_registration_and_forgets_the_departed() {
    let t = table();
    for id in 1..=3 {
        let _ = join(&t, id);
    }
    t.register(2, b"second").unwrap();
    t.register(1, b"first").unwrap();
    t.register(3, b"third").unwrap();
    t.register(2, b"again").unwrap();
    t.disconnect(3);
    let page = t.registered_page(0).unwrap();
    let names: Vec<_> = page.items.iter().map(|c| c.display().to_vec()).collect();
    assert_eq!(names, [b"first".to_vec(), b"again".to_vec()]);
    assert_eq!(page.next, None);
    t.register(1, b"").unwrap();
    assert_eq!(t.registered_page(0).unwrap().items.len(), 1);
}
