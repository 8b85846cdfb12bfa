//! `lockd`, the lock server daemon: parse flags, take sockets from systemd,
//! bind, write the pidfile, handle signals, run, tell systemd. Everything
//! else lives in the library.

use lockd::cli::daemon::{self, Invocation, Pidfile};
use lockd::log::{log, Priority};
use lockd::{systemd, Server, Shutdown};
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
            log(Priority::Error, format_args!("error: {e}"));
            ExitCode::from(1)
        }
    }
}

fn run(options: daemon::DaemonOptions) -> Result<(), Box<dyn std::error::Error>> {
    for warning in &options.warnings {
        log(Priority::Warning, format_args!("warning: {warning}"));
    }
    let mut config = options.config;
    let max_connections = config.max_connections;
    match lockd::cli::raise_nofile_limit() {
        // One descriptor per connection, plus a few for listeners and files.
        Ok(limit) if limit < max_connections as u64 + 16 => log(Priority::Warning, format_args!(
            "warning: open-files limit is {limit}, below --max-connections {max_connections}: raise it (ulimit -n, LimitNOFILE=) or lower --max-connections"
        )),
        Ok(_) => {}
        Err(e) => log(Priority::Warning, format_args!("warning: cannot read the open-files limit: {e}")),
    }
    for warning in lockd::cli::KernelLimits::read().capacity_warnings(max_connections) {
        log(Priority::Warning, format_args!("warning: {warning}"));
    }
    let tls = match &config.tls {
        Some(tls) if tls.requires_client_cert() => " (TLS, client certificates required)",
        Some(_) => " (TLS)",
        None => "",
    };
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    // Sockets from systemd replace the default listener; listeners named on
    // the command line are bound besides them.
    let inherited = systemd::named_listeners()?;
    if !inherited.is_empty() {
        let names: Vec<&str> = inherited.iter().map(|(name, _)| name.as_str()).collect();
        log(
            Priority::Info,
            format_args!("sockets from systemd: {}", names.join(", ")),
        );
        if !options.listen_given {
            config.listen.clear();
        }
    }
    let inherited = inherited.into_iter().map(|(_, l)| l).collect();
    let server = Server::bind_adding(config, inherited)?;
    let mut listening: Vec<String> = server
        .local_addrs()
        .iter()
        .map(|addr| format!("{addr}{tls}"))
        .collect();
    listening.extend(
        server
            .websocket_addrs()
            .iter()
            .map(|addr| format!("ws://{addr}")),
    );
    listening.extend(
        server
            .unix_paths()
            .iter()
            .map(|p| format!("unix:{}", p.display())),
    );
    let socket_files = server.socket_files();
    let _pidfile = match options.pidfile.as_deref().map(Pidfile::create).transpose() {
        Ok(pidfile) => pidfile,
        Err(e) => {
            // We bound these sockets a moment ago: leave no stale files.
            for path in &socket_files {
                let _ = std::fs::remove_file(path);
            }
            return Err(e.into());
        }
    };
    let handle = server.spawn()?;
    for name in &listening {
        log(Priority::Info, format_args!("listening on {name}"));
    }
    tell_systemd(systemd::ready(&format!(
        "listening on {}",
        listening.join(", ")
    )));
    let stopper = handle.shutdown_handle();
    std::thread::Builder::new()
        .name("lockd-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                seen += 1;
                if seen > 1 {
                    log(
                        Priority::Warning,
                        format_args!("second signal {signal}: exiting at once"),
                    );
                    std::process::exit(1);
                }
                let connections = stopper.connections();
                tell_systemd(systemd::stopping(&format!(
                    "stopping, closing {connections} connections"
                )));
                log(
                    Priority::Notice,
                    format_args!("signal {signal}: stopping, closing {connections} connections"),
                );
                stopper.shutdown(Shutdown::Immediate);
            }
        })?;
    handle.wait();
    log(Priority::Notice, "stopped");
    Ok(())
}

/// A notification that fails is logged; the daemon serves on regardless.
fn tell_systemd(sent: std::io::Result<bool>) {
    if let Err(e) = sent {
        log(
            Priority::Warning,
            format_args!("warning: cannot notify systemd: {e}"),
        );
    }
}
