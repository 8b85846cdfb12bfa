//! `lockctl run`: take a lock, run a command in its own process group
//! while the lock is held, release the lock when the command ends.
//!
//! Three things can happen while the command runs, and the main thread
//! `select!`s on them:
//!
//! * the command exits: release the lock, exit with its status (128+N if
//!   signal N killed it);
//! * the connection drops (the client's disconnect notification): the
//!   server has released the lock, so whatever the command protects is no
//!   longer ours. The command's process group gets SIGTERM, then SIGKILL
//!   after `--kill-after`; exit [`exit::LOCK_LOST`];
//! * a signal arrives: a thread passes it on to the process group; the
//!   command decides what to do, and its exit is handled as above.
//!
//! Signals are process-global, so this module installs no handler: the
//! `lockctl` binary does, and hands over the signal numbers on a channel.

use crate::connect::{exit, Global};
use crate::hold::{take, LockOptions};
use crossbeam_channel::{bounded, select, Receiver, RecvTimeoutError};
use parking_lot::Mutex;
use rustix::process::{getpgrp, kill_process_group, Pid, Signal};
use rustix::termios::{tcgetpgrp, tcsetpgrp};
use std::ffi::OsString;
use std::io::{self, IsTerminal};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// A parsed `lockctl run`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The lock and how to take it.
    pub lock: LockOptions,
    /// `-o`/`--close` was given: it changes nothing here (see [`run`]).
    pub close: bool,
    /// `--kill-after`.
    pub kill_after: Duration,
    /// CMD and its arguments (never empty; `sh -c STRING` for `-c`).
    pub command: Vec<OsString>,
}

/// Where signals go: nowhere yet (lockctl exits as the signal says,
/// which closes the connection and so gives up any lock or place in
/// line), a running command's process group, or nowhere any more.
#[derive(Clone, Copy)]
enum Target {
    Nobody,
    Group(Pid),
    Done,
}

/// Connects as `global` says and runs `options.command` under the lock;
/// returns lockctl's exit status.
///
/// Each signal number received on `signals` (the caller installs the
/// handlers: SIGINT, SIGTERM and SIGHUP for `lockctl run`) goes to the
/// command's process group; one that comes before the command has started
/// ends lockctl at once with status 128+N, giving up the lock or the place
/// in line with the connection. Pass [`crossbeam_channel::never`] to
/// forward nothing.
pub fn run(global: &Global, options: &RunOptions, signals: Receiver<i32>) -> u8 {
    let target = Arc::new(Mutex::new(Target::Nobody));
    // Forwarding starts before connecting, so that a signal during a slow
    // connect ends lockctl then, not once the connect has timed out.
    if let Err(e) = forward_signals(signals, Arc::clone(&target)) {
        eprintln!("lockctl: cannot start a thread to forward signals: {e}");
        return exit::UNAVAILABLE;
    }
    if options.close {
        eprintln!(
            "lockctl: -o/--close changes nothing here: the lock belongs to lockctl's \
             connection, not to a descriptor CMD could inherit, so CMD's children never hold it"
        );
    }
    let taken = match take(global, &options.lock) {
        Ok(taken) => taken,
        Err(code) => return code,
    };
    let verbose = options.lock.verbose;
    let token = taken.held.token();
    let mut command = Command::new(&options.command[0]);
    command
        .args(&options.command[1..])
        .env("LOCKD_NAME", &options.lock.name);
    match token {
        Some(token) => command.env("LOCKD_TOKEN", token.to_string()),
        None => command.env_remove("LOCKD_TOKEN"),
    };
    // CMD runs in a process group of its own, which the signals below go to.
    command.process_group(0);
    // When lockctl runs in the foreground of a terminal, CMD's group takes
    // the terminal once started (see `Terminal::hand_to`), so an
    // interactive CMD can read it and Ctrl-C reaches it directly; lockctl
    // takes it back at the end, whatever happens next.
    let terminal = Terminal::ours();
    let lost = taken.lost.clone();
    // The signal thread waits on this lock while the command starts, so a
    // signal in between reaches the new process group, not a dead end.
    let mut guard = target.lock();
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            *guard = Target::Done;
            drop(guard);
            taken.held.release(verbose);
            let shown = options.command[0].to_string_lossy();
            eprintln!("lockctl: cannot run {shown}: {e}");
            return if e.kind() == io::ErrorKind::NotFound {
                exit::NOT_FOUND
            } else {
                exit::CANNOT_EXECUTE
            };
        }
    };
    let pgid = Pid::from_child(&child);
    if let Some(terminal) = &terminal {
        terminal.hand_to(pgid);
    }
    *guard = Target::Group(pgid);
    drop(guard);
    let (exited_tx, exited) = bounded(1);
    let waiter = thread::Builder::new()
        .name("lockctl-wait".into())
        .spawn(move || {
            let _ = exited_tx.send(child.wait());
        });
    if let Err(e) = waiter {
        // Cannot watch the command: stop it rather than run it unguarded.
        signal_group(pgid, Signal::KILL);
        eprintln!("lockctl: cannot start a thread to wait for the command: {e}");
        return exit::UNAVAILABLE;
    }
    let outcome = select! {
        recv(exited) -> status => status.ok(),
        // Both may be ready at once; a command that already ended
        // finished under the lock.
        recv(lost) -> _ => exited.try_recv().ok(),
    };
    match outcome {
        Some(status) => {
            *target.lock() = Target::Done;
            taken.held.release(verbose);
            match status {
                Ok(status) => exit_status(status),
                Err(e) => {
                    eprintln!("lockctl: cannot wait for the command: {e}");
                    exit::UNAVAILABLE
                }
            }
        }
        None => {
            let why = taken.why_lost();
            eprintln!(
                "lockctl: lost lock {:?}: {why}; stopping the command (SIGTERM, then SIGKILL after {:?})",
                options.lock.name, options.kill_after
            );
            signal_group(pgid, Signal::TERM);
            if let Err(RecvTimeoutError::Timeout) = exited.recv_timeout(options.kill_after) {
                signal_group(pgid, Signal::KILL);
                let _ = exited.recv();
            }
            *target.lock() = Target::Done;
            exit::LOCK_LOST
        }
    }
}

/// Starts the thread that passes the signals received on `signals` on.
fn forward_signals(signals: Receiver<i32>, target: Arc<Mutex<Target>>) -> io::Result<()> {
    thread::Builder::new()
        .name("lockctl-forward".into())
        .spawn(move || {
            for signal in signals {
                match *target.lock() {
                    Target::Group(pgid) => {
                        if let Some(signal) = Signal::from_named_raw(signal) {
                            signal_group(pgid, signal);
                        }
                    }
                    // No command yet: behave as the signal would have.
                    Target::Nobody => std::process::exit(128 + signal),
                    Target::Done => {}
                }
            }
        })?;
    Ok(())
}

/// Signals CMD's process group; one that is gone already (ESRCH) is fine.
fn signal_group(pgid: Pid, signal: Signal) {
    let _ = kill_process_group(pgid, signal);
}

/// The command's status as lockctl's: its code, or 128+N for signal N.
fn exit_status(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => (128 + signal) as u8,
        (None, None) => exit::UNAVAILABLE,
    }
}

/// The terminal lockctl holds in the foreground, if any: handed to CMD's
/// process group at its start and taken back when dropped.
struct Terminal {
    pgrp: Pid,
}

impl Terminal {
    /// `Some` when standard input is a terminal whose foreground process
    /// group is lockctl's.
    fn ours() -> Option<Terminal> {
        let pgrp = getpgrp();
        let stdin = io::stdin();
        (stdin.is_terminal() && tcgetpgrp(&stdin).ok() == Some(pgrp)).then_some(Terminal { pgrp })
    }

    /// Makes `pgid`, CMD's group, the terminal's foreground. lockctl is
    /// still the foreground, so it needs no leave; CMD may have tried to
    /// read the terminal before this, and been stopped by SIGTTIN for it:
    /// SIGCONT goes on, as a shell's `fg` does.
    fn hand_to(&self, pgid: Pid) {
        if tcsetpgrp(io::stdin(), pgid).is_ok() {
            signal_group(pgid, Signal::CONT);
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        // lockctl is in the background now: the kernel lets it take the
        // terminal back only with SIGTTOU blocked or ignored, which no safe
        // API offers, hence the one `unsafe` of the binaries.
        // SAFETY: blocks SIGTTOU for this thread only and restores the
        // mask after; the pointers are to live local sigsets.
        unsafe {
            let mut block: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut block);
            libc::sigaddset(&mut block, libc::SIGTTOU);
            libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old);
            let _ = tcsetpgrp(io::stdin(), self.pgrp);
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        }
    }
}
