//! Lock names: byte strings, kept exactly as the client sent them.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// A lock name. Names are bytes, only conventionally UTF-8: NUL, invalid
/// UTF-8 and inner spaces are all legal and kept exactly.
///
/// `Debug` escapes non-printable bytes (`"a\0\xFF"`); `Display` is lossy and
/// meant for logs only. Cloning is cheap (a shared, immutable buffer), so
/// the lock table keeps one allocation per name however many places refer
/// to it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct LockName(Arc<[u8]>);

impl LockName {
    /// Wraps the given bytes.
    pub fn new(bytes: impl AsRef<[u8]>) -> LockName {
        LockName(Arc::from(bytes.as_ref()))
    }

    /// The raw bytes of the name.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// True when both are the same buffer (not merely equal bytes).
    pub fn ptr_eq(&self, other: &LockName) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The address of the shared buffer: identifies this allocation.
    #[cfg(feature = "server")]
    pub(crate) fn addr(&self) -> usize {
        self.0.as_ptr() as usize
    }

    /// Makes this name `bytes` in place when nothing else shares its buffer
    /// and the lengths match (no allocation); `false`, unchanged, if not.
    #[cfg(feature = "server")]
    pub(crate) fn refill(&mut self, bytes: &[u8]) -> bool {
        match Arc::get_mut(&mut self.0) {
            Some(buf) if buf.len() == bytes.len() => {
                buf.copy_from_slice(bytes);
                true
            }
            _ => false,
        }
    }

    /// True for the empty name `""` (a legal lock name).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Borrow<[u8]> for LockName {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for LockName {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<&[u8]> for LockName {
    fn from(bytes: &[u8]) -> LockName {
        LockName(bytes.into())
    }
}

impl<const N: usize> From<&[u8; N]> for LockName {
    fn from(bytes: &[u8; N]) -> LockName {
        LockName(bytes[..].into())
    }
}

impl From<&LockName> for LockName {
    fn from(name: &LockName) -> LockName {
        name.clone()
    }
}

impl From<&str> for LockName {
    fn from(s: &str) -> LockName {
        LockName(s.as_bytes().into())
    }
}

impl From<Vec<u8>> for LockName {
    fn from(bytes: Vec<u8>) -> LockName {
        LockName(bytes.into())
    }
}

impl fmt::Debug for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

impl fmt::Display for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_escapes_bytes() {
        let name = LockName::new(&b"a\0\xff b"[..]);
        assert_eq!(format!("{name:?}"), r#""a\x00\xff b""#);
        assert_eq!(name.as_bytes(), b"a\0\xff b");
    }
}
