//! The ceiling: a server that does nothing but answer every line, built
//! the way lockd is (std listener, a thread per connection with the same
//! small stack that, once its connection ends, waits to serve the next
//! one, a line buffer that starts at 1 KiB, grows to 64 KiB while
//! reads fill it and shrinks back once everything read is answered,
//! replies batched until no complete line is left, `TCP_NODELAY`), so the
//! ratio lockd / echo is the cost of lockd's own work per command.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

/// The reply to every line.
pub const REPLY: &[u8] = b"1 ok\n";

const STACK: usize = 128 * 1024;
const INITIAL_BUFFER: usize = 1024;
const MAX_BUFFER: usize = 64 * 1024;

/// A running echo server on `127.0.0.1:0`; stops accepting on drop (open
/// connections end when their clients close).
pub struct EchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl EchoServer {
    /// Binds `127.0.0.1:0` and starts the accept loop.
    ///
    /// # Errors
    /// Binding or starting the thread failed.
    pub fn start() -> io::Result<EchoServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        thread::Builder::new()
            .name("echo-accept".into())
            .spawn(move || accept_loop(&listener, &flag))?;
        Ok(EchoServer { addr, stop })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect(self.addr);
    }
}

fn accept_loop(listener: &TcpListener, stop: &AtomicBool) {
    // Threads whose connection ended wait here for the next; they end
    // when this loop does (the sender goes with it).
    let (handoff, next) = crossbeam_channel::unbounded::<TcpStream>();
    let waiting = Arc::new(AtomicUsize::new(0));
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let _ = stream.set_nodelay(true);
                let claimed = waiting
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if claimed {
                    let _ = handoff.send(stream);
                    continue;
                }
                let (next, waiting) = (next.clone(), Arc::clone(&waiting));
                let spawned = thread::Builder::new()
                    .name("echo-conn".into())
                    .stack_size(STACK)
                    .spawn(move || {
                        serve(stream);
                        loop {
                            waiting.fetch_add(1, Ordering::SeqCst);
                            match next.recv() {
                                Ok(stream) => serve(stream),
                                Err(_) => return,
                            }
                        }
                    });
                if spawned.is_err() {
                    thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            Err(_) if stop.load(Ordering::SeqCst) => return,
            Err(_) => thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
}

fn serve(mut stream: TcpStream) {
    let mut buf = vec![0u8; INITIAL_BUFFER];
    let mut out = Vec::new();
    let (mut start, mut end) = (0, 0);
    // The last read filled all the room it was given (pipelining).
    let mut filled = false;
    loop {
        // Answer every complete line buffered.
        while let Some(nl) = buf[start..end].iter().position(|&b| b == b'\n') {
            start += nl + 1;
            out.extend_from_slice(REPLY);
        }
        if !out.is_empty() {
            if stream.write_all(&out).is_err() {
                return;
            }
            out.clear();
        }
        if start == end {
            start = 0;
            end = 0;
        }
        if filled && buf.len() < MAX_BUFFER {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
            buf.resize(buf.len() * 2, 0);
        } else if end == 0 && !filled && buf.len() > INITIAL_BUFFER {
            buf = vec![0u8; INITIAL_BUFFER];
        } else if end == buf.len() {
            if start > 0 {
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
            } else if buf.len() < MAX_BUFFER {
                buf.resize(buf.len() * 2, 0);
            } else {
                // A line longer than the buffer: drop it, as lockd does.
                start = 0;
                end = 0;
            }
        }
        let room = buf.len() - end;
        match stream.read(&mut buf[end..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                end += n;
                filled = n == room;
            }
        }
    }
}
