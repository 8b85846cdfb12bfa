//! What a session answers when its store fails (issue 15), over a store
//! that fails every call: every verb, on protocol 2 and on a classic
//! connection, and whether the connection goes on.

use super::*;
use crate::store::etcd::client::EtcdError;
use crate::store::{ClientNames, Counts, ExclusiveView, ReadView, Released, SharedView};
use crossbeam_channel::Sender;

/// A store that fails every call that asks it something.
struct Failing {
    locks_lost: bool,
}

impl Failing {
    fn error<T>(&self) -> Result<T, StoreError> {
        Err(if self.locks_lost {
            StoreError::LocksLost
        } else {
            StoreError::Etcd(EtcdError::Unreachable {
                endpoints: vec!["e:1".into()],
                last: "refused".into(),
            })
        })
    }
}

impl LockStore for Failing {
    fn connect(&self, _: ClientId, _: Box<[u8]>, _: Sender<Grant>) {}
    fn disconnect(&self, _: ClientId) -> Released {
        Released::default()
    }
    fn lock_or_queue(&self, _: ClientId, _: &[u8], _: bool) -> Result<WaitStart, StoreError> {
        self.error()
    }
    fn release(&self, _: ClientId, _: &[u8]) -> Result<bool, StoreError> {
        self.error()
    }
    fn read_or_queue(&self, _: ClientId, _: &[u8], _: bool) -> Result<WaitStart, StoreError> {
        self.error()
    }
    fn release_read(&self, _: ClientId, _: &[u8]) -> Result<bool, StoreError> {
        self.error()
    }
    fn is_locked(&self, _: &[u8]) -> Result<bool, StoreError> {
        self.error()
    }
    fn token(&self, _: ClientId, _: &[u8]) -> Result<Option<u64>, StoreError> {
        self.error()
    }
    fn lock_shared(&self, _: ClientId, _: &[u8]) -> Result<usize, StoreError> {
        self.error()
    }
    fn lock_shared_or_queue(
        &self,
        _: ClientId,
        _: &[u8],
        _: u32,
        _: bool,
    ) -> Result<WaitStart, StoreError> {
        self.error()
    }
    fn release_shared(&self, _: ClientId, _: &[u8]) -> Result<bool, StoreError> {
        self.error()
    }
    fn shared_count(&self, _: &[u8]) -> Result<usize, StoreError> {
        self.error()
    }
    fn release_all(&self, _: ClientId) -> Result<Released, StoreError> {
        self.error()
    }
    fn cancel_wait(&self, _: ClientId) -> bool {
        true
    }
    fn register(&self, _: ClientId, _: &[u8]) -> Result<(), StoreError> {
        self.error()
    }
    fn names(&self, _: ClientId) -> Option<ClientNames> {
        None
    }
    fn registered(&self, _: &[u8]) -> Result<Vec<ClientNames>, StoreError> {
        self.error()
    }
    fn exclusive_locks(&self, _: &[u8]) -> Result<Vec<ExclusiveView>, StoreError> {
        self.error()
    }
    fn shared_locks(&self, _: &[u8]) -> Result<Vec<SharedView>, StoreError> {
        self.error()
    }
    fn read_locks(&self, _: &[u8]) -> Result<Vec<ReadView>, StoreError> {
        self.error()
    }
    fn counts(&self) -> Result<Counts, StoreError> {
        self.error()
    }
    fn watch(
        &self,
        _: ClientId,
        _: &[u8],
    ) -> Result<(Vec<WatchEvent>, Option<Watcher>), StoreError> {
        self.error()
    }
    fn token_marks(&self) -> (u64, Option<u64>) {
        (1, None)
    }
}

struct TestHost {
    store: Failing,
    stats: Stats,
    metrics: Metrics,
    settings: Settings,
}

impl Host for TestHost {
    fn store(&self) -> &dyn LockStore {
        &self.store
    }
    fn stats(&self) -> &Stats {
        &self.stats
    }
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    fn closing(&self) -> bool {
        false
    }
    fn settings(&self) -> &Settings {
        &self.settings
    }
    fn before_stats(&self) {}
}

fn session(locks_lost: bool, version: u32) -> Session {
    let host = TestHost {
        store: Failing { locks_lost },
        stats: Stats::default(),
        metrics: Metrics::new(&[]),
        settings: Settings {
            dump: true,
            registry: true,
            verbose: false,
            auth_secret: None,
            idle_timeout: None,
            max_connections: 10,
        },
    };
    let mut session = Session::new(Arc::new(host), 1, "10.0.0.1:5".into());
    session.version = version;
    session
}

/// The reply to `line` and whether the connection goes on, a listing
/// driven as the connection loop does.
fn run(session: &mut Session, line: &str) -> (String, bool) {
    let mut out = Vec::new();
    let goes_on = match session.execute(line.as_bytes(), &mut out, &mut || {}) {
        Step::Close(_) => false,
        Step::List(mut listing) => loop {
            match session.list(&mut listing, &mut out, 1) {
                Ok(true) => {}
                Ok(false) => break true,
                Err(_) => break false,
            }
        },
        _ => true,
    };
    (String::from_utf8(out).expect("utf-8"), goes_on)
}

const UNAVAILABLE: &str = "0 Error: cluster store unavailable: no etcd member answers at e:1: \
                           refused (is etcd running and reachable from here?)\n";

#[test]
fn protocol_2_hears_the_error_and_goes_on_while_its_locks_are_vouched_for() {
    let mut s = session(false, 2);
    for line in [
        "g x",
        "r x",
        "i x",
        "sg x",
        "sr x",
        "si x",
        "t x",
        "ra",
        "iam a",
        "wg 10 x",
        "wsg 10 2 x",
        "wr 10 x",
        "rr x",
        "dump",
        "dj",
        "watch x",
    ] {
        assert_eq!(run(&mut s, line), (UNAVAILABLE.to_string(), true), "{line}");
    }
    // Multi-line verbs close their block as usual.
    for line in ["d", "d x", "sd", "sd x", "who", "who a", "q"] {
        assert_eq!(
            run(&mut s, line),
            (format!("{UNAVAILABLE}\n"), true),
            "{line}"
        );
    }
}

#[test]
fn classic_gets_a_true_failure_reply_or_the_connection_ends() {
    let true_failures = [
        ("g x", "0 Lock Get Failure: x\n"),
        ("r x", "0 Lock Release Failure: x\n"),
        ("sg x", "0 Shared Lock Get Failure: x\n"),
        ("sr x", "0 Shared Lock Release Failure: x\n"),
        ("t x", "0 Lock Not Held: x\n"),
        ("wg 10 x", "0 Lock Get Timeout: x\n"),
        ("wsg 10 2 x", "0 Shared Lock Get Timeout: x\n"),
        ("wr 10 x", "0 Read Lock Get Timeout: x\n"),
        ("rr x", "0 Read Lock Release Failure: x\n"),
    ];
    let mut s = session(false, 1);
    for (line, reply) in true_failures {
        assert_eq!(run(&mut s, line), (reply.to_string(), true), "{line}");
    }
    // Any classic answer to these would claim to know the locks.
    for line in [
        "i x", "si x", "d", "d x", "sd x", "dump", "who", "q", "iam a", "ra",
    ] {
        let mut s = session(false, 1);
        assert_eq!(run(&mut s, line), (String::new(), false), "{line}");
    }
    // No wait timed out: the failures are not counted as timeouts.
    assert_eq!(s.host.stats().wait_timeouts.load(Ordering::Relaxed), 0);
}

#[test]
fn a_connection_whose_locks_are_lost_is_told_and_closed() {
    let lost = "0 Error: cluster lease lost: the locks of this connection are gone \
                (connect again)\n";
    for line in ["g x", "i x", "wg 10 x"] {
        let mut s = session(true, 2);
        assert_eq!(run(&mut s, line), (lost.to_string(), false), "{line}");
        let mut s = session(true, 1);
        assert!(!run(&mut s, line).1, "classic {line}");
    }
}
