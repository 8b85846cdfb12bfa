//! Log lines on standard error, one per event, without timestamps of our
//! own: under systemd the journal stamps each line.
//!
//! When standard error is the journal's stream (`$JOURNAL_STREAM` names
//! its device and inode, as systemd sets it), a line starts with its
//! syslog priority, `<4>lockd: warning: ...`, which the journal strips
//! and records as the priority (`journalctl -p warning`). Anywhere else the
//! line is plain `lockd: ...`.

use std::fmt;
use std::io::Write;
use std::sync::OnceLock;

/// How much a line matters, as syslog numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// The daemon cannot go on, or lost something (`<3>`).
    Error = 3,
    /// Something an operator should fix (`<4>`).
    Warning = 4,
    /// A normal but significant event: start, stop (`<5>`).
    Notice = 5,
    /// Everything else (`<6>`).
    Info = 6,
    /// Detail for debugging (`<7>`).
    Debug = 7,
}

/// Writes `lockd: MESSAGE` and a newline to standard error in one write,
/// with a priority prefix when standard error is the journal.
pub fn log(priority: Priority, message: impl fmt::Display) {
    let line = if stderr_is_journal() {
        format!("<{}>lockd: {message}\n", priority as u8)
    } else {
        format!("lockd: {message}\n")
    };
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// True when `$JOURNAL_STREAM` (`DEVICE:INODE`) is standard error's, as
/// systemd documents; a child whose stderr was redirected inherits the
/// variable but not the stream, and gets plain lines.
pub fn stderr_is_journal() -> bool {
    static IS_JOURNAL: OnceLock<bool> = OnceLock::new();
    *IS_JOURNAL.get_or_init(|| {
        let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
            return false;
        };
        let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
            return false;
        };
        let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
            return false;
        };
        match rustix::fs::fstat(std::io::stderr()) {
            Ok(stat) => stat.st_dev == dev && stat.st_ino == ino,
            Err(_) => false,
        }
    })
}

/// The `log` crate's records as [`log`](fn@log) lines: the library's diagnostics
/// (refused connections, token-state errors, `--verbose` command lines)
/// go through the `log` facade, so a program that embeds the server sends
/// them wherever it likes; the `lockd` daemon installs this logger.
/// Levels map to priorities: error 3, warn 4, info 6, debug and trace 7.
#[derive(Debug)]
pub struct StderrLogger;

impl ::log::Log for StderrLogger {
    fn enabled(&self, _metadata: &::log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &::log::Record<'_>) {
        let priority = match record.level() {
            ::log::Level::Error => Priority::Error,
            ::log::Level::Warn => Priority::Warning,
            ::log::Level::Info => Priority::Info,
            ::log::Level::Debug | ::log::Level::Trace => Priority::Debug,
        };
        log(priority, record.args());
    }

    fn flush(&self) {}
}

/// Makes [`StderrLogger`] the `log` crate's logger, at level info. Does
/// nothing if a logger is installed already.
pub fn install() {
    if ::log::set_logger(&StderrLogger).is_ok() {
        ::log::set_max_level(::log::LevelFilter::Info);
    }
}
