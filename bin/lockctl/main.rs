//! `lockctl`, the lockd client command: run a command under a lock, and
//! inspect a server. Its modules are private to the binary: [`cli`] parses
//! and dispatches, [`hold`] takes locks (and keeps one for a script),
//! [`run`] runs CMD under one, [`inspect`] and [`watch`] look at a server,
//! [`shell`] speaks raw protocol, [`completions`] writes shell completions,
//! [`bench`](mod@bench) is the load generator; this file handles signals.

mod bench;
mod cli;
mod completions;
mod connect;
#[path = "../common/flags.rs"]
mod flags;
mod hold;
mod inspect;
#[path = "../common/nofile.rs"]
mod nofile;
mod run;
mod shell;
mod spec;
mod watch;
mod wire;

use connect::exit;
use crossbeam_channel::Receiver;
use signal_hook::iterator::Signals;
use std::process::ExitCode;

fn main() -> ExitCode {
    let (global, command) = match cli::parse_args(std::env::args_os().skip(1).collect()) {
        Ok(parsed) => parsed,
        Err(code) => return ExitCode::from(code),
    };
    // Only `run` takes signals over (to pass them on to CMD); every other
    // command dies of them as usual.
    let signals = match catch(command.handles_signals()) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("lockctl: cannot set up signal handling: {e}");
            return ExitCode::from(exit::UNAVAILABLE);
        }
    };
    ExitCode::from(cli::execute(global, command, signals))
}

/// Installs handlers for `wanted` and returns the channel a signal thread
/// feeds with their numbers; for none, a channel that never delivers.
fn catch(wanted: &[i32]) -> std::io::Result<Receiver<i32>> {
    if wanted.is_empty() {
        return Ok(crossbeam_channel::never());
    }
    let mut signals = Signals::new(wanted)?;
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("lockctl-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if tx.send(signal).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}
