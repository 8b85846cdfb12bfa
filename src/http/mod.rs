//! `--http ADDR:PORT`: the operator's window on a running server.
//!
//! | path | what |
//! | --- | --- |
//! | `/healthz` | `ok`, never behind the secret |
//! | `/metrics` | Prometheus text format (see [`metrics`]) |
//! | `/locks.json` | the `dj` data, plus hold times; `?match=`, `?sort=`, `?offset=`, `?limit=` |
//! | `/history.json` | grants/s and wait-time percentiles over the last ten minutes |
//! | `/` | the status page, which polls the two JSON paths |
//!
//! It is served by `tiny_http` on threads of its own: its accept thread,
//! a thread per HTTP connection, and [`WORKERS`] threads that answer. None
//! of them is a lock connection's thread, and none holds the table lock
//! for longer than a copy of it takes. Only `GET` and `HEAD` are served:
//! nothing here changes a lock. With a secret, every path but `/healthz`
//! needs `Authorization: Bearer SECRET`, compared in constant time and
//! never logged.

mod history;
mod locks;
pub mod metrics;

use crate::error::Error;
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::stats::Stats;
use crate::store::{LockStore, StoreError};
use history::History;
use parking_lot::Mutex;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;
use tiny_http::{Header, Method, Request, Response};

/// Threads answering requests. A slow reader of a large reply holds one.
pub const WORKERS: usize = 4;

const PAGE_HTML: &str = include_str!("page.html");
const PAGE_JS: &str = include_str!("page.js");
const PAGE_CSS: &str = include_str!("page.css");

/// Everything the HTTP side reads, borrowed from the server for one
/// request.
pub(crate) struct Parts<'a> {
    pub store: &'a dyn LockStore,
    pub stats: &'a Stats,
    pub metrics: &'a Metrics,
    pub max_connections: usize,
    /// `false` with `--no-dump`: `/locks.json` is refused, as `dj` is.
    pub dump: bool,
}

/// What the HTTP side observes: implemented by the server's state, so this
/// module never depends on the server.
pub(crate) trait Observe: Send + Sync + 'static {
    /// The parts of the state to read.
    fn parts(&self) -> Parts<'_>;
}

/// A bound HTTP listener, not yet serving.
pub struct HttpListener {
    listener: TcpListener,
    secret: Option<Secret>,
}

impl HttpListener {
    /// Binds `addr` (`HOST:PORT`; port 0 picks one).
    ///
    /// # Errors
    /// The address does not resolve, is in use, or cannot be bound.
    pub fn bind(addr: &str, secret: Option<Secret>) -> Result<HttpListener, Error> {
        let listener = crate::net::bind_tcp(addr)?;
        Ok(HttpListener { listener, secret })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Starts serving from `source` on threads of its own.
    pub(crate) fn spawn(self, source: Arc<dyn Observe>) -> Result<HttpServer, Error> {
        let spawn_error = |e| Error::io("cannot start an HTTP thread", e);
        let first = tiny_server(&self.listener).map_err(spawn_error)?;
        let shared = Arc::new(Shared {
            listener: self.listener,
            server: Mutex::new(Arc::new(first)),
            secret: self.secret,
            stopping: AtomicBool::new(false),
            history: History::default(),
            source,
        });
        let mut threads = Vec::new();
        let sampler = Arc::clone(&shared);
        threads.push(
            thread::Builder::new()
                .name("lockd-http-history".into())
                .spawn(move || sampler.history.run(&*sampler.source, &sampler.stopping))
                .map_err(spawn_error)?,
        );
        for _ in 0..WORKERS {
            let worker = Arc::clone(&shared);
            let thread = thread::Builder::new()
                .name("lockd-http".into())
                .spawn(move || worker.serve())
                .map_err(spawn_error);
            match thread {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    let mut started = HttpServer { shared, threads };
                    started.stop();
                    return Err(e);
                }
            }
        }
        Ok(HttpServer { shared, threads })
    }
}

/// A tiny_http server accepting on a clone of our listener, so that it can
/// be started again on the same socket if its accept thread quits.
fn tiny_server(listener: &TcpListener) -> io::Result<tiny_http::Server> {
    tiny_http::Server::from_listener(listener.try_clone()?, None).map_err(io::Error::other)
}

/// The running HTTP side. Stopped by [`HttpServer::stop`] or on drop.
pub struct HttpServer {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl HttpServer {
    /// The address it serves on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.shared.listener.local_addr().ok()
    }

    /// Stops the workers and the sampler, and waits for them.
    pub fn stop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.history.wake();
        let server = Arc::clone(&self.shared.server.lock());
        for _ in 0..WORKERS {
            server.unblock();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Shared {
    listener: TcpListener,
    server: Mutex<Arc<tiny_http::Server>>,
    secret: Option<Secret>,
    stopping: AtomicBool,
    history: History,
    source: Arc<dyn Observe>,
}

impl Shared {
    fn serve(&self) {
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let server = Arc::clone(&self.server.lock());
            match server.recv() {
                Ok(request) => self.answer(request),
                Err(_) if self.stopping.load(Ordering::SeqCst) => return,
                Err(e) => self.restart(&server, &e),
            }
        }
    }

    /// tiny_http's accept thread quits on its first accept error (out of
    /// descriptors, say) and hands the error to one worker: that worker
    /// starts a new one on the same socket after a pause, and wakes the
    /// others, blocked on the old one. A worker woken so finds the new
    /// server in place and does nothing.
    fn restart(&self, failed: &Arc<tiny_http::Server>, error: &io::Error) {
        let mut current = self.server.lock();
        if !Arc::ptr_eq(&current, failed) {
            return;
        }
        ::log::warn!("HTTP accept failed: {error}; restarting in 100 ms");
        thread::sleep(Duration::from_millis(100));
        match tiny_server(&self.listener) {
            Ok(server) => *current = Arc::new(server),
            Err(e) => ::log::error!("cannot restart the HTTP server: {e}"),
        }
        for _ in 0..WORKERS {
            failed.unblock();
        }
    }

    fn answer(&self, request: Request) {
        let (path, query) = match request.url().split_once('?') {
            Some((path, query)) => (path.to_string(), query.to_string()),
            None => (request.url().to_string(), String::new()),
        };
        let reply = if !matches!(request.method(), Method::Get | Method::Head) {
            Reply::text(405, "only GET and HEAD: this interface is read-only\n")
        } else if path != "/healthz" && !self.authorized(&request) {
            Reply::text(
                401,
                "Authorization: Bearer SECRET required (see --auth-file in lockd(8))\n",
            )
            .header("WWW-Authenticate", "Bearer realm=\"lockd\"")
        } else {
            self.route(&path, &query)
        };
        let mut response = Response::from_data(reply.body)
            .with_status_code(reply.status)
            .with_header(header("Content-Type", reply.content_type))
            .with_header(header("Cache-Control", "no-store"))
            .with_header(header("X-Content-Type-Options", "nosniff"));
        for (name, value) in reply.headers {
            response.add_header(header(name, &value));
        }
        // A client that went away is no concern of ours.
        let _ = request.respond(response);
    }

    fn authorized(&self, request: &Request) -> bool {
        let Some(secret) = &self.secret else {
            return true;
        };
        request
            .headers()
            .iter()
            .filter(|h| h.field.equiv("Authorization"))
            .any(|h| {
                let value = h.value.as_bytes();
                value.len() > 7
                    && value[..7].eq_ignore_ascii_case(b"bearer ")
                    && secret.matches(&value[7..])
            })
    }

    fn route(&self, path: &str, query: &str) -> Reply {
        let parts = self.source.parts();
        match path {
            "/healthz" => Reply::text(200, "ok\n"),
            "/metrics" => match metrics::render(&parts) {
                Ok(text) => Reply {
                    content_type: "text/plain; version=0.0.4; charset=utf-8",
                    ..Reply::ok(text.into_bytes())
                },
                Err(e) => Reply::unavailable(&e),
            },
            "/locks.json" if !parts.dump => Reply::text(403, "0 disabled: lockd runs with --no-dump\n"),
            "/locks.json" => match locks::render(&parts, &locks::Query::parse(query)) {
                Ok(json) => Reply {
                    content_type: "application/json",
                    ..Reply::ok(json)
                },
                Err(e) => Reply::unavailable(&e),
            },
            "/history.json" => Reply {
                content_type: "application/json",
                ..Reply::ok(self.history.render().into_bytes())
            },
            "/" | "/index.html" => Reply {
                content_type: "text/html; charset=utf-8",
                ..Reply::ok(PAGE_HTML.into())
            }
            .header(
                "Content-Security-Policy",
                "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
            "/page.js" => Reply {
                content_type: "text/javascript; charset=utf-8",
                ..Reply::ok(PAGE_JS.into())
            },
            "/page.css" => Reply {
                content_type: "text/css; charset=utf-8",
                ..Reply::ok(PAGE_CSS.into())
            },
            _ => Reply::text(404, "not found: try /, /metrics, /locks.json or /healthz\n"),
        }
    }
}

struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn ok(body: Vec<u8>) -> Reply {
        Reply {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body,
            headers: Vec::new(),
        }
    }

    fn text(status: u16, body: &str) -> Reply {
        Reply {
            status,
            ..Reply::ok(body.into())
        }
    }

    /// 503: the lock store could not answer (cluster mode: etcd).
    fn unavailable(error: &StoreError) -> Reply {
        Reply::text(503, &format!("0 Error: {error}\n"))
    }

    fn header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_string()));
        self
    }
}

fn header(name: &str, value: &str) -> Header {
    // Every name and value here is a constant of this file: valid ASCII.
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("an ASCII header")
}
