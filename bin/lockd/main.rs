//! `lockd`, the lock server daemon: parse flags, install the signal
//! handlers, start the daemon ([`daemon::start`]), stop it on SIGTERM,
//! SIGINT or SIGQUIT; log and ignore SIGHUP, SIGUSR1 and SIGUSR2. The
//! server itself lives in the library; the command line in the binary's
//! private modules.

mod daemon;
#[path = "../common/flags.rs"]
mod flags;
mod limits;
#[path = "../common/nofile.rs"]
mod nofile;

use daemon::Invocation;
use lockd::log::{log, Priority};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;
use std::process::ExitCode;

fn main() -> ExitCode {
    lockd::log::install();
    let args: Vec<String> = match std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect()
    {
        Ok(args) => args,
        Err(bad) => {
            eprintln!("lockd: argument {bad:?} is not valid UTF-8 (see lockd --help)");
            return ExitCode::from(2);
        }
    };
    let options = match daemon::parse(args) {
        Ok(Invocation::Run(options)) => {
            lockd::log::set_format(options.log_format);
            options
        }
        Ok(Invocation::Help) => {
            print!("{}", daemon::help());
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Version) => {
            println!("lockd {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("lockd: {e}");
            return ExitCode::from(2);
        }
    };
    match run(*options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log(Priority::Error, format_args!("error: {e}"));
            ExitCode::from(1)
        }
    }
}

fn run(options: daemon::DaemonOptions) -> Result<(), Box<dyn std::error::Error>> {
    // Installed before starting: a signal that comes during start-up waits
    // in `signals` until the daemon can stop cleanly.
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2])?;
    let daemon = daemon::start(options)?;
    let stopper = daemon.stopper();
    std::thread::Builder::new()
        .name("lockd-signals".into())
        .spawn(move || {
            let mut stops = 0;
            for signal in signals.forever() {
                if matches!(signal, SIGHUP | SIGUSR1 | SIGUSR2) {
                    // Their default action kills the process, which left the
                    // pidfile and socket files behind; lockd has nothing to
                    // reopen or reload, so they are logged and ignored.
                    log(
                        Priority::Notice,
                        format_args!("signal {signal} ignored (SIGTERM stops lockd)"),
                    );
                    continue;
                }
                stops += 1;
                if stops > 1 {
                    log(
                        Priority::Warning,
                        format_args!("second signal {signal}: exiting at once"),
                    );
                    std::process::exit(1);
                }
                stopper.stop(format_args!("signal {signal}"));
            }
        })?;
    daemon.wait();
    Ok(())
}
