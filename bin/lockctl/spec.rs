//! What lockctl accepts, as data: its commands, flag tables and exit
//! statuses. `--help`, the parser, the shell completions and the test
//! against `man/lockctl.1` all read these tables, so each flag is written
//! once.

use crate::flags::{Arity, FlagSpec, HELP_FLAG, VERSION_FLAG};

/// Every exit status lockctl itself produces, for `--help` and the test
/// against the man page.
pub const EXIT_CODES: &[(&str, &str)] = &[
    ("0", "success; run: CMD exited 0; status: the lock is held"),
    (
        "1",
        "run, hold: the lock is busy (-n) or stayed busy for -w (see -E); status: the lock is free",
    ),
    ("64", "bad command line"),
    (
        "69",
        "the server cannot be reached, refused the command, or failed",
    ),
    ("70", "bench: the server failed a correctness check"),
    (
        "75",
        "run, hold, watch: the connection and so the lock was lost (run: CMD was stopped)",
    ),
    ("126", "run: CMD could not be executed"),
    ("127", "run: CMD was not found"),
    ("128+N", "run: CMD was killed by signal N"),
];

/// The commands, with their arguments and one line of help.
pub const COMMANDS: &[(&str, &str, &str)] = &[
    (
        "run",
        "[LOCK OPTIONS] NAME -- CMD [ARGS...]",
        "take lock NAME, run CMD, release the lock when CMD ends (flock NAME CMD)",
    ),
    (
        "hold",
        "[LOCK OPTIONS] NAME",
        "take lock NAME, print a line, keep it until the reader of stdout goes",
    ),
    (
        "status",
        "[--json] NAME",
        "who holds lock NAME, its token, who waits; exit 0 if held, 1 if free",
    ),
    (
        "locks",
        "[--json]",
        "every lock with its holders and waiters",
    ),
    (
        "watch",
        "[--json] PATTERN",
        "print lock events as they happen (PATTERN: a name, a prefix*, or *)",
    ),
    (
        "clients",
        "[--json]",
        "connections with a registered name (who)",
    ),
    ("stats", "[--json]", "the server's counters (q)"),
    ("ping", "[--json]", "the round-trip time to the server"),
    (
        "shell",
        "",
        "send raw protocol commands, print the replies (help, quit)",
    ),
    (
        "completions",
        "bash|zsh|fish",
        "print a completion script for the shell",
    ),
    (
        "bench",
        "[BENCH OPTIONS] [--json]",
        "measure the server (ops/s, latency) and check it is correct",
    ),
    (
        "serve",
        "--local [PATH] [--idle DURATION]",
        "serve a local PATH while anyone is connected (--local starts one by itself)",
    ),
];

/// Options every command takes (before or after the command's name).
pub const GLOBAL_FLAGS: &[FlagSpec] = &[
    FlagSpec {
        short: "S",
        long: "server",
        value: "ADDR",
        arity: Arity::Value,
        help:
            "HOST:PORT, tls://HOST:PORT or unix:/PATH (default $LOCKD_SERVER, else 127.0.0.1:9999)",
    },
    FlagSpec {
        short: "L",
        long: "local",
        value: "",
        arity: Arity::Flag,
        help: "local mode, no server: share locks through a socket PATH on this machine, given as the first argument after COMMAND (default $XDG_RUNTIME_DIR/lockd/local.sock, else /tmp/lockd-UID/local.sock)",
    },
    FlagSpec {
        short: "",
        long: "mode",
        value: "MODE",
        arity: Arity::Value,
        help: "with --local: 600 (the default: you alone) or 660 (your group too: the directory must be the group's, mode 770)",
    },
    FlagSpec {
        short: "",
        long: "io-timeout",
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

/// Options of `lockctl run` and `lockctl hold`: flock's, and the
/// semaphore's own.
pub const LOCK_FLAGS: &[FlagSpec] = &[
    FlagSpec {
        short: "x",
        long: "exclusive",
        value: "",
        arity: Arity::Flag,
        help: "take the exclusive lock: the one writer (the default)",
    },
    FlagSpec {
        short: "s",
        long: "shared",
        value: "",
        arity: Arity::Flag,
        help: "take a read hold: many readers together, no writer (flock -s)",
    },
    FlagSpec {
        short: "n",
        long: "nonblock",
        value: "",
        arity: Arity::Flag,
        help: "fail at once if the lock is busy",
    },
    FlagSpec {
        short: "",
        long: "no-wait",
        value: "",
        arity: Arity::Flag,
        help: "the same as -n",
    },
    FlagSpec {
        short: "w",
        long: "timeout",
        value: "DURATION",
        arity: Arity::Value,
        help: "wait in line at most DURATION for the lock (default: forever)",
    },
    FlagSpec {
        short: "",
        long: "wait",
        value: "DURATION",
        arity: Arity::Value,
        help: "the same as -w",
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
        long: "semaphore",
        value: "",
        arity: Arity::Flag,
        help: "take a place in a counted semaphore instead (lockd's shared lock)",
    },
    FlagSpec {
        short: "",
        long: "limit",
        value: "N",
        arity: Arity::Value,
        help: "the semaphore admits at most N holders at once (implies --semaphore)",
    },
    FlagSpec {
        short: "",
        long: "verbose",
        value: "",
        arity: Arity::Flag,
        help: "say on stderr when lockctl waits, gets and releases the lock (with its token)",
    },
];

/// Options of `lockctl run` only.
pub const RUN_FLAGS: &[FlagSpec] = &[
    FlagSpec {
        short: "c",
        long: "command",
        value: "STRING",
        arity: Arity::Value,
        help: "run STRING with sh -c instead of -- CMD (also after NAME, as flock has it)",
    },
    FlagSpec {
        short: "o",
        long: "close",
        value: "",
        arity: Arity::Flag,
        help: "accepted for flock's sake; changes nothing (no descriptor holds the lock)",
    },
    FlagSpec {
        short: "",
        long: "kill-after",
        value: "DURATION",
        arity: Arity::Value,
        help: "after losing the lock, SIGKILL CMD this long after SIGTERM (default 10s)",
    },
];

/// `--json` of the commands that print data.
pub const JSON_FLAGS: &[FlagSpec] = &[FlagSpec {
    short: "",
    long: "json",
    value: "",
    arity: Arity::Flag,
    help: "print JSON: one document, or for watch one object per line (bench: progress to stderr)",
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

/// Options of `lockctl serve`.
pub const SERVE_FLAGS: &[FlagSpec] = &[FlagSpec {
    short: "",
    long: "idle",
    value: "DURATION",
    arity: Arity::Value,
    help: "stop serving once nobody has been connected for DURATION (default 1s)",
}];

/// The address used without `--server` and `$LOCKD_SERVER`.
pub const DEFAULT_SERVER: &str = "127.0.0.1:9999";

/// Every flag table with the commands that take it, for `--help` and the
/// shell completions.
pub const TABLES: &[(&str, &[&str], &[FlagSpec])] = &[
    ("Options (before or after COMMAND)", &[], GLOBAL_FLAGS),
    ("Options of run and hold", &["run", "hold"], LOCK_FLAGS),
    ("Options of run", &["run"], RUN_FLAGS),
    (
        "Options of status, locks, watch, clients, stats, ping, hold and bench",
        &[
            "status", "locks", "watch", "clients", "stats", "ping", "hold", "bench",
        ],
        JSON_FLAGS,
    ),
    ("Options of bench", &["bench"], BENCH_FLAGS),
    ("Options of serve", &["serve"], SERVE_FLAGS),
];

/// The flag tables `command` takes, the global ones first.
pub fn tables_of(command: &str) -> Vec<&'static [FlagSpec]> {
    TABLES
        .iter()
        .filter(|(_, commands, _)| commands.is_empty() || commands.contains(&command))
        .map(|(_, _, table)| *table)
        .collect()
}
