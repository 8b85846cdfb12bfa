//! Where the etcd store keeps what: key layout and values.
//!
//! ```text
//! PREFIX/x/<hex name>/<owner>.<seq>   a writer or reader, holding or waiting
//! PREFIX/s/<hex name>/<owner>.<seq>   a shared holder or waiter
//! PREFIX/n/<owner>                    a registered name (iam)
//! PREFIX/w/<owner>                    a waits-for edge (see `deadlock`)
//! PREFIX/e/<owner>                    a connection's or lease's end (see `notify`)
//! owner = <node>.<lease hex>.<conn>
//! ```
//! Names are hex in keys so that `a` and `a/b` never share a prefix. The
//! lease id in the owner makes every key of a lease new: a node that lost
//! its lease never writes a key of the old one again. The keys of one name,
//! ordered by create revision, are its holders and its line of waiters.
//! A value is `<tag>\n<default name of the client>`. The tag is the limit
//! of a shared wait (0: none; a writer's is 0 too), or, in an exclusive
//! line, `r` for a reader and `u` for a reader waiting to upgrade to the
//! write lock (see [`Claim`]).
//!
//! A tag may end in `.<slot>`: the place of its transaction among the
//! grants of one group-committed batch (see [`token`]), written by the
//! committer; no suffix means slot 0.

use crate::name::LockName;

/// Which family a lock key is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Exclusive locks (`g`, `wg`).
    Exclusive,
    /// Counted shared locks (`sg`, `wsg`).
    Shared,
}

impl Family {
    fn tag(self) -> &'static [u8] {
        match self {
            Family::Exclusive => b"x",
            Family::Shared => b"s",
        }
    }
}

/// The key layout under one prefix.
#[derive(Clone, Debug)]
pub struct Layout {
    prefix: Vec<u8>,
}

impl Layout {
    /// Keys under `prefix` (a trailing `/` is added when missing).
    pub fn new(prefix: &[u8]) -> Layout {
        let mut prefix = prefix.to_vec();
        if prefix.last() != Some(&b'/') {
            prefix.push(b'/');
        }
        Layout { prefix }
    }

    /// Everything the store writes.
    pub fn root(&self) -> &[u8] {
        &self.prefix
    }

    /// Every lock key of a family: `PREFIX/x/`.
    pub fn family(&self, family: Family) -> Vec<u8> {
        let mut key = self.prefix.clone();
        key.extend_from_slice(family.tag());
        key.push(b'/');
        key
    }

    /// The keys of one lock: `PREFIX/x/<hex name>/`.
    pub fn lock(&self, family: Family, name: &[u8]) -> Vec<u8> {
        let mut key = self.family(family);
        push_hex(&mut key, name);
        key.push(b'/');
        key
    }

    /// One client's key for one lock.
    pub fn entry(&self, family: Family, name: &[u8], owner: &[u8], seq: u64) -> Vec<u8> {
        let mut key = self.lock(family, name);
        key.extend_from_slice(owner);
        key.extend_from_slice(format!(".{seq}").as_bytes());
        key
    }

    /// Every registered name: `PREFIX/n/`.
    pub fn registry(&self) -> Vec<u8> {
        let mut key = self.prefix.clone();
        key.extend_from_slice(b"n/");
        key
    }

    /// One client's registration.
    pub fn registration(&self, owner: &[u8]) -> Vec<u8> {
        let mut key = self.registry();
        key.extend_from_slice(owner);
        key
    }

    /// The lock name and the owner of a lock key of `family`.
    pub fn parse_entry<'k>(&self, family: Family, key: &'k [u8]) -> Option<(LockName, &'k [u8])> {
        let rest = key.strip_prefix(&self.family(family)[..])?;
        let slash = rest.iter().position(|&b| b == b'/')?;
        let name = unhex(&rest[..slash])?;
        let tail = &rest[slash + 1..];
        let dot = tail.iter().rposition(|&b| b == b'.')?;
        Some((LockName::from(name), &tail[..dot]))
    }

    /// The owner of a registration key.
    pub fn parse_registration<'k>(&self, key: &'k [u8]) -> Option<&'k [u8]> {
        key.strip_prefix(&self.registry()[..])
    }

    /// The lock a key belongs to (its prefix up to the last `/`).
    pub fn lock_of(key: &[u8]) -> Option<&[u8]> {
        let slash = key.iter().rposition(|&b| b == b'/')?;
        Some(&key[..=slash])
    }
}

/// `<node>.<lease hex>.<conn>`: one client of one node under one lease.
pub fn owner(node: &str, lease: i64, conn: u64) -> Vec<u8> {
    format!("{node}.{lease:x}.{conn}").into_bytes()
}

/// A lock key's value: the limit of a shared wait (0: none) and the
/// client's default name.
pub fn value(limit: u32, default_name: &[u8]) -> Vec<u8> {
    let mut value = format!("{limit}\n").into_bytes();
    value.extend_from_slice(default_name);
    value
}

/// What a key of an exclusive line stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// A writer (`g`, `wg`), holding or waiting.
    Write,
    /// A reader (`wr`), holding or waiting.
    Read,
    /// A reader that holds and waits to upgrade to the write lock.
    Upgrade,
}

const READ_TAG: &[u8] = b"r";
const UPGRADE_TAG: &[u8] = b"u";

/// A value of an exclusive line's key: `r` or `u` for a reader, else a
/// writer's (the same as [`value`] with limit 0).
pub fn claim_value(claim: Claim, default_name: &[u8]) -> Vec<u8> {
    let tag = match claim {
        Claim::Write => &b"0"[..],
        Claim::Read => READ_TAG,
        Claim::Upgrade => UPGRADE_TAG,
    };
    let mut value = tag.to_vec();
    value.push(b'\n');
    value.extend_from_slice(default_name);
    value
}

/// What the key of an exclusive line with this value stands for.
pub fn claim(value: &[u8]) -> Claim {
    match tag(value).map(|(kind, _)| kind) {
        Some(READ_TAG) => Claim::Read,
        Some(UPGRADE_TAG) => Claim::Upgrade,
        _ => Claim::Write,
    }
}

/// Fencing tokens per etcd revision. A batch of group commit is applied
/// at one revision and may grant several exclusive locks (of different
/// names), so a token is `revision × SLOTS + slot`: the committer gives
/// each command of a batch that writes an exclusive key its own slot, and
/// writes it into the key's value ([`with_slot`]). Tokens thus stay
/// unique, and still grow with etcd's revisions: every token of a later
/// revision is larger. A batch carries at most this many commands.
pub const SLOTS: u64 = 128;

/// The fencing token of an exclusive key written at `revision` with
/// `slot` (see [`SLOTS`]).
pub fn token(revision: i64, slot: u64) -> u64 {
    u64::try_from(revision).unwrap_or(0) * SLOTS + slot
}

/// The token of a write lock held through `kv`: the revision of the last
/// write of its key (its creation, or its stamp at hand-over or upgrade),
/// with the slot that write carried.
pub fn held_token(kv: &super::client::KeyValue) -> u64 {
    token(kv.mod_revision, slot(&kv.value))
}

/// The slot a value carries (0 if none).
pub fn slot(value: &[u8]) -> u64 {
    tag(value).map_or(0, |(_, slot)| slot)
}

/// `value` with its tag's slot set to `slot` (slot 0 is written as no
/// suffix). A value without a tag line is returned as it is.
pub fn with_slot(value: &[u8], slot: u64) -> Vec<u8> {
    let Some((kind, _)) = tag(value) else {
        return value.to_vec();
    };
    let newline = value
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(value.len());
    let mut out = kind.to_vec();
    if slot > 0 {
        out.extend_from_slice(format!(".{slot}").as_bytes());
    }
    out.extend_from_slice(&value[newline..]);
    out
}

/// A value's tag line split into its kind and its slot.
fn tag(value: &[u8]) -> Option<(&[u8], u64)> {
    let tag = &value[..value.iter().position(|&b| b == b'\n')?];
    let Some(dot) = tag.iter().position(|&b| b == b'.') else {
        return Some((tag, 0));
    };
    let slot = std::str::from_utf8(&tag[dot + 1..]).ok()?.parse().ok()?;
    Some((&tag[..dot], slot))
}

/// The limit and default name in a value written by [`value`] (a
/// reader's limit is 0, see [`claim_value`]).
pub fn parse_value(value: &[u8]) -> Option<(u32, &[u8])> {
    let newline = value.iter().position(|&b| b == b'\n')?;
    let (kind, _) = tag(value)?;
    let limit = if kind == READ_TAG || kind == UPGRADE_TAG {
        0
    } else {
        std::str::from_utf8(kind).ok()?.parse().ok()?
    };
    Some((limit, &value[newline + 1..]))
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0xF)]);
    }
}

fn unhex(hex: &[u8]) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let digit = |d: u8| (d as char).to_digit(16).map(|v| v as u8);
    hex.chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_hex_so_no_name_is_a_prefix_of_another_lock() {
        let layout = Layout::new(b"/lockd");
        assert_eq!(
            layout.lock(Family::Exclusive, b"a"),
            b"/lockd/x/61/".to_vec()
        );
        assert_eq!(
            layout.lock(Family::Shared, b"a/b"),
            b"/lockd/s/612f62/".to_vec()
        );
        assert_eq!(layout.lock(Family::Exclusive, b""), b"/lockd/x//".to_vec());
    }

    #[test]
    fn entries_parse_back_to_name_and_owner() {
        let layout = Layout::new(b"/p/");
        let me = owner("node.one", 0x1f, 7);
        for name in [&b""[..], b"a b", b"\0\xFF", b"x/y.z"] {
            let key = layout.entry(Family::Shared, name, &me, 42);
            let (parsed, who) = layout.parse_entry(Family::Shared, &key).expect("parses");
            assert_eq!(parsed.as_bytes(), name);
            assert_eq!(who, &b"node.one.1f.7"[..]);
            assert_eq!(
                Layout::lock_of(&key),
                Some(&layout.lock(Family::Shared, name)[..])
            );
        }
        assert!(layout
            .parse_entry(Family::Exclusive, b"/p/x/6/o.1")
            .is_none());
    }

    #[test]
    fn values_carry_limit_and_a_binary_default_name() {
        let v = value(3, b"unix:1\n\xFF");
        assert_eq!(parse_value(&v), Some((3, &b"unix:1\n\xFF"[..])));
        assert_eq!(parse_value(b"x\nname"), None);
    }

    #[test]
    fn a_slot_rides_in_the_tag_and_leaves_the_rest_alone() {
        let writer = claim_value(Claim::Write, b"unix:1\n.5\xFF");
        assert_eq!(slot(&writer), 0);
        let slotted = with_slot(&writer, 7);
        assert_eq!(&slotted[..4], b"0.7\n");
        assert_eq!(slot(&slotted), 7);
        assert_eq!(claim(&slotted), Claim::Write);
        assert_eq!(parse_value(&slotted), Some((0, &b"unix:1\n.5\xFF"[..])));
        assert_eq!(with_slot(&slotted, 0), writer);
        let upgrade = with_slot(&claim_value(Claim::Upgrade, b"c"), 3);
        assert_eq!((claim(&upgrade), slot(&upgrade)), (Claim::Upgrade, 3));
        assert_eq!(with_slot(b"no tag line", 4), b"no tag line".to_vec());
        // Tokens of a later revision are larger than every slot of an
        // earlier one.
        assert!(token(10, SLOTS - 1) < token(11, 0));
    }

    #[test]
    fn exclusive_values_say_writer_reader_or_upgrading_reader() {
        for claimed in [Claim::Write, Claim::Read, Claim::Upgrade] {
            let v = claim_value(claimed, b"r\nu");
            assert_eq!(claim(&v), claimed);
            assert_eq!(parse_value(&v), Some((0, &b"r\nu"[..])));
        }
        assert_eq!(claim(&value(0, b"a")), Claim::Write);
    }
}
