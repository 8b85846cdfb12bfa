//! Property tests of the pure protocol functions (issue 8): `parse_line`,
//! `normalize`, `trim`, the bounded line reader, and the reply parser, on
//! seeded random input (seeds printed, `LOCKD_SEED=N` replays one).
//!
//! Whitespace is checked against an independent reference: Rust's
//! `char::is_whitespace` is Unicode White_Space, the same set as Go's
//! `unicode.IsSpace`, and `utf8_chunks` never makes an invalid byte a
//! character, as PROTOCOL.md requires.

mod common;

use common::rng::{seeds, Rng};
use lockd::protocol::line::{Line, LineReader};
use lockd::protocol::reply::{self, parse_status};
use lockd::protocol::{normalize, parse_line, trim, Command, Name, Parsed, Verb};

use std::io::{self, Read};

const CASES: usize = 4000;

/// Whitespace as the protocol knows it, one character each.
const WHITESPACE: [&str; 25] = [
    "\t", "\n", "\u{b}", "\u{c}", "\r", " ", "\u{85}", "\u{a0}", "\u{1680}", "\u{2000}",
    "\u{2001}", "\u{2002}", "\u{2003}", "\u{2004}", "\u{2005}", "\u{2006}", "\u{2007}", "\u{2008}",
    "\u{2009}", "\u{200a}", "\u{2028}", "\u{2029}", "\u{202f}", "\u{205f}", "\u{3000}",
];

/// Pieces that make interesting lines: verbs, numbers, separators, bytes
/// that look like parts of whitespace but are not, invalid UTF-8.
const PIECES: [&[u8]; 32] = [
    b"g",
    b"wr",
    b"rr",
    b"r",
    b"sg",
    b"wg",
    b"wsg",
    b"hello",
    b"ttl",
    b"dump",
    b"shared",
    b"iam",
    b"t",
    b"0",
    b"7",
    b"123",
    b"99999999999999999999",
    b"-1",
    b": ",
    b"a",
    b"Z",
    b"\0",
    b"\xff",
    b"\xc2",
    b"\xa0",
    b"\x85",
    b"\xe2\x80",
    b"\xe3\x80",
    b"\xe1\x9a",
    b"\xed\xa0\x80",
    "\u{200b}".as_bytes(),
    "\u{feff}".as_bytes(),
];

fn random_bytes(rng: &mut Rng, max_pieces: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.below(max_pieces + 1) {
        match rng.below(10) {
            0..=3 => out.extend_from_slice(rng.pick(&WHITESPACE).as_bytes()),
            4..=8 => {
                let piece = *rng.pick(&PIECES);
                out.extend_from_slice(piece)
            }
            _ => out.push(rng.below(256) as u8),
        }
    }
    out
}

/// The fields of `bytes` split on whitespace, by the reference rules.
fn reference_fields(bytes: &[u8]) -> Vec<&[u8]> {
    let mut fields = Vec::new();
    let mut start = None;
    let mut at = 0;
    for chunk in bytes.utf8_chunks() {
        for (i, c) in chunk.valid().char_indices() {
            if c.is_whitespace() {
                if let Some(s) = start.take() {
                    fields.push(&bytes[s..at + i]);
                }
            } else {
                start.get_or_insert(at + i);
            }
        }
        at += chunk.valid().len();
        if !chunk.invalid().is_empty() {
            start.get_or_insert(at);
            at += chunk.invalid().len();
        }
    }
    if let Some(s) = start {
        fields.push(&bytes[s..]);
    }
    fields
}

fn reference_normalize(bytes: &[u8]) -> Vec<u8> {
    reference_fields(bytes).join(&b' ')
}

fn reference_trim(bytes: &[u8]) -> &[u8] {
    let fields = reference_fields(bytes);
    match (fields.first(), fields.last()) {
        (Some(first), Some(last)) => {
            let start = first.as_ptr() as usize - bytes.as_ptr() as usize;
            let end = last.as_ptr() as usize - bytes.as_ptr() as usize + last.len();
            &bytes[start..end]
        }
        _ => &[],
    }
}

fn shown(bytes: &[u8]) -> String {
    format!("{:?}", bytes.escape_ascii().to_string())
}

fn is_number(digits: &[u8], max: u64) -> bool {
    !digits.is_empty()
        && digits.len() <= 18
        && digits.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse::<u64>().ok())
            .is_some_and(|n| n <= max)
}

/// What `parse_line` must say about `line`, by PROTOCOL.md: the verb ends
/// at the first ASCII space of the trimmed line, the argument is
/// normalised, numbers are decimal digits.
fn check_parse(line: &[u8]) {
    let parsed = parse_line(line);
    let trimmed = reference_trim(line);
    if trimmed.is_empty() {
        assert_eq!(parsed, Parsed::Empty, "{}", shown(line));
        return;
    }
    let (verb, rest) = match trimmed.iter().position(|&b| b == b' ') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (trimmed, &b""[..]),
    };
    let Some(verb) = Verb::from_bytes(verb) else {
        assert_eq!(parsed, Parsed::Unknown, "{}", shown(line));
        return;
    };
    let arg = reference_normalize(rest);
    let name = Name::from(arg.as_slice());
    let (first, after) = match arg.iter().position(|&b| b == b' ') {
        Some(i) => (&arg[..i], &arg[i + 1..]),
        None => (&arg[..], &b""[..]),
    };
    let want = match verb {
        Verb::Get => Some(Command::Get(name)),
        Verb::Release => Some(Command::Release(name)),
        Verb::IsLocked => Some(Command::IsLocked(name)),
        Verb::Holders => Some(Command::Holders(name)),
        Verb::SharedGet => Some(Command::SharedGet(name)),
        Verb::SharedRelease => Some(Command::SharedRelease(name)),
        Verb::SharedIsLocked => Some(Command::SharedIsLocked(name)),
        Verb::SharedHolders => Some(Command::SharedHolders(name)),
        Verb::Token => Some(Command::Token(name)),
        Verb::ReadRelease => Some(Command::ReadRelease(name)),
        Verb::Watch => Some(Command::Watch(Name::from(arg.as_slice()))),
        Verb::Iam => Some(Command::Iam(arg.clone())),
        Verb::Who => Some(Command::Who(arg.clone())),
        Verb::Auth => Some(Command::Auth(arg.clone())),
        Verb::Dump => Some(Command::Dump {
            shared: arg == b"shared",
        }),
        Verb::Me => Some(Command::Me),
        Verb::Stats => Some(Command::Stats),
        Verb::ReleaseAll => Some(Command::ReleaseAll),
        Verb::Ping => Some(Command::Ping),
        Verb::DumpJson => Some(Command::DumpJson),
        Verb::Hello => {
            is_number(&arg, u64::from(u32::MAX)).then(|| Command::Hello(number(&arg) as u32))
        }
        Verb::Ttl => is_number(&arg, u64::MAX).then(|| Command::Ttl(number(&arg))),
        Verb::WaitGet => is_number(first, u64::MAX).then(|| Command::WaitGet {
            timeout_ms: number(first),
            name: Name::from(after),
        }),
        Verb::WaitRead => is_number(first, u64::MAX).then(|| Command::WaitRead {
            timeout_ms: number(first),
            name: Name::from(after),
        }),
        Verb::WaitSharedGet => {
            let (limit, name) = match after.iter().position(|&b| b == b' ') {
                Some(i) => (&after[..i], &after[i + 1..]),
                None => (after, &b""[..]),
            };
            (is_number(first, u64::MAX) && is_number(limit, u64::from(u32::MAX))).then(|| {
                Command::WaitSharedGet {
                    timeout_ms: number(first),
                    limit: number(limit) as u32,
                    name: Name::from(name),
                }
            })
        }
    };
    match (want, &parsed) {
        (Some(want), Parsed::Command(got)) => {
            assert_eq!(got, &want, "{}", shown(line));
            assert_eq!(got.verb(), verb, "{}", shown(line));
        }
        (None, Parsed::Malformed(got, _)) => assert_eq!(*got, verb, "{}", shown(line)),
        (want, got) => panic!("{}: parsed {got:?}, expected {want:?}", shown(line)),
    }
}

fn number(digits: &[u8]) -> u64 {
    std::str::from_utf8(digits)
        .expect("digits")
        .parse()
        .expect("checked")
}

#[test]
fn any_bytes_parse_without_panic_as_the_reference_says() {
    for seed in seeds("any_bytes_parse", &[1, 2, 0xbad_c0de]) {
        let mut rng = Rng::new(seed);
        for _ in 0..CASES {
            let line = random_bytes(&mut rng, 12);
            check_parse(&line);
            // A verb, a space, then anything: reaches every argument parser.
            let mut line = Verb::ALL[rng.below(Verb::ALL.len() as u64) as usize]
                .as_str()
                .as_bytes()
                .to_vec();
            line.push(b' ');
            line.extend(random_bytes(&mut rng, 8));
            check_parse(&line);
            // Raw bytes, and the reply parser on them too.
            let raw: Vec<u8> = (0..rng.below(40)).map(|_| rng.below(256) as u8).collect();
            check_parse(&raw);
            let _ = parse_status(&raw);
            let _ = parse_status(&line);
        }
    }
}

#[test]
fn normalize_and_trim_agree_with_the_reference() {
    for seed in seeds("normalize_and_trim", &[1, 2, 0xfeed]) {
        let mut rng = Rng::new(seed);
        for _ in 0..CASES {
            let bytes = random_bytes(&mut rng, 16);
            let once = normalize(&bytes);
            let ctx = shown(&bytes);
            assert_eq!(once, reference_normalize(&bytes), "normalize {ctx}");
            assert_eq!(trim(&bytes), reference_trim(&bytes), "trim {ctx}");
            assert_eq!(normalize(&once), once, "idempotent {ctx}");
            assert_eq!(trim(&once), &once[..], "trim(normalize(x)) {ctx}");
            assert_eq!(normalize(trim(&bytes)), once, "normalize(trim(x)) {ctx}");
            assert!(!once.windows(2).any(|w| w == b"  "), "double space {ctx}");
        }
    }
}

/// Renders `command` as a client could send it: random whitespace around
/// the line and between fields (only an ASCII space may end the verb).
fn render(rng: &mut Rng, command: &Command) -> Vec<u8> {
    let mut fields: Vec<Vec<u8>> = vec![command.verb().as_str().as_bytes().to_vec()];
    let mut arg = |bytes: &[u8]| {
        if !bytes.is_empty() {
            fields.push(bytes.to_vec());
        }
    };
    match command {
        Command::Get(n)
        | Command::Release(n)
        | Command::IsLocked(n)
        | Command::Holders(n)
        | Command::SharedGet(n)
        | Command::SharedRelease(n)
        | Command::SharedIsLocked(n)
        | Command::SharedHolders(n)
        | Command::Token(n) => arg(n.as_bytes()),
        Command::Iam(a) | Command::Who(a) | Command::Auth(a) => arg(a),
        Command::Dump { shared } => arg(if *shared { b"shared" } else { b"" }),
        Command::Hello(v) => arg(v.to_string().as_bytes()),
        Command::Ttl(s) => arg(s.to_string().as_bytes()),
        Command::WaitGet { timeout_ms, name } => {
            arg(timeout_ms.to_string().as_bytes());
            arg(name.as_bytes());
        }
        Command::WaitSharedGet {
            timeout_ms,
            limit,
            name,
        } => {
            arg(timeout_ms.to_string().as_bytes());
            arg(limit.to_string().as_bytes());
            arg(name.as_bytes());
        }
        _ => {}
    }
    let space = |rng: &mut Rng, out: &mut Vec<u8>| {
        for _ in 0..rng.below(3) {
            out.extend_from_slice(rng.pick(&WHITESPACE[..]).as_bytes());
        }
    };
    let mut line = Vec::new();
    space(rng, &mut line);
    // Inner spaces of a name are field separators too.
    let words: Vec<Vec<u8>> = fields
        .iter()
        .flat_map(|f| f.split(|&b| b == b' ').map(<[u8]>::to_vec))
        .collect();
    for (i, word) in words.iter().enumerate() {
        if i > 0 {
            if i == 1 {
                line.push(b' ');
            }
            space(rng, &mut line);
            if i > 1 {
                line.push(b'\t');
            }
        }
        line.extend_from_slice(word);
    }
    space(rng, &mut line);
    line.retain(|&b| b != b'\n');
    line
}

fn random_name(rng: &mut Rng) -> Vec<u8> {
    normalize(&random_bytes(rng, 5))
}

fn random_command(rng: &mut Rng) -> Command<'static> {
    let name = Name::from(random_name(rng));
    let ms = if rng.chance(20) {
        999_999_999_999_999_999
    } else {
        rng.below(100_000)
    };
    match rng.below(22) {
        0 => Command::Get(name),
        1 => Command::Release(name),
        2 => Command::IsLocked(name),
        3 => Command::Holders(name),
        4 => Command::Dump {
            shared: rng.chance(50),
        },
        5 => Command::SharedGet(name),
        6 => Command::SharedRelease(name),
        7 => Command::SharedIsLocked(name),
        8 => Command::SharedHolders(name),
        9 => Command::Me,
        10 => Command::Iam(random_name(rng)),
        11 => Command::Who(random_name(rng)),
        12 => Command::Stats,
        13 => Command::Hello(rng.below(u64::from(u32::MAX) + 1) as u32),
        14 => Command::WaitGet {
            timeout_ms: ms,
            name,
        },
        15 => Command::WaitSharedGet {
            timeout_ms: ms,
            limit: rng.below(u64::from(u32::MAX) + 1) as u32,
            name,
        },
        16 => Command::Token(name),
        17 => Command::ReleaseAll,
        18 => Command::Ping,
        19 => Command::Ttl(ms),
        20 => Command::DumpJson,
        _ => Command::Auth(random_name(rng)),
    }
}

#[test]
fn verbs_and_commands_round_trip() {
    for verb in Verb::ALL {
        assert_eq!(Verb::from_bytes(verb.as_str().as_bytes()), Some(verb));
        assert_eq!(Verb::ALL[verb.index()], verb);
    }
    let spellings: Vec<&str> = Verb::ALL.iter().map(|v| v.as_str()).collect();
    for seed in seeds("verbs_and_commands_round_trip", &[1, 2, 0xc0ffee]) {
        let mut rng = Rng::new(seed);
        for _ in 0..CASES {
            let command = random_command(&mut rng);
            let line = render(&mut rng, &command);
            assert_eq!(
                parse_line(&line),
                Parsed::Command(command.clone()),
                "{command:?} sent as {}",
                shown(&line)
            );
            // Only the exact spellings are verbs.
            let word: Vec<u8> = (0..rng.below(5))
                .map(|_| *rng.pick(b"dgimqrstwaehlouyjp\0\xff "))
                .collect();
            let known = std::str::from_utf8(&word).is_ok_and(|w| spellings.contains(&w));
            assert_eq!(Verb::from_bytes(&word).is_some(), known, "{}", shown(&word));
        }
    }
}

#[test]
fn status_replies_parse_back() {
    let texts = [
        reply::LOCK_GET_SUCCESS,
        reply::LOCK_GET_FAILURE,
        reply::LOCK_GET_TIMEOUT,
        reply::LOCK_GET_DEADLOCK,
        reply::LOCK_RELEASE_SUCCESS,
        reply::LOCK_RELEASE_FAILURE,
        reply::LOCK_IS_LOCKED,
        reply::LOCK_NOT_LOCKED,
        reply::LOCK_TOKEN,
        reply::LOCK_NOT_HELD,
        reply::SHARED_GET_SUCCESS,
        reply::SHARED_GET_TIMEOUT,
        reply::SHARED_RELEASE_SUCCESS,
        reply::SHARED_RELEASE_FAILURE,
        reply::SHARED_IS_LOCKED,
        reply::SHARED_NOT_LOCKED,
    ];
    for seed in seeds("status_replies_parse_back", &[1, 2, 0xabc]) {
        let mut rng = Rng::new(seed);
        for _ in 0..CASES {
            let text = *rng.pick(&texts);
            // A name as the server holds it: normalised, so any byte but
            // whitespace, `: ` included.
            let name = random_name(&mut rng);
            let n = match rng.below(3) {
                0 => rng.below(2),
                1 => rng.next_u64(),
                _ => u64::MAX,
            };
            let mut out = Vec::new();
            reply::status(&mut out, n, text, &name);
            assert_eq!(out.last(), Some(&b'\n'));
            assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
            let parsed = parse_status(&out[..out.len() - 1])
                .unwrap_or_else(|| panic!("{} does not parse", shown(&out)));
            assert_eq!(parsed.number, n, "{}", shown(&out));
            assert_eq!(parsed.text, text.as_bytes(), "{}", shown(&out));
            assert_eq!(parsed.name, Some(&name[..]), "{}", shown(&out));
        }
    }
    for line in [
        reply::OK,
        reply::PONG,
        reply::DISABLED,
        reply::TOO_MANY_CONNECTIONS,
        reply::AUTH_OK,
        reply::AUTH_REQUIRED,
    ] {
        let parsed = parse_status(&line[..line.len() - 1]).expect("a status line");
        assert!(parsed.number <= 1 && parsed.name.is_none(), "{parsed:?}");
    }
}

/// Hands out its data in random-sized reads.
struct Chunked<'a> {
    data: &'a [u8],
    rng: Rng,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.rng.range(1, 40) as usize)
            .min(self.data.len())
            .min(buf.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[test]
fn line_reader_splits_anywhere_the_same() {
    for seed in seeds("line_reader_splits_anywhere", &[1, 2, 0x1117e]) {
        let mut rng = Rng::new(seed);
        for _ in 0..CASES / 4 {
            let max_line = rng.range(1, 24) as usize;
            let mut data = Vec::new();
            for _ in 0..rng.below(12) {
                let len = rng.below(2 * max_line as u64 + 2) as usize;
                data.extend((0..len).map(|_| *rng.pick(b"ab \r\0\xff")));
                data.push(b'\n');
            }
            if rng.chance(50) {
                data.extend_from_slice(b"tail");
            }
            // The reference: split on `\n`; the last piece counts if not
            // empty; a piece over the limit is one TooLong.
            let mut pieces: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
            if pieces.last().is_some_and(|p| p.is_empty()) {
                pieces.pop();
            }
            let want: Vec<Option<Vec<u8>>> = pieces
                .iter()
                .map(|p| (p.len() <= max_line).then(|| p.to_vec()))
                .collect();
            let mut reader = LineReader::new(
                Chunked {
                    data: &data,
                    rng: rng.fork(),
                },
                max_line,
            );
            let mut got = Vec::new();
            loop {
                match reader.next_line(|_| Ok(())).expect("no I/O error") {
                    Line::Complete(l) => got.push(Some(l.to_vec())),
                    Line::TooLong => got.push(None),
                    Line::Eof => break,
                }
            }
            assert_eq!(got, want, "max {max_line}, data {}", shown(&data));
        }
    }
}

#[test]
fn random_lines_to_a_live_server() {
    let server = common::TestServer::start();
    let mut other = server.connect();
    for seed in seeds("random_lines_to_a_live_server", &[1]) {
        let mut rng = Rng::new(seed);
        let mut conn = server.connect();
        for batch in 0..200 {
            let mut lines = Vec::new();
            for _ in 0..10 {
                // Not `watch`: it turns the connection into an event stream
                // that answers nothing else, by design.
                let verb = Verb::ALL[rng.below(Verb::ALL.len() as u64) as usize];
                let mut line = if rng.chance(50) && verb != Verb::Watch {
                    verb.as_str().as_bytes().to_vec()
                } else {
                    Vec::new()
                };
                line.push(b' ');
                line.extend(random_bytes(&mut rng, 8));
                line.push(b'\n');
                lines.extend(line);
            }
            // A reply nothing random can produce marks the end of the batch.
            lines.extend_from_slice(format!("g sync-{batch}\n").as_bytes());
            conn.send(&lines);
            let want = format!("1 Lock Get Success: sync-{batch}\n");
            loop {
                let line = conn.line();
                assert!(!line.is_empty(), "seed {seed:#x}: closed in batch {batch}");
                if line == want.as_bytes() {
                    break;
                }
            }
        }
        assert_eq!(other.cmd("ping"), "1 pong\n", "seed {seed:#x}");
    }
}
