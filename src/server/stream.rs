//! The server's one stream type: a connection's socket (TCP or Unix),
//! shared by `Arc` between the connection's thread and the liveness
//! module, read and written either plainly or through TLS.
//!
//! Sharing the socket by `Arc` is what keeps its descriptor valid for as
//! long as anyone may name it (in an epoll set, for a `shutdown` at server
//! stop): it closes when the last holder lets go, never earlier.

use rustls::{ServerConnection, StreamOwned};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a client has to complete a TLS or WebSocket handshake, in
/// total, however slowly its bytes trickle in.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected client socket.
#[derive(Debug)]
pub(crate) enum Socket {
    /// TCP (plain, TLS or WebSocket above it).
    Tcp(TcpStream),
    /// A Unix stream socket.
    Unix(UnixStream),
}

impl Socket {
    /// Sets the read timeout (`None`: block forever).
    pub(crate) fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.set_read_timeout(timeout),
            Socket::Unix(s) => s.set_read_timeout(timeout),
        }
    }

    /// Sets the write timeout (`None`: block forever).
    pub(crate) fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.set_write_timeout(timeout),
            Socket::Unix(s) => s.set_write_timeout(timeout),
        }
    }

    /// Shuts the socket down in both directions: the connection's thread
    /// wakes up with an end of input.
    pub(crate) fn shutdown(&self) {
        let _ = match self {
            Socket::Tcp(s) => s.shutdown(Shutdown::Both),
            Socket::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }

    /// Bytes the peer sent that nobody has read yet.
    pub(crate) fn unread_bytes(&self) -> u64 {
        rustix::io::ioctl_fionread(self).unwrap_or(0)
    }

    /// Discards whatever the peer has sent that is already buffered, so
    /// that closing does not turn into a reset that could eat our last
    /// reply.
    pub(crate) fn drain_input(&self) {
        let nonblocking = match self {
            Socket::Tcp(s) => s.set_nonblocking(true),
            Socket::Unix(s) => s.set_nonblocking(true),
        };
        if nonblocking.is_err() {
            return;
        }
        let mut sink = [0u8; 4096];
        for _ in 0..16 {
            match (&*self).read(&mut sink) {
                Ok(n) if n > 0 => continue,
                _ => break,
            }
        }
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Socket::Tcp(s) => s.as_fd(),
            Socket::Unix(s) => s.as_fd(),
        }
    }
}

impl Read for &Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => (&*s).read(buf),
            Socket::Unix(s) => (&*s).read(buf),
        }
    }
}

impl Write for &Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => (&*s).write(buf),
            Socket::Unix(s) => (&*s).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A socket shared by `Arc`, read and written through it (what rustls's
/// `StreamOwned` owns), with the deadline of the block of output now
/// being written, if any.
#[derive(Debug)]
pub(crate) struct Shared {
    socket: Arc<Socket>,
    drain: Option<Drain>,
}

/// A block of output that must be written within a total time: see
/// [`Stream::drain_within`].
#[derive(Debug)]
struct Drain {
    deadline: Instant,
    /// The socket's write timeout outside a block, to put back.
    timeout: Duration,
    /// A write of the block already went out: the next is bounded by what
    /// is left of the deadline, not by the socket's timeout.
    started: bool,
    /// The socket's write timeout was cut to meet the deadline.
    cut: bool,
}

impl Shared {
    pub(crate) fn new(socket: Arc<Socket>) -> Shared {
        Shared {
            socket,
            drain: None,
        }
    }

    fn drain_within(&mut self, timeout: Duration) {
        self.drain = Some(Drain {
            deadline: Instant::now() + timeout,
            timeout,
            started: false,
            cut: false,
        });
    }

    fn drained(&mut self) -> io::Result<()> {
        match self.drain.take() {
            Some(drain) if drain.cut => self.socket.set_write_timeout(Some(drain.timeout)),
            _ => Ok(()),
        }
    }
}

fn write_timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the client did not take its replies within --write-timeout",
    )
}

impl Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.socket).read(buf)
    }
}

impl Write for Shared {
    /// Within a block, the first write is bounded by the socket's own
    /// timeout (the block's whole time, as it starts at once), and each
    /// later one by what is left: one system call in the usual case, a
    /// `setsockopt` more for each write of a peer that reads slowly.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(drain) = &mut self.drain {
            if drain.started {
                let left = drain.deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(write_timed_out());
                }
                drain.cut = true;
                self.socket.set_write_timeout(Some(left))?;
            }
            drain.started = true;
            // The socket's timeout ran out (EAGAIN): a write timeout, not
            // the read timeout that ends an idle connection or a lease.
            return match (&*self.socket).write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(write_timed_out()),
                result => result,
            };
        }
        (&*self.socket).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A connection's byte stream: plain TCP or Unix, or TLS over TCP.
pub(crate) enum Stream {
    /// No TLS.
    Plain(Shared),
    /// TLS, the handshake done.
    Tls(Box<StreamOwned<ServerConnection, Shared>>),
}

impl Stream {
    /// Runs the server side of a TLS handshake over `socket`, bounded by
    /// [`HANDSHAKE_TIMEOUT`] in total. A peer that hangs up midway is an
    /// `UnexpectedEof`, one not speaking TLS an `InvalidData`, one too slow
    /// a `TimedOut`.
    pub(crate) fn accept_tls(socket: Arc<Socket>, tls: ServerConnection) -> io::Result<Stream> {
        let sock = Arc::clone(&socket);
        let mut stream = StreamOwned::new(tls, Shared::new(socket));
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        sock.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
        while stream.conn.is_handshaking() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the TLS handshake took too long",
                ));
            }
            sock.set_read_timeout(Some(left))?;
            let (read, written) = stream.conn.complete_io(&mut stream.sock)?;
            if read == 0 && written == 0 && stream.conn.is_handshaking() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed during the TLS handshake",
                ));
            }
        }
        // TLS 1.3 session tickets go out now, not with the first reply.
        while stream.conn.wants_write() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(Stream::Tls(Box::new(stream)))
    }

    /// Starts a block of output that must be written, flushes included,
    /// within `timeout` in total however slowly the peer reads (the socket's
    /// write timeout, which must be `timeout` now, bounds one write only).
    /// Writes past it fail with `TimedOut`. Ended by [`Stream::drained`].
    pub(crate) fn drain_within(&mut self, timeout: Duration) {
        self.shared().drain_within(timeout);
    }

    /// Ends the block that [`Stream::drain_within`] started, putting the
    /// socket's write timeout back if it was cut.
    pub(crate) fn drained(&mut self) -> io::Result<()> {
        self.shared().drained()
    }

    fn shared(&mut self) -> &mut Shared {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &mut s.sock,
        }
    }

    /// Input taken from the socket that the reader has not had yet: plain
    /// streams have none (the kernel holds it); rustls may hold decrypted
    /// records.
    pub(crate) fn has_pending_input(&mut self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(s) => s
                .conn
                .process_new_packets()
                .map_or(true, |state| state.plaintext_bytes_to_read() > 0),
        }
    }
}

impl Read for Stream {
    /// A TLS peer that closes the TCP connection without a `close_notify`
    /// (most clients, when they just drop the socket) is an ordinary end
    /// of input, as over plain TCP.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => match s.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    /// Sends what TLS buffered (a no-op for plain streams).
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::Tls(s) => s.flush(),
        }
    }
}
