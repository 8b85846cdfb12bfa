//! Issue 3: the classic protocol under load: long pipelines and many
//! concurrent clients, checked against a model. Seeds are printed; rerun
//! a failure with `LOCKD_TEST_SEED=<seed>`.

mod common;
use common::{assert_bytes, Conn, Rng, TestServer};
use parking_lot::{Condvar, Mutex};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{Read, Write};

use std::time::{Duration, Instant};

/// Pipelining: 10,000 commands sent in one write get all 10,000 replies,
/// in order, byte for byte, and nothing else.
#[test]
fn ten_thousand_pipelined_commands_in_one_write() {
    let server = TestServer::start();
    let mut conn = server.connect();
    let me = conn.name();
    let mut rng = Rng::from_env("ten_thousand_pipelined_commands_in_one_write");
    let mut held = HashSet::new();
    let mut shared = HashSet::new();
    let (mut batch, mut want) = (Vec::new(), Vec::new());
    for _ in 0..10_000 {
        let name = format!("k{}", rng.below(20));
        let (command, reply) = match rng.below(7) {
            0 => {
                held.insert(name.clone());
                ("g", format!("1 Lock Get Success: {name}\n"))
            }
            1 if held.remove(&name) => ("r", format!("1 Lock Release Success: {name}\n")),
            1 => ("r", format!("0 Lock Release Failure: {name}\n")),
            2 if held.contains(&name) => ("i", format!("1 Lock Is Locked: {name}\n")),
            2 => ("i", format!("0 Lock Not Locked: {name}\n")),
            3 => {
                shared.insert(name.clone());
                ("sg", format!("1 Shared Lock Get Success: {name}\n"))
            }
            4 if shared.remove(&name) => ("sr", format!("1 Shared Lock Release Success: {name}\n")),
            4 => ("sr", format!("0 Shared Lock Release Failure: {name}\n")),
            5 if shared.contains(&name) => ("si", format!("1 Shared Lock Is Locked: {name}\n")),
            5 => ("si", format!("0 Shared Lock Not Locked: {name}\n")),
            _ if held.contains(&name) => ("d", format!("{name}: {me}\n")),
            _ => ("d", String::new()),
        };
        batch.extend_from_slice(format!("{command} {name}\n").as_bytes());
        want.extend_from_slice(reply.as_bytes());
    }
    // Write from another thread, so that neither side can block the other
    // on full socket buffers; the batch still goes out in one write call.
    let mut writer = conn.tcp_stream().try_clone().expect("clone socket");
    let sender = std::thread::spawn(move || writer.write_all(&batch));
    let mut got = vec![0; want.len()];
    conn.reader.read_exact(&mut got).expect("all replies");
    sender.join().expect("writer thread").expect("write batch");
    assert_bytes(&got, &want);
    assert_bytes(conn.multi(b""), b"");
    assert_eq!(conn.stat("command_q"), 0);
    assert_eq!(conn.stat("locks"), held.len() as u64);
    assert_eq!(conn.stat("shared_locks"), shared.len() as u64);
}

/// What the clients of the concurrency test believe the table holds.
/// Releases are removed from it before they are sent and grants added
/// after they are answered, so a correct server can never make a client
/// see a lock the model still gives to someone else.
#[derive(Default)]
struct Model {
    exclusive: BTreeMap<String, String>,
    shared: BTreeMap<String, BTreeSet<String>>,
}

impl Model {
    fn d_lines(&self) -> Vec<Vec<u8>> {
        let mut lines: Vec<Vec<u8>> = self
            .exclusive
            .iter()
            .map(|(name, holder)| format!("{name}: {holder}\n").into_bytes())
            .collect();
        lines.sort();
        lines
    }

    fn sd_lines(&self) -> Vec<Vec<u8>> {
        let mut lines: Vec<Vec<u8>> = self
            .shared
            .iter()
            .flat_map(|(name, holders)| {
                holders
                    .iter()
                    .map(move |h| format!("{name}: {h}\n").into_bytes())
            })
            .collect();
        lines.sort();
        lines
    }
}

/// A barrier that fails the test instead of hanging when a thread died.
struct Rendezvous {
    parties: usize,
    state: Mutex<(usize, u64)>,
    all_here: Condvar,
}

impl Rendezvous {
    fn wait(&self) {
        let mut state = self.state.lock();
        let generation = state.1;
        state.0 += 1;
        if state.0 == self.parties {
            *state = (0, generation + 1);
            self.all_here.notify_all();
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while state.1 == generation {
            let timed_out = self.all_here.wait_until(&mut state, deadline).timed_out();
            assert!(
                !timed_out || state.1 != generation,
                "a client thread did not reach the checkpoint"
            );
        }
    }
}

const THREADS: usize = 32;
const OPS: usize = 1000;
const CHECK_EVERY: usize = 250;
const NAMES: u64 = 5;

/// Checks `d` and `sd` against the model at once (a disconnected client's
/// orphans are released before any later command is served), then `si` of
/// every name against the model's holder count.
fn check_against_model(conn: &mut Conn, model: &Mutex<Model>) {
    let model = model.lock();
    // A client that just disconnected must already be reaped: the server
    // orphans hung-up peers before serving new input.
    let (d, sd) = (conn.multi_sorted(b"d"), conn.multi_sorted(b"sd"));
    assert!(
        d == model.d_lines() && sd == model.sd_lines(),
        "table and model differ:\nd {d:?}\nmodel {:?}\nsd {sd:?}\nmodel {:?}",
        model.d_lines(),
        model.sd_lines()
    );
    for n in 0..NAMES {
        let name = format!("n{n}");
        let holders = model.shared.get(&name).map_or(0, BTreeSet::len);
        let want = match holders {
            0 => format!("0 Shared Lock Not Locked: {name}\n"),
            n => format!("{n} Shared Lock Is Locked: {name}\n"),
        };
        assert_eq!(conn.cmd(&format!("si {name}")), want);
    }
}

/// One client of the concurrency test: random `g`/`r`/`sg`/`sr`/`i`/`si`
/// and disconnects (FIN or RST) on a handful of names.
fn client(server: &TestServer, id: usize, seed: u64, model: &Mutex<Model>, meet: &Rendezvous) {
    let mut rng = Rng::new(seed ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut conn = server.connect();
    let mut me = conn.name();
    let mut held: HashSet<String> = HashSet::new();
    let mut shared: HashSet<String> = HashSet::new();
    for op in 1..=OPS {
        let name = format!("n{}", rng.below(NAMES));
        match rng.below(100) {
            0..=29 => {
                let reply = conn.cmd(&format!("g {name}"));
                if reply == format!("1 Lock Get Success: {name}\n") {
                    let mut model = model.lock();
                    let holder = model.exclusive.insert(name.clone(), me.clone());
                    assert!(
                        holder.is_none() || holder.as_ref() == Some(&me),
                        "{me} got {name}, held by {holder:?}"
                    );
                    assert_eq!(holder.is_some(), held.contains(&name));
                    held.insert(name);
                } else {
                    assert_eq!(reply, format!("0 Lock Get Failure: {name}\n"));
                    assert!(!held.contains(&name), "{me} refused its own {name}");
                }
            }
            30..=54 => {
                if held.remove(&name) {
                    model.lock().exclusive.remove(&name);
                    assert_eq!(
                        conn.cmd(&format!("r {name}")),
                        format!("1 Lock Release Success: {name}\n")
                    );
                } else {
                    assert_eq!(
                        conn.cmd(&format!("r {name}")),
                        format!("0 Lock Release Failure: {name}\n")
                    );
                }
            }
            55..=74 => {
                let reply = conn.cmd(&format!("sg {name}"));
                let suffix = format!(" Shared Lock Get Success: {name}\n");
                let count: usize = reply
                    .strip_suffix(&suffix)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("sg reply {reply:?}"));
                assert!((1..=THREADS).contains(&count), "{reply:?}");
                model
                    .lock()
                    .shared
                    .entry(name.clone())
                    .or_default()
                    .insert(me.clone());
                shared.insert(name);
            }
            75..=89 => {
                if shared.remove(&name) {
                    let mut m = model.lock();
                    let holders = m.shared.get_mut(&name).expect("in model");
                    holders.remove(&me);
                    if holders.is_empty() {
                        m.shared.remove(&name);
                    }
                    drop(m);
                    assert_eq!(
                        conn.cmd(&format!("sr {name}")),
                        format!("1 Shared Lock Release Success: {name}\n")
                    );
                } else {
                    assert_eq!(
                        conn.cmd(&format!("sr {name}")),
                        format!("0 Shared Lock Release Failure: {name}\n")
                    );
                }
            }
            90..=93 => {
                let reply = conn.cmd(&format!("i {name}"));
                let locked = format!("1 Lock Is Locked: {name}\n");
                assert!(
                    reply == locked || (!held.contains(&name) && reply.starts_with("0 Lock Not")),
                    "{reply:?}"
                );
            }
            94..=97 => {
                let reply = conn.cmd(&format!("si {name}"));
                assert!(
                    reply.ends_with(&format!(" Shared Lock Is Locked: {name}\n"))
                        || (!shared.contains(&name) && reply.starts_with("0 Shared Lock Not")),
                    "{reply:?}"
                );
            }
            _ => {
                {
                    let mut m = model.lock();
                    for name in held.drain() {
                        m.exclusive.remove(&name);
                    }
                    for name in shared.drain() {
                        let holders = m.shared.get_mut(&name).expect("in model");
                        holders.remove(&me);
                        if holders.is_empty() {
                            m.shared.remove(&name);
                        }
                    }
                }
                if rng.percent(50) {
                    conn.reset();
                } else {
                    drop(conn);
                }
                conn = server.connect();
                me = conn.name();
            }
        }
        if op % CHECK_EVERY == 0 {
            meet.wait();
            if id == 0 {
                check_against_model(&mut conn, model);
            }
            meet.wait();
        }
    }
}

/// Concurrency: 32 clients × 1,000 random operations on five names, with
/// disconnects. Never two exclusive holders (checked on every grant
/// against a shared model); at checkpoints `d`, `sd` and `si` equal the
/// model (shared counts are distinct holders); at the end everything is
/// free and the connection count is back to its baseline.
#[test]
fn concurrent_clients_never_share_an_exclusive_lock() {
    let server = TestServer::start();
    let seed = Rng::from_env("concurrent_clients_never_share_an_exclusive_lock").next();
    let model = Mutex::new(Model::default());
    let meet = Rendezvous {
        parties: THREADS,
        state: Mutex::new((0, 0)),
        all_here: Condvar::new(),
    };
    let started = Instant::now();
    let (server, model, meet) = (&server, &model, &meet);
    std::thread::scope(|scope| {
        for id in 0..THREADS {
            std::thread::Builder::new()
                .name(format!("client-{id}"))
                .spawn_scoped(scope, move || client(server, id, seed, model, meet))
                .expect("spawn client");
        }
    });
    eprintln!("{} operations in {:?}", THREADS * OPS, started.elapsed());
    // Every client has closed: all locks orphaned, no connection left.
    server.wait_for_connections(0);
    let mut probe = server.connect();
    let q = probe.q();
    for line in ["connections: 1\n", "locks: 0\n", "shared_locks: 0\n"] {
        assert!(q.contains(line), "{line:?} not in\n{q}");
    }
    assert_bytes(probe.multi(b"dump"), b"map[]\n");
    assert_bytes(probe.multi(b"dump shared"), b"map[]\n");
}
