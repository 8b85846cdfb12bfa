//! The blocking client against a real server (and two tiny fake ones).

mod common;

use common::{wait_until, TestServer};
use lockd::{AuthError, Client, ClientConfig, Error, Phase, Secret, Shutdown};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(5);

fn client(server: &TestServer) -> Client {
    Client::connect(server.addr.to_string()).expect("connect")
}

/// Polls protocol-2 `q` (through the client's own `stats`) until
/// `waiting` is `n`.
fn wait_for_waiters(server: &TestServer, n: u64) {
    let watcher = client(server);
    wait_until("waiters", || {
        watcher.stats().unwrap().get("waiting") == Some(n)
    });
}

#[test]
fn exclusive_locks_and_guards() {
    let server = TestServer::start();
    let a = client(&server);
    let b = client(&server);
    assert_eq!(a.protocol(), 2);

    let guard = a.lock("job").expect("lock");
    assert_eq!(guard.name().as_bytes(), b"job");
    assert_eq!(guard.token(), None);
    assert!(b.is_locked("job").unwrap());
    let err = b.lock("job").unwrap_err();
    assert!(err.is_already_locked(), "{err}");
    assert!(!err.locks_lost());
    assert!(b.try_lock("job").unwrap().is_none());
    let token = a.token("job").expect("token");
    assert!(token >= 1);
    assert!(b.token("job").unwrap_err().is_not_held());
    assert!(b.release("job").unwrap_err().is_not_held());

    // Dropping the guard queues the release; a later call on the same
    // connection is answered after it.
    drop(guard);
    a.ping().expect("ping");
    assert!(!b.is_locked("job").unwrap());

    // release() returns the answer; a second release is NotHeld.
    let guard = b.try_lock("job").unwrap().expect("free now");
    b.release("job").unwrap();
    assert!(guard.release().unwrap_err().is_not_held());

    // Names are bytes, normalised like any argument.
    let odd = a.lock(b"  a\0\xff \t b ").expect("odd name");
    assert_eq!(odd.name().as_bytes(), b"a\0\xff b");
    assert!(b.is_locked(b"a\0\xff b").unwrap());
    let empty = a.lock("").expect("empty name");
    assert!(b.is_locked("").unwrap());
    let holders = b.holders().unwrap();
    let me = a.name().unwrap();
    assert_eq!(holders.len(), 2);
    assert_eq!(holders[&lockd::LockName::from("")], me.default);
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
    let x = a.lock_wait("x", Duration::ZERO).expect("free lock");
    let t1 = x.token().expect("wg carries a token");
    assert_eq!(a.token("x").unwrap(), t1);
    let err = b.lock_wait("x", Duration::from_millis(20)).unwrap_err();
    assert!(err.is_timeout() && !err.locks_lost(), "{err}");
    assert!(matches!(
        err,
        Error::Timeout {
            phase: Phase::Wait,
            ..
        }
    ));
    assert!(b.is_connected());

    // b waits for x while holding y; a asking for y would close a cycle.
    let y = b.lock("y").unwrap();
    let waiter = {
        let b = b.clone();
        thread::spawn(move || b.lock_wait("x", LONG))
    };
    wait_for_waiters(&server, 1);
    assert!(a.lock_wait("y", LONG).unwrap_err().is_deadlock());
    drop(x);
    let got = waiter.join().unwrap().expect("handed over");
    assert!(got.token().unwrap() > t1, "tokens only grow");
    got.release().unwrap();
    drop(y);

    // The read timeout is extended by the time the server may wait.
    let _x = a.lock("x").unwrap();
    let short = ClientConfig::new().read_timeout(Some(Duration::from_millis(30)));
    let c = Client::connect_with(server.addr.to_string(), short).unwrap();
    let err = c.lock_wait("x", Duration::from_millis(150)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                phase: Phase::Wait,
                ..
            }
        ),
        "{err}"
    );
    assert!(c.is_connected());
}

#[test]
fn handles_are_shareable() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Client>();
    shareable::<lockd::LockGuard>();
    shareable::<lockd::SharedGuard>();
    shareable::<Error>();
}

#[test]
fn shared_locks() {
    let server = TestServer::start();
    let a = client(&server);
    let b = client(&server);
    let ga = a.lock_shared("pool").unwrap();
    assert_eq!(ga.holders(), 1);
    let gb = b.lock_shared("pool").unwrap();
    assert_eq!(gb.holders(), 2);
    assert_eq!(a.shared_count("pool").unwrap(), 2);
    assert_eq!(a.shared_count("none").unwrap(), 0);
    let holders = a.shared_holders().unwrap();
    assert_eq!(
        holders[&lockd::LockName::from("pool")],
        vec![a.name().unwrap().default, b.name().unwrap().default]
    );
    // A semaphore of two is full.
    let c = client(&server);
    let err = c
        .lock_shared_limited("pool", 2, Duration::from_millis(10))
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Timeout {
            phase: Phase::Wait,
            ..
        }
    ));
    gb.release().unwrap();
    let gc = c.lock_shared_limited("pool", 2, LONG).unwrap();
    assert_eq!(gc.holders(), 2);
    assert!(b.release_shared("pool").unwrap_err().is_not_held());
    drop(ga);
    c.release_shared("pool").unwrap();
    gc.leak();
    a.ping().unwrap();
    assert_eq!(b.shared_count("pool").unwrap(), 0);
}

#[test]
fn registry_stats_and_liveness() {
    let server = TestServer::start();
    let a = client(&server);
    let me = a.name().unwrap();
    assert_eq!(me.name, me.default);
    a.set_name("worker 1").unwrap();
    assert_eq!(a.name().unwrap().name, b"worker 1");
    let clients = a.clients().unwrap();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0].default, me.default);
    assert_eq!(clients[0].name, b"worker 1");
    let _g = a.lock("s").unwrap();
    let stats = a.stats().unwrap();
    assert_eq!(stats.locks, 1);
    assert_eq!(stats.command_g, 1);
    assert_eq!(stats.command_iam, 1);
    assert!(stats.connections >= 1);
    assert!(stats.get("uptime_seconds").is_some(), "protocol 2 keys");
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
    assert!(b.lock("u").unwrap_err().is_already_locked());
    assert!(a.name().unwrap().default.starts_with(b"unix:"));
    drop(g);
    a.ping().unwrap();
    assert!(b.lock("u").is_ok());

    let missing = server.dir.path.join("nobody.sock");
    let err = Client::connect(missing.to_str().unwrap()).unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(err.to_string().starts_with("cannot connect to "), "{err}");
}

#[test]
fn sixteen_threads_share_one_connection() {
    let server = TestServer::start();
    let shared = client(&server);
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let c = shared.clone();
            thread::spawn(move || {
                for i in 0..40 {
                    let name = format!("t{t}-{i}");
                    let g = c.lock(&name).unwrap();
                    assert_eq!(g.name().as_bytes(), name.as_bytes());
                    assert!(c.is_locked(&name).unwrap());
                    assert!(c.token(&name).unwrap() >= 1);
                    let s = c.lock_shared(&name).unwrap();
                    assert_eq!(s.name().as_bytes(), name.as_bytes());
                    assert_eq!(c.shared_count(&name).unwrap(), 1);
                    s.release().unwrap();
                    g.release().unwrap();
                    assert!(!c.is_locked(&name).unwrap());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    assert!(shared.is_connected());
    assert_eq!(shared.stats().unwrap().locks, 0);
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
        thread::spawn(move || waiter.lock_wait("x", Duration::from_secs(30)))
    };
    wait_for_waiters(&server, 1);
    server.stop(Shutdown::Immediate);
    let err = call.join().unwrap().unwrap_err();
    assert!(err.is_disconnected() && err.locks_lost(), "{err}");
    assert!(err.to_string().contains("every lock"), "{err}");
    signal.recv_timeout(LONG).expect("on_disconnect fired");
    assert!(waiter.ping().unwrap_err().is_disconnected());
    // An idle client learns of the close too.
    holder
        .on_disconnect()
        .recv_timeout(LONG)
        .expect("idle client told");
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

/// glockd as Part 1 describes it, for `g`, `r`, `me` and `d`; silent to
/// everything else (`hello` included). `mute` stops it answering `g` for
/// names starting with "mute" (to provoke a read timeout mid-call).
fn classic_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held: Arc<Mutex<HashSet<String>>> = Arc::default();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let held = Arc::clone(&held);
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
    assert!(b.lock("old").unwrap_err().is_already_locked());
    let holders = b.holders().unwrap();
    assert_eq!(holders[&lockd::LockName::from("old")], b"someone");
    assert!(a.lock_wait("old", LONG).unwrap_err().is_not_supported());
    assert!(a.ping().unwrap_err().is_not_supported());
    g.release().unwrap();
    assert!(b.lock("old").is_ok());
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
}
