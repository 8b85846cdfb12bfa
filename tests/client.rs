//! The blocking client against a real server, and against small fake ones
//! (silent, classic, and scripted protocol-2 servers that check the wire
//! bytes the client sends and its reading of every reply).

mod common;

use common::{wait_until, TestServer};
use lockd::client::{HoldKind, LockEvent, WatchEvent};
use lockd::{AuthError, Client, ClientConfig, Error, LockName, Phase, Secret, Shutdown};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(5);

fn client(server: &TestServer) -> Client {
    Client::connect(server.addr.to_string()).expect("connect")
}

/// Polls protocol-2 `q` (through the client's own `stats`) until
/// `waiting` is `n`.
fn wait_for_waiters(server: &TestServer, n: u64) {
    let watcher = client(server);
    wait_until("waiters", || watcher.stats().unwrap().waiting() == Some(n));
}

#[test]
fn exclusive_locks_and_guards() {
    let server = TestServer::start();
    let a = client(&server);
    let b = client(&server);
    assert_eq!(a.protocol(), 2);

    let guard = a.lock("job").expect("lock");
    assert_eq!(guard.name().as_bytes(), b"job");
    let token = guard.token().expect("protocol 2: every guard has a token");
    assert_eq!(a.token("job").unwrap(), token);
    assert!(b.is_locked("job").unwrap());
    assert!(b.try_lock("job").unwrap().is_none());
    assert!(b.token("job").unwrap_err().is_not_held());

    // Dropping the guard releases; a later call on the same connection is
    // answered after it.
    drop(guard);
    a.ping().expect("ping");
    assert!(!b.is_locked("job").unwrap());

    // release() returns the answer; after `ra` the server has nothing.
    let guard = b.try_lock("job").unwrap().expect("free now");
    assert!(guard.token().unwrap() > token, "tokens only grow");
    assert_eq!(b.release_all().unwrap(), 1);
    assert!(guard.release().unwrap_err().is_not_held());

    // Names are bytes, normalised like any argument.
    let odd = a.lock(b"  a\0\xff \t b ").expect("odd name");
    assert_eq!(odd.name().as_bytes(), b"a\0\xff b");
    assert!(b.is_locked(b"a\0\xff b").unwrap());
    let empty = a.lock("").expect("empty name");
    assert!(b.is_locked("").unwrap());
    let holders = b.holders().unwrap();
    let me = a.identity().unwrap();
    assert_eq!(holders.len(), 2);
    assert_eq!(holders[&LockName::from("")], me.default);
    drop((odd, empty));
    assert_eq!(a.release_all().unwrap(), 0, "guards' releases came first");
    assert!(matches!(
        a.lock("x\ny").unwrap_err(),
        Error::InvalidArgument { .. }
    ));
}

#[test]
fn waiting_tokens_and_deadlock() {
    let server = TestServer::start();
    let a = client(&server);
    let b = client(&server);
    let x = a.try_lock_for("x", Duration::ZERO).unwrap().expect("free");
    let t1 = x.token().expect("wg carries a token");
    assert!(b
        .try_lock_for("x", Duration::from_millis(20))
        .unwrap()
        .is_none());
    assert!(b.is_connected());

    // b waits for x while holding y; a asking for y would close a cycle.
    let y = b.lock("y").unwrap();
    let waiter = {
        let b = b.clone();
        thread::spawn(move || b.lock("x"))
    };
    wait_for_waiters(&server, 1);
    assert!(a.lock("y").unwrap_err().is_deadlock());
    drop(x);
    let got = waiter.join().unwrap().expect("handed over");
    assert!(got.token().unwrap() > t1, "tokens only grow");
    got.release().unwrap();
    drop(y);

    // The read timeout is extended by the time the server may wait.
    let _x = a.lock("x").unwrap();
    let short = ClientConfig::new().read_timeout(Some(Duration::from_millis(30)));
    let c = Client::connect_with(server.addr.to_string(), short).unwrap();
    assert!(c
        .try_lock_for("x", Duration::from_millis(150))
        .unwrap()
        .is_none());
    assert!(c.is_connected());
}

#[test]
fn handles_are_shareable() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Client>();
    shareable::<lockd::LockGuard>();
    shareable::<lockd::ReadGuard>();
    shareable::<lockd::SharedGuard>();
    shareable::<Error>();
}

#[test]
fn shared_locks_and_semaphores() {
    let server = TestServer::start();
    let a = client(&server);
    let b = client(&server);
    let ga = a.lock_shared("pool", 0).unwrap();
    assert_eq!(ga.holders(), 1);
    let gb = b.lock_shared("pool", 0).unwrap();
    assert_eq!(gb.holders(), 2);
    assert_eq!(a.shared_count("pool").unwrap(), 2);
    assert_eq!(a.shared_count("none").unwrap(), 0);
    let holders = a.shared_holders().unwrap();
    assert_eq!(
        holders[&LockName::from("pool")],
        vec![a.identity().unwrap().default, b.identity().unwrap().default]
    );
    // A semaphore of two is full.
    let c = client(&server);
    assert!(c
        .try_lock_shared_for("pool", 2, Duration::from_millis(10))
        .unwrap()
        .is_none());
    assert!(c.try_lock_shared("pool", 2).unwrap().is_none());
    gb.release().unwrap();
    let gc = c
        .try_lock_shared_for("pool", 2, LONG)
        .unwrap()
        .expect("a place");
    assert_eq!(gc.holders(), 2);
    drop((ga, gc));
    a.ping().unwrap();
    c.ping().unwrap();
    assert_eq!(b.shared_count("pool").unwrap(), 0);
}

#[test]
fn registry_stats_and_liveness() {
    let server = TestServer::start();
    let a = client(&server);
    let me = a.identity().unwrap();
    assert_eq!(me.name, me.default);
    a.register("worker 1").unwrap();
    assert_eq!(a.identity().unwrap().name.as_bytes(), b"worker 1");
    let registered = a.registrations().unwrap();
    assert_eq!(registered.len(), 1);
    assert_eq!(registered[0].default, me.default);
    assert_eq!(registered[0].name.as_bytes(), b"worker 1");
    let _g = a.lock("s").unwrap();
    let stats = a.stats().unwrap();
    assert_eq!(stats.locks(), 1);
    assert_eq!(stats.command("wg"), Some(1));
    assert_eq!(stats.command("iam"), Some(1));
    assert!(stats.connections() >= 1);
    assert!(stats.uptime_seconds().is_some(), "protocol 2 keys");
    assert!(a.ping().unwrap() < LONG);
    a.set_ttl(Duration::from_millis(1500)).unwrap();
    a.set_ttl(Duration::ZERO).unwrap();
}

#[test]
fn disabled_and_auth() {
    let server = TestServer::with_config(|c| {
        c.dump = false;
        c.auth_secret = Some(Secret::new("sesame"));
    });
    let anon = client(&server);
    assert!(matches!(
        anon.lock("x").unwrap_err(),
        Error::Auth(AuthError::Required)
    ));
    assert!(matches!(
        anon.stats().unwrap_err(),
        Error::Auth(AuthError::Required)
    ));
    assert!(matches!(
        anon.authenticate("wrong").unwrap_err(),
        Error::Auth(AuthError::Failure)
    ));
    anon.authenticate("sesame").unwrap();
    let _g = anon.lock("x").unwrap();
    assert!(anon.holders().unwrap_err().is_disabled());

    let config = ClientConfig::new().secret("sesame");
    let c = Client::connect_with(server.addr.to_string(), config).unwrap();
    assert!(c.is_locked("x").unwrap());
    let err = Client::connect_with(server.addr.to_string(), ClientConfig::new().secret("no"))
        .unwrap_err();
    assert!(err.is_auth(), "{err}");
}

#[test]
fn unix_socket() {
    let server = TestServer::start();
    let path = server.unix_path.clone().unwrap();
    let a = Client::connect(path.to_str().unwrap()).unwrap();
    let b = Client::connect(format!("unix:{}", path.display())).unwrap();
    assert_eq!(a.protocol(), 2);
    let g = a.lock("u").unwrap();
    assert!(b.try_lock("u").unwrap().is_none());
    assert!(a
        .identity()
        .unwrap()
        .default
        .as_bytes()
        .starts_with(b"unix:"));
    drop(g);
    a.ping().unwrap();
    assert!(b.try_lock("u").unwrap().is_some());

    let missing = server.dir.path.join("nobody.sock");
    let err = Client::connect(missing.to_str().unwrap()).unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(err.to_string().starts_with("cannot connect to "), "{err}");
}

/// Runs `sections` critical sections on `name` on each of `threads`
/// threads, each with its own handle from `handle`, and fails if two are
/// ever inside at once.
fn hammer(threads: usize, sections: usize, handle: impl Fn(usize) -> Client) {
    let inside = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let c = handle(t);
            let inside = Arc::clone(&inside);
            let total = Arc::clone(&total);
            thread::spawn(move || {
                for _ in 0..sections {
                    let g = c.lock("counter").unwrap();
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                    total.fetch_add(1, Ordering::Relaxed);
                    assert_eq!(inside.fetch_sub(1, Ordering::SeqCst), 1, "two holders");
                    drop(g);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    assert_eq!(total.load(Ordering::SeqCst), threads * sections);
}

#[test]
fn eight_threads_sharing_one_client_exclude_each_other() {
    let server = TestServer::start();
    let shared = Arc::new(client(&server));
    // Each thread borrows the same handle (an Arc of one Client).
    let one = Arc::clone(&shared);
    hammer(8, 1000, move |_| (*one).clone());
    assert!(shared.is_connected());
    shared.ping().unwrap();
    assert_eq!(shared.stats().unwrap().locks(), 0);
}

#[test]
fn eight_clones_exclude_each_other_and_other_clients() {
    let server = TestServer::start();
    let a = client(&server);
    let b = client(&server);
    // Half the threads on clones of a, half on clones of b: exclusion in
    // the process and on the server at once.
    hammer(8, 250, |t| if t % 2 == 0 { a.clone() } else { b.clone() });
    a.ping().unwrap();
    b.ping().unwrap();
    assert_eq!(a.stats().unwrap().locks(), 0);
}

#[test]
fn in_process_try_lock_and_reentrancy() {
    let server = TestServer::start();
    let a = client(&server);
    let g = a.lock("x").unwrap();
    // The same thread again: refused, nothing sent.
    let err = a.lock("x").unwrap_err();
    assert!(err.is_reentrant() && !err.locks_lost(), "{err}");
    assert!(a.try_lock_for("x", LONG).unwrap_err().is_reentrant());
    // Another thread of the same client does not get it...
    let other = a.clone();
    let (none, some) = thread::spawn(move || {
        let none = other.try_lock("x").unwrap().is_none()
            && other
                .try_lock_for("x", Duration::from_millis(30))
                .unwrap()
                .is_none();
        let some = thread::spawn({
            let other = other.clone();
            move || other.lock("x").map(|g| g.token())
        });
        (none, some)
    })
    .join()
    .unwrap();
    assert!(none);
    // ... and waits until the guard drops, then gets a new grant.
    thread::sleep(Duration::from_millis(50));
    assert!(!some.is_finished(), "waits for the first guard");
    let first = g.token().unwrap();
    drop(g);
    let second = some.join().unwrap().unwrap().unwrap();
    assert!(second > first);
    // Shared holds: the same thread twice is refused too.
    let s = a.lock_shared("s", 0).unwrap();
    assert!(a.lock_shared("s", 0).unwrap_err().is_reentrant());
    // Another thread joins the one place without asking the server.
    let other = a.clone();
    let joined = thread::spawn(move || other.try_lock_shared("s", 1).unwrap().map(|g| g.holders()))
        .join()
        .unwrap();
    assert_eq!(joined, Some(1));
    drop(s);
    a.ping().unwrap();
    assert_eq!(a.shared_count("s").unwrap(), 0);
}

#[test]
fn a_guard_dropped_on_another_thread_releases() {
    let server = TestServer::start();
    let a = client(&server);
    let b = client(&server);
    let g = a.lock("moved").unwrap();
    thread::spawn(move || drop(g)).join().unwrap();
    a.ping().unwrap();
    assert!(!b.is_locked("moved").unwrap());
    assert!(
        a.try_lock("moved").unwrap().is_some(),
        "free in the process too"
    );
}

#[test]
fn a_drop_never_waits_for_a_busy_connection() {
    let server = TestServer::start();
    let a = client(&server);
    let other = client(&server);
    let busy = other.lock("busy").unwrap();
    let g = a.lock("mine").unwrap();
    // A thread of `a` waits on the server; the connection is taken.
    let waiter = {
        let a = a.clone();
        thread::spawn(move || a.lock("busy").map(drop))
    };
    wait_for_waiters(&server, 1);
    let start = Instant::now();
    drop(g);
    assert!(start.elapsed() < LONG, "the drop queued its release");
    // The server hears the release once the wait ends.
    assert!(other.is_locked("mine").unwrap());
    drop(busy);
    waiter.join().unwrap().unwrap();
    wait_until("the queued release", || !other.is_locked("mine").unwrap());
}

#[test]
fn server_killed_during_a_wait() {
    let mut server = TestServer::start();
    let holder = client(&server);
    let waiter = client(&server);
    let _held = holder.lock("x").unwrap();
    let signal = waiter.on_disconnect();
    let call = {
        let waiter = waiter.clone();
        thread::spawn(move || waiter.lock("x"))
    };
    wait_for_waiters(&server, 1);
    // Asking while a call holds the connection does not wait for it.
    let (late_tx, late) = mpsc::channel();
    {
        let waiter = waiter.clone();
        thread::spawn(move || late_tx.send(waiter.on_disconnect()));
    }
    let late = late
        .recv_timeout(LONG)
        .expect("on_disconnect returned at once");
    let (tx, called) = mpsc::channel();
    holder.on_disconnect_call(move || {
        let _ = tx.send("called");
    });
    server.stop(Shutdown::Immediate);
    let err = call.join().unwrap().unwrap_err();
    assert!(err.is_disconnected() && err.locks_lost(), "{err}");
    assert!(err.to_string().contains("every lock"), "{err}");
    signal.recv_timeout(LONG).expect("on_disconnect fired");
    late.recv_timeout(LONG)
        .expect("the late subscription fired");
    assert!(waiter.ping().unwrap_err().is_disconnected());
    // An idle client learns of the close too.
    assert_eq!(called.recv_timeout(LONG), Ok("called"));
    assert!(!holder.is_connected());
}

#[test]
fn disconnect_releases_everything() {
    let server = TestServer::start();
    let a = client(&server);
    let b = client(&server);
    let g = a.lock("d").unwrap();
    let signal = a.on_disconnect();
    a.disconnect();
    // disconnect returns once the server closed its side, locks released.
    assert!(!b.is_locked("d").unwrap());
    signal.recv_timeout(LONG).unwrap();
    assert!(a.is_locked("d").unwrap_err().is_disconnected());
    drop(g); // its release goes nowhere, quietly
    assert!(
        a.on_disconnect().try_recv().is_ok(),
        "fires at once when late"
    );
}

#[test]
fn every_duration_edge() {
    let server = TestServer::start();
    let addr = server.addr.to_string();
    let edges = [Duration::ZERO, Duration::from_nanos(1), Duration::MAX];
    for &t in &[Duration::from_nanos(1), Duration::MAX] {
        let config = ClientConfig::new()
            .connect_timeout(Some(Duration::MAX))
            .read_timeout(Some(t.max(Duration::from_secs(1))))
            .write_timeout(Some(t))
            .classic_quiet(t);
        let c = Client::connect_with(&addr, config).expect("any timeout connects");
        for &wait in &edges {
            let g = c.try_lock_for("edge", wait).unwrap().expect("free");
            drop(g);
            let s = c
                .try_lock_shared_for("edge", 3, wait)
                .unwrap()
                .expect("free");
            drop(s);
        }
        c.set_ttl(Duration::MAX).unwrap();
        c.set_ttl(Duration::ZERO).unwrap();
    }
    // No time at all is a timeout, never a panic.
    let zero = ClientConfig::new().read_timeout(Some(Duration::ZERO));
    let err = Client::connect_with(&addr, zero).unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let zero = ClientConfig::new().connect_timeout(Some(Duration::ZERO));
    let err = Client::connect_with(&addr, zero).unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let max = ClientConfig::new().read_timeout(Some(Duration::MAX));
    let c = Client::connect_with(&addr, max).unwrap();
    let held = client(&server).lock("busy").unwrap();
    assert!(c
        .try_lock_for("busy", Duration::from_millis(1))
        .unwrap()
        .is_none());
    drop(held);
    // `lockctl --io-timeout` with a number of seconds no Instant can hold.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lockctl"))
        .args(["-S", &addr, "--io-timeout", "10000000000000000000", "ping"])
        .output()
        .expect("run lockctl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{stderr}");
}

/// A server that accepts and never says a word.
fn silent_server() -> (SocketAddr, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            // Hold the connection until the client gives up.
            let mut lines = BufReader::new(stream);
            let mut sink = Vec::new();
            while matches!(lines.read_until(b'\n', &mut sink), Ok(n) if n > 0) {}
        }
    });
    (addr, handle)
}

#[test]
fn read_timeout_against_a_silent_server() {
    let (addr, handle) = silent_server();
    let config = ClientConfig::new().read_timeout(Some(Duration::from_millis(100)));
    let err = Client::connect_with(addr.to_string(), config).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                phase: Phase::Read,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("read timeout"), "{err}");
    handle.join().unwrap();
}

/// glockd as Part 1 describes it, for `g`, `r`, `sg`, `sr`, `me` and `d`;
/// silent to everything else (`hello` included). It does not answer `g`
/// for names starting with "mute" (to provoke a read timeout mid-call).
fn classic_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held: Arc<Mutex<HashSet<String>>> = Arc::default();
    let shared: Arc<Mutex<Vec<String>>> = Arc::default();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let held = Arc::clone(&held);
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                let peer = stream.peer_addr().unwrap().to_string();
                let mut out = stream.try_clone().unwrap();
                let mut mine = HashSet::new();
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let line = line.trim();
                    let (verb, arg) = line.split_once(' ').unwrap_or((line, ""));
                    let reply = match verb {
                        "g" if arg.starts_with("mute") => continue,
                        "g" if mine.contains(arg) || held.lock().unwrap().insert(arg.into()) => {
                            mine.insert(arg.to_string());
                            format!("1 Lock Get Success: {arg}\r\n")
                        }
                        "g" => format!("0 Lock Get Failure: {arg}\r\n"),
                        "r" if mine.remove(arg) => {
                            held.lock().unwrap().remove(arg);
                            format!("1 Lock Release Success: {arg}\n")
                        }
                        "r" => format!("0 Lock Release Failure: {arg}\n"),
                        "sg" => {
                            let mut shared = shared.lock().unwrap();
                            let me = format!("{peer} {arg}");
                            if !shared.contains(&me) {
                                shared.push(me);
                            }
                            let n = shared
                                .iter()
                                .filter(|h| h.ends_with(&format!(" {arg}")))
                                .count();
                            format!("{n} Shared Lock Get Success: {arg}\r\n")
                        }
                        "sr" => {
                            let mut shared = shared.lock().unwrap();
                            let me = format!("{peer} {arg}");
                            let before = shared.len();
                            shared.retain(|h| *h != me);
                            let ok = usize::from(shared.len() < before);
                            format!("{ok} Shared Lock Release Success: {arg}\n")
                        }
                        "me" => format!("1 {peer} {peer}\n"),
                        "d" => held
                            .lock()
                            .unwrap()
                            .iter()
                            .map(|n| format!("{n}: someone\n"))
                            .collect(),
                        _ => continue,
                    };
                    if out.write_all(reply.as_bytes()).is_err() {
                        break;
                    }
                }
                for name in mine {
                    held.lock().unwrap().remove(&name);
                }
                shared
                    .lock()
                    .unwrap()
                    .retain(|h| !h.starts_with(&format!("{peer} ")));
            });
        }
    });
    addr
}

#[test]
fn falls_back_to_a_classic_server() {
    let addr = classic_server();
    let config = ClientConfig::new().classic_quiet(Duration::from_millis(30));
    let a = Client::connect_with(addr.to_string(), config.clone()).unwrap();
    let b = Client::connect_with(addr.to_string(), config).unwrap();
    assert_eq!(a.protocol(), 1);
    let g = a.lock("old").unwrap();
    assert_eq!(g.token(), None, "a classic server has no tokens");
    assert!(b.try_lock("old").unwrap().is_none());
    let holders = b.holders().unwrap();
    assert_eq!(holders[&LockName::from("old")].as_bytes(), b"someone");
    assert!(a.ping().unwrap_err().is_not_supported());
    assert!(a.read("old").unwrap_err().is_not_supported());
    assert!(a.watch("*").unwrap_err().is_not_supported());
    // Polling: a bounded wait gives up, an unbounded one gets it once the
    // holder lets go.
    let start = Instant::now();
    assert!(b
        .try_lock_for("old", Duration::from_millis(60))
        .unwrap()
        .is_none());
    assert!(start.elapsed() >= Duration::from_millis(60));
    let waiter = {
        let b = b.clone();
        thread::spawn(move || b.lock("old").map(|g| g.name().clone()))
    };
    thread::sleep(Duration::from_millis(50));
    g.release().unwrap();
    assert_eq!(waiter.join().unwrap().unwrap().as_bytes(), b"old");
    // A semaphore by polling: `sg`, stepping back out when over the limit.
    let s = a.lock_shared("pool", 1).unwrap();
    assert!(b.try_lock_shared("pool", 1).unwrap().is_none());
    drop(s);
    let s = b.try_lock_shared_for("pool", 1, LONG).unwrap();
    assert_eq!(s.map(|s| s.holders()), Some(1));
}

#[test]
fn a_timeout_mid_call_closes_the_connection() {
    let addr = classic_server();
    let config = ClientConfig::new().read_timeout(Some(Duration::from_millis(100)));
    let c = Client::connect_with(addr.to_string(), config).unwrap();
    let signal = c.on_disconnect();
    let err = c.lock("mute-1").unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                phase: Phase::Read,
                ..
            }
        ) && err.locks_lost(),
        "{err}"
    );
    signal.recv_timeout(LONG).expect("on_disconnect fired");
    let later = c.lock("other").unwrap_err();
    assert!(later.is_disconnected(), "{later}");
    assert!(later.to_string().contains("timed out"), "{later}");
    assert!(later.to_string().contains("every lock"), "{later}");
}

/// A protocol-2 server that grants every request at once and records the
/// lines it receives; `watch` is answered from `events`.
struct FakeV2 {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl FakeV2 {
    fn start(events: &'static [&'static str]) -> FakeV2 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = Arc::clone(&seen);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let log = Arc::clone(&log);
                thread::spawn(move || FakeV2::serve(stream, &log, events));
            }
        });
        FakeV2 { addr, seen }
    }

    fn serve(stream: TcpStream, log: &Mutex<Vec<String>>, events: &[&str]) {
        let mut out = stream.try_clone().unwrap();
        let mut token = 0;
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            log.lock().unwrap().push(line.clone());
            let words: Vec<&str> = line.splitn(4, ' ').collect();
            let reply = match words.as_slice() {
                ["hello", "2"] => "2 lockd test\n".to_string(),
                ["me"] => "1 127.0.0.1:1 127.0.0.1:1\n".to_string(),
                ["ping"] => "1 pong\n".to_string(),
                ["wg", _, name @ ..] => {
                    token += 1;
                    format!("{token} Lock Get Success: {}\n", name.join(" "))
                }
                ["r", name @ ..] => format!("1 Lock Release Success: {}\n", name.join(" ")),
                ["wr", _, name @ ..] => format!("1 Read Lock Get Success: {}\n", name.join(" ")),
                ["rr", name @ ..] => {
                    format!("1 Read Lock Release Success: {}\n", name.join(" "))
                }
                ["watch", pattern] => {
                    let mut reply = format!("1 Watching: {pattern}\n");
                    for event in events {
                        reply.push_str(event);
                        reply.push('\n');
                    }
                    reply
                }
                _ => "0 Error: unknown command\n".to_string(),
            };
            if out.write_all(reply.as_bytes()).is_err() {
                break;
            }
        }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

#[test]
fn read_holds_on_the_wire() {
    let fake = FakeV2::start(&[]);
    let c = Client::connect(fake.addr.to_string()).unwrap();
    let r1 = c.read("doc").unwrap();
    assert_eq!(r1.readers(), 1);
    // Another thread of the same client shares the one read hold.
    let other = c.clone();
    let r2 = thread::spawn(move || other.try_read("doc").unwrap())
        .join()
        .unwrap()
        .expect("joins the read hold");
    drop(r1);
    c.ping().unwrap();
    drop(r2);
    let r3 = c
        .try_read_for("doc 2", Duration::from_millis(1500))
        .unwrap();
    drop(r3);
    c.ping().unwrap();
    let seen = fake.seen();
    let wire: Vec<&str> = seen.iter().map(String::as_str).skip(2).collect();
    assert_eq!(
        wire,
        [
            "wr 100000000000000000 doc",
            "ping",
            "rr doc",
            "wr 1500 doc 2",
            "rr doc 2",
            "ping"
        ]
    );
}

#[test]
fn readers_and_a_writer_of_one_client_exclude_each_other() {
    // The fake grants everything: exclusion here is the client's own.
    let fake = FakeV2::start(&[]);
    let c = Client::connect(fake.addr.to_string()).unwrap();
    let readers = Arc::new(AtomicUsize::new(0));
    let writing = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let c = c.clone();
            let readers = Arc::clone(&readers);
            let writing = Arc::clone(&writing);
            thread::spawn(move || {
                for _ in 0..200 {
                    if t % 2 == 0 {
                        let g = c.lock("rw").unwrap();
                        assert!(!writing.swap(true, Ordering::SeqCst), "two writers");
                        assert_eq!(readers.load(Ordering::SeqCst), 0, "writer with readers");
                        writing.store(false, Ordering::SeqCst);
                        drop(g);
                    } else {
                        let g = c.read("rw").unwrap();
                        readers.fetch_add(1, Ordering::SeqCst);
                        assert!(!writing.load(Ordering::SeqCst), "reader with a writer");
                        readers.fetch_sub(1, Ordering::SeqCst);
                        drop(g);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    // Same thread, read then write: refused rather than waiting on itself.
    let r = c.read("rw").unwrap();
    assert!(c.lock("rw").unwrap_err().is_reentrant());
    drop(r);
}

#[test]
fn watch_yields_typed_events() {
    let fake = FakeV2::start(&[
        "held x 3 127.0.0.1:7 a1",
        "synced",
        "locked s 2 unix:1 a b",
        "released rd 0 unix:2 a",
        "orphaned x 4 127.0.0.1:8 a1",
        "0 Error: watcher too slow",
    ]);
    let c = Client::connect(fake.addr.to_string()).unwrap();
    let mut watch = c.watch("a*").unwrap();
    let event = |kind, number, holder: &str, name: &str| LockEvent {
        kind,
        number,
        holder: holder.into(),
        name: name.into(),
    };
    assert_eq!(
        watch.next().unwrap().unwrap(),
        WatchEvent::Held(event(HoldKind::Exclusive, 3, "127.0.0.1:7", "a1"))
    );
    assert_eq!(watch.next().unwrap().unwrap(), WatchEvent::Synced);
    assert_eq!(
        watch.next().unwrap().unwrap(),
        WatchEvent::Locked(event(HoldKind::Shared, 2, "unix:1", "a b"))
    );
    assert_eq!(
        watch.next().unwrap().unwrap(),
        WatchEvent::Released(event(HoldKind::Read, 0, "unix:2", "a"))
    );
    assert_eq!(
        watch.next().unwrap().unwrap(),
        WatchEvent::Orphaned(event(HoldKind::Exclusive, 4, "127.0.0.1:8", "a1"))
    );
    let end = watch.next().unwrap().unwrap_err();
    assert!(
        end.is_disconnected() && end.to_string().contains("too slow"),
        "{end}"
    );
    assert!(watch.next().is_none());
    // The watch had a connection of its own.
    assert!(fake.seen().contains(&"watch a*".to_string()));
    c.ping().unwrap();
}

/// Read holds against the real server: readers of two clients share a
/// name, a writer of a third waits for both, and a reader asking after
/// the writer queued waits behind it (no writer starvation).
#[test]
fn read_holds_against_a_real_server() {
    let server = TestServer::start();
    let (a, b, w) = (client(&server), client(&server), client(&server));
    let ra = a.read("catalog").unwrap();
    let rb = b.try_read("catalog").unwrap().expect("readers share");
    assert!(w.try_lock("catalog").unwrap().is_none(), "read-held");
    let writer = thread::spawn(move || {
        let guard = w.lock("catalog").unwrap();
        let token = guard.token();
        drop(guard);
        token
    });
    wait_for_waiters(&server, 1);
    let late = client(&server);
    assert!(
        late.try_read_for("catalog", Duration::from_millis(100))
            .unwrap()
            .is_none(),
        "a reader after a queued writer waits behind it"
    );
    drop(ra);
    drop(rb);
    let token = writer.join().unwrap();
    assert!(
        token.is_some_and(|t| t >= 1),
        "the writer's grant has a token"
    );
    assert!(late.try_read("catalog").unwrap().is_some());
}

/// `watch` against the real server: the snapshot, `synced`, then a grant
/// and a release as they happen.
#[test]
fn watch_against_a_real_server() {
    let server = TestServer::start();
    let holder = client(&server);
    let held = holder.lock("jobs/a").unwrap();
    let token = held.token().expect("a token on protocol 2");
    let watcher = client(&server);
    let mut watch = watcher.watch("jobs/*").unwrap();
    let next = |watch: &mut lockd::client::Watch| watch.next().unwrap().unwrap();
    match next(&mut watch) {
        WatchEvent::Held(e) => {
            assert_eq!((e.kind, e.number), (HoldKind::Exclusive, token));
            assert_eq!(e.name, LockName::from("jobs/a"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(next(&mut watch), WatchEvent::Synced);
    let other = client(&server);
    let b = other.lock("jobs/b").unwrap();
    let _ignored = other.lock("elsewhere").unwrap();
    match next(&mut watch) {
        WatchEvent::Locked(e) => assert_eq!(e.name, LockName::from("jobs/b")),
        e => panic!("{e:?}"),
    }
    drop(b);
    match next(&mut watch) {
        WatchEvent::Released(e) => assert_eq!(e.name, LockName::from("jobs/b")),
        e => panic!("{e:?}"),
    }
    drop(held);
}
