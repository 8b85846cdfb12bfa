//! Fencing tokens: one counter that only grows, also across restarts.
//!
//! The state file holds a high-water mark reserved ahead of use: at start
//! the server reserves a block above the stored mark and hands out tokens
//! from the old mark up. A background thread writes (and fsyncs) the next
//! mark when half of the current block is used, so a grant never waits for
//! the disk, and after a restart, even one after `kill -9`, every token is
//! above every token handed out before.
//!
//! No token is ever handed out at or above the mark on disk: when the mark
//! cannot be saved (a full disk), grants stop once the block runs out, and
//! the reserver keeps retrying, so they resume by themselves once the disk
//! can be written again.

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Tokens reserved per write of the state file.
const BLOCK: u64 = 1 << 20;
/// How long the reserver waits between two tries after a failed save.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// How often a failure that keeps happening is logged again.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// The state file inside the state directory.
const FILE_NAME: &str = "fencing-token";

/// Why the token state could not be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum TokenError {
    /// The state directory or file cannot be created, read or written.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The state file does not hold a number.
    Corrupt {
        /// The file.
        path: PathBuf,
    },
    /// Another server uses this state directory.
    InUse {
        /// The directory.
        dir: PathBuf,
    },
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Io { path, source } => write!(
                f,
                "cannot use fencing-token state {}: {source} (check the path and its permissions, or pass --state-dir)",
                path.display()
            ),
            TokenError::Corrupt { path } => write!(
                f,
                "fencing-token state {} is corrupt: it must hold one decimal number (restore it from a backup or write a number above any token ever issued; deleting it restarts tokens at 1)",
                path.display()
            ),
            TokenError::InUse { dir } => write!(
                f,
                "state directory {} is in use by another lockd (give each server its own --state-dir)",
                dir.display()
            ),
        }
    }
}

impl std::error::Error for TokenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TokenError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Hands out fencing tokens. See the module docs.
///
/// [`draw`](TokenCounter::draw) is called under the lock table's write
/// lock: it reads an atomic and, once per half block, wakes the reserver
/// thread; it never touches the disk.
#[derive(Debug)]
pub struct TokenCounter {
    next: u64,
    /// The mark on disk: no token at or above it is ever handed out. Raised
    /// by the reserver thread once a higher mark is durable.
    reserved: Arc<AtomicU64>,
    reserver: Option<Reserver>,
}

/// The thread that saves marks ahead of need, and the state directory's
/// lock, which it must outlive (see `Drop for TokenCounter`).
#[derive(Debug)]
struct Reserver {
    wake: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// Held open and locked so two servers never share one counter.
    _lock: File,
}

#[derive(Debug)]
struct Store {
    path: PathBuf,
}

impl TokenCounter {
    /// A counter that starts at 1 and is forgotten at exit (for embedded
    /// servers and tests).
    pub fn in_memory() -> TokenCounter {
        TokenCounter {
            next: 1,
            reserved: Arc::new(AtomicU64::new(u64::MAX)),
            reserver: None,
        }
    }

    /// Opens (or creates) the state in `dir`, reserves the first block, and
    /// starts the reserver thread.
    ///
    /// # Errors
    /// The directory cannot be created or locked, or the file cannot be read
    /// or written, or does not hold a number: never a silent reset.
    pub fn open(dir: &Path) -> Result<TokenCounter, TokenError> {
        let io_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TokenError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let lock_path = dir.join("lock");
        // Read-only once it exists: flock(2) needs no write access, so a
        // group-shared directory works whoever created the file.
        let lock = File::open(&lock_path)
            .or_else(|_| {
                OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock_path)
            })
            .map_err(io_error(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(TokenError::InUse {
                    dir: dir.to_path_buf(),
                })
            }
            Err(TryLockError::Error(e)) => return Err(io_error(&lock_path)(e)),
        }
        let path = dir.join(FILE_NAME);
        let stored = match fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n >= 1 && *n < u64::MAX - BLOCK)
                .ok_or_else(|| TokenError::Corrupt { path: path.clone() })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 1,
            Err(e) => return Err(io_error(&path)(e)),
        };
        let store = Store { path };
        let first_mark = stored + BLOCK;
        store.persist(first_mark).map_err(io_error(&store.path))?;
        let reserved = Arc::new(AtomicU64::new(first_mark));
        let (wake, woken) = bounded(1);
        let thread = {
            let reserved = Arc::clone(&reserved);
            std::thread::Builder::new()
                .name("lockd-tokens".into())
                .spawn(move || store.reserve_ahead(&reserved, &woken))
                .map_err(io_error(dir))?
        };
        Ok(TokenCounter {
            next: stored,
            reserved,
            reserver: Some(Reserver {
                wake: Some(wake),
                thread: Some(thread),
                _lock: lock,
            }),
        })
    }

    /// The next token to issue and the high-water mark saved on disk
    /// (`None` for a counter in memory only): every token issued is below
    /// the first, every token ever issued below the second.
    pub fn marks(&self) -> (u64, Option<u64>) {
        let mark = self.reserved.load(Ordering::Acquire);
        (self.next, self.reserver.as_ref().map(|_| mark))
    }

    /// The next token, or `None` when none can be issued safely: every
    /// token must stay below the mark on disk, or a restart could repeat
    /// it. When half of the block is used, the reserver is asked to save
    /// the next mark; a failing save is retried in the background, long
    /// before grants have to stop, and grants resume once it succeeds.
    pub fn draw(&mut self) -> Option<u64> {
        let reserved = self.reserved.load(Ordering::Acquire);
        if reserved - self.next <= BLOCK / 2 {
            if let Some(wake) = self.reserver.as_ref().and_then(|r| r.wake.as_ref()) {
                // Full means a wake-up is already pending: nothing to add.
                let _ = wake.try_send(());
            }
        }
        if self.next >= reserved {
            return None;
        }
        let token = self.next;
        self.next += 1;
        Some(token)
    }
}

impl Drop for TokenCounter {
    /// Stops the reserver and waits for a save in flight, so the state
    /// directory's lock is released only once nothing writes there: a
    /// server opened right after this one never races a stale write.
    fn drop(&mut self) {
        if let Some(reserver) = &mut self.reserver {
            reserver.wake = None;
            if let Some(thread) = reserver.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// Sleeps for `period`, swallowing wake-ups (grants keep asking while a
/// save fails: the retry pace stays the same). True when the counter was
/// dropped meanwhile.
fn pause(woken: &Receiver<()>, period: Duration) -> bool {
    let until = Instant::now() + period;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match woken.recv_timeout(left) {
            Ok(()) if !left.is_zero() => continue,
            Ok(()) | Err(RecvTimeoutError::Timeout) => return false,
            Err(RecvTimeoutError::Disconnected) => return true,
        }
    }
}

impl Store {
    /// The reserver thread: on each wake-up, saves marks until the mark is
    /// a full block ahead of need; after a failure, retries every
    /// [`RETRY_AFTER`] until it succeeds. Failures are logged when they
    /// start, at most once per [`LOG_EVERY`] while they go on (with a
    /// count), and once when saving works again. Ends when the counter is
    /// dropped.
    fn reserve_ahead(&self, reserved: &AtomicU64, woken: &Receiver<()>) {
        let mut failing = false;
        let mut failures = 0u64;
        let mut last_log: Option<Instant> = None;
        loop {
            let stopped = if failing {
                pause(woken, RETRY_AFTER)
            } else {
                woken.recv().is_err()
            };
            if stopped {
                return;
            }
            let mark = reserved.load(Ordering::Acquire).saturating_add(BLOCK);
            match self.persist(mark) {
                Ok(()) => {
                    reserved.store(mark, Ordering::Release);
                    if failing {
                        ::log::info!(
                            "the fencing-token mark was saved to {} again after {failures} failed tries; grants go on",
                            self.path.display()
                        );
                    }
                    failing = false;
                    failures = 0;
                    last_log = None;
                }
                Err(e) => {
                    failing = true;
                    failures += 1;
                    if last_log.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
                        last_log = Some(Instant::now());
                        ::log::error!(
                            "error: cannot save the fencing-token mark to {}: {e} ({failures} failed tries so far); grants of exclusive locks stop when the tokens below the saved mark run out, and resume by themselves once it can be saved (free space or fix permissions)",
                            self.path.display()
                        );
                    }
                }
            }
        }
    }

    /// Writes the mark durably: temp file, fsync, rename, fsync directory.
    /// The file gets the read and write bits of its directory (`0600` in a
    /// `0700` directory, `0660` in a group's `0770` one, `0644` in `0755`).
    fn persist(&self, mark: u64) -> io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mode = fs::metadata(dir)?.permissions().mode() & 0o666;
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        writeln!(file, "{mark}")?;
        file.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lockd-token-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn tokens_grow_across_reopen() {
        let dir = temp_dir("reopen");
        let mut first = TokenCounter::open(&dir).expect("open");
        let a = first.draw().expect("a token");
        let b = first.draw().expect("a token");
        assert!(b > a);
        assert!(matches!(
            TokenCounter::open(&dir),
            Err(TokenError::InUse { .. })
        ));
        drop(first); // as after kill -9: the mark on disk is all that is left
        let mut second = TokenCounter::open(&dir).expect("reopen");
        assert!(second.draw().expect("a token") > b);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_token_past_the_mark_on_disk_when_it_cannot_be_saved() {
        let dir = temp_dir("unwritable");
        let mut counter = TokenCounter::open(&dir).expect("open");
        let mark: u64 = fs::read_to_string(dir.join(FILE_NAME))
            .expect("mark")
            .trim()
            .parse()
            .expect("number");
        // The directory goes away: no new mark can be written.
        fs::remove_dir_all(&dir).expect("remove");
        let mut last = 0;
        let mut issued = 0u64;
        while let Some(token) = counter.draw() {
            assert!(token > last && token < mark, "token {token}, mark {mark}");
            last = token;
            issued += 1;
            assert!(issued <= BLOCK, "runaway");
        }
        assert_eq!(last, mark - 1, "every token below the mark was usable");
        assert_eq!(counter.draw(), None, "and stays refused");
    }

    fn saved_mark(counter: &TokenCounter) -> u64 {
        counter.marks().1.expect("a counter with a state file")
    }

    #[test]
    fn grants_resume_by_themselves_once_the_mark_can_be_saved_again() {
        let dir = temp_dir("recover");
        let mut counter = TokenCounter::open(&dir).expect("open");
        fs::remove_dir_all(&dir).expect("remove");
        let mut last = 0;
        while let Some(token) = counter.draw() {
            last = token;
        }
        assert_eq!(
            counter.draw(),
            None,
            "out of tokens while the mark cannot be saved"
        );
        let stuck_mark = saved_mark(&counter);
        fs::create_dir_all(&dir).expect("the disk can be written again");
        let deadline = Instant::now() + Duration::from_secs(20);
        let token = loop {
            if let Some(token) = counter.draw() {
                break token;
            }
            assert!(Instant::now() < deadline, "grants never resumed");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(token, last + 1, "no token skipped or repeated");
        let saved: u64 = fs::read_to_string(dir.join(FILE_NAME))
            .expect("the new mark is on disk")
            .trim()
            .parse()
            .expect("number");
        assert!(saved > stuck_mark && saved > token, "saved {saved}");
        drop(counter);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_reserver_keeps_the_mark_ahead_of_grants() {
        let dir = temp_dir("ahead");
        let mut counter = TokenCounter::open(&dir).expect("open");
        let first_mark = saved_mark(&counter);
        for _ in 0..=BLOCK / 2 {
            counter.draw().expect("a token");
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while saved_mark(&counter) == first_mark {
            assert!(Instant::now() < deadline, "the next mark was never saved");
            std::thread::sleep(Duration::from_millis(5));
        }
        let on_disk: u64 = fs::read_to_string(dir.join(FILE_NAME))
            .expect("mark")
            .trim()
            .parse()
            .expect("number");
        assert!(on_disk >= saved_mark(&counter));
        drop(counter);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupt_state_is_an_error() {
        let dir = temp_dir("corrupt");
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join(FILE_NAME), "not a number\n").expect("write");
        let err = TokenCounter::open(&dir).expect_err("corrupt");
        assert!(err.to_string().contains("corrupt"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }
}
