//! Shared secrets (`auth`): never logged, never printed by `Debug`, and
//! compared in constant time.

use std::fmt;

/// A secret that never shows in logs or `Debug` output.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps the secret's bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }

    /// The secret's bytes, for a client to send (never to log).
    pub(crate) fn expose(&self) -> &[u8] {
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
}
