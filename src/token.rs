//! Fencing tokens: one counter that only grows, also across restarts.
//!
//! The state file holds a high-water mark reserved ahead of use: at start
//! the server reserves a block above the stored mark and hands out tokens
//! from the old mark up, writing (and fsyncing) a new mark only when a block
//! runs out. So a grant costs no disk write, and after a restart, even one
//! after `kill -9`, every token is above every token handed out before.

use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Tokens reserved per write of the state file.
const BLOCK: u64 = 1 << 20;
/// Grants between two tries to save the mark after a failure.
const RETRY_EVERY: u64 = 1024;
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
#[derive(Debug)]
pub struct TokenCounter {
    next: u64,
    /// The mark on disk: no token at or above it is ever handed out.
    reserved: u64,
    /// When to try writing the next mark again after a failure.
    retry_at: u64,
    store: Option<Store>,
}

#[derive(Debug)]
struct Store {
    path: PathBuf,
    /// Held open and locked so two servers never share one counter.
    _lock: File,
}

impl TokenCounter {
    /// A counter that starts at 1 and is forgotten at exit (for embedded
    /// servers and tests).
    pub fn in_memory() -> TokenCounter {
        TokenCounter {
            next: 1,
            reserved: u64::MAX,
            retry_at: 0,
            store: None,
        }
    }

    /// Opens (or creates) the state in `dir` and reserves the first block.
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
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
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
        let store = Store { path, _lock: lock };
        let reserved = stored + BLOCK;
        store.persist(reserved).map_err(io_error(&store.path))?;
        Ok(TokenCounter {
            next: stored,
            reserved,
            retry_at: 0,
            store: Some(store),
        })
    }

    /// The next token to issue and the high-water mark saved on disk
    /// (`None` for a counter in memory only): every token issued is below
    /// the first, every token ever issued below the second.
    pub fn marks(&self) -> (u64, Option<u64>) {
        (self.next, self.store.as_ref().map(|_| self.reserved))
    }

    /// The next token, or `None` when none can be issued safely: every
    /// token must stay below the mark on disk, or a restart could repeat
    /// it. The next block is reserved (one fsync'd write) when half of the
    /// current one is left, so a failing write is retried (every
    /// 1024 grants, logged) long before grants have to stop.
    pub fn draw(&mut self) -> Option<u64> {
        if let Some(store) = &self.store {
            if self.reserved - self.next <= BLOCK / 2 && self.next >= self.retry_at {
                let mark = self.reserved.saturating_add(BLOCK);
                match store.persist(mark) {
                    Ok(()) => self.reserved = mark,
                    Err(e) => {
                        self.retry_at = self.next + RETRY_EVERY;
                        crate::log::log(
                            crate::log::Priority::Error,
                            format_args!(
                                "error: cannot save the fencing-token mark to {}: {e}; {} more grants, then none until it can be saved",
                                store.path.display(),
                                self.reserved - self.next
                            ),
                        );
                    }
                }
            }
        }
        if self.next >= self.reserved {
            return None;
        }
        let token = self.next;
        self.next += 1;
        Some(token)
    }
}

impl Store {
    /// Writes the mark durably: temp file, fsync, rename, fsync directory.
    fn persist(&self, mark: u64) -> io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut file = File::create(&tmp)?;
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
