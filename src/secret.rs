//! Shared secrets (`auth`): never logged, never printed by `Debug`, and
//! compared in constant time.
//!
//! A secret is kept the way the server sees the argument of `auth SECRET`:
//! trimmed, with each run of whitespace made one space (`PROTOCOL.md`,
//! Framing). So a secret with a double space, a TAB or a trailing space
//! still matches what a client sends, and the server and the client agree
//! on it whichever of them read the file.

use crate::protocol::normalize;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// A secret that never shows in logs or `Debug` output.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

/// Why an auth file gave no usable secret.
#[derive(Debug)]
#[non_exhaustive]
pub enum SecretFileError {
    /// The file cannot be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file holds nothing but whitespace.
    Empty {
        /// The file.
        path: PathBuf,
    },
}

impl fmt::Display for SecretFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretFileError::Read { path, source } => {
                write!(f, "cannot read --auth-file {}: {source}", path.display())
            }
            SecretFileError::Empty { path } => write!(
                f,
                "--auth-file {} holds no secret (only whitespace): write the secret into it",
                path.display()
            ),
        }
    }
}

impl std::error::Error for SecretFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SecretFileError::Read { source, .. } => Some(source),
            SecretFileError::Empty { .. } => None,
        }
    }
}

impl Secret {
    /// Wraps the secret's bytes, normalised as an `auth` argument is (see
    /// the module docs): leading and trailing whitespace go, and inner runs
    /// of whitespace (newlines included) become one space.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(normalize(&bytes.into()))
    }

    /// Reads a secret from a file (`--auth-file`), as both `lockd` and
    /// `lockctl` do: its whole contents, normalised by [`Secret::new`].
    ///
    /// # Errors
    /// The file cannot be read, or holds only whitespace (a secret no
    /// client could ever send).
    pub fn from_file(path: &Path) -> Result<Secret, SecretFileError> {
        let bytes = std::fs::read(path).map_err(|source| SecretFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let secret = Secret::new(bytes);
        if secret.0.is_empty() {
            return Err(SecretFileError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(secret)
    }

    /// The secret's bytes, for a client to send (never to log).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Compares in time that depends only on the lengths, not on where the
    /// first difference is.
    pub fn matches(&self, guess: &[u8]) -> bool {
        let mut diff = u8::from(self.0.len() != guess.len());
        for (i, &b) in guess.iter().enumerate() {
            diff |= b ^ self.0.get(i).copied().unwrap_or(!b);
        }
        std::hint::black_box(diff) == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_exact_secret_and_never_prints_it() {
        let secret = Secret::new("s3cret");
        assert!(secret.matches(b"s3cret"));
        for guess in [&b""[..], b"s3cre", b"s3cret!", b"S3cret", b"x"] {
            assert!(!secret.matches(guess), "{guess:?}");
        }
        assert!(!format!("{secret:?}").contains("s3cret"));
    }

    #[test]
    fn a_secret_is_kept_as_auth_sees_its_argument() {
        for written in [
            &b"two  spaces"[..],
            b" two spaces",
            b"two spaces \n",
            b"two\tspaces\r\n",
            b"two \t  spaces",
        ] {
            let secret = Secret::new(written);
            assert!(
                secret.matches(b"two spaces"),
                "{:?}",
                written.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn an_auth_file_of_whitespace_is_refused() {
        let dir = std::env::temp_dir().join(format!("lockd-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("secret");
        std::fs::write(&path, " \t\n").expect("write");
        let err = Secret::from_file(&path).expect_err("only whitespace");
        assert!(err.to_string().contains("--auth-file"), "{err}");
        std::fs::write(&path, "s3 cret\n").expect("write");
        assert!(Secret::from_file(&path)
            .expect("a secret")
            .matches(b"s3 cret"));
        let missing = Secret::from_file(&dir.join("missing")).expect_err("missing");
        assert!(matches!(missing, SecretFileError::Read { .. }), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
