//! Liveness: noticing that a client hung up, releasing its locks before
//! anyone else can see them (`PROTOCOL.md`, "Connection identity"), and
//! waking a waiter whose peer left.
//!
//! One mechanism. Every connection's socket is in one epoll set, for
//! hang-ups only (`EPOLLRDHUP`, never data), one-shot: a hang-up is final
//! and is reported once. The set holds the socket by `Arc` (through the
//! connection's [`Presence`]), so its descriptor stays open for as long as
//! the set may name it. Reported hang-ups are handled by [`Liveness::sweep`]
//! under one lock, one small step per event:
//! - a connection whose thread is blocked reading with nothing of a command
//!   held, or waiting in line, is orphaned on its behalf at once (and a
//!   waiter is woken to end);
//! - one whose thread is busy answering what its peer sent before closing
//!   is left to end by itself, and is "finishing" until it does.
//!
//! Sweeps run on a thread of their own, which blocks until the set has
//! something to report, and on every connection's thread before it serves
//! fresh input ([`Liveness::settle`]): the kernel may report a hang-up
//! before any thread of ours has run, and a command that arrives after
//! a client closed must not see that client's locks. Settling also waits,
//! briefly and in total, for finishing connections to end.

use super::stream::Socket;
use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use rustix::event::epoll::{self, CreateFlags, EventData, EventFlags};
use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags, Timespec};
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Longest a command waits, in total, for connections whose peer hung up
/// while their threads were still answering it. Those that take longer
/// (a thread stuck writing to a peer that reads nothing, say) are not
/// waited for again.
const FINISH_WAIT: Duration = Duration::from_millis(50);

/// The liveness thread handles hang-ups at most once per `PACE`: under
/// churn it takes them in batches instead of waking for each, and a
/// connection's own thread, which reads its peer's end itself, usually
/// finishes first. A command that must see them handled does not wait
/// for it: `settle` sweeps the set itself. What it delays is only the
/// orphaning of a connection whose thread cannot read (waiting in line,
/// writing), by at most this long. (W5, 4 threads opening and closing
/// connections: 10% more connections a second.)
const PACE: Duration = Duration::from_millis(1);

/// Hang-ups read from the set per `epoll_wait`.
const BATCH: usize = 256;

const ZERO: Timespec = Timespec {
    tv_sec: 0,
    tv_nsec: 0,
};

/// A flag other threads can block on with `poll`: an eventfd that stays
/// readable once raised.
pub(crate) struct Signal(OwnedFd);

impl Signal {
    pub(crate) fn new() -> io::Result<Signal> {
        Ok(Signal(eventfd(
            0,
            EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
        )?))
    }

    /// Raises the flag; every `poll` on it returns from then on.
    pub(crate) fn raise(&self) {
        let _ = rustix::io::write(&self.0, &1u64.to_ne_bytes());
    }
}

impl AsFd for Signal {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Where a connection's thread is, as the liveness module sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Still in a TLS or WebSocket handshake: holds nothing.
    Starting = 0,
    /// Serving what its peer sent.
    Busy = 1,
    /// Blocked reading (or about to), with nothing of a command held.
    Idle = 2,
    /// Waiting in line for a lock.
    Waiting = 3,
    /// Orphaned on its behalf: its locks are released.
    Reaped = 4,
}

/// One connection as the liveness module knows it, shared by `Arc` with
/// the connection's thread.
pub(crate) struct Presence {
    id: u64,
    socket: Arc<Socket>,
    phase: AtomicU8,
    hung_up: AtomicBool,
    /// Still counted in `connections`.
    counted: AtomicBool,
    /// Told when the connection is orphaned while waiting in line; made
    /// by its first wait (most connections never wait: a channel each
    /// cost about 4% of a W5 connection's instructions).
    wake: OnceLock<(Sender<()>, Receiver<()>)>,
}

impl Presence {
    fn cas(&self, from: Phase, to: Phase) -> bool {
        self.phase
            .compare_exchange(from as u8, to as u8, SeqCst, SeqCst)
            .is_ok()
    }

    /// The connection's id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The connection's socket.
    pub(crate) fn socket(&self) -> &Arc<Socket> {
        &self.socket
    }

    /// The handshake is over: the thread now serves commands.
    pub(crate) fn serving(&self) {
        self.cas(Phase::Starting, Phase::Busy);
    }

    /// The thread is about to block reading, holding nothing of a command.
    pub(crate) fn idle(&self) {
        self.cas(Phase::Busy, Phase::Idle);
    }

    /// The thread's read returned; `false` if it was orphaned meanwhile.
    pub(crate) fn busy(&self) -> bool {
        self.cas(Phase::Idle, Phase::Busy) || self.phase.load(SeqCst) == Phase::Busy as u8
    }

    /// The read that won against an orphaning brought the peer's last
    /// commands: the thread serves them after all (its session joins the
    /// store again).
    pub(crate) fn rejoin(&self) {
        self.phase.store(Phase::Busy as u8, SeqCst);
    }

    /// The thread starts waiting in line. `false` if the peer has hung up
    /// already: the wait must not start.
    pub(crate) fn wait_starts(&self) -> bool {
        // Made before the phase says `Waiting`: a sweep that sees the
        // phase finds the channel.
        self.woken();
        self.phase.store(Phase::Waiting as u8, SeqCst);
        !self.hung_up.load(SeqCst)
    }

    /// The wait ended; `false` if the connection was orphaned meanwhile
    /// (its peer hung up).
    pub(crate) fn wait_ends(&self) -> bool {
        self.cas(Phase::Waiting, Phase::Busy)
    }

    /// Receives a message when the connection is orphaned while waiting.
    pub(crate) fn woken(&self) -> &Receiver<()> {
        &self.wake.get_or_init(|| bounded(1)).1
    }

    /// The thread read the end of the peer's input.
    pub(crate) fn peer_closed(&self) {
        self.hung_up.store(true, SeqCst);
        self.ending();
    }

    /// The thread's read ended the connection (the peer's end, or an
    /// error): the thread releases the locks itself, so a sweep leaves it
    /// to finish rather than orphaning it at the same time (a release
    /// whose orphans the thread would count only after a settle returned).
    pub(crate) fn ending(&self) {
        self.cas(Phase::Idle, Phase::Busy);
    }

    /// Whether a sweep orphaned the connection on its thread's behalf.
    pub(crate) fn reaped(&self) -> bool {
        self.phase.load(SeqCst) == Phase::Reaped as u8
    }

    /// Whether the peer was seen to hang up (by the liveness module, or by
    /// the thread reading the end of its input).
    pub(crate) fn hung_up(&self) -> bool {
        self.hung_up.load(SeqCst)
    }

    /// Stops counting the connection; `true` the first time.
    pub(crate) fn uncount(&self) -> bool {
        self.counted.swap(false, SeqCst)
    }
}

/// Shards of the connections in the set, by id: when thousands of
/// connections end at once, each takes the lock of its own shard, and a
/// sweep finding a hang-up's connection seldom waits behind them.
const SHARDS: usize = 64;

/// One shard of the connections in the set.
#[derive(Default)]
struct Members {
    conns: HashMap<u64, Arc<Presence>>,
    /// Connections whose peer hung up while their threads were busy
    /// answering its last commands, until they end (or are given up on).
    finishing: HashSet<u64>,
}

/// The epoll set and the connections in it.
pub(crate) struct Liveness {
    epoll: OwnedFd,
    shards: Box<[Mutex<Members>]>,
    /// Connections in the set (`conns` of every shard).
    count: AtomicUsize,
    /// Connections finishing (`finishing` of every shard); changed only
    /// under the lock of the shard whose set changes.
    finishing_count: AtomicUsize,
    /// Taken to wait for `count` or `finishing_count` to reach zero, and
    /// by the thread that brings either to zero, to wake them.
    quiet: Mutex<()>,
    /// Signalled when `count` reaches zero.
    drained: Condvar,
    /// Signalled when `finishing_count` reaches zero.
    finished: Condvar,
    /// Held while reported hang-ups are taken from the set and handled.
    sweeping: Mutex<()>,
    stop: Signal,
}

impl Liveness {
    /// An empty set.
    pub(crate) fn new() -> io::Result<Liveness> {
        Ok(Liveness {
            epoll: epoll::create(CreateFlags::CLOEXEC)?,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            count: AtomicUsize::new(0),
            finishing_count: AtomicUsize::new(0),
            quiet: Mutex::new(()),
            drained: Condvar::new(),
            finished: Condvar::new(),
            sweeping: Mutex::new(()),
            stop: Signal::new()?,
        })
    }

    /// Adds connection `id` and its socket, counted and starting.
    ///
    /// # Errors
    /// As `epoll_ctl(2)` (out of memory).
    pub(crate) fn add(&self, id: u64, socket: Arc<Socket>) -> io::Result<Arc<Presence>> {
        let presence = Arc::new(Presence {
            id,
            socket,
            phase: AtomicU8::new(Phase::Starting as u8),
            hung_up: AtomicBool::new(false),
            counted: AtomicBool::new(true),
            wake: OnceLock::new(),
        });
        // In its shard before the set can report it.
        let mut members = self.shard(id).lock();
        epoll::add(
            &self.epoll,
            &*presence.socket,
            EventData::new_u64(id),
            EventFlags::RDHUP | EventFlags::HUP | EventFlags::ERR | EventFlags::ONESHOT,
        )?;
        members.conns.insert(id, Arc::clone(&presence));
        self.count.fetch_add(1, SeqCst);
        Ok(presence)
    }

    fn shard(&self, id: u64) -> &Mutex<Members> {
        &self.shards[(id % SHARDS as u64) as usize]
    }

    /// Wakes the threads waiting on `condvar` for a count that has just
    /// reached zero.
    fn wake(&self, condvar: &Condvar) {
        let _quiet = self.quiet.lock();
        condvar.notify_all();
    }

    /// Forgets connection `id`, which is ending (its locks released).
    pub(crate) fn forget(&self, id: u64) {
        let mut members = self.shard(id).lock();
        let presence = members.conns.remove(&id);
        // Only the last to finish wakes the commands waiting for them.
        let finished =
            members.finishing.remove(&id) && self.finishing_count.fetch_sub(1, SeqCst) == 1;
        drop(members);
        let drained = presence.is_some() && self.count.fetch_sub(1, SeqCst) == 1;
        if drained {
            self.wake(&self.drained);
        }
        if finished {
            self.wake(&self.finished);
        }
        if let Some(presence) = presence {
            // The socket is still open: `presence` holds it. Outside the
            // lock, which every sweep and every ending connection takes.
            let _ = epoll::delete(&self.epoll, &*presence.socket);
        }
    }

    /// How many connections are in the set.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.count.load(SeqCst)
    }

    /// Blocks until every connection has been forgotten.
    pub(crate) fn wait_drained(&self) {
        let mut quiet = self.quiet.lock();
        while self.count.load(SeqCst) > 0 {
            self.drained.wait(&mut quiet);
        }
    }

    /// Shuts down every connection's socket (an immediate server stop):
    /// their threads wake up and end.
    pub(crate) fn shutdown_all(&self) {
        for shard in &*self.shards {
            for presence in shard.lock().conns.values() {
                presence.socket.shutdown();
            }
        }
    }

    /// Ends [`Liveness::run`].
    pub(crate) fn stop(&self) {
        self.stop.raise();
    }

    /// The liveness thread's loop: blocks until hang-ups are reported, then
    /// calls `on_ready` (which sweeps, or returns `false` once the server
    /// is gone), until [`Liveness::stop`].
    pub(crate) fn run(&self, on_ready: impl Fn() -> bool) {
        loop {
            let mut fds = [
                PollFd::new(&self.epoll, PollFlags::IN),
                PollFd::new(&self.stop, PollFlags::IN),
            ];
            if poll(&mut fds, None).is_err() {
                continue;
            }
            if !fds[1].revents().is_empty() {
                return;
            }
            if !on_ready() {
                return;
            }
            thread::sleep(PACE);
        }
    }

    /// Returns once no sweep is under way: one that orphaned a connection
    /// has released its locks and counted them.
    pub(crate) fn wait_for_sweep(&self) {
        drop(self.sweeping.lock());
    }

    /// Whether the set has hang-ups to report (one `poll`, no lock).
    fn ready(&self) -> bool {
        let mut fds = [PollFd::new(&self.epoll, PollFlags::IN)];
        matches!(poll(&mut fds, Some(&ZERO)), Ok(n) if n > 0)
    }

    /// Takes every reported hang-up from the set and handles it.
    pub(crate) fn sweep(&self, reap: &dyn Fn(&Presence)) {
        let _sweeping = self.sweeping.lock();
        let mut events = Vec::with_capacity(BATCH);
        loop {
            events.clear();
            let Ok(n) = epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(&mut events),
                Some(&ZERO),
            ) else {
                return;
            };
            for event in &events {
                let id = event.data.u64();
                let presence = self.shard(id).lock().conns.get(&id).cloned();
                if presence.is_some_and(|presence| self.hung_up(&presence, reap)) {
                    // Busy: it ends by itself, soon. Unless it ended already.
                    let mut members = self.shard(id).lock();
                    if members.conns.contains_key(&id) && members.finishing.insert(id) {
                        self.finishing_count.fetch_add(1, SeqCst);
                    }
                }
            }
            if n < BATCH {
                return;
            }
        }
    }

    /// Handles one hang-up; `true` if the connection's thread is busy
    /// answering what its peer sent before, and will end by itself.
    fn hung_up(&self, presence: &Presence, reap: &dyn Fn(&Presence)) -> bool {
        presence.hung_up.store(true, SeqCst);
        // Nothing unread and nothing held: no command of the peer's is
        // left to answer, and none can come after its hang-up.
        if presence.socket.unread_bytes() == 0 && presence.cas(Phase::Idle, Phase::Reaped) {
            reap(presence);
            return false;
        }
        if presence.cas(Phase::Waiting, Phase::Reaped) {
            reap(presence);
            if let Some((wake, _)) = presence.wake.get() {
                let _ = wake.try_send(());
            }
            return false;
        }
        // Starting (holds nothing) or reaped: nothing to wait for.
        let phase = presence.phase.load(SeqCst);
        phase != Phase::Starting as u8 && phase != Phase::Reaped as u8
    }

    /// Called by a connection's thread before it serves fresh input: every
    /// hang-up reported by now is handled, and connections still answering
    /// their peer's last commands have ended (or [`FINISH_WAIT`] has
    /// passed), so that the command cannot see locks of a client that has
    /// closed. Cheap when nobody hung up: one `poll` and two atomic loads.
    pub(crate) fn settle(&self, own: &Presence, reap: &dyn Fn(&Presence)) {
        if self.ready() {
            self.sweep(reap);
        } else if self.sweeping.is_locked() {
            // Another thread took hang-ups from the set and is handling
            // them: wait until it is done.
            drop(self.sweeping.lock());
        }
        if own.hung_up() || self.finishing_count.load(SeqCst) == 0 {
            // A connection whose own peer left serves only that peer's
            // last commands, which nobody reads: it need not wait.
            return;
        }
        let deadline = Instant::now() + FINISH_WAIT;
        let mut quiet = self.quiet.lock();
        while self.finishing_count.load(SeqCst) > 0 {
            if self.finished.wait_until(&mut quiet, deadline).timed_out() {
                drop(quiet);
                // Left to their threads, never waited for again.
                for shard in &*self.shards {
                    let mut members = shard.lock();
                    let given_up = members.finishing.len();
                    if given_up > 0 {
                        members.finishing.clear();
                        self.finishing_count.fetch_sub(given_up, SeqCst);
                    }
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::AtomicU64;

    fn pair() -> (Arc<Socket>, UnixStream) {
        let (ours, peer) = UnixStream::pair().expect("socketpair");
        (Arc::new(Socket::Unix(ours)), peer)
    }

    /// An idle connection is orphaned at its peer's hang-up, a busy one is
    /// left to finish, a waiter is woken; each hang-up is handled once.
    #[test]
    fn hang_ups_are_handled_once_by_phase() {
        let liveness = Liveness::new().expect("epoll");
        let reaped = AtomicU64::new(0);
        let reap = |p: &Presence| {
            reaped.fetch_add(1 << (8 * p.id()), SeqCst);
        };
        let (idle_socket, idle_peer) = pair();
        let (busy_socket, mut busy_peer) = pair();
        let (waiting_socket, waiting_peer) = pair();
        let idle = liveness.add(0, idle_socket).expect("add");
        let busy = liveness.add(1, busy_socket).expect("add");
        let waiting = liveness.add(2, waiting_socket).expect("add");
        for p in [&idle, &busy, &waiting] {
            p.serving();
        }
        idle.idle();
        assert!(waiting.wait_starts());
        // Data is not a hang-up.
        busy_peer.write_all(b"g x\n").expect("write");
        liveness.sweep(&reap);
        assert_eq!(reaped.load(SeqCst), 0);
        drop((idle_peer, busy_peer, waiting_peer));
        liveness.sweep(&reap);
        assert_eq!(reaped.load(SeqCst), 1 | 1 << 16);
        assert!(waiting.woken().try_recv().is_ok());
        assert!(!waiting.wait_ends());
        assert!(busy.hung_up() && busy.busy());
        assert_eq!(liveness.finishing_count.load(SeqCst), 1);
        // Reported once.
        liveness.sweep(&reap);
        assert_eq!(reaped.load(SeqCst), 1 | 1 << 16);
        // The busy one ends by itself; nothing is left behind.
        for id in 0..3 {
            liveness.forget(id);
        }
        assert_eq!(liveness.finishing_count.load(SeqCst), 0);
        assert_eq!(liveness.len(), 0);
    }
    /// Busy connections whose peers hung up, in different shards: a
    /// command's settle waits until the last of them ends, and is woken
    /// by it.
    #[test]
    fn settle_waits_for_busy_connections_to_end() {
        let liveness = Arc::new(Liveness::new().expect("epoll"));
        let reap = |_: &Presence| {};
        let (own_socket, _own_peer) = pair();
        let own = liveness.add(0, own_socket).expect("add");
        let mut peers = Vec::new();
        for id in 1..=3 {
            let (socket, peer) = pair();
            liveness.add(id, socket).expect("add").serving();
            peers.push(peer);
        }
        drop(peers);
        liveness.sweep(&reap);
        assert_eq!(liveness.finishing_count.load(SeqCst), 3);
        let ending = Arc::clone(&liveness);
        let ends = std::thread::spawn(move || {
            for id in 1..=3 {
                ending.forget(id);
            }
        });
        liveness.settle(&own, &reap);
        // Not returned before they ended.
        assert_eq!(liveness.finishing_count.load(SeqCst), 0);
        assert_eq!(liveness.len(), 1);
        ends.join().expect("forgets");
        liveness.forget(0);
        liveness.wait_drained();
    }

    /// A busy connection that outlasts the settle's wait is given up on
    /// (never waited for again) and counted out once: its end later does
    /// not count it out a second time.
    #[test]
    fn a_busy_connection_that_outlasts_the_wait_is_given_up_once() {
        let liveness = Liveness::new().expect("epoll");
        let reap = |_: &Presence| {};
        let (own_socket, _own_peer) = pair();
        let own = liveness.add(0, own_socket).expect("add");
        let (socket, peer) = pair();
        liveness.add(SHARDS as u64, socket).expect("add").serving();
        drop(peer);
        liveness.sweep(&reap);
        assert_eq!(liveness.finishing_count.load(SeqCst), 1);
        liveness.settle(&own, &reap);
        assert_eq!(liveness.finishing_count.load(SeqCst), 0);
        liveness.forget(SHARDS as u64);
        assert_eq!(liveness.finishing_count.load(SeqCst), 0);
        // In the same shard as the one given up on: still found.
        assert_eq!(liveness.len(), 1);
        liveness.forget(0);
        assert_eq!(liveness.len(), 0);
    }
}
