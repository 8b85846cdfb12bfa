//! Log lines on standard error, one per event, without timestamps of our
//! own: under systemd the journal stamps each line.
//!
//! When standard error is the journal's stream (`$JOURNAL_STREAM` names
//! its device and inode, as systemd sets it), a line starts with its
//! syslog priority, `<4>lockd: warning: ...`, which the journal strips
//! and records as the priority (`journalctl -p warning`). Anywhere else the
//! line is plain `lockd: ...`. Lines written without this module (the
//! per-command lines of `--verbose`) get the journal's default, info.

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
        let (Ok(dev), Ok(ino)) = (dev.parse::<libc::dev_t>(), ino.parse::<libc::ino_t>()) else {
            return false;
        };
        // SAFETY: an all-zero `stat` is a valid value of the plain C struct,
        // and fstat(2) writes into it while it lives.
        let stat = unsafe {
            let mut stat: libc::stat = std::mem::zeroed();
            if libc::fstat(libc::STDERR_FILENO, &mut stat) != 0 {
                return false;
            }
            stat
        };
        stat.st_dev == dev && stat.st_ino == ino
    })
}
