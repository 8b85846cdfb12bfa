//! `lockctl`, the client command: run a command under a lock, and look
//! at a server. Flags are defined once here; they feed getopts, `--help`,
//! and the test that keeps `man/lockctl.1` in step.

use super::json::{self, Json};
use super::run::{self, RunOptions, Wait};
use crate::flags::{
    options, parse_number, render_flags, Arity, FlagSpec, UsageError, HELP_FLAG, VERSION_FLAG,
};
use crossbeam_channel::Receiver;
use lockd::protocol::normalize;
use lockd::{Client, ClientConfig, Error, Secret};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `lockctl`'s exit statuses (besides 0 and CMD's own).
pub mod exit {
    /// The lock is held elsewhere (`--no-wait`) or stayed busy for all of
    /// `--wait`; `-E` changes it.
    pub const LOCK_BUSY: u8 = 1;
    /// A bad command line (sysexits' EX_USAGE).
    pub const USAGE: u8 = 64;
    /// The server cannot be reached, refused us, or failed (EX_UNAVAILABLE).
    pub const UNAVAILABLE: u8 = 69;
    /// `bench`: the server failed a correctness check (EX_SOFTWARE).
    pub const CHECK_FAILED: u8 = 70;
    /// The lock was lost while CMD ran: CMD was stopped (EX_TEMPFAIL).
    pub const LOCK_LOST: u8 = 75;
    /// CMD exists but could not be executed (as a shell does).
    pub const CANNOT_EXECUTE: u8 = 126;
    /// CMD was not found (as a shell does).
    pub const NOT_FOUND: u8 = 127;
}

/// Every exit status lockctl itself produces, for `--help` and the test
/// against the man page.
pub const EXIT_CODES: &[(&str, &str)] = &[
    ("0", "success; for run, CMD exited 0"),
    (
        "1",
        "run: the lock is busy (--no-wait) or stayed busy for --wait (see -E)",
    ),
    ("64", "bad command line"),
    (
        "69",
        "the server cannot be reached, refused the command, or failed",
    ),
    ("70", "bench: the server failed a correctness check"),
    (
        "75",
        "run: the lock was lost while CMD ran, and CMD was stopped",
    ),
    ("126", "run: CMD could not be executed"),
    ("127", "run: CMD was not found"),
    ("128+N", "run: CMD was killed by signal N"),
];

/// The commands, with their arguments and one line of help.
pub const COMMANDS: &[(&str, &str, &str)] = &[
    (
        "run",
        "[RUN OPTIONS] NAME -- CMD [ARGS...]",
        "take lock NAME, run CMD, release the lock when CMD ends",
    ),
    (
        "status",
        "NAME",
        "who holds lock NAME (exclusive and shared), its token, who waits",
    ),
    (
        "locks",
        "[--json]",
        "every lock with its holders and waiters",
    ),
    ("clients", "", "connections with a registered name (who)"),
    ("stats", "[--json]", "the server's counters (q)"),
    ("ping", "", "the round-trip time to the server"),
    ("shell", "", "send raw protocol commands, print the replies"),
    (
        "bench",
        "[BENCH OPTIONS]",
        "measure the server (ops/s, latency) and check it is correct",
    ),
];

/// Options every command takes (before or after the command's name).
pub const GLOBAL_FLAGS: &[FlagSpec] = &[
    FlagSpec {
        short: "s",
        long: "server",
        value: "ADDR",
        arity: Arity::Value,
        help:
            "HOST:PORT, tls://HOST:PORT or unix:/PATH (default $LOCKD_SERVER, else 127.0.0.1:9999)",
    },
    FlagSpec {
        short: "",
        long: "timeout",
        value: "DURATION",
        arity: Arity::Value,
        help: "limit for connecting and for each reply (default 10s)",
    },
    FlagSpec {
        short: "",
        long: "auth-file",
        value: "PATH",
        arity: Arity::Value,
        help: "send the secret in PATH with auth (for lockd --auth-file)",
    },
    FlagSpec {
        short: "",
        long: "tls-ca",
        value: "PATH",
        arity: Arity::Value,
        help: "with tls://: trust the CA certificates in PATH (default: the system's)",
    },
    FlagSpec {
        short: "",
        long: "tls-cert",
        value: "PATH",
        arity: Arity::Value,
        help: "with tls://: present this client certificate (PEM; needs --tls-key)",
    },
    FlagSpec {
        short: "",
        long: "tls-key",
        value: "PATH",
        arity: Arity::Value,
        help: "with tls://: the client certificate's private key (PEM)",
    },
    HELP_FLAG,
    VERSION_FLAG,
];

/// Options of `lockctl run`.
pub const RUN_FLAGS: &[FlagSpec] = &[
    FlagSpec {
        short: "w",
        long: "wait",
        value: "DURATION",
        arity: Arity::Value,
        help: "wait in line at most DURATION for the lock (default: forever)",
    },
    FlagSpec {
        short: "n",
        long: "no-wait",
        value: "",
        arity: Arity::Flag,
        help: "fail at once if the lock is busy",
    },
    FlagSpec {
        short: "",
        long: "shared",
        value: "",
        arity: Arity::Flag,
        help: "take a shared lock instead of the exclusive one",
    },
    FlagSpec {
        short: "",
        long: "limit",
        value: "N",
        arity: Arity::Value,
        help: "with --shared: at most N holders at once (a semaphore)",
    },
    FlagSpec {
        short: "E",
        long: "conflict-exit-code",
        value: "N",
        arity: Arity::Value,
        help: "exit status when the lock is busy (default 1)",
    },
    FlagSpec {
        short: "",
        long: "kill-after",
        value: "DURATION",
        arity: Arity::Value,
        help: "after losing the lock, SIGKILL CMD this long after SIGTERM (default 10s)",
    },
];

/// `--json` of `locks` and `stats`.
pub const JSON_FLAGS: &[FlagSpec] = &[FlagSpec {
    short: "",
    long: "json",
    value: "",
    arity: Arity::Flag,
    help: "print JSON (locks: the server's dj object; stats: an object of counters)",
}];

/// Options of `lockctl bench`.
pub const BENCH_FLAGS: &[FlagSpec] = &[
    FlagSpec {
        short: "",
        long: "workloads",
        value: "LIST",
        arity: Arity::Value,
        help: "which workloads, e.g. W1,W3 (default all: W1 to W6)",
    },
    FlagSpec {
        short: "",
        long: "duration",
        value: "DURATION",
        arity: Arity::Value,
        help: "how long each timed workload runs (default 3s)",
    },
    FlagSpec {
        short: "",
        long: "rounds",
        value: "N",
        arity: Arity::Value,
        help: "take turns with the echo ceiling N times per workload (default 3)",
    },
    FlagSpec {
        short: "",
        long: "connections",
        value: "N",
        arity: Arity::Value,
        help: "W2: connections at once (default 64)",
    },
    FlagSpec {
        short: "",
        long: "contenders",
        value: "N",
        arity: Arity::Value,
        help: "W4: connections queueing for one lock (default 16)",
    },
    FlagSpec {
        short: "",
        long: "churners",
        value: "N",
        arity: Arity::Value,
        help: "W5: threads connecting and closing at once (default 4)",
    },
    FlagSpec {
        short: "",
        long: "idle",
        value: "N",
        arity: Arity::Value,
        help: "W6: idle connections, each holding a lock (default 1000)",
    },
    FlagSpec {
        short: "",
        long: "in-process",
        value: "",
        arity: Arity::Flag,
        help: "measure a lockd started by the benchmark instead of --server",
    },
    FlagSpec {
        short: "",
        long: "lockd",
        value: "PATH",
        arity: Arity::Value,
        help: "with --in-process, W6 starts this lockd binary (default: beside lockctl)",
    },
    FlagSpec {
        short: "",
        long: "server-pid",
        value: "PID",
        arity: Arity::Value,
        help: "W6: the process id of the --server, to report its memory",
    },
    FlagSpec {
        short: "",
        long: "no-echo",
        value: "",
        arity: Arity::Flag,
        help: "skip the echo-server ceiling each figure is compared with",
    },
    FlagSpec {
        short: "",
        long: "tsv",
        value: "PATH",
        arity: Arity::Value,
        help: "also write every figure to PATH as tab-separated values",
    },
];

/// The address used without `--server` and `$LOCKD_SERVER`.
pub const DEFAULT_SERVER: &str = "127.0.0.1:9999";

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_KILL_AFTER: Duration = Duration::from_secs(10);

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Global {
    /// `--server`, `$LOCKD_SERVER` or the default.
    pub server: String,
    /// `--timeout`.
    pub timeout: Duration,
    /// `--auth-file`.
    pub auth_file: Option<PathBuf>,
    /// `--tls-ca`.
    pub tls_ca: Option<PathBuf>,
    /// `--tls-cert` and `--tls-key`.
    pub tls_client_cert: Option<(PathBuf, PathBuf)>,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// `run`.
    Run(RunOptions),
    /// `status NAME`.
    Status(String),
    /// `locks`.
    Locks {
        /// `--json`.
        json: bool,
    },
    /// `clients`.
    Clients,
    /// `stats`.
    Stats {
        /// `--json`.
        json: bool,
    },
    /// `ping`.
    Ping,
    /// `shell`.
    Shell,
    /// `bench`.
    Bench(Box<BenchCommand>),
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
            Command::Run(_) => &[libc::SIGINT, libc::SIGTERM, libc::SIGHUP],
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
    format!(
        "lockctl {}: run a command under a lockd lock, and inspect a lockd server

Usage: lockctl [OPTIONS] COMMAND [COMMAND OPTIONS] [ARGS]

Commands:
{commands}
Options (before or after COMMAND):
{}
Options of run:
{}
Options of locks and stats:
{}
Options of bench:
{}
DURATION is a number with a unit: 500ms, 5s, 2m, 1h (no unit: seconds).

run puts CMD in its own process group, with LOCKD_NAME (the lock) and, for
an exclusive lock on a lockd server, LOCKD_TOKEN (its fencing token) in
its environment. SIGINT, SIGTERM and SIGHUP are passed on to CMD. If the
connection to the server drops, the lock is gone: CMD gets SIGTERM, then
SIGKILL after --kill-after. Against a classic server (glockd), --wait
polls with backoff, and --shared --limit polls too.

Exit status:
{codes}Otherwise run exits with CMD's status.
See lockctl(1), lockd(8).
",
        env!("CARGO_PKG_VERSION"),
        render_flags(GLOBAL_FLAGS),
        render_flags(RUN_FLAGS),
        render_flags(JSON_FLAGS),
        render_flags(BENCH_FLAGS),
    )
}

fn usage(message: String) -> UsageError {
    UsageError(format!("{message} (see lockctl --help)"))
}

fn matches(flags: &[&[FlagSpec]], args: &[String]) -> Result<getopts::Matches, UsageError> {
    let all: Vec<FlagSpec> = flags.iter().flat_map(|t| t.iter().copied()).collect();
    let mut opts = options(&all);
    opts.parsing_style(getopts::ParsingStyle::StopAtFirstFree);
    opts.parse(args).map_err(|e| usage(e.to_string()))
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
    let tables: &[&[FlagSpec]] = match name.as_str() {
        "run" => &[GLOBAL_FLAGS, RUN_FLAGS],
        "locks" | "stats" => &[GLOBAL_FLAGS, JSON_FLAGS],
        "bench" => &[GLOBAL_FLAGS, BENCH_FLAGS],
        "status" | "clients" | "ping" | "shell" => &[GLOBAL_FLAGS],
        other => return Err(usage(format!("unknown command {other:?}"))),
    };
    let sub = matches(tables, rest)?;
    let global = global(&top, Some(&sub))?;
    if sub.opt_present("help") {
        return Ok((global, Command::Help));
    }
    if sub.opt_present("version") {
        return Ok((global, Command::Version));
    }
    let no_args = |command: Command| {
        if let Some(extra) = sub.free.first() {
            return Err(usage(format!("unexpected argument {extra:?} for {name}")));
        }
        Ok(command)
    };
    if name != "run" && !cmd.is_empty() {
        return Err(usage(format!("{name} takes no -- CMD")));
    }
    let command = match name.as_str() {
        "run" => Command::Run(run_options(&sub, cmd)?),
        "status" => match sub.free.as_slice() {
            [lock] => Command::Status(lock.clone()),
            [] => return Err(usage("status needs a lock NAME".into())),
            [_, extra, ..] => {
                return Err(usage(format!("unexpected argument {extra:?} for status")))
            }
        },
        "locks" => no_args(Command::Locks {
            json: sub.opt_present("json"),
        })?,
        "stats" => no_args(Command::Stats {
            json: sub.opt_present("json"),
        })?,
        "clients" => no_args(Command::Clients)?,
        "ping" => no_args(Command::Ping)?,
        "bench" => no_args(Command::Bench(Box::new(bench_options(&sub)?)))?,
        _ => no_args(Command::Shell)?,
    };
    Ok((global, command))
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
    let timeout = match get("timeout") {
        Some(t) => parse_duration("--timeout", &t)?,
        None => DEFAULT_TIMEOUT,
    };
    if timeout.is_zero() {
        return Err(usage("--timeout must be more than 0".into()));
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
    })
}

fn run_options(m: &getopts::Matches, cmd: Vec<OsString>) -> Result<RunOptions, UsageError> {
    let wait = match (m.opt_str("wait"), m.opt_present("no-wait")) {
        (Some(_), true) => {
            return Err(usage(
                "--wait and --no-wait contradict each other; give one".into(),
            ))
        }
        (Some(w), false) => Wait::For(parse_duration("--wait", &w)?),
        (None, true) => Wait::No,
        (None, false) => Wait::Forever,
    };
    let shared = m.opt_present("shared");
    let limit = match m.opt_str("limit") {
        Some(_) if !shared => return Err(usage("--limit needs --shared".into())),
        Some(n) => Some(parse_number::<u32>("--limit", &n, "a number of holders")?),
        None => None,
    };
    let conflict_exit_code = match m.opt_str("conflict-exit-code") {
        Some(n) => parse_number::<u8>("--conflict-exit-code", &n, "a status from 0 to 255")?,
        None => exit::LOCK_BUSY,
    };
    let kill_after = match m.opt_str("kill-after") {
        Some(d) => parse_duration("--kill-after", &d)?,
        None => DEFAULT_KILL_AFTER,
    };
    let (name, mut rest) = match m.free.split_first() {
        Some((name, rest)) => (name.clone(), rest),
        None => return Err(usage("run needs a lock NAME and -- CMD".into())),
    };
    if rest.first().map(String::as_str) == Some("--") {
        rest = &rest[1..];
    }
    let mut command: Vec<OsString> = rest.iter().map(OsString::from).collect();
    command.extend(cmd);
    if command.is_empty() {
        return Err(usage(format!(
            "run {name}: no CMD to run (write -- CMD after NAME)"
        )));
    }
    if name.contains('\n') {
        return Err(usage("a lock NAME cannot hold a newline".into()));
    }
    Ok(RunOptions {
        name,
        wait,
        shared,
        limit: limit.filter(|&n| n > 0),
        conflict_exit_code,
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
/// are process-global, so handlers are the binary's to install, never the
/// library's.
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
        Command::Bench(command) => bench(&global, *command),
        Command::Shell => crate::shell::shell(&global),
        Command::Run(options) => run::run(&global, &options, signals),
        command => {
            let client = match connect(&global) {
                Ok(client) => client,
                Err(code) => return code,
            };
            let result = match command {
                Command::Status(name) => status(&client, &name),
                Command::Locks { json } => locks(&client, json),
                Command::Clients => clients(&client),
                Command::Stats { json } => stats(&client, json),
                _ => ping(&client, &global.server),
            };
            match result {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("lockctl: {e}");
                    exit::UNAVAILABLE
                }
            }
        }
    }
}

/// Reads an auth secret as lockd does ([`Secret::from_file`]), for the
/// client to send.
///
/// # Errors
/// An unreadable file, or one of only whitespace, as a message.
pub fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    Secret::from_file(path)
        .map(|secret| secret.expose().to_vec())
        .map_err(|e| e.to_string())
}

/// The client settings of the global options (timeouts, TLS), without the
/// secret.
pub(crate) fn client_config(global: &Global) -> ClientConfig {
    let mut config = ClientConfig::new()
        .connect_timeout(Some(global.timeout))
        .read_timeout(Some(global.timeout))
        .write_timeout(Some(global.timeout));
    if let Some(ca) = &global.tls_ca {
        config = config.tls_ca(ca);
    }
    if let Some((cert, key)) = &global.tls_client_cert {
        config = config.tls_client_cert(cert, key);
    }
    config
}

/// Connects as the global options say; on failure prints why and returns
/// the exit status.
pub(crate) fn connect(global: &Global) -> Result<Client, u8> {
    let mut config = client_config(global);
    if let Some(path) = &global.auth_file {
        match read_secret(path) {
            Ok(secret) => config = config.secret(secret),
            Err(e) => {
                eprintln!("lockctl: {e}");
                return Err(exit::USAGE);
            }
        }
    }
    Client::connect_with(&global.server, config).map_err(|e| {
        eprintln!("lockctl: {e}");
        exit::UNAVAILABLE
    })
}

/// Runs the benchmark ([`crate::bench`](mod@crate::bench)) and maps its outcome.
fn bench(global: &Global, command: BenchCommand) -> u8 {
    use crate::bench;
    let mut options = command.options;
    if !command.in_process {
        options.server = Some(global.server.clone());
    }
    let report = match bench::run(&options, &mut std::io::stdout()) {
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
    0
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Prints rows as columns two spaces apart (the last column unpadded).
fn print_table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
}

/// One lock as `status` and `locks` show it.
#[derive(Debug, Default)]
struct LockView {
    kind: &'static str,
    name: String,
    holders: Vec<String>,
    token: Option<u64>,
    waiters: Vec<String>,
}

/// Every lock, from `dj` on protocol 2, else from `d` and `sd` (no
/// tokens, no waiters).
fn lock_views(client: &Client) -> Result<Vec<LockView>, Error> {
    let mut views = Vec::new();
    if client.protocol() >= 2 {
        let line = client.dump_json()?;
        let text = lossy(&line);
        let dj = json::parse(&text).map_err(|e| Error::Protocol {
            command: "dj".into(),
            reply: format!("{e}: {text}"),
        })?;
        for (name, lock) in dj.get("exclusive").map(Json::members).unwrap_or_default() {
            let holder = lock.get("holder").and_then(Json::as_str).unwrap_or("?");
            let holder = match lock.get("name").and_then(Json::as_str) {
                Some(registered) => format!("{holder} ({registered})"),
                None => holder.to_string(),
            };
            views.push(LockView {
                kind: "exclusive",
                name: name.clone(),
                holders: vec![holder],
                token: lock.get("token").and_then(Json::as_u64),
                waiters: strings(lock.get("waiters")),
            });
        }
        for (name, lock) in dj.get("shared").map(Json::members).unwrap_or_default() {
            let waiters = lock
                .get("waiters")
                .map(Json::items)
                .unwrap_or_default()
                .iter()
                .map(|w| {
                    let client = w.get("client").and_then(Json::as_str).unwrap_or("?");
                    match w.get("limit").and_then(Json::as_u64) {
                        Some(limit) if limit > 0 => format!("{client} (limit {limit})"),
                        _ => client.to_string(),
                    }
                })
                .collect();
            views.push(LockView {
                kind: "shared",
                name: name.clone(),
                holders: strings(lock.get("holders")),
                token: None,
                waiters,
            });
        }
    } else {
        for (name, holder) in client.holders()? {
            views.push(LockView {
                kind: "exclusive",
                name: lossy(name.as_bytes()),
                holders: vec![lossy(holder.as_bytes())],
                ..LockView::default()
            });
        }
        for (name, holders) in client.shared_holders()? {
            views.push(LockView {
                kind: "shared",
                name: lossy(name.as_bytes()),
                holders: holders.iter().map(|h| lossy(h.as_bytes())).collect(),
                ..LockView::default()
            });
        }
    }
    views.sort_by(|a, b| (a.name.as_str(), a.kind).cmp(&(b.name.as_str(), b.kind)));
    Ok(views)
}

fn strings(value: Option<&Json>) -> Vec<String> {
    value
        .map(Json::items)
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

fn status(client: &Client, name: &str) -> Result<(), Error> {
    let wanted = lossy(&normalize(name.as_bytes()));
    let views = lock_views(client);
    let views = match views {
        Ok(views) => views,
        // Dump is off: say what `i` and `si` can.
        Err(e) if e.is_disabled() => {
            let held = client.is_locked(&wanted)?;
            let shared = client.shared_count(&wanted)?;
            println!("lock {wanted:?}");
            println!(
                "exclusive: {}",
                if held {
                    "held (holder hidden: dump is off)"
                } else {
                    "free"
                }
            );
            println!("shared: {shared} holders");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let find = |kind| views.iter().find(|v| v.kind == kind && v.name == wanted);
    println!("lock {wanted:?}");
    match find("exclusive") {
        Some(v) => {
            let token = v.token.map(|t| format!(", token {t}")).unwrap_or_default();
            println!("exclusive: held by {}{token}", list(&v.holders));
            if !v.waiters.is_empty() {
                println!("exclusive waiters: {}", list(&v.waiters));
            }
        }
        None => println!("exclusive: free"),
    }
    match find("shared") {
        Some(v) => {
            println!("shared: {} holders: {}", v.holders.len(), list(&v.holders));
            if !v.waiters.is_empty() {
                println!("shared waiters: {}", list(&v.waiters));
            }
        }
        None => println!("shared: free"),
    }
    Ok(())
}

fn locks(client: &Client, as_json: bool) -> Result<(), Error> {
    if as_json && client.protocol() >= 2 {
        let line = client.dump_json()?;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&line);
        let _ = out.write_all(b"\n");
        return Ok(());
    }
    let views = lock_views(client)?;
    if as_json {
        // A classic server has no dj: build the same shape from d and sd.
        let mut out = String::from("{\"exclusive\":{");
        let mut first = true;
        for v in views.iter().filter(|v| v.kind == "exclusive") {
            if !std::mem::take(&mut first) {
                out.push(',');
            }
            json::write_string(&mut out, &v.name);
            out.push_str(":{\"holder\":");
            json::write_string(&mut out, &v.holders.join(""));
            out.push_str(",\"name\":null,\"token\":null,\"waiters\":[]}");
        }
        out.push_str("},\"shared\":{");
        first = true;
        for v in views.iter().filter(|v| v.kind == "shared") {
            if !std::mem::take(&mut first) {
                out.push(',');
            }
            json::write_string(&mut out, &v.name);
            out.push_str(":{\"holders\":[");
            for (i, h) in v.holders.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json::write_string(&mut out, h);
            }
            out.push_str("],\"waiters\":[]}");
        }
        out.push_str("}}");
        println!("{out}");
        return Ok(());
    }
    let mut rows = vec![vec![
        "TYPE".to_string(),
        "NAME".into(),
        "HOLDERS".into(),
        "TOKEN".into(),
        "WAITERS".into(),
    ]];
    for v in views {
        rows.push(vec![
            v.kind.to_string(),
            v.name,
            list(&v.holders),
            v.token.map_or("-".into(), |t| t.to_string()),
            list(&v.waiters),
        ]);
    }
    print_table(&rows);
    Ok(())
}

fn clients(client: &Client) -> Result<(), Error> {
    let mut rows = vec![vec!["CONNECTION".to_string(), "NAME".into()]];
    for r in client.registrations()? {
        rows.push(vec![lossy(r.default.as_bytes()), lossy(r.name.as_bytes())]);
    }
    print_table(&rows);
    Ok(())
}

fn stats(client: &Client, as_json: bool) -> Result<(), Error> {
    let stats = client.stats()?;
    if as_json {
        let mut out = String::from("{");
        for (i, (key, value)) in stats.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json::write_string(&mut out, key);
            out.push_str(&format!(":{value}"));
        }
        out.push('}');
        println!("{out}");
    } else {
        let rows: Vec<Vec<String>> = stats
            .iter()
            .map(|(k, v)| vec![k.to_string(), v.to_string()])
            .collect();
        print_table(&rows);
    }
    Ok(())
}

fn ping(client: &Client, server: &str) -> Result<(), Error> {
    let rtt = if client.protocol() >= 2 {
        client.ping()?
    } else {
        // A classic server has no ping; `me` is as cheap.
        let start = std::time::Instant::now();
        client.identity()?;
        start.elapsed()
    };
    println!(
        "pong from {server}: time={:.3} ms (protocol {})",
        rtt.as_secs_f64() * 1000.0,
        client.protocol()
    );
    Ok(())
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
        for table in [GLOBAL_FLAGS, RUN_FLAGS, JSON_FLAGS, BENCH_FLAGS] {
            crate::flags::check_table(table);
            for flag in table {
                assert!(
                    help.contains(&format!("--{}", flag.long)),
                    "--{}",
                    flag.long
                );
            }
        }
        for (command, _, _) in COMMANDS {
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

    #[test]
    fn run_command_lines() {
        let (g, c) = parse_args(&[
            "-s", "unix:/x", "run", "-n", "job", "--", "sh", "-c", "true",
        ])
        .unwrap();
        assert_eq!(g.server, "unix:/x");
        let Command::Run(r) = c else { panic!() };
        assert_eq!(r.name, "job");
        assert_eq!(r.wait, Wait::No);
        assert_eq!(r.command, ["sh", "-c", "true"]);
        let (g, c) = parse_args(&[
            "run",
            "--shared",
            "--limit",
            "2",
            "-w",
            "5s",
            "-E",
            "3",
            "--timeout",
            "1s",
            "x",
            "--",
            "true",
        ])
        .unwrap();
        assert_eq!(g.timeout, Duration::from_secs(1));
        let Command::Run(r) = c else { panic!() };
        assert_eq!((r.shared, r.limit), (true, Some(2)));
        assert_eq!(r.wait, Wait::For(Duration::from_secs(5)));
        assert_eq!(r.conflict_exit_code, 3);
        for bad in [
            &["run", "x"][..],
            &["run", "--", "true"],
            &["run", "-n", "-w", "1s", "x", "--", "true"],
            &["run", "--limit", "2", "x", "--", "true"],
            &["run", "-E", "256", "x", "--", "true"],
            &["nope"],
            &[],
            &["status"],
            &["status", "a", "b"],
            &["locks", "--bogus"],
            &["ping", "--", "true"],
        ] {
            assert!(parse_args(bad).is_err(), "{bad:?}");
        }
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
