//! Log lines on standard error, one per event, without timestamps of our
//! own: under systemd the journal stamps each line.
//!
//! When standard error is the journal's stream (`$JOURNAL_STREAM` names
//! its device and inode, as systemd sets it), a line starts with its
//! syslog priority, `<4>lockd: warning: ...`, which the journal strips
//! and records as the priority (`journalctl -p warning`). Anywhere else the
//! line is plain `lockd: ...`.
//!
//! With [`Format::Json`] (`lockd --log-format json`, for log shippers) each
//! line is instead one JSON object with a timestamp of its own:
//! `{"ts":"2026-11-29T09:41:07.250Z","level":"info","msg":"...",...}`, plus
//! the fields of an event (`event`, `lock`, `client`...), never a journal
//! prefix.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

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

impl Priority {
    /// The name in a JSON line's `level`.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Error => "error",
            Priority::Warning => "warning",
            Priority::Notice => "notice",
            Priority::Info => "info",
            Priority::Debug => "debug",
        }
    }
}

/// How a log line looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `lockd: MESSAGE`, for the journal and terminals (the default).
    Text,
    /// One JSON object per line, with a timestamp.
    Json,
}

static JSON: AtomicBool = AtomicBool::new(false);

/// The room a line's buffer starts with: most lines fit.
const LINE_ROOM: usize = 256;

thread_local! {
    /// The lines of a [`batch`] running on this thread, written when it ends.
    static BATCH: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// Runs `f`, and writes the lines it logs on this thread through
/// [`StderrLogger`] or [`log`](fn@log) in one write when it ends (or
/// unwinds), instead of one write each: a connection that leaves ten locks
/// behind costs one system call, not ten, and its lines stay together.
/// Nested batches join the outermost one.
pub(crate) fn batch<R>(f: impl FnOnce() -> R) -> R {
    struct Flush;
    impl Drop for Flush {
        fn drop(&mut self) {
            if let Some(lines) = BATCH.with(|b| b.borrow_mut().take()) {
                if !lines.is_empty() {
                    let _ = std::io::stderr().lock().write_all(&lines);
                }
            }
        }
    }
    let outermost = BATCH.with(|b| {
        let mut b = b.borrow_mut();
        let outermost = b.is_none();
        if outermost {
            // Room for a few lines: a batch grew about five times.
            *b = Some(Vec::with_capacity(4 * LINE_ROOM));
        }
        outermost
    });
    // Not `then_some(Flush)`: that would drop (and run) the argument of
    // an inner batch at once.
    let _flush = if outermost { Some(Flush) } else { None };
    f()
}

/// Writes a whole line to standard error, or adds it to this thread's
/// [`batch`].
fn write_line(line: &[u8]) {
    let batched = BATCH.with(|b| match b.borrow_mut().as_mut() {
        Some(lines) => {
            lines.extend_from_slice(line);
            true
        }
        None => false,
    });
    if !batched {
        let _ = std::io::stderr().lock().write_all(line);
    }
}

/// Sets the format of every line from now on.
pub fn set_format(format: Format) {
    JSON.store(format == Format::Json, Ordering::Relaxed);
}

/// Writes `lockd: MESSAGE` and a newline to standard error in one write,
/// with a priority prefix when standard error is the journal; or a JSON
/// object, with [`Format::Json`].
pub fn log(priority: Priority, message: impl fmt::Display) {
    if JSON.load(Ordering::Relaxed) {
        write_json(priority, &message, &[]);
        return;
    }
    // Room for a usual line at once: `format!` sizes its buffer from the
    // literal pieces only and grew it about six times for an event's line.
    let mut line = String::with_capacity(LINE_ROOM);
    if stderr_is_journal() {
        let _ = write!(line, "<{}>", priority as u8);
    }
    let _ = writeln!(line, "lockd: {message}");
    write_line(line.as_bytes());
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
        if JSON.load(Ordering::Relaxed) {
            let mut fields = Fields(Vec::new());
            let _ = record.key_values().visit(&mut fields);
            write_json(priority, record.args(), &fields.0);
        } else {
            log(priority, record.args());
        }
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

/// A field's value in a JSON line.
enum Field {
    Number(String),
    Bool(bool),
    Text(String),
}

/// Collects a record's key-value pairs.
struct Fields(Vec<(String, Field)>);

impl<'kvs> ::log::kv::VisitSource<'kvs> for Fields {
    fn visit_pair(
        &mut self,
        key: ::log::kv::Key<'kvs>,
        value: ::log::kv::Value<'kvs>,
    ) -> Result<(), ::log::kv::Error> {
        let field = if let Some(n) = value.to_u64() {
            Field::Number(n.to_string())
        } else if let Some(n) = value.to_i64() {
            Field::Number(n.to_string())
        } else if let Some(n) = value.to_f64().filter(|n| n.is_finite()) {
            Field::Number(n.to_string())
        } else if let Some(b) = value.to_bool() {
            Field::Bool(b)
        } else {
            Field::Text(value.to_string())
        };
        self.0.push((key.as_str().to_string(), field));
        Ok(())
    }
}

/// One JSON object and a newline, in one write.
fn write_json(priority: Priority, message: &dyn fmt::Display, fields: &[(String, Field)]) {
    let mut line = String::with_capacity(LINE_ROOM);
    line.push_str("{\"ts\":\"");
    timestamp(&mut line, SystemTime::now());
    line.push_str("\",\"level\":\"");
    line.push_str(priority.as_str());
    line.push_str("\",\"msg\":");
    json_string(&mut line, &message.to_string());
    for (key, value) in fields {
        line.push(',');
        json_string(&mut line, key);
        line.push(':');
        match value {
            Field::Number(n) => line.push_str(n),
            Field::Bool(b) => line.push_str(if *b { "true" } else { "false" }),
            Field::Text(t) => json_string(&mut line, t),
        }
    }
    line.push_str("}\n");
    write_line(line.as_bytes());
}

fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// RFC 3339 in UTC with milliseconds: `2026-11-29T09:41:07.250Z`.
fn timestamp(out: &mut String, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let at = |secs: u64, ms: u64| {
            let mut s = String::new();
            timestamp(&mut s, UNIX_EPOCH + Duration::from_millis(secs * 1000 + ms));
            s
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_795_945_267, 250), "2026-11-29T09:41:07.250Z");
        assert_eq!(at(4_102_444_799, 999), "2099-12-31T23:59:59.999Z");
    }

    /// What this thread's batch holds so far.
    fn batched() -> Option<Vec<u8>> {
        BATCH.with(|b| b.borrow().clone())
    }

    #[test]
    fn a_batch_holds_its_lines_until_the_outermost_one_ends() {
        assert_eq!(batched(), None);
        batch(|| {
            log(Priority::Info, "one");
            batch(|| log(Priority::Info, "two"));
            // The inner batch ended without writing: both lines wait.
            let lines = batched().unwrap_or_default();
            assert_eq!(String::from_utf8_lossy(&lines).lines().count(), 2);
            assert!(lines.ends_with(b"lockd: two\n"), "{lines:?}");
        });
        assert_eq!(batched(), None, "the outermost batch writes and ends");
        let unwound = std::panic::catch_unwind(|| batch(|| panic!("inside a batch")));
        assert!(unwound.is_err());
        assert_eq!(batched(), None, "a batch that unwinds still ends");
    }

    #[test]
    fn json_strings_escape_what_json_needs() {
        let mut s = String::new();
        json_string(&mut s, "a\"b\\c\nd\u{1}e\u{e9}");
        assert_eq!(s, "\"a\\\"b\\\\c\\nd\\u0001e\u{e9}\"");
    }
}
