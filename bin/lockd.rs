//! `lockd`, the lock server daemon: parse flags, bind, write the pidfile,
//! handle signals, run. Everything else lives in the library.

use lockd::cli::daemon::{self, Invocation, Pidfile};
use lockd::{Server, Shutdown};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::process::ExitCode;

fn main() -> ExitCode {
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
        Ok(Invocation::Run(options)) => options,
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
            eprintln!("lockd: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(options: daemon::DaemonOptions) -> Result<(), Box<dyn std::error::Error>> {
    for warning in &options.warnings {
        eprintln!("lockd: warning: {warning}");
    }
    let max_connections = options.config.max_connections;
    match lockd::cli::raise_nofile_limit() {
        // One descriptor per connection, plus a few for listeners and files.
        Ok(limit) if limit < max_connections as u64 + 16 => eprintln!(
            "lockd: warning: open-files limit is {limit}, below --max-connections {max_connections}: raise it (ulimit -n, LimitNOFILE=) or lower --max-connections"
        ),
        Ok(_) => {}
        Err(e) => eprintln!("lockd: warning: cannot read the open-files limit: {e}"),
    }
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    let server = Server::bind(options.config)?;
    let addrs = server.local_addrs();
    let paths = server.unix_paths();
    let _pidfile = match options.pidfile.as_deref().map(Pidfile::create).transpose() {
        Ok(pidfile) => pidfile,
        Err(e) => {
            // We bound these sockets a moment ago: leave no stale files.
            for path in &paths {
                let _ = std::fs::remove_file(path);
            }
            return Err(e.into());
        }
    };
    let handle = server.spawn()?;
    for addr in addrs {
        eprintln!("lockd: listening on {addr}");
    }
    for path in paths {
        eprintln!("lockd: listening on unix:{}", path.display());
    }
    let stopper = handle.shutdown_handle();
    std::thread::Builder::new()
        .name("lockd-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                seen += 1;
                if seen > 1 {
                    eprintln!("lockd: second signal {signal}: exiting at once");
                    std::process::exit(1);
                }
                eprintln!(
                    "lockd: signal {signal}: stopping, closing {} connections",
                    stopper.connections()
                );
                stopper.shutdown(Shutdown::Immediate);
            }
        })?;
    handle.wait();
    eprintln!("lockd: stopped");
    Ok(())
}
