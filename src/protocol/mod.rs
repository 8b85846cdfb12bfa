//! The wire protocol: parsing a line into a [`Command`], and (in [`reply`])
//! the exact reply bytes. Pure functions of bytes, no I/O, shared by the
//! server and the client.
//!
//! The rules are those of `PROTOCOL.md` Part 1 (framing, normalisation) and
//! Part 2 (the extension verbs).

pub mod line;
pub mod reply;

use crate::name::LockName;
use std::borrow::Cow;
use std::fmt;

/// Every verb the server recognises. Wire spellings live only here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    /// `g NAME`: take an exclusive lock.
    Get,
    /// `r NAME`: release an exclusive lock.
    Release,
    /// `i NAME`: is the exclusive lock held?
    IsLocked,
    /// `d [NAME]`: list exclusive holders.
    Holders,
    /// `dump [shared]`: glockd's Go-map dump.
    Dump,
    /// `sg NAME`: take a shared lock.
    SharedGet,
    /// `sr NAME`: release a shared lock.
    SharedRelease,
    /// `si NAME`: how many hold the shared lock.
    SharedIsLocked,
    /// `sd [NAME]`: list shared holders.
    SharedHolders,
    /// `me`: this connection's names.
    Me,
    /// `iam [NAME]`: register a name.
    Iam,
    /// `who [NAME]`: registered connections.
    Who,
    /// `q`: counters.
    Stats,
    /// `hello 2`: switch to protocol 2.
    Hello,
    /// `wg MS NAME`: wait in line for an exclusive lock.
    WaitGet,
    /// `wsg MS LIMIT NAME`: wait for a place in a counting semaphore.
    WaitSharedGet,
    /// `t NAME`: the fencing token of a held lock.
    Token,
    /// `ra`: release everything this connection holds.
    ReleaseAll,
    /// `ping`.
    Ping,
    /// `ttl SECONDS`: a lease on this connection.
    Ttl,
    /// `dj`: JSON dump.
    DumpJson,
    /// `auth SECRET`.
    Auth,
    /// `wr MS NAME`: wait in line for a read hold on an exclusive lock.
    WaitRead,
    /// `rr NAME`: release a read hold.
    ReadRelease,
    /// `watch PATTERN`: turn the connection into an event stream.
    Watch,
}

impl Verb {
    /// All verbs, in the order of their counters' indices.
    pub const ALL: [Verb; 25] = [
        Verb::Get,
        Verb::Release,
        Verb::IsLocked,
        Verb::Holders,
        Verb::Dump,
        Verb::SharedGet,
        Verb::SharedRelease,
        Verb::SharedIsLocked,
        Verb::SharedHolders,
        Verb::Me,
        Verb::Iam,
        Verb::Who,
        Verb::Stats,
        Verb::Hello,
        Verb::WaitGet,
        Verb::WaitSharedGet,
        Verb::Token,
        Verb::ReleaseAll,
        Verb::Ping,
        Verb::Ttl,
        Verb::DumpJson,
        Verb::Auth,
        Verb::WaitRead,
        Verb::ReadRelease,
        Verb::Watch,
    ];

    /// The verb as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "g",
            Verb::Release => "r",
            Verb::IsLocked => "i",
            Verb::Holders => "d",
            Verb::Dump => "dump",
            Verb::SharedGet => "sg",
            Verb::SharedRelease => "sr",
            Verb::SharedIsLocked => "si",
            Verb::SharedHolders => "sd",
            Verb::Me => "me",
            Verb::Iam => "iam",
            Verb::Who => "who",
            Verb::Stats => "q",
            Verb::Hello => "hello",
            Verb::WaitGet => "wg",
            Verb::WaitSharedGet => "wsg",
            Verb::Token => "t",
            Verb::ReleaseAll => "ra",
            Verb::Ping => "ping",
            Verb::Ttl => "ttl",
            Verb::DumpJson => "dj",
            Verb::Auth => "auth",
            Verb::WaitRead => "wr",
            Verb::ReadRelease => "rr",
            Verb::Watch => "watch",
        }
    }

    /// Looks a wire verb up; `None` for an unknown one.
    pub fn from_bytes(verb: &[u8]) -> Option<Verb> {
        Some(match verb {
            b"g" => Verb::Get,
            b"r" => Verb::Release,
            b"i" => Verb::IsLocked,
            b"d" => Verb::Holders,
            b"dump" => Verb::Dump,
            b"sg" => Verb::SharedGet,
            b"sr" => Verb::SharedRelease,
            b"si" => Verb::SharedIsLocked,
            b"sd" => Verb::SharedHolders,
            b"me" => Verb::Me,
            b"iam" => Verb::Iam,
            b"who" => Verb::Who,
            b"q" => Verb::Stats,
            b"hello" => Verb::Hello,
            b"wg" => Verb::WaitGet,
            b"wsg" => Verb::WaitSharedGet,
            b"t" => Verb::Token,
            b"ra" => Verb::ReleaseAll,
            b"ping" => Verb::Ping,
            b"ttl" => Verb::Ttl,
            b"dj" => Verb::DumpJson,
            b"auth" => Verb::Auth,
            b"wr" => Verb::WaitRead,
            b"rr" => Verb::ReadRelease,
            b"watch" => Verb::Watch,
            _ => return None,
        })
    }

    /// Index into per-verb counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// True for the 13 verbs of Part 1, whose counters a classic `q` shows.
    pub fn is_classic(self) -> bool {
        self.index() <= Verb::Stats.index()
    }

    /// Whether the reply can show another client's state whatever it is:
    /// `false` for the verbs that read or release this client's own holds,
    /// or touch no lock (`r`, `rr`, `sr`, `ra`, `t`, `ping`, `hello`,
    /// `ttl`, `me`), and for `g` and `wg`, whose grant shows nobody else
    /// (the session settles when one is not granted at once). Before a
    /// command that can, the server releases what clients that hung up
    /// held (see `server::liveness`).
    pub fn sees_others(self) -> bool {
        !matches!(
            self,
            Verb::Get
                | Verb::WaitGet
                | Verb::Release
                | Verb::ReadRelease
                | Verb::SharedRelease
                | Verb::ReleaseAll
                | Verb::Token
                | Verb::Ping
                | Verb::Hello
                | Verb::Ttl
                | Verb::Me
        )
    }

    /// True for verbs whose reply is a block of lines (terminated by an
    /// empty line on protocol 2).
    pub fn is_multi_line(self) -> bool {
        matches!(
            self,
            Verb::Holders | Verb::SharedHolders | Verb::Who | Verb::Stats
        )
    }
}

/// A lock name as parsed: borrowed from the line whenever the argument
/// needed no normalising (the common case), so parsing a command allocates
/// nothing; the store copies a name only when it inserts a lock.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Name<'a>(Cow<'a, [u8]>);

impl<'a> Name<'a> {
    /// The raw bytes of the name.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// An owned copy, for a name that must outlive the line (a wait).
    pub fn to_lock_name(&self) -> LockName {
        LockName::from(&*self.0)
    }

    /// The part of `arg` from byte `from` on, borrowed if `arg` is.
    fn suffix(arg: Cow<'a, [u8]>, from: usize) -> Name<'a> {
        match arg {
            Cow::Borrowed(bytes) => Name(Cow::Borrowed(&bytes[from..])),
            Cow::Owned(mut bytes) => {
                bytes.drain(..from);
                Name(Cow::Owned(bytes))
            }
        }
    }
}

impl<'a> From<&'a [u8]> for Name<'a> {
    fn from(bytes: &'a [u8]) -> Name<'a> {
        Name(Cow::Borrowed(bytes))
    }
}

impl<'a, const N: usize> From<&'a [u8; N]> for Name<'a> {
    fn from(bytes: &'a [u8; N]) -> Name<'a> {
        Name(Cow::Borrowed(&bytes[..]))
    }
}

impl<'a> From<&'a str> for Name<'a> {
    fn from(s: &'a str) -> Name<'a> {
        Name(Cow::Borrowed(s.as_bytes()))
    }
}

impl From<Vec<u8>> for Name<'static> {
    fn from(bytes: Vec<u8>) -> Name<'static> {
        Name(Cow::Owned(bytes))
    }
}

impl fmt::Debug for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

/// One parsed command line; names borrow from the line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// `g NAME`
    Get(Name<'a>),
    /// `r NAME`
    Release(Name<'a>),
    /// `i NAME`
    IsLocked(Name<'a>),
    /// `d [NAME]`; the empty name lists every lock.
    Holders(Name<'a>),
    /// `dump [ARG]`; only the argument `shared` changes anything.
    Dump {
        /// `dump shared`
        shared: bool,
    },
    /// `sg NAME`
    SharedGet(Name<'a>),
    /// `sr NAME`
    SharedRelease(Name<'a>),
    /// `si NAME`
    SharedIsLocked(Name<'a>),
    /// `sd [NAME]`; the empty name lists every shared lock.
    SharedHolders(Name<'a>),
    /// `me`
    Me,
    /// `iam [NAME]`; the empty name removes the registration.
    Iam(Vec<u8>),
    /// `who [NAME]`; the empty name lists every registration.
    Who(Vec<u8>),
    /// `q`
    Stats,
    /// `hello VERSION`
    Hello(u32),
    /// `wg MS NAME`
    WaitGet {
        /// How long to wait, in milliseconds (0: try once).
        timeout_ms: u64,
        /// The lock.
        name: Name<'a>,
    },
    /// `wsg MS LIMIT NAME`
    WaitSharedGet {
        /// How long to wait, in milliseconds (0: try once).
        timeout_ms: u64,
        /// At most this many holders (0: no limit).
        limit: u32,
        /// The lock.
        name: Name<'a>,
    },
    /// `t NAME`
    Token(Name<'a>),
    /// `ra`
    ReleaseAll,
    /// `ping`
    Ping,
    /// `ttl SECONDS`
    Ttl(u64),
    /// `dj`
    DumpJson,
    /// `auth SECRET` (the secret as sent, normalised).
    Auth(Vec<u8>),
    /// `wr MS NAME`
    WaitRead {
        /// How long to wait, in milliseconds (0: try once).
        timeout_ms: u64,
        /// The lock.
        name: Name<'a>,
    },
    /// `rr NAME`
    ReadRelease(Name<'a>),
    /// `watch PATTERN`: a lock name, or a prefix ending in `*`.
    Watch(Name<'a>),
}

impl Command<'_> {
    /// The verb this command was sent with.
    pub fn verb(&self) -> Verb {
        match self {
            Command::Get(_) => Verb::Get,
            Command::Release(_) => Verb::Release,
            Command::IsLocked(_) => Verb::IsLocked,
            Command::Holders(_) => Verb::Holders,
            Command::Dump { .. } => Verb::Dump,
            Command::SharedGet(_) => Verb::SharedGet,
            Command::SharedRelease(_) => Verb::SharedRelease,
            Command::SharedIsLocked(_) => Verb::SharedIsLocked,
            Command::SharedHolders(_) => Verb::SharedHolders,
            Command::Me => Verb::Me,
            Command::Iam(_) => Verb::Iam,
            Command::Who(_) => Verb::Who,
            Command::Stats => Verb::Stats,
            Command::Hello(_) => Verb::Hello,
            Command::WaitGet { .. } => Verb::WaitGet,
            Command::WaitSharedGet { .. } => Verb::WaitSharedGet,
            Command::Token(_) => Verb::Token,
            Command::ReleaseAll => Verb::ReleaseAll,
            Command::Ping => Verb::Ping,
            Command::Ttl(_) => Verb::Ttl,
            Command::DumpJson => Verb::DumpJson,
            Command::Auth(_) => Verb::Auth,
            Command::WaitRead { .. } => Verb::WaitRead,
            Command::ReadRelease(_) => Verb::ReadRelease,
            Command::Watch(_) => Verb::Watch,
        }
    }
}

/// What a line turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// Empty after trimming: no reply, not counted.
    Empty,
    /// A recognised command.
    Command(Command<'a>),
    /// A recognised verb with arguments it cannot take.
    Malformed(Verb, ParseError),
    /// An unknown verb (silence on classic connections).
    Unknown,
}

/// Why the arguments of a recognised verb were refused. `Display` is
/// exactly the text that follows `0 Error: ` on a protocol-2 connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// The verb needs a number here.
    ExpectedNumber {
        /// The verb.
        verb: Verb,
        /// What the number is (`timeout in milliseconds`).
        what: &'static str,
        /// The usage line.
        usage: &'static str,
    },
    /// `hello` with a version other than a number.
    BadVersion,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::ExpectedNumber { verb, what, usage } => {
                write!(f, "{} needs a {what}: {usage}", verb.as_str())
            }
            ParseError::BadVersion => f.write_str("hello needs a protocol version: hello 2"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Text of `0 Error: ...` for an unknown verb on protocol 2.
pub const UNKNOWN_VERB: &str = "unknown command";

/// A trimmed, non-empty line's verb as sent and the rest after the
/// space, if any.
fn split_verb(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|&b| b == b' ') {
        Some(space) => (&line[..space], &line[space + 1..]),
        None => (line, &b""[..]),
    }
}

/// The verb and the rest after its space, in one pass, of a line that is
/// its own trimmed and normalised form: printable ASCII words separated by
/// single spaces, the line of almost every client. `None` for any other
/// line (empty, spaces at either end or in a row, other whitespace,
/// control bytes, non-ASCII), which takes the general path.
///
/// Eight bytes at a time: a word is refused when a byte is outside
/// `0x20..=0x7e` or a space follows a space (across words too).
fn split_plain(line: &[u8]) -> Option<(&[u8], &[u8])> {
    if matches!(line.first(), None | Some(b' ')) || line.last() == Some(&b' ') {
        return None;
    }
    let mut first_space = None;
    let mut after_space = false;
    let mut at = 0;
    while at < line.len() {
        let spaces = plain_word_spaces(word_at(line, at))?;
        // Flags sit in the high bit of each byte, the first byte lowest.
        if spaces & (spaces << 8) != 0 || (after_space && spaces & 0x80 != 0) {
            return None;
        }
        if first_space.is_none() && spaces != 0 {
            first_space = Some(at + (spaces.trailing_zeros() / 8) as usize);
        }
        after_space = spaces >> 56 != 0;
        at += 8;
    }
    Some(match first_space {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &[]),
    })
}

/// The eight bytes of `line` from `at`, little-endian; past its end,
/// padded with a letter (which changes nothing in [`split_plain`]).
fn word_at(line: &[u8], at: usize) -> u64 {
    if let Some(word) = line.get(at..at + 8) {
        return u64::from_le_bytes(word.try_into().expect("eight bytes"));
    }
    let mut word = [b'a'; 8];
    for (to, &b) in word.iter_mut().zip(&line[at..]) {
        *to = b;
    }
    u64::from_le_bytes(word)
}

/// The spaces of eight line bytes, flagged in the high bit of each byte,
/// or `None` if a byte is not printable ASCII (`0x20..=0x7e`).
fn plain_word_spaces(word: u64) -> Option<u64> {
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const LOWS: u64 = !HIGHS;
    if word & HIGHS != 0 {
        return None;
    }
    // Every byte is below 0x80 now, so no sum below carries into the next
    // byte: + 0x60 reaches the high bit from 0x20 up, + 0x01 only at 0x7f.
    let control = !word.wrapping_add(u64::from_ne_bytes([0x60; 8])) & HIGHS;
    let delete = word.wrapping_add(u64::from_ne_bytes([0x01; 8])) & HIGHS;
    if control | delete != 0 {
        return None;
    }
    // A byte of `x` is zero exactly where the word holds a space.
    let x = word ^ u64::from_ne_bytes([b' '; 8]);
    Some(!((x & LOWS).wrapping_add(LOWS) | x) & HIGHS)
}

/// Parses one line (without its `\n`).
pub fn parse_line(line: &[u8]) -> Parsed<'_> {
    let (verb, rest, plain) = match split_plain(line) {
        Some((verb, rest)) => (verb, rest, true),
        None => {
            let line = trim(line);
            if line.is_empty() {
                return Parsed::Empty;
            }
            let (verb, rest) = split_verb(line);
            (verb, rest, false)
        }
    };
    let Some(verb) = Verb::from_bytes(verb) else {
        return Parsed::Unknown;
    };
    let arg = if plain {
        Cow::Borrowed(rest)
    } else {
        normalized(rest)
    };
    let command = match verb {
        Verb::Get => Command::Get(Name(arg)),
        Verb::Release => Command::Release(Name(arg)),
        Verb::IsLocked => Command::IsLocked(Name(arg)),
        Verb::Holders => Command::Holders(Name(arg)),
        Verb::Dump => Command::Dump {
            shared: *arg == *b"shared",
        },
        Verb::SharedGet => Command::SharedGet(Name(arg)),
        Verb::SharedRelease => Command::SharedRelease(Name(arg)),
        Verb::SharedIsLocked => Command::SharedIsLocked(Name(arg)),
        Verb::SharedHolders => Command::SharedHolders(Name(arg)),
        Verb::Me => Command::Me,
        Verb::Iam => Command::Iam(arg.into_owned()),
        Verb::Who => Command::Who(arg.into_owned()),
        Verb::Stats => Command::Stats,
        Verb::Hello => match parse_number(&arg) {
            Some(v) if v <= u64::from(u32::MAX) => Command::Hello(v as u32),
            _ => return Parsed::Malformed(verb, ParseError::BadVersion),
        },
        Verb::WaitGet | Verb::WaitRead => {
            let (ms, name) = split_word(&arg);
            let Some(timeout_ms) = parse_number(ms) else {
                return Parsed::Malformed(verb, timeout_error(verb));
            };
            let from = arg.len() - name.len();
            let name = Name::suffix(arg, from);
            if verb == Verb::WaitGet {
                Command::WaitGet { timeout_ms, name }
            } else {
                Command::WaitRead { timeout_ms, name }
            }
        }
        Verb::WaitSharedGet => {
            let (ms, rest) = split_word(&arg);
            let Some(timeout_ms) = parse_number(ms) else {
                return Parsed::Malformed(verb, timeout_error(verb));
            };
            let (limit, name) = split_word(rest);
            let Some(limit) = parse_number(limit).and_then(|l| u32::try_from(l).ok()) else {
                return Parsed::Malformed(
                    verb,
                    ParseError::ExpectedNumber {
                        verb,
                        what: "limit (0 for none)",
                        usage: "wsg MS LIMIT NAME",
                    },
                );
            };
            let from = arg.len() - name.len();
            Command::WaitSharedGet {
                timeout_ms,
                limit,
                name: Name::suffix(arg, from),
            }
        }
        Verb::Token => Command::Token(Name(arg)),
        Verb::ReleaseAll => Command::ReleaseAll,
        Verb::Ping => Command::Ping,
        Verb::Ttl => match parse_number(&arg) {
            Some(seconds) => Command::Ttl(seconds),
            None => {
                return Parsed::Malformed(
                    verb,
                    ParseError::ExpectedNumber {
                        verb,
                        what: "number of seconds (0 turns the lease off)",
                        usage: "ttl SECONDS",
                    },
                )
            }
        },
        Verb::DumpJson => Command::DumpJson,
        Verb::Auth => Command::Auth(arg.into_owned()),
        Verb::ReadRelease => Command::ReadRelease(Name(arg)),
        Verb::Watch => Command::Watch(Name(arg)),
    };
    Parsed::Command(command)
}

fn timeout_error(verb: Verb) -> ParseError {
    ParseError::ExpectedNumber {
        verb,
        what: "timeout in milliseconds",
        usage: match verb {
            Verb::WaitGet => "wg MS NAME",
            Verb::WaitRead => "wr MS NAME",
            _ => "wsg MS LIMIT NAME",
        },
    }
}

/// Splits a normalised argument at its first space.
fn split_word(arg: &[u8]) -> (&[u8], &[u8]) {
    match arg.iter().position(|&b| b == b' ') {
        Some(i) => (&arg[..i], &arg[i + 1..]),
        None => (arg, &[]),
    }
}

/// A decimal number of at most 18 digits (no sign, no overflow).
fn parse_number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')),
    )
}

/// Length of the whitespace character at the start of `bytes`, if there is
/// one. Whitespace is Unicode White_Space (as Go's `unicode.IsSpace`), and
/// only in valid UTF-8: an invalid byte is never whitespace.
fn whitespace_len(bytes: &[u8]) -> Option<usize> {
    match bytes {
        [b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ', ..] => Some(1),
        [0xc2, 0x85 | 0xa0, ..] => Some(2),
        [0xe1, 0x9a, 0x80, ..] => Some(3),
        [0xe2, 0x80, 0x80..=0x8a | 0xa8 | 0xa9 | 0xaf, ..] => Some(3),
        [0xe2, 0x81, 0x9f, ..] => Some(3),
        [0xe3, 0x80, 0x80, ..] => Some(3),
        _ => None,
    }
}

/// Length of the (possibly invalid) character at the start of `bytes`,
/// decoding as Go does: an invalid sequence advances by one byte.
fn char_len(bytes: &[u8]) -> usize {
    let want = match bytes[0] {
        0x00..=0x7f => return 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return 1,
    };
    match bytes.get(..want).map(std::str::from_utf8) {
        Some(Ok(_)) => want,
        _ => 1,
    }
}

/// Splits `bytes` into its whitespace-separated fields (Go's
/// `strings.Fields`), calling `field` for each.
fn for_each_field<'a>(bytes: &'a [u8], mut field: impl FnMut(&'a [u8])) {
    let mut i = 0;
    let mut start = None;
    while i < bytes.len() {
        if let Some(n) = whitespace_len(&bytes[i..]) {
            if let Some(s) = start.take() {
                field(&bytes[s..i]);
            }
            i += n;
        } else {
            start.get_or_insert(i);
            i += char_len(&bytes[i..]);
        }
    }
    if let Some(s) = start {
        field(&bytes[s..]);
    }
}

/// Removes leading and trailing whitespace (see [`normalize`] for what
/// counts as whitespace).
pub fn trim(bytes: &[u8]) -> &[u8] {
    if bytes.is_ascii() {
        // Not `trim_ascii`: it keeps VT (0x0B), which Go's `unicode.IsSpace`
        // (and so the protocol) counts as whitespace.
        let space = |b: &u8| matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ');
        let start = bytes.iter().position(|b| !space(b)).unwrap_or(bytes.len());
        let end = bytes
            .iter()
            .rposition(|b| !space(b))
            .map_or(start, |i| i + 1);
        return &bytes[start..end];
    }
    let mut first = None;
    let mut last = 0;
    for_each_field(bytes, |field| {
        let start = field.as_ptr() as usize - bytes.as_ptr() as usize;
        first.get_or_insert(start);
        last = start + field.len();
    });
    match first {
        Some(first) => &bytes[first..last],
        None => &[],
    }
}

/// [`normalize`], borrowing when there is nothing to fold: the common case
/// of an ASCII argument with single spaces between words, which then costs
/// one pass and no copy.
fn normalized(bytes: &[u8]) -> Cow<'_, [u8]> {
    let mut after_space = true;
    for &b in bytes {
        match b {
            b' ' if after_space => return Cow::Owned(normalize(bytes)),
            b' ' => after_space = true,
            b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0x80.. => return Cow::Owned(normalize(bytes)),
            _ => after_space = false,
        }
    }
    if after_space && !bytes.is_empty() {
        return Cow::Owned(normalize(bytes));
    }
    Cow::Borrowed(bytes)
}

/// Splits on runs of whitespace and joins the fields with single spaces:
/// `"  a \t b "` becomes `"a b"`. Whitespace is Unicode White_Space as Go's
/// `unicode.IsSpace` knows it, and only where the bytes are valid UTF-8.
pub fn normalize(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for_each_field(bytes, |field| {
        if !out.is_empty() {
            out.push(b' ');
        }
        out.extend_from_slice(field);
    });
    out
}

/// The next number of a deterministic pseudo-random sequence (xorshift64),
/// for the seeded tests here and in `line`.
#[cfg(test)]
pub(crate) fn xorshift(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_hold_verbs_and_grants_at_once_skip_settling() {
        for own in [
            "r x", " rr x\r", "sr x", "ra", "t x", "ping", "hello 2", "ttl 5", "me", "g x",
            "wg 5 x",
        ] {
            assert!(!cmd(own.as_bytes()).verb().sees_others(), "{own}");
        }
        for other in [
            "i x",
            "si x",
            "q",
            "wsg 5 0 x",
            "sg x",
            "d",
            "wr 5 x",
            "who",
            "dj",
            "watch *",
        ] {
            assert!(cmd(other.as_bytes()).verb().sees_others(), "{other}");
        }
    }

    fn cmd(line: &[u8]) -> Command<'_> {
        match parse_line(line) {
            Parsed::Command(c) => c,
            other => panic!("{:?} parsed as {other:?}", line.escape_ascii().to_string()),
        }
    }

    #[test]
    fn trims_and_collapses_unicode_whitespace() {
        assert_eq!(cmd(b" g foo\r"), Command::Get("foo".into()));
        assert_eq!(cmd(b"\x0bg foo\x0b"), Command::Get("foo".into()));
        assert_eq!(cmd(b"g  a \t b"), Command::Get("a b".into()));
        assert_eq!(
            cmd("g \u{3000}a\u{00a0}\u{2028}b\u{85}".as_bytes()),
            Command::Get("a b".into())
        );
        assert_eq!(cmd(b"g"), Command::Get("".into()));
        assert_eq!(cmd(b"g "), Command::Get("".into()));
    }

    #[test]
    fn invalid_utf8_is_never_whitespace() {
        // A lone 0xA0 or 0x85 is not U+00A0/U+0085.
        assert_eq!(cmd(b"g a\xa0b\x85"), Command::Get(b"a\xa0b\x85"[..].into()));
        assert_eq!(cmd(b"g \xc2 x"), Command::Get(b"\xc2 x"[..].into()));
        assert_eq!(cmd(b"g a\0b"), Command::Get(b"a\0b"[..].into()));
    }

    #[test]
    fn only_ascii_space_ends_a_verb() {
        assert_eq!(parse_line(b"g\tfoo"), Parsed::Unknown);
        assert_eq!(parse_line("g\u{a0}foo".as_bytes()), Parsed::Unknown);
        assert_eq!(parse_line(b"G foo"), Parsed::Unknown);
    }

    #[test]
    fn blank_lines_are_empty() {
        assert_eq!(parse_line(b""), Parsed::Empty);
        assert_eq!(parse_line(b" \t\r"), Parsed::Empty);
        assert_eq!(parse_line(b"\x0b\x0c"), Parsed::Empty);
        assert_eq!(parse_line("\u{3000}".as_bytes()), Parsed::Empty);
        // Issue 8: VT is whitespace in an all-ASCII line too.
        assert_eq!(parse_line(b"\x0b"), Parsed::Empty);
        assert_eq!(cmd(b"\x0bg foo\x0b"), Command::Get("foo".into()));
    }

    #[test]
    fn dump_argument() {
        assert_eq!(cmd(b"dump"), Command::Dump { shared: false });
        assert_eq!(cmd(b"dump  shared "), Command::Dump { shared: true });
        assert_eq!(cmd(b"dump foo"), Command::Dump { shared: false });
    }

    #[test]
    fn wait_verbs() {
        assert_eq!(
            cmd(b"wg 100 a  b"),
            Command::WaitGet {
                timeout_ms: 100,
                name: "a b".into()
            }
        );
        assert_eq!(
            cmd(b"wsg 5 2 x"),
            Command::WaitSharedGet {
                timeout_ms: 5,
                limit: 2,
                name: "x".into()
            }
        );
        assert!(matches!(
            parse_line(b"wg x y"),
            Parsed::Malformed(Verb::WaitGet, _)
        ));
        assert!(matches!(
            parse_line(b"wsg 1 -1 y"),
            Parsed::Malformed(Verb::WaitSharedGet, _)
        ));
        assert_eq!(
            cmd(b"wr 7  a b "),
            Command::WaitRead {
                timeout_ms: 7,
                name: "a b".into()
            }
        );
        assert_eq!(cmd(b"rr"), Command::ReadRelease("".into()));
        match parse_line(b"wr x y") {
            Parsed::Malformed(Verb::WaitRead, e) => assert_eq!(
                e.to_string(),
                "wr needs a timeout in milliseconds: wr MS NAME"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_line(b"ttl"),
            Parsed::Malformed(Verb::Ttl, _)
        ));
    }

    #[test]
    fn borrowing_fast_path_agrees_with_normalize() {
        for arg in [
            &b""[..],
            b"a",
            b"a b",
            b" a",
            b"a ",
            b"a  b",
            b"a\tb",
            b"\xc2\xa0x",
            b"x\xff y",
        ] {
            assert_eq!(
                &*normalized(arg),
                &normalize(arg)[..],
                "{:?}",
                arg.escape_ascii().to_string()
            );
        }
        assert!(matches!(normalized(b"lock name"), Cow::Borrowed(_)));
    }

    #[test]
    fn names_borrow_from_the_line_unless_normalised() {
        let borrowed = |c: &Command<'_>| match c {
            Command::Get(n) | Command::WaitGet { name: n, .. } => {
                matches!(n.0, Cow::Borrowed(_))
            }
            Command::WaitSharedGet { name, .. } => matches!(name.0, Cow::Borrowed(_)),
            other => panic!("{other:?}"),
        };
        assert!(borrowed(&cmd(b"g lock name")));
        assert!(borrowed(&cmd(b"wg 10 lock name")));
        assert!(borrowed(&cmd(b"wsg 10 2 lock name")));
        let folded = cmd(b"wg 10  a\tb ");
        assert!(!borrowed(&folded));
        assert_eq!(
            folded,
            Command::WaitGet {
                timeout_ms: 10,
                name: "a b".into()
            }
        );
        assert_eq!(
            cmd(b"wsg 1\t2  x"),
            Command::WaitSharedGet {
                timeout_ms: 1,
                limit: 2,
                name: "x".into()
            }
        );
    }

    #[test]
    fn verbs_round_trip() {
        for verb in Verb::ALL {
            assert_eq!(Verb::from_bytes(verb.as_str().as_bytes()), Some(verb));
            assert_eq!(Verb::ALL[verb.index()], verb);
        }
        assert_eq!(Verb::ALL.iter().filter(|v| v.is_classic()).count(), 13);
    }

    /// Up to `parts - 1` pieces of `alphabet`, picked by `seed`.
    fn random_line(seed: &mut u64, alphabet: &[&[u8]], parts: u64) -> Vec<u8> {
        let mut line = Vec::new();
        for _ in 0..(*seed % parts) {
            let i = xorshift(seed) % alphabet.len() as u64;
            line.extend_from_slice(alphabet[i as usize]);
        }
        line
    }

    #[test]
    fn normalize_is_idempotent_on_random_bytes() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let alphabet: &[&[u8]] = &[
            b" ",
            b"\t",
            b"a",
            b"\0",
            b"\xff",
            b"\xc2",
            b"\xa0",
            "\u{a0}".as_bytes(),
            "\u{3000}".as_bytes(),
            "\u{2029}".as_bytes(),
            b"\xe2\x80",
            b"\r",
            b"z",
        ];
        for _ in 0..2000 {
            let line = random_line(&mut seed, alphabet, 12);
            let once = normalize(&line);
            assert_eq!(
                normalize(&once),
                once,
                "{:?}",
                line.escape_ascii().to_string()
            );
            assert_eq!(trim(&once), &once[..]);
            let _ = parse_line(&line);
        }
    }

    #[test]
    fn plain_lines_split_as_trimming_and_normalising_would() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let alphabet: &[&[u8]] = &[
            b" ",
            b"  ",
            b"\t",
            b"\x0b",
            b"g",
            b"r",
            b"wg",
            b"10",
            b"-",
            b"\0",
            b"\x7f",
            b"\xff",
            b"\x1f",
            b"~",
            b"\x80",
            b"bench-W3",
            "\u{a0}".as_bytes(),
        ];
        for _ in 0..5000 {
            let line = random_line(&mut seed, alphabet, 10);
            let plain = !line.is_empty()
                && line[0] != b' '
                && line[line.len() - 1] != b' '
                && line.iter().all(|b| (0x20..=0x7e).contains(b))
                && !line.windows(2).any(|w| w == b"  ");
            assert_eq!(
                split_plain(&line).is_some(),
                plain,
                "{:?}",
                line.escape_ascii().to_string()
            );
            let Some((verb, rest)) = split_plain(&line) else {
                continue;
            };
            let (slow_verb, slow_rest) = split_verb(trim(&line));
            assert_eq!(
                (verb, rest),
                (slow_verb, slow_rest),
                "{:?}",
                line.escape_ascii().to_string()
            );
            assert_eq!(normalized(rest), Cow::Borrowed(rest));
        }
        assert_eq!(
            split_plain(b"g bench-W3"),
            Some((&b"g"[..], &b"bench-W3"[..]))
        );
        assert_eq!(
            split_plain(b"wg 10 a b"),
            Some((&b"wg"[..], &b"10 a b"[..]))
        );
        for line in [
            &b""[..],
            b" g a",
            b"g a ",
            b"g  a",
            b"g\ta",
            b"g \xff",
            b"g a\0",
        ] {
            assert_eq!(
                split_plain(line),
                None,
                "{:?}",
                line.escape_ascii().to_string()
            );
        }
    }
}
