//! The `lockd` daemon: its command line (flags with glockd's and node
//! lockd's spellings, so their unit files start lockd unchanged), `--help`,
//! the pidfile, the default state directory, and [`start`], which brings
//! the server up as the binary runs it. Signal handling is the binary's.

use crate::flags::{
    options, parse_number, render_flags, Arity, FlagSpec, UsageError, HELP_FLAG, VERSION_FLAG,
};
use crate::limits::KernelLimits;
use crate::nofile::raise_nofile_limit;
use lockd::log::{log, Format, Priority};
use lockd::server::{Secret, Server, ServerConfig, ServerHandle, Shutdown, ShutdownHandle};
use lockd::store::etcd::{parse_cluster_url, EtcdConfig};
use lockd::systemd;
use lockd::transport::tls::TlsConfig;
use lockd::Error;
use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every flag of `lockd`, once.
pub const FLAGS: &[FlagSpec] = &[
    FlagSpec {
        short: "l",
        long: "listen",
        value: "ADDR:PORT",
        arity: Arity::Repeated,
        help:
            "listen on TCP ADDR:PORT (repeatable; default 127.0.0.1:9999; :PORT = all interfaces)",
    },
    FlagSpec {
        short: "u",
        long: "unix",
        value: "PATH",
        arity: Arity::Repeated,
        help: "also listen on a Unix socket at PATH (repeatable)",
    },
    FlagSpec {
        short: "",
        long: "ws",
        value: "ADDR:PORT",
        arity: Arity::Repeated,
        help: "also listen for WebSocket clients on ADDR:PORT (repeatable; :PORT or PORT = all interfaces)",
    },
    FlagSpec {
        short: "",
        long: "tls-cert",
        value: "PATH",
        arity: Arity::Value,
        help: "serve TLS on the TCP listeners with this PEM certificate chain (needs --tls-key)",
    },
    FlagSpec {
        short: "",
        long: "tls-key",
        value: "PATH",
        arity: Arity::Value,
        help: "the PEM private key of --tls-cert",
    },
    FlagSpec {
        short: "",
        long: "tls-client-ca",
        value: "PATH",
        arity: Arity::Value,
        help: "require TLS clients to show a certificate signed by a CA in this PEM file",
    },
    FlagSpec {
        short: "",
        long: "unix-mode",
        value: "MODE",
        arity: Arity::Value,
        help: "permissions of the Unix socket file, in octal (e.g. 660)",
    },
    FlagSpec {
        short: "p",
        long: "pidfile",
        value: "PATH",
        arity: Arity::Value,
        help: "write the process id to PATH, locked; removed on clean exit",
    },
    FlagSpec {
        short: "",
        long: "no-dump",
        value: "",
        arity: Arity::Flag,
        help: "answer d, sd, dump, dj and who with \"0 disabled\"",
    },
    FlagSpec {
        short: "",
        long: "no-registry",
        value: "",
        arity: Arity::Flag,
        help: "answer iam and who with \"0 disabled\"",
    },
    FlagSpec {
        short: "",
        long: "max-connections",
        value: "N",
        arity: Arity::Value,
        help: "refuse connections past N with \"0 Too Many Connections\" (default 10000)",
    },
    FlagSpec {
        short: "",
        long: "max-locks",
        value: "N",
        arity: Arity::Value,
        help: "refuse a new lock while N lock names are held (default 2000000; 0: no cap)",
    },
    FlagSpec {
        short: "",
        long: "max-locks-per-connection",
        value: "N",
        arity: Arity::Value,
        help: "refuse a connection's lock past N it holds (default 100000; 0: no cap)",
    },
    FlagSpec {
        short: "",
        long: "max-waiters",
        value: "N",
        arity: Arity::Value,
        help: "refuse to queue past N waiters on one lock (default 100000; 0: no cap)",
    },
    FlagSpec {
        short: "",
        long: "max-line",
        value: "BYTES",
        arity: Arity::Value,
        help: "longest command line accepted (default 4096)",
    },
    FlagSpec {
        short: "",
        long: "state-dir",
        value: "DIR",
        arity: Arity::Value,
        help: "where fencing tokens are persisted (default: see FILES in lockd(8))",
    },
    FlagSpec {
        short: "",
        long: "no-state",
        value: "",
        arity: Arity::Flag,
        help: "keep fencing tokens in memory only (they restart at 1)",
    },
    FlagSpec {
        short: "",
        long: "auth-file",
        value: "PATH",
        arity: Arity::Value,
        help: "require \"auth SECRET\" with the secret read from PATH",
    },
    FlagSpec {
        short: "",
        long: "tcp-keepalive",
        value: "SECS",
        arity: Arity::Value,
        help: "TCP keepalive idle time; 0 turns it off (default 60)",
    },
    FlagSpec {
        short: "",
        long: "idle-timeout",
        value: "SECS",
        arity: Arity::Value,
        help: "close connections silent for SECS (default: never)",
    },
    FlagSpec {
        short: "",
        long: "cluster",
        value: "etcd://H:P,...",
        arity: Arity::Value,
        help: "cluster mode: keep the locks in etcd at these members, shared by every node (see CLUSTER in lockd(8))",
    },
    FlagSpec {
        short: "",
        long: "cluster-prefix",
        value: "PREFIX",
        arity: Arity::Value,
        help: "etcd key prefix of the cluster's locks (default /lockd)",
    },
    FlagSpec {
        short: "",
        long: "cluster-lease-ttl",
        value: "SECS",
        arity: Arity::Value,
        help: "TTL of the node's etcd lease, 2 or more, e.g. 5 or 5s (default 5): a dead node's locks go within it",
    },
    FlagSpec {
        short: "",
        long: "node-name",
        value: "NAME",
        arity: Arity::Value,
        help: "this node's name in its etcd keys (default: host name and process id)",
    },
    FlagSpec {
        short: "",
        long: "write-timeout",
        value: "SECS",
        arity: Arity::Value,
        help: "close a client that does not take a block of its replies (at most --max-output bytes) within SECS in total, however slowly it reads (default 60)",
    },
    FlagSpec {
        short: "",
        long: "max-output",
        value: "BYTES",
        arity: Arity::Value,
        help: "reply bytes a connection may hold unsent; longer listings go out in pieces (default 1048576)",
    },
    FlagSpec {
        short: "",
        long: "listen-backlog",
        value: "N",
        arity: Arity::Value,
        help: "connections the kernel queues before accept (default 4096)",
    },
    FlagSpec {
        short: "",
        long: "http",
        value: "ADDR:PORT",
        arity: Arity::Value,
        help: "serve /metrics, /locks.json, /healthz and the status page on ADDR:PORT (e.g. 127.0.0.1:9980; off by default)",
    },
    FlagSpec {
        short: "",
        long: "metrics-locks",
        value: "PATTERN",
        arity: Arity::Repeated,
        help: "per-lock wait and hold histograms for lock names matching PATTERN (a name, or a prefix ending in *; at most 100 names; repeatable)",
    },
    FlagSpec {
        short: "",
        long: "log-format",
        value: "FORMAT",
        arity: Arity::Value,
        help: "text (default: lockd: MESSAGE, for the journal) or json (one object per line, with a timestamp)",
    },
    FlagSpec {
        short: "v",
        long: "verbose",
        value: "",
        arity: Arity::Flag,
        help: "log every command to stderr",
    },
    VERSION_FLAG,
    HELP_FLAG,
    FlagSpec {
        short: "",
        long: "tcp",
        value: "[IFACE:]PORT",
        arity: Arity::Repeated,
        help: "node lockd's spelling: listen on PORT (all interfaces unless IFACE)",
    },
    FlagSpec {
        short: "",
        long: "disable-dump",
        value: "",
        arity: Arity::Flag,
        help: "node lockd's spelling of --no-dump",
    },
    FlagSpec {
        short: "",
        long: "disable-registry",
        value: "",
        arity: Arity::Flag,
        help: "node lockd's spelling of --no-registry",
    },
    FlagSpec {
        short: "",
        long: "pid-file",
        value: "PATH",
        arity: Arity::Value,
        help: "node lockd's spelling of --pidfile",
    },
];

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    /// Run the server.
    Run(Box<DaemonOptions>),
    /// Print `--help`.
    Help,
    /// Print `--version`.
    Version,
}

/// A parsed `lockd` command line.
#[derive(Debug)]
pub struct DaemonOptions {
    /// The server's configuration.
    pub config: ServerConfig,
    /// Whether a TCP listener was asked for (`--listen`, `--tcp`, `-port`);
    /// if not, `config.listen` holds the default, which sockets passed by
    /// systemd replace.
    pub listen_given: bool,
    /// `--pidfile`.
    pub pidfile: Option<PathBuf>,
    /// Warnings to log at start (ignored compatibility flags).
    pub warnings: Vec<String>,
    /// `--log-format`.
    pub log_format: Format,
}

/// The text of `lockd --help`.
pub fn help() -> String {
    format!(
        "lockd {}: a network lock server; a lock lives as long as the connection that took it

Usage: lockd [OPTIONS]

Options:
{}
glockd's flags are accepted with glockd's meaning, so its unit files start lockd:
  -port N (all interfaces; 0 turns TCP off), -unix PATH, -pidfile PATH,
  -dump=false, -registry=false, -verbose, -ws N (WebSocket on all interfaces; 0 = off)

Exit status: 0 after a clean stop (SIGTERM, SIGINT, SIGQUIT), 1 on a runtime error
(address in use, pidfile held, unusable state), 2 on a bad command line.
See lockd(8) and lockd-protocol(7).
",
        env!("CARGO_PKG_VERSION"),
        render_flags(FLAGS)
    )
}

/// glockd's Go-style flags (`-port 9999`, `-dump=false`), translated
/// before getopts sees them. Go accepts one or two dashes.
#[derive(Default)]
struct GlockdFlags {
    port: Option<u16>,
    rest: Vec<String>,
    warnings: Vec<String>,
}

fn go_bool(flag: &str, value: Option<&str>) -> Result<bool, UsageError> {
    match value {
        None | Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(other) => Err(UsageError(format!(
            "invalid value {other:?} for -{flag}: expected true or false"
        ))),
    }
}

fn translate_glockd(args: Vec<String>) -> Result<GlockdFlags, UsageError> {
    let mut out = GlockdFlags::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let body = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'));
        let (name, inline) = match body {
            Some(body) => match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            },
            None => ("", None),
        };
        let mut value = |flag: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| UsageError(format!("-{flag} needs a value (see --help)")))
        };
        match name {
            "port" => {
                let v = value("port")?;
                out.port = Some(parse_number("-port", &v, "a port number from 0 to 65535")?);
            }
            // glockd's `-ws N`: WebSocket on every interface, 0 for none.
            // `--ws` is ours (an address or a port) and getopts's.
            "ws" if !arg.starts_with("--") => {
                let v = value("ws")?;
                let port: u16 = parse_number("-ws", &v, "a port number from 0 to 65535")?;
                if port != 0 {
                    out.rest.push("--ws".into());
                    out.rest.push(format!(":{port}"));
                }
            }
            "unix" if !arg.starts_with("--") => {
                out.rest.push("--unix".into());
                out.rest.push(value("unix")?);
            }
            "pidfile" if !arg.starts_with("--") => {
                out.rest.push("--pidfile".into());
                out.rest.push(value("pidfile")?);
            }
            "dump" | "registry" | "verbose" => {
                let on = go_bool(name, inline.as_deref())?;
                match (name, on) {
                    ("dump", false) => out.rest.push("--no-dump".into()),
                    ("registry", false) => out.rest.push("--no-registry".into()),
                    ("verbose", true) => out.rest.push("--verbose".into()),
                    _ => {}
                }
            }
            _ => out.rest.push(arg),
        }
    }
    Ok(out)
}

/// Parses `lockd`'s arguments (without the program name).
///
/// # Errors
/// An unknown flag or a bad value, as one line that says what to do.
pub fn parse(args: Vec<String>) -> Result<Invocation, UsageError> {
    let glockd = translate_glockd(args)?;
    let m = options(FLAGS)
        .parse(&glockd.rest)
        .map_err(|e| UsageError(format!("{e} (see lockd --help)")))?;
    if m.opt_present("help") {
        return Ok(Invocation::Help);
    }
    if m.opt_present("version") {
        return Ok(Invocation::Version);
    }
    if let Some(extra) = m.free.first() {
        return Err(UsageError(format!(
            "unexpected argument {extra:?}: lockd takes only options (see lockd --help)"
        )));
    }
    let mut config = ServerConfig::default();
    let mut listen = m.opt_strs("listen");
    for addr in &listen {
        check_listen_addr("--listen", addr)?;
    }
    for tcp in m.opt_strs("tcp") {
        let addr = if tcp.contains(':') {
            tcp
        } else {
            format!(":{tcp}")
        };
        check_listen_addr("--tcp", &addr)?;
        listen.push(addr);
    }
    match glockd.port {
        Some(0) => {}
        Some(port) => listen.push(format!(":{port}")),
        None => {}
    }
    let listen_given = !listen.is_empty() || glockd.port == Some(0);
    if listen_given {
        config.listen = listen;
    }
    config.unix = m.opt_strs("unix").into_iter().map(PathBuf::from).collect();
    for ws in m.opt_strs("ws") {
        let addr = if ws.contains(':') {
            ws
        } else {
            format!(":{ws}")
        };
        check_listen_addr("--ws", &addr)?;
        config.websocket.push(addr);
    }
    config.tls = tls_config(&m)?;
    if config.listen.is_empty() && config.unix.is_empty() && config.websocket.is_empty() {
        return Err(UsageError(
            "nothing to listen on: -port 0 turns TCP off, so give --unix PATH, --ws ADDR:PORT or --listen ADDR:PORT".into(),
        ));
    }
    if let Some(mode) = m.opt_str("unix-mode") {
        config.unix_mode = Some(
            u32::from_str_radix(mode.trim_start_matches("0o"), 8).map_err(|_| {
                UsageError(format!(
                "invalid value {mode:?} for --unix-mode: expected octal permissions such as 660"
            ))
            })?,
        );
    }
    config.dump = !(m.opt_present("no-dump") || m.opt_present("disable-dump"));
    config.registry = !(m.opt_present("no-registry") || m.opt_present("disable-registry"));
    if let Some(n) = m.opt_str("max-connections") {
        config.max_connections = parse_number("--max-connections", &n, "a number of connections")?;
    }
    for (flag, cap) in [
        ("max-locks", &mut config.limits.max_locks),
        (
            "max-locks-per-connection",
            &mut config.limits.max_locks_per_connection,
        ),
        ("max-waiters", &mut config.limits.max_waiters),
    ] {
        if let Some(n) = m.opt_str(flag) {
            *cap = parse_number(&format!("--{flag}"), &n, "a number (0 for no cap)")?;
        }
    }
    if let Some(n) = m.opt_str("max-line") {
        config.max_line = parse_number("--max-line", &n, "a number of bytes")?;
        if config.max_line == 0 {
            return Err(UsageError("--max-line must be at least 1".into()));
        }
    }
    if let Some(secs) = m.opt_str("tcp-keepalive") {
        let secs: u64 = parse_number("--tcp-keepalive", &secs, "a number of seconds")?;
        config.tcp_keepalive = (secs > 0).then(|| Duration::from_secs(secs));
    }
    if let Some(secs) = m.opt_str("idle-timeout") {
        let secs: u64 = parse_number("--idle-timeout", &secs, "a number of seconds")?;
        config.idle_timeout = (secs > 0).then(|| Duration::from_secs(secs));
    }
    if let Some(secs) = m.opt_str("write-timeout") {
        let secs: u64 = parse_number("--write-timeout", &secs, "a number of seconds")?;
        if secs == 0 {
            return Err(UsageError("--write-timeout must be at least 1".into()));
        }
        config.write_timeout = Duration::from_secs(secs);
    }
    if let Some(n) = m.opt_str("max-output") {
        config.max_output = parse_number("--max-output", &n, "a number of bytes")?;
        if config.max_output == 0 {
            return Err(UsageError("--max-output must be at least 1".into()));
        }
    }
    if let Some(n) = m.opt_str("listen-backlog") {
        config.listen_backlog = parse_number("--listen-backlog", &n, "a number of connections")?;
        if config.listen_backlog == 0 {
            return Err(UsageError("--listen-backlog must be at least 1".into()));
        }
    }
    config.verbose = m.opt_present("verbose");
    if let Some(addr) = m.opt_str("http") {
        check_listen_addr("--http", &addr)?;
        config.http = Some(addr);
    }
    config.metrics_locks = m.opt_strs("metrics-locks");
    let log_format = match m.opt_str("log-format").as_deref() {
        None | Some("text") => Format::Text,
        Some("json") => Format::Json,
        Some(other) => {
            return Err(UsageError(format!(
                "invalid value {other:?} for --log-format: expected text or json"
            )))
        }
    };
    if let Some(path) = m.opt_str("auth-file") {
        config.auth_secret =
            Some(Secret::from_file(Path::new(&path)).map_err(|e| UsageError(e.to_string()))?);
    }
    config.state_dir = match (m.opt_str("state-dir"), m.opt_present("no-state")) {
        (Some(_), true) => {
            return Err(UsageError(
                "--state-dir and --no-state contradict each other; give one".into(),
            ))
        }
        (Some(dir), false) => Some(PathBuf::from(dir)),
        (None, true) => None,
        (None, false) => Some(default_state_dir()),
    };
    config.cluster = cluster_config(&m)?;
    let pidfile = m
        .opt_str("pidfile")
        .or_else(|| m.opt_str("pid-file"))
        .map(PathBuf::from);
    Ok(Invocation::Run(Box::new(DaemonOptions {
        config,
        listen_given,
        pidfile,
        warnings: glockd.warnings,
        log_format,
    })))
}

/// `--cluster` and its companions; those without `--cluster` are an error.
fn cluster_config(m: &getopts::Matches) -> Result<Option<EtcdConfig>, UsageError> {
    let Some(url) = m.opt_str("cluster") else {
        for flag in ["cluster-prefix", "cluster-lease-ttl", "node-name"] {
            if m.opt_present(flag) {
                return Err(UsageError(format!(
                    "--{flag} needs --cluster etcd://HOST:PORT,..."
                )));
            }
        }
        return Ok(None);
    };
    let endpoints = parse_cluster_url(&url).map_err(|e| {
        UsageError(format!(
            "invalid value for --cluster: {e} (use etcd://HOST:PORT,HOST:PORT,...)"
        ))
    })?;
    let mut config = EtcdConfig::new(endpoints);
    if let Some(prefix) = m.opt_str("cluster-prefix") {
        if !prefix.starts_with('/') {
            return Err(UsageError(format!(
                "invalid value {prefix:?} for --cluster-prefix: it must start with /"
            )));
        }
        config.prefix = prefix.into_bytes();
    }
    if let Some(ttl) = m.opt_str("cluster-lease-ttl") {
        let digits = ttl.strip_suffix('s').unwrap_or(&ttl);
        let secs: u64 = parse_number("--cluster-lease-ttl", digits, "a number of seconds")?;
        if secs < 2 {
            return Err(UsageError(
                "--cluster-lease-ttl must be at least 2 seconds (etcd's shortest lease)".into(),
            ));
        }
        config.lease_ttl = Duration::from_secs(secs);
    }
    if let Some(name) = m.opt_str("node-name") {
        if name.is_empty() || name.contains('/') || name.chars().any(char::is_whitespace) {
            return Err(UsageError(format!(
                "invalid value {name:?} for --node-name: give a name without /, spaces or newlines"
            )));
        }
        config.node = name;
    }
    Ok(Some(config))
}

/// Checks the shape of a listen address (`HOST:PORT`, `[V6]:PORT` or
/// `:PORT`) so a typo is a usage error (exit 2), not a bind failure (exit 1).
/// Whether HOST resolves is left to binding.
fn check_listen_addr(flag: &str, addr: &str) -> Result<(), UsageError> {
    let bad = |why: &str| {
        UsageError(format!(
            "invalid value {addr:?} for {flag}: {why} (use HOST:PORT, e.g. 127.0.0.1:9999, [::1]:9999 or :9999)"
        ))
    };
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(bad("no port"));
    };
    if port.parse::<u16>().is_err() {
        return Err(bad("the port must be a number from 0 to 65535"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad("an IPv6 address needs brackets"));
    }
    Ok(())
}

/// Loads `--tls-cert`, `--tls-key` and `--tls-client-ca`: both of the first
/// two or neither; the third only with them. A file that cannot be used is a
/// usage error, like an unreadable `--auth-file`.
fn tls_config(m: &getopts::Matches) -> Result<Option<TlsConfig>, UsageError> {
    let cert = m.opt_str("tls-cert");
    let key = m.opt_str("tls-key");
    let client_ca = m.opt_str("tls-client-ca");
    let (cert, key) = match (cert, key) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) if client_ca.is_none() => return Ok(None),
        (None, None) => {
            return Err(UsageError(
                "--tls-client-ca needs --tls-cert and --tls-key (the server's own certificate)"
                    .into(),
            ))
        }
        (Some(_), None) => {
            return Err(UsageError(
                "--tls-cert needs --tls-key PATH (the certificate's private key)".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(UsageError(
                "--tls-key needs --tls-cert PATH (the certificate it belongs to)".into(),
            ))
        }
    };
    TlsConfig::from_pem_files(
        Path::new(&cert),
        Path::new(&key),
        client_ca.as_deref().map(Path::new),
    )
    .map(Some)
    .map_err(|e| UsageError(e.to_string()))
}

/// `$STATE_DIRECTORY` (systemd's `StateDirectory=`), else `/var/lib/lockd`
/// for root, else `$XDG_STATE_HOME/lockd` or `~/.local/state/lockd`.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        // systemd may pass several, colon-separated; the first is ours.
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string();
        return PathBuf::from(first);
    }
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/lockd");
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("lockd");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/state/lockd"),
        None => PathBuf::from("/var/lib/lockd"),
    }
}

/// A pidfile, locked while the daemon runs and removed when dropped.
#[derive(Debug)]
pub struct Pidfile {
    path: PathBuf,
    _file: File,
}

/// Why the pidfile could not be written.
#[derive(Debug)]
pub enum PidfileError {
    /// Another process holds it.
    Held {
        /// The file.
        path: PathBuf,
        /// The pid it names, if readable.
        pid: Option<String>,
    },
    /// It cannot be opened or written.
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

impl std::fmt::Display for PidfileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PidfileError::Held { path, pid } => write!(
                f,
                "pidfile {} is held by another running lockd{} (stop it first, or give this one another --pidfile)",
                path.display(),
                pid.as_ref().map(|p| format!(" (pid {p})")).unwrap_or_default()
            ),
            PidfileError::Io { path, source } => {
                write!(f, "cannot write pidfile {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for PidfileError {}

impl Pidfile {
    /// Creates (or takes over a stale) pidfile, locks it and writes our pid.
    ///
    /// # Errors
    /// Held by a live process, or not writable.
    pub fn create(path: &Path) -> Result<Pidfile, PidfileError> {
        let io_error = |source| PidfileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let pid = std::fs::read_to_string(path)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty());
                return Err(PidfileError::Held {
                    path: path.to_path_buf(),
                    pid,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_error(e)),
        }
        file.set_len(0).map_err(io_error)?;
        writeln!(file, "{}", std::process::id()).map_err(io_error)?;
        file.sync_all().map_err(io_error)?;
        Ok(Pidfile {
            path: path.to_path_buf(),
            _file: file,
        })
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Why the daemon could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// Sockets from systemd, binding, or starting the server's threads.
    Server(Error),
    /// The pidfile.
    Pidfile(PidfileError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The inner error says it all; `source` goes on below it.
        match self {
            StartError::Server(e) => e.fmt(f),
            StartError::Pidfile(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Server(e) => e.source(),
            StartError::Pidfile(e) => e.source(),
        }
    }
}

impl From<Error> for StartError {
    fn from(e: Error) -> StartError {
        StartError::Server(e)
    }
}

impl From<PidfileError> for StartError {
    fn from(e: PidfileError) -> StartError {
        StartError::Pidfile(e)
    }
}

/// A daemon that is serving, from [`start`].
#[must_use = "dropping the daemon stops it at once"]
pub struct RunningDaemon {
    server: ServerHandle,
    // Dropped after the server has stopped, which removes the file.
    _pidfile: Option<Pidfile>,
}

/// Stops a [`RunningDaemon`] from another thread (the binary's signal
/// thread). Cheap to clone.
#[derive(Clone)]
pub struct Stopper {
    server: ShutdownHandle,
}

/// Starts the daemon as `options` say: logs their warnings and the
/// descriptor and kernel limits that are too low, takes sockets from
/// systemd, binds, writes the pidfile, starts serving, logs each
/// `listening on ADDR` and tells systemd READY=1. Returns at once.
///
/// Install signal handlers before calling this, so that a signal during
/// start-up waits for the daemon to be stoppable instead of killing it.
///
/// # Errors
/// Sockets from systemd that cannot be used, an address that cannot be
/// bound, unusable state, a held or unwritable pidfile, or no thread to
/// serve on.
pub fn start(options: DaemonOptions) -> Result<RunningDaemon, StartError> {
    for warning in &options.warnings {
        log(Priority::Warning, format_args!("warning: {warning}"));
    }
    let mut config = options.config;
    let max_connections = config.max_connections;
    let limit = raise_nofile_limit();
    // One descriptor per connection, plus a few for listeners and files.
    if limit < max_connections as u64 + 16 {
        log(Priority::Warning, format_args!(
            "warning: open-files limit is {limit}, below --max-connections {max_connections}: raise it (ulimit -n, LimitNOFILE=) or lower --max-connections"
        ));
    }
    for warning in KernelLimits::read().capacity_warnings(max_connections) {
        log(Priority::Warning, format_args!("warning: {warning}"));
    }
    if let Some(warning) = systemd::tasks_max_warning(max_connections) {
        log(Priority::Warning, format_args!("warning: {warning}"));
    }
    let tls = match &config.tls {
        Some(tls) if tls.requires_client_cert() => " (TLS, client certificates required)",
        Some(_) => " (TLS)",
        None => "",
    };
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
    let cluster = config.cluster.as_ref().map(|c| {
        format!(
            "cluster mode: etcd at {}, prefix {}, node {}, lease TTL {}s",
            c.endpoints.join(","),
            String::from_utf8_lossy(&c.prefix),
            c.node,
            c.lease_ttl.as_secs()
        )
    });
    let server = Server::bind_adding(config, inherited)?;
    if let Some(line) = cluster {
        log(Priority::Info, line);
    }
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
    if let Some(addr) = server.http_addr() {
        listening.push(format!("http://{addr}"));
    }
    let socket_files = server.socket_files();
    let pidfile = match options.pidfile.as_deref().map(Pidfile::create).transpose() {
        Ok(pidfile) => pidfile,
        Err(e) => {
            // We bound these sockets a moment ago: leave no stale files.
            for path in &socket_files {
                let _ = std::fs::remove_file(path);
            }
            return Err(e.into());
        }
    };
    let server = server.spawn()?;
    for name in &listening {
        log(Priority::Info, format_args!("listening on {name}"));
    }
    tell_systemd(systemd::ready(&format!(
        "listening on {}",
        listening.join(", ")
    )));
    Ok(RunningDaemon {
        server,
        _pidfile: pidfile,
    })
}

impl RunningDaemon {
    /// A handle that stops the daemon from another thread.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            server: self.server.shutdown_handle(),
        }
    }

    /// Blocks until the daemon has stopped and every connection has ended,
    /// then logs `stopped` and removes the pidfile and socket files.
    pub fn wait(self) {
        let RunningDaemon { server, _pidfile } = self;
        server.wait();
        log(Priority::Notice, "stopped");
    }
}

impl Stopper {
    /// Logs `WHY: stopping, closing N connections`, tells systemd
    /// STOPPING=1, and closes every connection at once; returns without
    /// waiting (see [`RunningDaemon::wait`]).
    pub fn stop(&self, why: impl fmt::Display) {
        let connections = self.server.connections();
        tell_systemd(systemd::stopping(&format!(
            "stopping, closing {connections} connections"
        )));
        log(
            Priority::Notice,
            format_args!("{why}: stopping, closing {connections} connections"),
        );
        self.server.shutdown(Shutdown::Immediate);
    }
}

/// A notification that fails is logged; the daemon serves on regardless.
fn tell_systemd(sent: io::Result<bool>) {
    if let Err(e) = sent {
        log(
            Priority::Warning,
            format_args!("warning: cannot notify systemd: {e}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_table_is_well_formed_and_in_help() {
        crate::flags::check_table(FLAGS);
        let help = help();
        for flag in FLAGS {
            assert!(
                help.contains(&format!("--{}", flag.long)),
                "--{}",
                flag.long
            );
        }
    }

    fn run(args: &[&str]) -> DaemonOptions {
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        args.push("--no-state".into());
        match parse(args) {
            Ok(Invocation::Run(options)) => *options,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_to_loopback() {
        assert_eq!(run(&[]).config.listen, vec!["127.0.0.1:9999"]);
    }

    #[test]
    fn glockd_spellings() {
        let o = run(&[
            "-port",
            "7000",
            "-dump=false",
            "-registry=false",
            "-verbose",
            "-pidfile",
            "/tmp/x.pid",
        ]);
        assert_eq!(o.config.listen, vec![":7000"]);
        assert!(!o.config.dump && !o.config.registry && o.config.verbose);
        assert_eq!(o.pidfile.as_deref(), Some(Path::new("/tmp/x.pid")));
        let o = run(&["-port=0", "-unix", "/tmp/s.sock"]);
        assert!(o.config.listen.is_empty());
        assert_eq!(o.config.unix, vec![PathBuf::from("/tmp/s.sock")]);
        assert!(run(&["-dump=true"]).config.dump);
    }

    #[test]
    fn websocket_listeners() {
        let o = run(&["-ws", "9998", "--ws", "127.0.0.1:7003", "--ws", "7004"]);
        assert_eq!(o.config.websocket, vec![":9998", "127.0.0.1:7003", ":7004"]);
        assert!(o.warnings.is_empty());
        assert!(run(&["-ws=0"]).config.websocket.is_empty());
        let o = run(&["-port", "0", "--ws", ":9998"]);
        assert!(o.config.listen.is_empty());
    }

    #[test]
    fn tls_flags_come_in_pairs() {
        for args in [
            &["--tls-cert", "c.pem"][..],
            &["--tls-key", "k.pem"],
            &["--tls-client-ca", "ca.pem"],
            &[
                "--tls-cert",
                "/nonexistent/c.pem",
                "--tls-key",
                "/nonexistent/k.pem",
            ],
        ] {
            let args = args.iter().map(|s| s.to_string()).collect();
            let err = parse(args).expect_err("bad");
            assert!(err.0.contains("--tls-"), "{err}");
        }
    }

    #[test]
    fn node_spellings() {
        let o = run(&[
            "--tcp",
            "127.0.0.1:7001",
            "--tcp",
            "7002",
            "--disable-dump",
            "--disable-registry",
            "--pid-file",
            "p",
        ]);
        assert_eq!(o.config.listen, vec!["127.0.0.1:7001", ":7002"]);
        assert!(!o.config.dump && !o.config.registry);
        assert_eq!(o.pidfile.as_deref(), Some(Path::new("p")));
    }

    #[test]
    fn listen_addresses_of_every_shape() {
        let o = run(&[
            "--listen",
            "localhost:1",
            "--listen",
            "[::1]:2",
            "--listen",
            ":3",
        ]);
        assert_eq!(o.config.listen, vec!["localhost:1", "[::1]:2", ":3"]);
    }

    #[test]
    fn start_writes_the_pidfile_and_stopping_removes_it() {
        let dir = std::env::temp_dir().join(format!("lockd-daemon-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let pidfile = dir.join("lockd.pid");
        let path = pidfile.to_str().expect("UTF-8 temp dir");
        let daemon = start(run(&["--listen", "127.0.0.1:0", "--pidfile", path])).expect("start");
        let written = std::fs::read_to_string(&pidfile).expect("pidfile");
        assert_eq!(written.trim(), std::process::id().to_string());
        daemon.stopper().stop("test");
        daemon.wait();
        assert!(!pidfile.exists());
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn bad_values_say_what_to_do() {
        for args in [
            &["--max-connections", "lots"][..],
            &["--bogus"],
            &["-port", "x"],
            &["-dump=maybe"],
            &["extra"],
            &["--listen", "nonsense"],
            &["--listen", "127.0.0.1:99999"],
            &["--listen", "::1:9999"],
            &["--tcp", "http"],
            &["-ws", "x"],
            &["--ws", "::1:9998"],
        ] {
            let args = args.iter().map(|s| s.to_string()).collect();
            let err = parse(args).expect_err("bad");
            assert!(!err.0.contains('\n'), "{err}");
        }
    }
}
