//! Connecting as the global options say, for every command: the
//! options themselves ([`Global`]), the exit statuses, the client
//! settings, and errors said in lockctl's terms.

use lockd::local::{self, LocalError};
use lockd::{AuthError, Client, ClientConfig, Error, Secret};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Global {
    /// `--local`: the socket path of local mode (then `server` is
    /// `unix:PATH`).
    pub local: Option<PathBuf>,
    /// `--mode`: the permission bits of a local path's socket and files.
    pub local_mode: u32,
    /// `--server`, `$LOCKD_SERVER` or the default.
    pub server: String,
    /// `--io-timeout`.
    pub timeout: Duration,
    /// `--auth-file`.
    pub auth_file: Option<PathBuf>,
    /// `--tls-ca`.
    pub tls_ca: Option<PathBuf>,
    /// `--tls-cert` and `--tls-key`.
    pub tls_client_cert: Option<(PathBuf, PathBuf)>,
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
    if let Some(path) = &global.local {
        return connect_local(global, path, config).map_err(|e| {
            eprintln!("lockctl: {e}");
            exit::UNAVAILABLE
        });
    }
    Client::connect_with(&global.server, config).map_err(|e| {
        if e.is_disconnected() && speaks_tls(global) {
            eprintln!("lockctl: {}", use_tls(&global.server));
        } else {
            eprintln!("lockctl: {}", explain(&global.server, &e));
        }
        exit::UNAVAILABLE
    })
}

/// Local mode: connects to whoever serves `path`, first starting a
/// helper (`lockctl serve --local PATH`, detached in its own process
/// group) when nobody does. lockctl never serves the path itself: its
/// process ends with CMD, and the locks of every other process would end
/// with it. The helper stops once nobody has been connected for a second.
pub(crate) fn connect_local(
    global: &Global,
    path: &Path,
    config: ClientConfig,
) -> Result<Client, String> {
    let options = local::Options::new()
        .mode(global.local_mode)
        .client_config(config);
    let deadline = Instant::now() + global.timeout;
    let mut helper_started: Option<Instant> = None;
    loop {
        match options.clone().patience(Duration::ZERO).connect(path) {
            Ok(client) => return Ok(client),
            // Wrong permissions or a file in the way: trying again won't help.
            Err(
                e @ (LocalError::Permissions { .. }
                | LocalError::NotASocket { .. }
                | LocalError::Io { .. }),
            ) => return Err(e.to_string()),
            // Nobody serves yet, a helper is starting or leaving: retry.
            Err(e) if Instant::now() >= deadline => return Err(e.to_string()),
            Err(_) => {}
        }
        // One helper at a time; another after a while, in case this one
        // lost a race with a helper that was just leaving.
        if helper_started.is_none_or(|at| at.elapsed() >= Duration::from_millis(500)) {
            start_helper(path, global.local_mode).map_err(|e| {
                format!(
                    "cannot start the helper that serves {}: {e}",
                    path.display()
                )
            })?;
            helper_started = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Starts `lockctl serve --local PATH` in its own process group, detached
/// from our standard streams; a thread reaps it if it ends first.
fn start_helper(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let mut child = Command::new(std::env::current_exe()?)
        .arg("serve")
        .arg("--local")
        .arg(format!("--mode={mode:o}"))
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?;
    std::thread::Builder::new()
        .name("lockctl-helper-reaper".into())
        .spawn(move || child.wait())?;
    Ok(())
}

/// `lockctl serve --local PATH`: serves PATH until nobody has been
/// connected for `idle`; exits 0 at once when another process serves it.
pub(crate) fn serve(global: &Global, idle: Duration) -> u8 {
    let Some(path) = &global.local else {
        return exit::USAGE;
    };
    match local::Options::new()
        .mode(global.local_mode)
        .serve_until_idle(path, idle)
    {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("lockctl: {e}");
            exit::UNAVAILABLE
        }
    }
}

/// Whether a plain address that hung up on `hello 2` is a TLS port: a TLS
/// server answers a line that is no ClientHello with an alert record,
/// whose first byte is 0x15 (a lockd never sends that byte first).
pub(crate) fn speaks_tls(global: &Global) -> bool {
    use std::io::{Read, Write};
    if global.server.starts_with("tls://") || global.server.starts_with("unix:") {
        return false;
    }
    let Ok(mut stream) = lockd::client::connect_raw(&global.server, &client_config(global)) else {
        return false;
    };
    let mut first = [0u8; 1];
    stream.write_all(b"hello 2\n").is_ok()
        && matches!(stream.read(&mut first), Ok(1))
        && first[0] == 0x15
}

/// An error said in lockctl's terms: which flag to fix, and for a TLS
/// port spoken to in plain text (or the other way round), the address to
/// use instead.
pub(crate) fn explain(server: &str, e: &Error) -> String {
    let text = e.to_string();
    tls_mismatch(server, &text).unwrap_or_else(|| in_cli_terms(e))
}

/// An error of an established connection, with the flag to fix where
/// there is one.
pub(crate) fn in_cli_terms(e: &Error) -> String {
    match e {
        Error::Auth(AuthError::Required) => {
            "the server requires authentication: give its secret with --auth-file PATH".into()
        }
        Error::Auth(AuthError::Failure) => {
            "the server refused the secret: check the file given to --auth-file".into()
        }
        _ => e.to_string(),
    }
}

/// [`explain`] for an I/O error on a raw connection.
pub(crate) fn explain_io(server: &str, e: &std::io::Error) -> String {
    let text = e.to_string();
    tls_mismatch(server, &text).unwrap_or(text)
}

/// What to say when a plain address turns out to be a TLS port.
pub(crate) fn use_tls(server: &str) -> String {
    format!("{server}: this port speaks TLS: use tls://{server}")
}

/// TLS to a plain port gets no handshake back (the server waits for a
/// line that never ends). (Plain text to a TLS port is told by
/// [`speaks_tls`].)
fn tls_mismatch(server: &str, text: &str) -> Option<String> {
    let host_port = server.strip_prefix("tls://")?;
    let lower = text.to_ascii_lowercase();
    let no_tls = ["handshake", "corrupt message", "invalid content type"];
    (no_tls.iter().any(|p| lower.contains(p)) && !lower.contains("certificate")).then(|| {
        format!("{text}: this port may not speak TLS; if it is plain text, use {host_port}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_mismatches_are_named() {
        assert!(tls_mismatch("tls://h:7000", "TLS handshake: received corrupt message").is_some());
        assert!(tls_mismatch("h:7000", "TLS handshake: received corrupt message").is_none());
        assert_eq!(
            use_tls("h:7000"),
            "h:7000: this port speaks TLS: use tls://h:7000"
        );
    }
}
