//! `lockctl`'s command line: `--help`, the parser, and the dispatch to
//! the commands' modules. The flag tables it parses with are data in
//! [`crate::spec`].

use crate::connect::{connect, exit, Global};
use crate::flags::{options, parse_number, render_flags, FlagSpec, UsageError};
use crate::hold::{LockOptions, Mode, Wait};
use crate::run::RunOptions;
use crate::spec::{tables_of, COMMANDS, DEFAULT_SERVER, EXIT_CODES, GLOBAL_FLAGS, TABLES};
use crate::{completions, hold, inspect, run, watch};
use crossbeam_channel::Receiver;
use lockd::{Client, Error};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_KILL_AFTER: Duration = Duration::from_secs(10);
const DEFAULT_IDLE: Duration = Duration::from_secs(1);

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// `run`.
    Run(RunOptions),
    /// `hold`.
    Hold {
        /// What to take.
        lock: LockOptions,
        /// `--json`.
        json: bool,
    },
    /// `status NAME`.
    Status {
        /// The lock.
        name: String,
        /// `--json`.
        json: bool,
    },
    /// `locks`.
    Locks {
        /// `--json`.
        json: bool,
    },
    /// `watch PATTERN`.
    Watch {
        /// The pattern.
        pattern: String,
        /// `--json`.
        json: bool,
    },
    /// `clients`.
    Clients {
        /// `--json`.
        json: bool,
    },
    /// `stats`.
    Stats {
        /// `--json`.
        json: bool,
    },
    /// `ping`.
    Ping {
        /// `--json`.
        json: bool,
    },
    /// `shell`.
    Shell,
    /// `completions SHELL`.
    Completions(completions::Shell),
    /// `bench`.
    Bench(Box<BenchCommand>),
    /// `serve --local PATH`.
    Serve {
        /// `--idle`.
        idle: Duration,
    },
    /// `--help`.
    Help,
    /// `--version`.
    Version,
}

impl Command {
    /// The signals this command handles itself rather than dying of them:
    /// `run` passes SIGINT, SIGTERM and SIGHUP on to CMD; the rest, none.
    pub fn handles_signals(&self) -> &'static [i32] {
        match self {
            Command::Run(_) => &[SIGINT, SIGTERM, SIGHUP],
            _ => &[],
        }
    }
}

/// A parsed `lockctl bench`.
#[derive(Debug)]
pub struct BenchCommand {
    /// What to run (`server` still unset: it comes from [`Global`]).
    pub options: crate::bench::BenchOptions,
    /// `--in-process`.
    pub in_process: bool,
    /// `--tsv`.
    pub tsv: Option<PathBuf>,
    /// `--json`: the report as JSON on stdout, the progress on stderr.
    pub json: bool,
}

/// The text of `lockctl --help`.
pub fn help() -> String {
    let width = COMMANDS
        .iter()
        .map(|(c, a, _)| c.len() + a.len() + 1)
        .max()
        .unwrap_or(0);
    let commands: String = COMMANDS
        .iter()
        .map(|(c, a, h)| format!("  {:width$}  {h}\n", format!("{c} {a}").trim_end()))
        .collect();
    let codes: String = EXIT_CODES
        .iter()
        .map(|(code, what)| format!("  {code:>5}  {what}\n"))
        .collect();
    let options: String = TABLES
        .iter()
        .map(|(heading, _, table)| format!("{heading}:\n{}\n", render_flags(table)))
        .collect();
    format!(
        "lockctl {}: run a command under a lockd lock as flock does, and inspect a lockd server

Usage: lockctl [OPTIONS] COMMAND [COMMAND OPTIONS] [ARGS]

Commands:
{commands}
{options}DURATION is a number with a unit: 500ms, 5s, 2m, 1h (no unit: seconds).

run puts CMD in its own process group, with LOCKD_NAME (the lock) and, for
an exclusive lock on a lockd server, LOCKD_TOKEN (its fencing token) in
its environment. SIGINT, SIGTERM and SIGHUP are passed on to CMD. If the
connection to the server drops, the lock is gone: CMD gets SIGTERM, then
SIGKILL after --kill-after. Against a classic server (glockd), -w polls
with backoff, --limit polls too, and -s takes the exclusive lock.

hold keeps the lock for the rest of a shell script, as flock FD does:
  exec {{fd}}< <(lockctl hold NAME); read line <&$fd   # held until the shell exits

Exit status:
{codes}Otherwise run exits with CMD's status.
See lockctl(1), lockd(8), lockd-protocol(7).
",
        env!("CARGO_PKG_VERSION"),
    )
}

fn usage(message: String) -> UsageError {
    UsageError(format!("{message} (see lockctl --help)"))
}

/// A one-line hint for flags whose meaning changed when lockctl learnt
/// flock's: `-s` was the server and `--timeout` the limit per reply.
/// `error` is what getopts said, or empty for a hint by itself.
fn hint(error: &str) -> &'static str {
    if error.is_empty() || error.contains("'s'") {
        "; -s is now flock's --shared (a read hold): give the server with -S/--server or LOCKD_SERVER"
    } else if error.contains("'timeout'") {
        "; --timeout is now run's and hold's wait (flock's -w): the limit for connecting and each reply is --io-timeout"
    } else {
        ""
    }
}

fn matches(flags: &[&[FlagSpec]], args: &[String]) -> Result<getopts::Matches, UsageError> {
    let all: Vec<FlagSpec> = flags.iter().flat_map(|t| t.iter().copied()).collect();
    let mut opts = options(&all);
    opts.parsing_style(getopts::ParsingStyle::StopAtFirstFree);
    opts.parse(args)
        .map_err(|e| usage(format!("{e}{}", hint(&e.to_string()))))
}

/// Parses `lockctl`'s arguments (without the program name). `cmd` is
/// what came after the first `--`, kept as it was (it need not be UTF-8).
///
/// # Errors
/// An unknown command or flag, a missing argument, or a bad value.
pub fn parse(args: Vec<String>, cmd: Vec<OsString>) -> Result<(Global, Command), UsageError> {
    let top = matches(&[GLOBAL_FLAGS], &args)?;
    if top.opt_present("help") {
        return Ok((global(&top, None)?, Command::Help));
    }
    if top.opt_present("version") {
        return Ok((global(&top, None)?, Command::Version));
    }
    let Some((name, rest)) = top.free.split_first() else {
        return Err(usage("no command given".into()));
    };
    if !COMMANDS.iter().any(|(c, _, _)| c == name) {
        return Err(usage(format!("unknown command {name:?}")));
    }
    let mut sub = matches(&tables_of(name), rest)?;
    let mut global = global(&top, Some(&sub))?;
    if top.opt_present("local") || sub.opt_present("local") {
        let path = match local_path(name, &mut sub.free) {
            Some(path) => PathBuf::from(path),
            None => lockd::local::default_path().map_err(|e| usage(e.to_string()))?,
        };
        global.server = match path.to_str() {
            Some(p) => format!("unix:{p}"),
            None => return Err(usage(format!("--local {path:?}: the path must be UTF-8"))),
        };
        global.local = Some(path);
        if let Some(mode) = top.opt_str("mode").or_else(|| sub.opt_str("mode")) {
            global.local_mode = match mode.trim_start_matches('0') {
                "600" => 0o600,
                "660" => 0o660,
                _ => return Err(usage(format!("--mode {mode}: expected 600 or 660"))),
            };
        }
    } else if top.opt_present("mode") || sub.opt_present("mode") {
        return Err(usage("--mode goes with --local".into()));
    } else if name == "serve" {
        return Err(usage("serve needs --local [PATH]".into()));
    }
    if name == "bench" && global.local.is_some() {
        return Err(usage(
            "bench measures a server: start one, or give --server unix:PATH of a local path in use"
                .into(),
        ));
    }
    if sub.opt_present("help") {
        return Ok((global, Command::Help));
    }
    if sub.opt_present("version") {
        return Ok((global, Command::Version));
    }
    if name != "run" && !cmd.is_empty() {
        return Err(usage(format!("{name} takes no -- CMD")));
    }
    let json = sub.opts_present(&["json".to_string()]);
    let one = |what: &str| match sub.free.as_slice() {
        [arg] => Ok(arg.clone()),
        [] => Err(usage(format!("{name} needs {what}"))),
        [_, extra, ..] => Err(usage(format!("unexpected argument {extra:?} for {name}"))),
    };
    let none = |command: Command| match sub.free.first() {
        Some(extra) => Err(usage(format!("unexpected argument {extra:?} for {name}"))),
        None => Ok(command),
    };
    let command = match name.as_str() {
        "run" => Command::Run(run_options(&sub, cmd)?),
        "hold" => Command::Hold {
            lock: lock_options(&sub, one("a lock NAME")?)?,
            json,
        },
        "status" => Command::Status {
            name: one("a lock NAME")?,
            json,
        },
        "watch" => Command::Watch {
            pattern: one("a PATTERN: a lock name, a prefix ending in *, or *")?,
            json,
        },
        "completions" => Command::Completions(
            one("a shell: bash, zsh or fish")?
                .parse()
                .map_err(|e: String| usage(e))?,
        ),
        "locks" => none(Command::Locks { json })?,
        "stats" => none(Command::Stats { json })?,
        "clients" => none(Command::Clients { json })?,
        "ping" => none(Command::Ping { json })?,
        "bench" => none(Command::Bench(Box::new(bench_options(&sub)?)))?,
        "serve" => none(Command::Serve {
            idle: match sub.opt_str("idle") {
                Some(d) => parse_duration("--idle", &d)?,
                None => DEFAULT_IDLE,
            },
        })?,
        _ => none(Command::Shell)?,
    };
    Ok((global, command))
}

/// With `--local`, the PATH written as the first argument after the
/// command, taken out of `free`: for the commands that take a NAME or
/// PATTERN, when one more argument follows it (other than `run`'s `-c`);
/// for the others, when there is an argument at all.
fn local_path(command: &str, free: &mut Vec<String>) -> Option<String> {
    let takes_one = matches!(command, "run" | "hold" | "status" | "watch");
    let given = if takes_one {
        free.len() >= 2 && !matches!(free[1].as_str(), "-c" | "--command")
    } else {
        free.len() == 1
    };
    given.then(|| free.remove(0))
}

/// The global options, from before the command (`top`) and after it
/// (`sub`, which wins).
fn global(top: &getopts::Matches, sub: Option<&getopts::Matches>) -> Result<Global, UsageError> {
    let get = |key: &str| {
        sub.and_then(|m| m.opt_str(key))
            .or_else(|| top.opt_str(key))
    };
    let server = get("server")
        .or_else(|| std::env::var("LOCKD_SERVER").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| DEFAULT_SERVER.to_string());
    let timeout = match get("io-timeout") {
        Some(t) => parse_duration("--io-timeout", &t)?,
        None => DEFAULT_TIMEOUT,
    };
    if timeout.is_zero() {
        return Err(usage("--io-timeout must be more than 0".into()));
    }
    let tls_client_cert = match (get("tls-cert"), get("tls-key")) {
        (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
        (None, None) => None,
        _ => {
            return Err(usage(
                "--tls-cert and --tls-key go together: give both".into(),
            ))
        }
    };
    Ok(Global {
        local: None,
        local_mode: 0o600,
        server,
        timeout,
        auth_file: get("auth-file").map(PathBuf::from),
        tls_ca: get("tls-ca").map(PathBuf::from),
        tls_client_cert,
    })
}

fn bench_options(m: &getopts::Matches) -> Result<BenchCommand, UsageError> {
    use crate::bench;
    let mut options = bench::BenchOptions::default();
    if let Some(list) = m.opt_str("workloads") {
        options.workloads =
            bench::parse_workloads(&list).map_err(|e| usage(format!("--workloads: {e}")))?;
    }
    if let Some(d) = m.opt_str("duration") {
        options.duration = parse_duration("--duration", &d)?;
    }
    let count = |flag: &str, default: usize| -> Result<usize, UsageError> {
        match m.opt_str(flag) {
            Some(n) => parse_number(&format!("--{flag}"), &n, "a number"),
            None => Ok(default),
        }
    };
    options.rounds = count("rounds", options.rounds)?.max(1);
    options.connections = count("connections", options.connections)?;
    options.contenders = count("contenders", options.contenders)?;
    options.churners = count("churners", options.churners)?;
    options.idle_connections = count("idle", options.idle_connections)?;
    options.lockd_binary = m.opt_str("lockd").map(PathBuf::from);
    if let Some(pid) = m.opt_str("server-pid") {
        options.server_pid = Some(parse_number("--server-pid", &pid, "a process id")?);
    }
    options.echo = !m.opt_present("no-echo");
    Ok(BenchCommand {
        options,
        in_process: m.opt_present("in-process"),
        tsv: m.opt_str("tsv").map(PathBuf::from),
        json: m.opt_present("json"),
    })
}

/// The options of `run` and `hold` that say what to take and how.
fn lock_options(m: &getopts::Matches, name: String) -> Result<LockOptions, UsageError> {
    let wait_flag = |long: &str| m.opt_str(long).map(|w| (long.to_string(), w));
    let wait = match (
        wait_flag("timeout").or_else(|| wait_flag("wait")),
        m.opt_present("nonblock") || m.opt_present("no-wait"),
    ) {
        (Some(_), true) => return Err(usage("-w and -n contradict each other; give one".into())),
        (Some((flag, w)), false) => Wait::For(parse_duration(&format!("--{flag}"), &w)?),
        (None, true) => Wait::No,
        (None, false) => Wait::Forever,
    };
    let limit = match m.opt_str("limit") {
        Some(n) => Some(parse_number::<u32>("--limit", &n, "a number of holders")?),
        None => None,
    };
    let semaphore = m.opt_present("semaphore") || limit.is_some();
    let mode = match (
        m.opt_present("exclusive"),
        m.opt_present("shared"),
        semaphore,
    ) {
        (false, false, false) | (true, false, false) => Mode::Exclusive,
        (false, true, false) => Mode::Read,
        (false, false, true) => Mode::Semaphore(limit.filter(|&n| n > 0)),
        _ => {
            return Err(usage(
                "-x, -s and --semaphore/--limit each name a kind of lock; give one".into(),
            ))
        }
    };
    let conflict_exit_code = match m.opt_str("conflict-exit-code") {
        Some(n) => parse_number::<u8>("--conflict-exit-code", &n, "a status from 0 to 255")?,
        None => exit::LOCK_BUSY,
    };
    if name.contains('\n') {
        return Err(usage("a lock NAME cannot hold a newline".into()));
    }
    Ok(LockOptions {
        name,
        mode,
        wait,
        conflict_exit_code,
        verbose: m.opt_present("verbose"),
    })
}

/// Whether `text` reads as a server address rather than a lock name.
fn looks_like_address(text: &str) -> bool {
    if text.starts_with("tls://") || text.starts_with("unix:") {
        return true;
    }
    text.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
    })
}

fn run_options(m: &getopts::Matches, cmd: Vec<OsString>) -> Result<RunOptions, UsageError> {
    let kill_after = match m.opt_str("kill-after") {
        Some(d) => parse_duration("--kill-after", &d)?,
        None => DEFAULT_KILL_AFTER,
    };
    let (name, mut rest) = match m.free.split_first() {
        Some((name, rest)) => (name.clone(), rest),
        None => {
            return Err(usage(
                "run needs a lock NAME and -- CMD (or -c STRING)".into(),
            ))
        }
    };
    // `lockctl -s HOST:PORT run NAME -- CMD` is caught by getopts; this is
    // `lockctl run -s HOST:PORT NAME -- CMD`, where -s now reads as
    // --shared and HOST:PORT as the lock.
    if m.opt_present("shared") && !rest.is_empty() && !cmd.is_empty() && looks_like_address(&name) {
        return Err(usage(format!(
            "run: {name:?} looks like a server, and {:?} like a lock{}",
            rest[0],
            hint("")
        )));
    }
    // flock's `flock FILE -c STRING`: -c after NAME.
    let mut string = m.opt_str("command");
    if matches!(rest.first().map(String::as_str), Some("-c" | "--command")) {
        match rest {
            [_, s] => string = Some(s.clone()),
            _ => return Err(usage("-c takes one STRING, run with sh -c".into())),
        }
        rest = &[];
    }
    if rest.first().map(String::as_str) == Some("--") {
        rest = &rest[1..];
    }
    let mut command: Vec<OsString> = rest.iter().map(OsString::from).collect();
    command.extend(cmd);
    if let Some(string) = string {
        if !command.is_empty() {
            return Err(usage("give -c STRING or -- CMD, not both".into()));
        }
        command = vec!["sh".into(), "-c".into(), string.into()];
    }
    if command.is_empty() {
        return Err(usage(format!(
            "run {name}: no CMD to run (write -- CMD or -c STRING after NAME)"
        )));
    }
    Ok(RunOptions {
        lock: lock_options(m, name)?,
        close: m.opt_present("close"),
        kill_after,
        command,
    })
}

/// Parses `lockctl`'s arguments (program name excluded). A bad command
/// line is reported on stderr, prefixed `lockctl: `, and comes back as the
/// exit status.
///
/// # Errors
/// The exit status [`exit::USAGE`], once the problem has been printed.
pub fn parse_args(args: Vec<OsString>) -> Result<(Global, Command), u8> {
    // Everything after the first `--` is CMD, which need not be UTF-8.
    let split = args.iter().position(|a| a == "--");
    let (ours, cmd) = match split {
        Some(i) => (&args[..i], args[i + 1..].to_vec()),
        None => (&args[..], Vec::new()),
    };
    let mut strings = Vec::new();
    for arg in ours {
        match arg.to_str() {
            Some(s) => strings.push(s.to_string()),
            None => {
                eprintln!("lockctl: argument {arg:?} is not valid UTF-8 (see lockctl --help)");
                return Err(exit::USAGE);
            }
        }
    }
    parse(strings, cmd).map_err(|e| {
        if e.0.contains("--help") {
            eprintln!("lockctl: {e}");
        } else {
            eprintln!("lockctl: {e} (see lockctl --help)");
        }
        exit::USAGE
    })
}

/// Runs a parsed command and returns lockctl's exit status. Messages go to
/// stderr, prefixed `lockctl: `.
///
/// `signals` carries the numbers of the signals the caller has taken over
/// (see [`Command::handles_signals`]); `run` passes them on to CMD. Signals
/// are process-global, so handlers are the binary's to install.
pub fn execute(global: Global, command: Command, signals: Receiver<i32>) -> u8 {
    match command {
        Command::Help => {
            print!("{}", help());
            0
        }
        Command::Version => {
            println!("lockctl {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Command::Completions(shell) => {
            print!("{}", completions::script(shell));
            0
        }
        Command::Bench(command) => bench(&global, *command),
        Command::Serve { idle } => crate::connect::serve(&global, idle),
        Command::Shell => crate::shell::shell(&global),
        Command::Run(options) => run::run(&global, &options, signals),
        Command::Hold { lock, json } => hold::hold(&global, &lock, json),
        Command::Watch { pattern, json } => watch::watch(&global, &pattern, json),
        Command::Status { name, json } => with_client(&global, |c| inspect::status(c, &name, json)),
        Command::Locks { json } => with_client(&global, |c| inspect::locks(c, json)),
        Command::Clients { json } => with_client(&global, |c| inspect::clients(c, json)),
        Command::Stats { json } => with_client(&global, |c| inspect::stats(c, json)),
        Command::Ping { json } => with_client(&global, |c| inspect::ping(c, &global.server, json)),
    }
}

/// Connects and runs one of the commands that look at a server.
fn with_client(global: &Global, command: impl FnOnce(&Client) -> Result<u8, Error>) -> u8 {
    match connect(global) {
        Ok(client) => command(&client).unwrap_or_else(|e| inspect::failed(&e, &global.server)),
        Err(code) => code,
    }
}

/// Runs the benchmark ([`crate::bench`](mod@crate::bench)) and maps its outcome.
fn bench(global: &Global, command: BenchCommand) -> u8 {
    use crate::bench;
    let mut options = command.options;
    if !command.in_process {
        options.server = Some(global.server.clone());
    }
    let progress: &mut dyn std::io::Write = if command.json {
        &mut std::io::stderr()
    } else {
        &mut std::io::stdout()
    };
    let report = match bench::run(&options, progress) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("lockctl: bench: {e}");
            return match e {
                _ if e.is_check_failure() => exit::CHECK_FAILED,
                bench::BenchError::Usage(_) => exit::USAGE,
                _ => exit::UNAVAILABLE,
            };
        }
    };
    if let Some(path) = command.tsv {
        let written = std::fs::File::create(&path).and_then(|mut f| report.write_tsv(&mut f));
        if let Err(e) = written {
            eprintln!("lockctl: bench: cannot write {}: {e}", path.display());
            return exit::UNAVAILABLE;
        }
    }
    if command.json {
        println!("{}", report.to_json());
    }
    0
}

/// Parses a duration: a number with a unit, `ms`, `s`, `m` or `h`
/// (`500ms`, `5s`, `1.5s`, `2m`, `1h`); a bare number is seconds.
///
/// # Errors
/// When `value` is not such a duration; the message names the flag.
pub fn parse_duration(flag: &str, value: &str) -> Result<Duration, UsageError> {
    let bad = || {
        UsageError(format!(
            "invalid value {value:?} for {flag}: expected a duration such as 500ms, 5s, 2m or 1h"
        ))
    };
    let text = value.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(bad());
    }
    let seconds_per_unit = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    let number: f64 = number.parse().map_err(|_| bad())?;
    Duration::try_from_secs_f64(number * seconds_per_unit).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_tables_are_well_formed() {
        let help = help();
        let mut all = Vec::new();
        for (_, _, table) in TABLES {
            crate::flags::check_table(table);
            all.extend_from_slice(table);
            for flag in *table {
                assert!(
                    help.contains(&format!("--{}", flag.long)),
                    "--{}",
                    flag.long
                );
            }
        }
        // Flags of the tables a command takes never clash.
        for (command, _, _) in COMMANDS {
            let mut seen = Vec::new();
            for flag in tables_of(command).iter().flat_map(|t| t.iter()) {
                assert!(
                    !seen.contains(&flag.long),
                    "--{} twice in {command}",
                    flag.long
                );
                if !flag.short.is_empty() {
                    assert!(
                        !seen.contains(&flag.short),
                        "-{} twice in {command}",
                        flag.short
                    );
                    seen.push(flag.short);
                }
                seen.push(flag.long);
            }
            assert!(help.contains(&format!("\n  {command} ")), "{command}");
        }
        for (code, _) in EXIT_CODES {
            assert!(help.contains(&format!("  {code}  ")), "{code}");
        }
    }

    fn parse_args(args: &[&str]) -> Result<(Global, Command), UsageError> {
        let split = args.iter().position(|a| *a == "--");
        let (ours, cmd) = match split {
            Some(i) => (&args[..i], &args[i + 1..]),
            None => (args, &[][..]),
        };
        parse(
            ours.iter().map(|s| s.to_string()).collect(),
            cmd.iter().map(OsString::from).collect(),
        )
    }

    fn run_of(args: &[&str]) -> RunOptions {
        match parse_args(args) {
            Ok((_, Command::Run(r))) => r,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn run_command_lines() {
        let (g, c) = parse_args(&[
            "-S", "unix:/x", "run", "-n", "job", "--", "sh", "-c", "true",
        ])
        .unwrap();
        assert_eq!(g.server, "unix:/x");
        let Command::Run(r) = c else { panic!() };
        assert_eq!(r.lock.name, "job");
        assert_eq!(r.lock.wait, Wait::No);
        assert_eq!(r.lock.mode, Mode::Exclusive);
        assert_eq!(r.command, ["sh", "-c", "true"]);
        let (g, c) = parse_args(&[
            "run",
            "--limit",
            "2",
            "-w",
            "5s",
            "-E",
            "3",
            "--io-timeout",
            "1s",
            "x",
            "--",
            "true",
        ])
        .unwrap();
        assert_eq!(g.timeout, Duration::from_secs(1));
        let Command::Run(r) = c else { panic!() };
        assert_eq!(r.lock.mode, Mode::Semaphore(Some(2)));
        assert_eq!(r.lock.wait, Wait::For(Duration::from_secs(5)));
        assert_eq!(r.lock.conflict_exit_code, 3);
        assert_eq!(
            run_of(&["run", "-s", "x", "--", "true"]).lock.mode,
            Mode::Read
        );
        assert_eq!(
            run_of(&["run", "--semaphore", "x", "--", "true"]).lock.mode,
            Mode::Semaphore(None)
        );
        let r = run_of(&[
            "run",
            "-x",
            "--timeout",
            "2s",
            "--verbose",
            "-o",
            "x",
            "-c",
            "echo hi",
        ]);
        assert_eq!(r.lock.wait, Wait::For(Duration::from_secs(2)));
        assert!(r.lock.verbose && r.close);
        assert_eq!(r.command, ["sh", "-c", "echo hi"]);
        let r = run_of(&["run", "-c", "echo hi", "-n", "x"]);
        assert_eq!(r.command, ["sh", "-c", "echo hi"]);
        assert_eq!(r.lock.wait, Wait::No);
        assert_eq!(
            run_of(&["run", "--wait", "1s", "x", "--", "true"])
                .lock
                .wait,
            Wait::For(Duration::from_secs(1))
        );
        for bad in [
            &["run", "x"][..],
            &["run", "--", "true"],
            &["run", "-n", "-w", "1s", "x", "--", "true"],
            &["run", "-s", "-x", "x", "--", "true"],
            &["run", "-s", "--limit", "2", "x", "--", "true"],
            &["run", "-E", "256", "x", "--", "true"],
            &["run", "-c", "true", "x", "--", "true"],
            &["run", "x", "-c"],
            &["nope"],
            &[],
            &["status"],
            &["status", "a", "b"],
            &["locks", "--bogus"],
            &["ping", "--", "true"],
            &["watch"],
            &["completions", "tcsh"],
            &["hold"],
            &["--io-timeout", "0", "ping"],
        ] {
            assert!(parse_args(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_old_meanings_of_s_and_timeout_get_a_hint() {
        for args in [
            &["-s", "h:1", "ping"][..],
            &["run", "-s", "h:9999", "job", "--", "true"],
        ] {
            let e = parse_args(args).unwrap_err();
            assert!(e.0.contains("-S/--server"), "{args:?}: {e}");
        }
        let e = parse_args(&["--timeout", "1s", "ping"]).unwrap_err();
        assert!(e.0.contains("--io-timeout"), "{e}");
        let e = parse_args(&["run", "--bogus", "-s", "x", "--", "true"]).unwrap_err();
        assert!(!e.0.contains("-S/--server"), "{e}");
        // A lock named like an address is fine when nothing else is odd.
        assert_eq!(
            run_of(&["run", "-s", "db:5432", "--", "true"]).lock.name,
            "db:5432"
        );
    }

    #[test]
    fn durations() {
        let ok = |text: &str| parse_duration("--wait", text).unwrap();
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("5s"), Duration::from_secs(5));
        assert_eq!(ok("5"), Duration::from_secs(5));
        assert_eq!(ok(" 2m "), Duration::from_secs(120));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("0"), Duration::ZERO);
        for bad in [
            "", "s", "-1s", "5x", "1.s", ".5s", "5 s", "1..2s", "nan", "inf", "5sm",
        ] {
            let e = parse_duration("--wait", bad).unwrap_err();
            assert!(e.0.contains("--wait"), "{bad:?}: {e}");
        }
    }
}
