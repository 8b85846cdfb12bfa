//! A TCP proxy on loopback that can cut its links without closing them:
//! while cut, bytes (and ends) in either direction are held back, new
//! connections are accepted but get nothing through, and nothing is
//! refused or reset, as when a network drops packets. Restored, held bytes
//! go on. Threads only; no root needed.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often a blocked thread looks at the switches.
const TICK: Duration = Duration::from_millis(20);

/// One proxy to one upstream address; stops its threads on drop.
pub struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards each connection to `upstream`.
    pub fn start(upstream: &str) -> Proxy {
        let upstream: SocketAddr = upstream.parse().expect("upstream address");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("proxy address");
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (Arc::clone(&cut), Arc::clone(&stop));
        let accept = std::thread::spawn(move || accept_loop(&listener, upstream, &c, &s));
        Proxy {
            addr,
            cut,
            stop,
            accept: Some(accept),
        }
    }

    /// `host:port` to connect to.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Cuts every link (held back, not closed), or restores them.
    pub fn cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    upstream: SocketAddr,
    cut: &Arc<AtomicBool>,
    stop: &Arc<AtomicBool>,
) {
    let mut pumps = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(2))
                else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ] {
                    let (Ok(from), Ok(to)) = (from, to) else {
                        continue;
                    };
                    let (c, s) = (Arc::clone(cut), Arc::clone(stop));
                    pumps.push(std::thread::spawn(move || pump(from, to, &c, &s)));
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(TICK),
            Err(_) => std::thread::sleep(TICK),
        }
    }
    for pump in pumps {
        let _ = pump.join();
    }
}

/// Copies `from` to `to`, holding bytes and the end back while cut.
fn pump(mut from: TcpStream, mut to: TcpStream, cut: &AtomicBool, stop: &AtomicBool) {
    let _ = from.set_read_timeout(Some(TICK));
    let mut held = Vec::new();
    let mut ended = false;
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::SeqCst) {
        if !cut.load(Ordering::SeqCst) {
            if !held.is_empty() {
                if to.write_all(&held).is_err() {
                    break;
                }
                held.clear();
            }
            if ended {
                let _ = to.shutdown(Shutdown::Write);
                break;
            }
        }
        if ended {
            std::thread::sleep(TICK);
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => ended = true,
            Ok(n) => held.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => ended = true,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}
