//! Issue 3: the classic protocol (PROTOCOL.md Part 1), over real sockets,
//! comparing whole reply bytes. One test per rule or table row; each test's
//! doc comment names the rule it checks.

mod common;
use common::{assert_bytes, cat, expected_q, without_key, Conn, Kind, TestServer};

on_both!(
    trims_unicode_whitespace_around_the_line,
    collapses_unicode_whitespace_inside_the_argument,
    invalid_utf8_bytes_are_never_whitespace,
    only_ascii_space_ends_the_verb,
    blank_lines_get_no_reply_and_are_not_counted,
    last_line_without_newline_is_answered_then_closed,
    crlf_line_ends,
    glockc_leading_space,
    pipelined_commands_all_answered_in_order,
    each_reply_block_is_one_write,
    names_keep_nul_0xff_and_inner_spaces,
    empty_name_is_a_lock,
    get_conflicts_and_is_locked,
    re_get_succeeds_and_is_not_counted_twice,
    release_only_by_the_holder,
    d_lists_holders_by_registered_or_default_name,
    d_shows_the_empty_name_only_in_the_full_listing,
    dump_is_a_go_map_sorted_bytewise_with_default_names,
    dump_shared_is_a_go_map_of_holder_lists,
    shared_locks_are_counted,
    sd_lists_holders_in_order,
    shared_and_exclusive_are_separate_namespaces,
    me_shows_default_then_registered_name,
    iam_normalises_allows_spaces_and_empty_removes,
    who_lists_oldest_registration_first,
    dump_off_disables_d_dump_sd_who,
    registry_off_disables_iam_who_not_me,
    dump_and_registry_off_disable_every_gated_verb,
    q_has_exactly_the_19_keys_sorted,
    q_counts_commands_including_disabled_ones_but_not_itself,
    q_gauges_and_counters,
    unknown_verbs_are_silent_and_counted,
    tcp_identity_is_the_peer_address,
    unix_peers_are_numbered_from_1,
    fin_orphans_locks_and_forgets_the_name,
    rst_orphans_locks_and_forgets_the_name,
    burst_of_closes_is_released_before_the_next_command,
    unix_close_orphans_locks,
    released_locks_are_not_orphans,
    get_of_a_lock_whose_holder_just_closed_is_granted,
);

/// Sorts reply lines (for replies whose line order is unspecified).
fn sorted(lines: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut lines: Vec<Vec<u8>> = lines.iter().map(|l| l.to_vec()).collect();
    lines.sort();
    lines
}

/// `NAME: HOLDER\n`
fn pair(name: &[u8], holder: &str) -> Vec<u8> {
    cat(&[name, b": ", holder.as_bytes(), b"\n"])
}

// ---------------------------------------------------------------- framing

/// Framing: leading and trailing Unicode whitespace (U+00A0, U+3000,
/// U+0085, TAB, VT, FF, ...) is trimmed from the line when it is valid UTF-8.
fn trims_unicode_whitespace_around_the_line(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    for (line, name) in [
        ("\u{a0}g foo\u{a0}", "foo"),
        ("\u{3000}i foo\u{3000}", "foo"),
        ("\u{85}\t r foo \u{85}\u{2028}", "foo"),
        ("\x0b\x0cg foo\x0b", "foo"),
        (
            "\u{2000}\u{200a}\u{1680}\u{205f}i foo\u{202f}\u{2029}",
            "foo",
        ),
    ] {
        let verb = &line.trim()[..1];
        let want = match verb {
            "g" => format!("1 Lock Get Success: {name}\n"),
            "i" => format!("1 Lock Is Locked: {name}\n"),
            _ => format!("1 Lock Release Success: {name}\n"),
        };
        assert_eq!(a.cmd(line), want, "{line:?}");
    }
}

/// Framing: runs of Unicode whitespace inside the argument collapse to one
/// ASCII space (`g  a <TAB> b` locks `a b`), U+00A0, U+3000 and U+0085
/// included.
fn collapses_unicode_whitespace_inside_the_argument(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    assert_eq!(a.cmd("g  a \t b"), "1 Lock Get Success: a b\n");
    assert_eq!(b.cmd("i a b"), "1 Lock Is Locked: a b\n");
    for sep in ["\u{a0}", "\u{3000}", "\u{85}", "\u{3000}\u{a0} \u{85}\t"] {
        let line = format!("g x{sep}y");
        assert_eq!(a.cmd(&line), "1 Lock Get Success: x y\n", "{line:?}");
        assert_eq!(a.cmd("r x y"), "1 Lock Release Success: x y\n");
    }
    assert_bytes(a.multi(b"d"), pair(b"a b", &a.name()));
}

/// Framing: whitespace counts only in valid UTF-8; the same bytes as
/// U+00A0, U+0085 or a cut-off U+3000, invalid on their own, are kept in
/// the name exactly.
fn invalid_utf8_bytes_are_never_whitespace(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    for name in [
        &b"a\xa0b"[..],
        b"a\x85b",
        b"a\xe3\x80b",
        b"\xa0x",
        b"y\xa0",
        b"\xc2 z",
    ] {
        let got = a.cmd_bytes(&cat(&[b"g ", name]));
        assert_bytes(got, cat(&[b"1 Lock Get Success: ", name, b"\n"]));
        let got = b.cmd_bytes(&cat(&[b"i ", name]));
        assert_bytes(got, cat(&[b"1 Lock Is Locked: ", name, b"\n"]));
    }
    // None of them was normalised into a space-separated name.
    assert_eq!(b.cmd("i a b"), "0 Lock Not Locked: a b\n");
    assert_eq!(b.cmd("i x"), "0 Lock Not Locked: x\n");
    // A valid U+00A0 right after an invalid lead byte is still whitespace.
    assert_bytes(
        a.cmd_bytes(b"g q\xc2\xc2\xa0w"),
        b"1 Lock Get Success: q\xc2 w\n",
    );
    // Invalid bytes before the verb are part of the verb: unknown, silent.
    assert_bytes(a.multi(b"\xa0g foo"), b"");
    assert_eq!(a.stat("invalid_commands"), 1);
}

/// Framing: only an ASCII space (0x20) ends the verb; `g<TAB>foo`,
/// `g<U+00A0>foo`, and the case-changed `G foo` are unknown verbs: silent.
fn only_ascii_space_ends_the_verb(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    for line in [
        &b"g\tfoo"[..],
        "g\u{a0}foo".as_bytes(),
        "g\u{3000}foo".as_bytes(),
        b"g\x0bfoo",
        b"G foo",
    ] {
        assert_bytes(a.multi(line), b"");
    }
    assert_eq!(a.stat("invalid_commands"), 5);
    assert_eq!(a.stat("command_g"), 0);
    assert_eq!(a.cmd("i foo"), "0 Lock Not Locked: foo\n");
}

/// Framing: a line empty after trimming (`\r\n`, spaces, U+3000, ...) gets
/// no reply and is counted nowhere in `q`.
fn blank_lines_get_no_reply_and_are_not_counted(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    a.send("\n\r\n \t \n\u{3000}\n\u{a0}\u{85}\r\n\x0b\x0c\nq\n".as_bytes());
    assert_eq!(a.read_stats_block(), expected_q(&[("connections", 1)]));
    assert_eq!(a.cmd("me"), format!("1 {0} {0}\n", a.name()));
}

/// Framing: a last line with no `\n` before EOF is executed and answered;
/// then the server closes the connection (and orphans its locks).
fn last_line_without_newline_is_answered_then_closed(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    a.send(b"g foo\ni foo");
    a.shutdown_write();
    assert_eq!(
        String::from_utf8(a.read_to_end()).expect("utf-8"),
        "1 Lock Get Success: foo\n1 Lock Is Locked: foo\n"
    );
    // race: see orphan reaping
    server.wait_for_stat("orphans", 1);
    // The same on a Unix socket.
    let mut u = server.connect_unix();
    u.send(b"sg bar");
    u.shutdown_write();
    assert_bytes(u.read_to_end(), b"1 Shared Lock Get Success: bar\n");
    // race: see orphan reaping
    server.wait_for_stat("shared_orphans", 1);
}

/// Framing: `\r\n` line ends (the PHP client) work; the `\r` is trimmed and
/// is not part of the name.
fn crlf_line_ends(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    a.send(b"g foo\r\ni foo\r\ndump\r\nr foo\r\n");
    assert_eq!(
        String::from_utf8(a.lines(4)).expect("utf-8"),
        format!(
            "1 Lock Get Success: foo\n1 Lock Is Locked: foo\nmap[foo:{}]\n\
             1 Lock Release Success: foo\n",
            a.name()
        )
    );
}

/// Framing: Go `glockc` sends a leading space, `" g foo\n"`.
fn glockc_leading_space(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    assert_eq!(a.cmd(" g foo"), "1 Lock Get Success: foo\n");
    assert_eq!(a.cmd(" i foo"), "1 Lock Is Locked: foo\n");
    assert_eq!(a.cmd(" r foo"), "1 Lock Release Success: foo\n");
    assert_eq!(a.cmd(" sg foo"), "1 Shared Lock Get Success: foo\n");
}

/// Framing: pipelining. Many commands in one write (blank lines, unknown
/// verbs and multi-line replies among them) get every reply, in order,
/// one per command; nothing buffered is lost.
fn pipelined_commands_all_answered_in_order(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let me = a.name();
    let mut batch = Vec::new();
    let mut want = Vec::new();
    for i in 0..50 {
        batch.extend_from_slice(format!("g k{i}\n\nxx\nsg s{i}\ni k{i}\nd k{i}\n").as_bytes());
        want.extend_from_slice(
            format!(
                "1 Lock Get Success: k{i}\n1 Shared Lock Get Success: s{i}\n\
                 1 Lock Is Locked: k{i}\nk{i}: {me}\n"
            )
            .as_bytes(),
        );
    }
    for i in 0..50 {
        batch.extend_from_slice(format!("r k{i}\nsr s{i}\n").as_bytes());
        want.extend_from_slice(
            format!("1 Lock Release Success: k{i}\n1 Shared Lock Release Success: s{i}\n")
                .as_bytes(),
        );
    }
    a.send(&batch);
    assert_bytes(a.multi(b"dump"), cat(&[&want, b"map[]\n"]));
    assert_eq!(a.stat("invalid_commands"), 50);
}

/// Framing: each reply block goes out in one write: a client that reads a
/// `q`, `d`, `sd` or `who` reply with a single `recv` gets all of it. (The
/// recv returns as soon as the first bytes arrive, so a split write would
/// show as a short read.)
fn each_reply_block_is_one_write(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    let mut u = server.connect_unix();
    for i in 0..20 {
        a.cmd(&format!("g lock{i}"));
        a.cmd(&format!("sg shared{i}"));
        b.cmd(&format!("sg shared{i}"));
    }
    a.cmd("iam alpha");
    b.cmd("iam beta");
    for conn in [&mut b, &mut u] {
        for (command, lines) in [("q", 19), ("d", 20), ("sd", 40), ("who", 2)] {
            conn.send(format!("{command}\n").as_bytes());
            let got = conn.recv_once();
            assert_eq!(
                got.iter().filter(|&&c| c == b'\n').count(),
                lines,
                "{command}: {}",
                got.escape_ascii()
            );
            assert!(got.ends_with(b"\n"));
        }
    }
    let q = b.q();
    assert!(q.ends_with("shared_orphans: 0\n"), "{q}");
}

// ---------------------------------------------------------------- names

/// Names are bytes: NUL, 0xFF and other invalid UTF-8 are kept exactly;
/// inner whitespace is normalised to single spaces.
fn names_keep_nul_0xff_and_inner_spaces(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    let names: [&[u8]; 4] = [b"a\0b", b"\xff", b"\0", b"x y z"];
    for name in names {
        assert_bytes(
            a.cmd_bytes(&cat(&[b"g ", name])),
            cat(&[b"1 Lock Get Success: ", name, b"\n"]),
        );
        assert_bytes(
            b.cmd_bytes(&cat(&[b"g ", name])),
            cat(&[b"0 Lock Get Failure: ", name, b"\n"]),
        );
        assert_bytes(
            b.cmd_bytes(&cat(&[b"i ", name])),
            cat(&[b"1 Lock Is Locked: ", name, b"\n"]),
        );
        assert_bytes(b.multi(&cat(&[b"d ", name])), pair(name, &a.name()));
    }
    assert_bytes(b.cmd_bytes(b"i x  \t y   z"), b"1 Lock Is Locked: x y z\n");
    // The NUL name is not the empty name, nor `a`.
    assert_eq!(b.cmd("i a"), "0 Lock Not Locked: a\n");
    assert_eq!(b.cmd("i"), "0 Lock Not Locked: \n");
    let me = a.name();
    let me = me.as_bytes();
    assert_bytes(
        b.multi(b"dump"),
        cat(&[
            b"map[\0:", me, b" a\0b:", me, b" x y z:", me, b" \xff:", me, b"]\n",
        ]),
    );
    for name in names {
        assert_bytes(
            a.cmd_bytes(&cat(&[b"r ", name])),
            cat(&[b"1 Lock Release Success: ", name, b"\n"]),
        );
    }
    assert_eq!(a.stat("locks"), 0);
}

/// Names: `g` and `g ` both name the empty lock `""`; it is a lock like
/// any other.
fn empty_name_is_a_lock(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    assert_eq!(a.cmd("g"), "1 Lock Get Success: \n");
    assert_eq!(a.cmd("g "), "1 Lock Get Success: \n");
    assert_eq!(b.cmd("g \t "), "0 Lock Get Failure: \n");
    assert_eq!(b.cmd("i"), "1 Lock Is Locked: \n");
    assert_eq!(b.cmd("r"), "0 Lock Release Failure: \n");
    assert_eq!(b.stat("locks"), 1);
    assert_eq!(a.cmd("r "), "1 Lock Release Success: \n");
    assert_eq!(b.cmd("i "), "0 Lock Not Locked: \n");
    assert_eq!(b.cmd("sg"), "1 Shared Lock Get Success: \n");
    assert_eq!(a.cmd("sg "), "2 Shared Lock Get Success: \n");
    assert_eq!(a.cmd("si"), "2 Shared Lock Is Locked: \n");
}

// ---------------------------------------------------------------- exclusive

/// Exclusive locks, `g`/`i`: one holder; `i` answers anyone.
fn get_conflicts_and_is_locked(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    assert_eq!(b.cmd("i foo"), "0 Lock Not Locked: foo\n");
    assert_eq!(a.cmd("g foo"), "1 Lock Get Success: foo\n");
    assert_eq!(b.cmd("g foo"), "0 Lock Get Failure: foo\n");
    assert_eq!(a.cmd("i foo"), "1 Lock Is Locked: foo\n");
    assert_eq!(b.cmd("i foo"), "1 Lock Is Locked: foo\n");
    assert_eq!(b.cmd("g bar"), "1 Lock Get Success: bar\n");
    assert_eq!(a.stat("locks"), 2);
}

/// Exclusive `g`: getting a lock this connection already holds succeeds
/// again and is not counted twice (one `r` frees it).
fn re_get_succeeds_and_is_not_counted_twice(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    assert_eq!(a.cmd("g foo"), "1 Lock Get Success: foo\n");
    assert_eq!(a.cmd("g foo"), "1 Lock Get Success: foo\n");
    assert_eq!(a.stat("locks"), 1);
    assert_eq!(a.cmd("r foo"), "1 Lock Release Success: foo\n");
    assert_eq!(b.cmd("i foo"), "0 Lock Not Locked: foo\n");
    assert_eq!(a.cmd("r foo"), "0 Lock Release Failure: foo\n");
    assert_eq!(a.stat("locks"), 0);
}

/// Exclusive `r`: succeeds only for the holder; a release by anyone else
/// (or of a free lock) fails and changes nothing.
fn release_only_by_the_holder(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    assert_eq!(b.cmd("r foo"), "0 Lock Release Failure: foo\n");
    assert_eq!(a.cmd("g foo"), "1 Lock Get Success: foo\n");
    assert_eq!(b.cmd("r foo"), "0 Lock Release Failure: foo\n");
    assert_eq!(b.cmd("i foo"), "1 Lock Is Locked: foo\n");
    assert_eq!(a.cmd("r foo"), "1 Lock Release Success: foo\n");
    assert_eq!(b.cmd("g foo"), "1 Lock Get Success: foo\n");
}

/// `d` / `d NAME`: one `NAME: HOLDER` line per held lock; HOLDER is the
/// registered name if any, else the default name; the argument is
/// normalised; no line when nothing matches.
fn d_lists_holders_by_registered_or_default_name(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    assert_bytes(a.multi(b"d"), b"");
    a.cmd("g x");
    a.cmd("g x y");
    b.cmd("g z");
    b.cmd("sg shared");
    let (an, bn) = (a.name(), b.name());
    assert_eq!(
        a.multi_sorted(b"d"),
        sorted(&[&pair(b"x", &an), &pair(b"x y", &an), &pair(b"z", &bn)])
    );
    assert_eq!(a.cmd("iam alice smith"), "1 ok\n");
    assert_eq!(
        b.multi_sorted(b"d"),
        sorted(&[
            &pair(b"x", "alice smith"),
            &pair(b"x y", "alice smith"),
            &pair(b"z", &bn)
        ])
    );
    assert_bytes(b.multi(b"d x"), pair(b"x", "alice smith"));
    assert_bytes(b.multi(b"d  x \t y "), pair(b"x y", "alice smith"));
    assert_bytes(b.multi(b"d z"), pair(b"z", &bn));
    assert_bytes(b.multi(b"d nothing"), b"");
    assert_bytes(b.multi(b"d shared"), b"");
    // An empty `iam` goes back to the default name.
    a.cmd("iam");
    assert_bytes(b.multi(b"d x"), pair(b"x", &an));
}

/// `d`: the `""` lock shows only in the full listing, as `: HOLDER`
/// (`d` with an empty argument is the full listing).
fn d_shows_the_empty_name_only_in_the_full_listing(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    a.cmd("g");
    a.cmd("g foo");
    let an = a.name();
    let full = sorted(&[&pair(b"", &an), &pair(b"foo", &an)]);
    assert_eq!(a.multi_sorted(b"d"), full);
    assert_eq!(a.multi_sorted(b"d "), full);
    assert_eq!(a.multi_sorted(b"d \t\xe3\x80\x80"), full);
    assert_bytes(a.multi(b"d foo"), pair(b"foo", &an));
    a.cmd("iam me");
    assert_eq!(a.multi_sorted(b"d"), sorted(&[b": me\n", b"foo: me\n"]));
}

/// `dump` / `dump ARG`: glockd's Go-map text of the exclusive locks with
/// default names (even when registered), keys sorted bytewise, `map[]`
/// when empty; an argument other than `shared` is ignored.
fn dump_is_a_go_map_sorted_bytewise_with_default_names(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    assert_eq!(a.cmd("dump"), "map[]\n");
    a.cmd("iam alice");
    b.cmd("iam bob");
    for name in [&b"b"[..], b"\xff", b"a b"] {
        a.cmd_bytes(&cat(&[b"g ", name]));
    }
    for name in [&b"a"[..], b"B", b"", b"~"] {
        b.cmd_bytes(&cat(&[b"g ", name]));
    }
    a.cmd("sg shared-not-shown");
    let (an, bn) = (a.name(), b.name());
    let want = cat(&[
        format!("map[:{bn} B:{bn} a:{bn} a b:{an} b:{an} ~:{bn} ").as_bytes(),
        b"\xff:",
        an.as_bytes(),
        b"]\n",
    ]);
    assert_bytes(a.multi(b"dump"), &want);
    assert_bytes(b.multi(b"dump foo"), &want);
    assert_bytes(b.multi(b"dump shared foo"), &want);
    assert_bytes(b.multi(b"dump Shared"), &want);
}

/// `dump shared`: `map[NAME:[HOLDER1 HOLDER2]]` with default names, keys
/// sorted bytewise, holders in the order they got it; `map[]` when empty;
/// the argument is normalised.
fn dump_shared_is_a_go_map_of_holder_lists(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    let mut c = server.connect();
    assert_eq!(a.cmd("dump shared"), "map[]\n");
    a.cmd("g exclusive-not-shown");
    assert_eq!(a.cmd("dump shared"), "map[]\n");
    c.cmd("iam carol");
    c.cmd("sg n");
    a.cmd("sg n");
    b.cmd("sg n");
    b.cmd("sg m");
    a.cmd("sg m");
    a.cmd("sg n"); // again: no second place, no move to the back
    let (an, bn, cn) = (a.name(), b.name(), c.name());
    let want = format!("map[m:[{bn} {an}] n:[{cn} {an} {bn}]]\n");
    assert_eq!(a.cmd("dump shared"), want);
    assert_eq!(b.cmd("dump  \u{3000}shared\t"), want);
    a.cmd("sr n");
    assert_eq!(
        a.cmd("dump shared"),
        format!("map[m:[{bn} {an}] n:[{cn} {bn}]]\n")
    );
}

// ---------------------------------------------------------------- shared

/// `sg`/`sr`/`si`: `sg` answers the holder count including this one (not
/// counting a re-get twice); `si` answers anyone; `sr` only for a holder.
fn shared_locks_are_counted(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    let mut c = server.connect();
    assert_eq!(c.cmd("si foo"), "0 Shared Lock Not Locked: foo\n");
    assert_eq!(a.cmd("sg foo"), "1 Shared Lock Get Success: foo\n");
    assert_eq!(b.cmd("sg foo"), "2 Shared Lock Get Success: foo\n");
    assert_eq!(a.cmd("sg foo"), "2 Shared Lock Get Success: foo\n");
    assert_eq!(c.cmd("si foo"), "2 Shared Lock Is Locked: foo\n");
    assert_eq!(c.stat("shared_locks"), 1);
    assert_eq!(c.cmd("sr foo"), "0 Shared Lock Release Failure: foo\n");
    assert_eq!(a.cmd("sr foo"), "1 Shared Lock Release Success: foo\n");
    assert_eq!(a.cmd("sr foo"), "0 Shared Lock Release Failure: foo\n");
    assert_eq!(c.cmd("si foo"), "1 Shared Lock Is Locked: foo\n");
    assert_eq!(c.cmd("sg foo"), "2 Shared Lock Get Success: foo\n");
    assert_eq!(b.cmd("sr foo"), "1 Shared Lock Release Success: foo\n");
    assert_eq!(c.cmd("sr foo"), "1 Shared Lock Release Success: foo\n");
    assert_eq!(a.cmd("si foo"), "0 Shared Lock Not Locked: foo\n");
    assert_eq!(a.stat("shared_locks"), 0);
}

/// `sd` / `sd NAME`: one `NAME: HOLDER` line per holder, holders of a lock
/// in the order they got it (registered name if any), lock order
/// unspecified; only NAME when given (normalised); no line if none.
fn sd_lists_holders_in_order(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    let mut c = server.connect();
    assert_bytes(a.multi(b"sd"), b"");
    b.cmd("sg foo");
    a.cmd("sg foo");
    c.cmd("sg foo");
    c.cmd("sg bar baz");
    a.cmd("g excl");
    let (an, bn, cn) = (a.name(), b.name(), c.name());
    let foos = format!("foo: {bn}\nfoo: {an}\nfoo: {cn}\n");
    assert_eq!(String::from_utf8(a.multi(b"sd foo")).expect("utf-8"), foos);
    let full = String::from_utf8(a.multi(b"sd")).expect("utf-8");
    let bar = format!("bar baz: {cn}\n");
    assert!(
        full == format!("{foos}{bar}") || full == format!("{bar}{foos}"),
        "{full}"
    );
    assert_bytes(a.multi("sd  bar\u{a0}baz ".as_bytes()), bar.as_bytes());
    assert_bytes(a.multi(b"sd excl"), b"");
    a.cmd("iam ann");
    assert_bytes(
        c.multi(b"sd foo"),
        format!("foo: {bn}\nfoo: ann\nfoo: {cn}\n"),
    );
}

/// Shared locks are a separate namespace: `g foo` and `sg foo` never
/// conflict, and `r`/`i` never see the shared lock (nor `sr`/`si` the
/// exclusive one).
fn shared_and_exclusive_are_separate_namespaces(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    assert_eq!(a.cmd("g foo"), "1 Lock Get Success: foo\n");
    assert_eq!(b.cmd("sg foo"), "1 Shared Lock Get Success: foo\n");
    assert_eq!(a.cmd("sg foo"), "2 Shared Lock Get Success: foo\n");
    assert_eq!(b.cmd("r foo"), "0 Lock Release Failure: foo\n");
    assert_eq!(a.cmd("r foo"), "1 Lock Release Success: foo\n");
    assert_eq!(b.cmd("i foo"), "0 Lock Not Locked: foo\n");
    assert_eq!(b.cmd("si foo"), "2 Shared Lock Is Locked: foo\n");
    assert_eq!(a.cmd("g bar"), "1 Lock Get Success: bar\n");
    assert_eq!(a.cmd("sr bar"), "0 Shared Lock Release Failure: bar\n");
    assert_eq!(b.cmd("si bar"), "0 Shared Lock Not Locked: bar\n");
    assert_eq!(b.stat("locks"), 1);
    assert_eq!(b.stat("shared_locks"), 1);
}

// ---------------------------------------------------------------- registry

/// `me`: `1 DEFAULT NAME`, NAME the registered name or DEFAULT again.
fn me_shows_default_then_registered_name(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let an = a.name();
    assert_eq!(a.cmd("me"), format!("1 {an} {an}\n"));
    assert_eq!(a.cmd("iam worker-1"), "1 ok\n");
    assert_eq!(a.cmd("me"), format!("1 {an} worker-1\n"));
}

/// `iam NAME`: `1 ok`; the name is normalised and may hold spaces; `iam`
/// with no name removes the registration.
fn iam_normalises_allows_spaces_and_empty_removes(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let an = a.name();
    assert_eq!(a.cmd("iam  \u{3000}web  \t frontend\u{a0}"), "1 ok\n");
    assert_eq!(a.cmd("me"), format!("1 {an} web frontend\n"));
    assert_bytes(a.cmd_bytes(b"iam n\0\xff"), b"1 ok\n");
    assert_bytes(
        a.cmd_bytes(b"me"),
        cat(&[b"1 ", an.as_bytes(), b" n\0\xff\n"]),
    );
    assert_eq!(a.cmd("iam"), "1 ok\n");
    assert_eq!(a.cmd("me"), format!("1 {an} {an}\n"));
    assert_bytes(a.multi(b"who"), b"");
    a.cmd("iam x");
    assert_eq!(a.cmd("iam \t "), "1 ok\n");
    assert_eq!(a.cmd("me"), format!("1 {an} {an}\n"));
}

/// `who` / `who NAME`: `DEFAULT: NAME` per registered connection, oldest
/// registration first (a re-`iam` moves a connection last); the filter is
/// exact (after normalisation); several connections may share a name.
fn who_lists_oldest_registration_first(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    let mut c = server.connect();
    let _unregistered = server.connect();
    let (an, bn, cn) = (a.name(), b.name(), c.name());
    assert_bytes(a.multi(b"who"), b"");
    a.cmd("iam x");
    b.cmd("iam y z");
    c.cmd("iam x");
    assert_eq!(
        String::from_utf8(a.multi(b"who")).expect("utf-8"),
        format!("{an}: x\n{bn}: y z\n{cn}: x\n")
    );
    a.cmd("iam x");
    assert_eq!(
        String::from_utf8(a.multi(b"who")).expect("utf-8"),
        format!("{bn}: y z\n{cn}: x\n{an}: x\n")
    );
    assert_eq!(
        String::from_utf8(a.multi(b"who x")).expect("utf-8"),
        format!("{cn}: x\n{an}: x\n")
    );
    assert_eq!(
        String::from_utf8(a.multi(b"who  y\t z ")).expect("utf-8"),
        format!("{bn}: y z\n")
    );
    assert_bytes(a.multi(b"who y"), b"");
    assert_bytes(a.multi(b"who X"), b"");
    c.cmd("iam");
    assert_eq!(
        String::from_utf8(a.multi(b"who")).expect("utf-8"),
        format!("{bn}: y z\n{an}: x\n")
    );
}

// ---------------------------------------------------------------- gates

/// Sends every gated verb and `me`, returning the replies before the
/// sentinel (which asserts nothing else came).
fn gated_replies(conn: &mut Conn) -> Vec<Vec<u8>> {
    [
        &b"d"[..],
        b"d foo",
        b"dump",
        b"dump shared",
        b"dump foo",
        b"sd",
        b"sd foo",
        b"iam someone",
        b"who",
        b"who someone",
    ]
    .iter()
    .map(|line| conn.multi(line))
    .collect()
}

/// `0 disabled` with dump off: `d`, `dump`, `dump shared`, `sd`, and `who`
/// (which needs both); `iam` and `me` still work; locking is unaffected.
fn dump_off_disables_d_dump_sd_who(kind: Kind) {
    let server = kind.with_config(|c| c.dump = false);
    let mut a = server.connect();
    a.cmd("g foo");
    a.cmd("sg foo");
    let d: &[u8] = b"0 disabled\n";
    let ok: &[u8] = b"1 ok\n";
    assert_eq!(
        gated_replies(&mut a),
        [d, d, d, d, d, d, d, ok, d, d].map(<[u8]>::to_vec)
    );
    assert_eq!(a.cmd("me"), format!("1 {} someone\n", a.name()));
}

/// `0 disabled` with the registry off: `iam` and `who`; `me` still works
/// (glockd hung there); dump verbs are unaffected.
fn registry_off_disables_iam_who_not_me(kind: Kind) {
    let server = kind.with_config(|c| c.registry = false);
    let mut a = server.connect();
    a.cmd("g foo");
    let an = a.name();
    let d: &[u8] = b"0 disabled\n";
    let held = pair(b"foo", &an);
    let map = format!("map[foo:{an}]\n").into_bytes();
    assert_eq!(
        gated_replies(&mut a),
        vec![
            held.clone(),
            held,
            map.clone(),
            b"map[]\n".to_vec(),
            map,
            vec![],
            vec![],
            d.to_vec(),
            d.to_vec(),
            d.to_vec(),
        ]
    );
    assert_eq!(a.cmd("me"), format!("1 {an} {an}\n"));
}

/// `0 disabled` with both off: every gated verb; `me` still works.
fn dump_and_registry_off_disable_every_gated_verb(kind: Kind) {
    let server = kind.with_config(|c| {
        c.dump = false;
        c.registry = false;
    });
    let mut a = server.connect();
    let d = b"0 disabled\n".to_vec();
    assert_eq!(gated_replies(&mut a), vec![d; 10]);
    assert_eq!(a.cmd("me"), format!("1 {0} {0}\n", a.name()));
    assert_eq!(a.cmd("g foo"), "1 Lock Get Success: foo\n");
}

// ---------------------------------------------------------------- q

/// `q`: exactly the 19 classic keys, sorted bytewise, from the first use
/// (the registry keys included before any `iam`/`who`).
fn q_has_exactly_the_19_keys_sorted(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    a.send(b"q\n");
    assert_bytes(a.recv_once(), expected_q(&[("connections", 1)]));
}

/// `q`: `command_X` counts every recognised X, including those answered
/// `0 disabled`; a `q` reply does not count that `q` itself.
fn q_counts_commands_including_disabled_ones_but_not_itself(kind: Kind) {
    let server = kind.with_config(|c| {
        c.dump = false;
        c.registry = false;
    });
    let mut a = server.connect();
    a.send(
        b"g a\ng a\nr a\ni a\nd\nd a\ndump\ndump shared\nsg a\nsr a\nsi a\nsd\n\
          me\niam x\nwho\nwho x\n",
    );
    a.lines(16);
    assert_eq!(
        a.q(),
        expected_q(&[
            ("command_d", 2),
            ("command_dump", 2),
            ("command_g", 2),
            ("command_i", 1),
            ("command_iam", 1),
            ("command_me", 1),
            ("command_r", 1),
            ("command_sd", 1),
            ("command_sg", 1),
            ("command_si", 1),
            ("command_sr", 1),
            ("command_who", 2),
            ("connections", 1),
        ])
    );
    assert_eq!(a.stat("command_q"), 1);
    assert_eq!(a.stat("command_q"), 2);
}

/// `q`: `connections` is live connections over all transports; `locks` and
/// `shared_locks` count names held now (not holders); `orphans` and
/// `shared_orphans` count locks released by a disconnect (not by `r`);
/// `invalid_commands` counts unknown verbs.
fn q_gauges_and_counters(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    let mut u = server.connect_unix();
    a.cmd("g x");
    a.cmd("g y");
    b.cmd("g z");
    b.cmd("r z");
    u.cmd("sg s");
    a.cmd("sg s");
    b.cmd("sg s");
    b.cmd("sg t");
    // Silent, so each is followed by the sentinel to know it was served.
    assert_bytes(b.multi(b"xx"), b"");
    assert_bytes(b.multi(b"yy zz"), b"");
    assert_eq!(
        a.q(),
        expected_q(&[
            ("command_g", 3),
            ("command_i", 2),
            ("command_r", 1),
            ("command_sg", 4),
            ("connections", 3),
            ("invalid_commands", 2),
            ("locks", 2),
            ("shared_locks", 2),
        ])
    );
    drop(b);
    drop(u);
    // Reaped before a's next command is served: no waiting. (On a node a
    // closing connection's own thread deletes its keys in etcd, which under
    // load takes longer than the liveness module waits for such threads
    // (50 ms, FINISH_WAIT): there the count is polled, a known gap.)
    if kind.is_cluster() {
        a.wait_for_stat("shared_orphans", 3);
    }
    assert_eq!(a.stat("shared_orphans"), 3);
    assert_eq!(server.live_connections(), 1);
    assert_eq!(
        without_key(&a.q(), "command_q"),
        without_key(
            &expected_q(&[
                ("command_g", 3),
                ("command_i", 2),
                ("command_r", 1),
                ("command_sg", 4),
                ("connections", 1),
                ("invalid_commands", 2),
                ("locks", 2),
                ("shared_locks", 1),
                ("shared_orphans", 3),
            ]),
            "command_q"
        )
    );
}

/// Unknown verbs get no reply at all and count in `invalid_commands`.
fn unknown_verbs_are_silent_and_counted(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    for line in [
        &b"xx"[..],
        b"get foo",
        b"Q",
        b"gg",
        b"\xff",
        b"g\0foo",
        b"\0",
        b"dumpshared",
        b"quit",
    ] {
        assert_bytes(a.multi(line), b"");
    }
    assert_eq!(a.stat("invalid_commands"), 9);
    assert_eq!(a.stat("locks"), 0);
}

// ---------------------------------------------------------------- identity

/// Connection identity over TCP: `IP:PORT` of the peer, as the client sees
/// its own local address; `d` and `dump` use it too.
fn tcp_identity_is_the_peer_address(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let local = a.tcp_stream().local_addr().expect("local addr").to_string();
    assert!(local.starts_with("127.0.0.1:"), "{local}");
    assert_eq!(a.cmd("me"), format!("1 {local} {local}\n"));
    a.cmd("g foo");
    assert_eq!(a.cmd("dump"), format!("map[foo:{local}]\n"));
}

/// Connection identity: an IPv4 peer of a dual-stack listener (`[::]:0`) is
/// shown as `127.0.0.1:PORT`, never `[::ffff:127.0.0.1]:PORT`.
#[test]
fn ipv4_peer_of_dual_stack_listener_shown_as_ipv4() {
    let bind_v6 = std::net::TcpListener::bind("[::]:0");
    if bind_v6.is_err() {
        eprintln!("skipped: no IPv6 here");
        return;
    }
    drop(bind_v6);
    let server = TestServer::with_config(|c| c.listen = vec!["[::]:0".into()]);
    assert!(server.addr.is_ipv6());
    let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], server.addr.port()));
    let Ok(stream) = std::net::TcpStream::connect(v4) else {
        eprintln!("skipped: the [::] listener is IPv6-only here");
        return;
    };
    drop(stream);
    let mut a = Conn::tcp(v4);
    let local = a.tcp_stream().local_addr().expect("local addr").to_string();
    assert!(local.starts_with("127.0.0.1:"), "{local}");
    assert_eq!(a.cmd("me"), format!("1 {local} {local}\n"));
    a.cmd("g foo");
    assert_eq!(a.cmd("dump"), format!("map[foo:{local}]\n"));
}

/// Connection identity: an IPv6 peer is `[addr]:PORT`.
#[test]
fn ipv6_peer_shown_bracketed() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    let server = TestServer::with_config(|c| c.listen = vec!["[::1]:0".into()]);
    let mut a = server.connect();
    let local = a.tcp_stream().local_addr().expect("local addr");
    assert!(local.is_ipv6());
    let want = format!("[::1]:{}", local.port());
    assert_eq!(local.to_string(), want);
    assert_eq!(a.cmd("me"), format!("1 {want} {want}\n"));
    a.cmd("sg foo");
    assert_eq!(a.cmd("dump shared"), format!("map[foo:[{want}]]\n"));
}

/// Connection identity over a Unix socket: `unix:N`, N counting from 1 per
/// server run (never reused; TCP connections do not count).
fn unix_peers_are_numbered_from_1(kind: Kind) {
    let server = kind.start();
    let mut u1 = server.connect_unix();
    let mut t = server.connect();
    let mut u2 = server.connect_unix();
    assert_eq!(u1.cmd("me"), "1 unix:1 unix:1\n");
    assert_eq!(u2.cmd("me"), "1 unix:2 unix:2\n");
    assert_eq!(t.cmd("me"), format!("1 {0} {0}\n", t.name()));
    u1.cmd("g foo");
    u2.cmd("sg foo");
    assert_eq!(t.cmd("dump"), "map[foo:unix:1]\n");
    assert_eq!(t.cmd("dump shared"), "map[foo:[unix:2]]\n");
    drop(u1);
    server.wait_for_connections(2);
    let mut u3 = server.connect_unix();
    assert_eq!(u3.cmd("me"), "1 unix:3 unix:3\n");
}

// ---------------------------------------------------------------- orphaning

/// Sets up `a` holding exclusive `x`, `y` and shared `s`, registered as
/// `leaver`, with `b` also holding `s`.
fn holder_and_watcher(server: &TestServer) -> (Conn, Conn) {
    let mut a = server.connect();
    let mut b = server.connect();
    a.cmd("g x");
    a.cmd("g y");
    a.cmd("sg s");
    b.cmd("sg s");
    a.cmd("iam leaver");
    assert_bytes(b.multi(b"who"), format!("{}: leaver\n", a.name()));
    (a, b)
}

/// What `b` must see once `a` of [`holder_and_watcher`] is gone: every lock
/// of `a` released, counted as orphans, its registration forgotten.
fn check_orphaned(server: &TestServer, b: &mut Conn) {
    // Reaped before b's next command is served: no waiting. (Polled on a
    // cluster node, as in q_gauges_and_counters: a known gap.)
    if server.backing.is_some() {
        b.wait_for_stat("orphans", 2);
    }
    assert_eq!(b.stat("orphans"), 2);
    assert_eq!(server.live_connections(), 1);
    assert_eq!(b.cmd("i x"), "0 Lock Not Locked: x\n");
    assert_eq!(b.cmd("si s"), "1 Shared Lock Is Locked: s\n");
    assert_bytes(b.multi(b"who"), b"");
    assert_bytes(b.multi(b"who leaver"), b"");
    assert_bytes(b.multi(b"d"), b"");
    assert_eq!(b.cmd("dump shared"), format!("map[s:[{}]]\n", b.name()));
    let q = b.q();
    for line in [
        "connections: 1\n",
        "locks: 0\n",
        "orphans: 2\n",
        "shared_locks: 1\n",
        "shared_orphans: 1\n",
    ] {
        assert!(q.contains(line), "{line:?} not in\n{q}");
    }
    assert_eq!(b.cmd("g y"), "1 Lock Get Success: y\n");
}

/// Orphaning: a connection closed with a FIN releases every exclusive and
/// shared lock it held (`orphans`/`shared_orphans` grow by one per lock)
/// and its registered name is forgotten.
fn fin_orphans_locks_and_forgets_the_name(kind: Kind) {
    let server = kind.start();
    let (a, mut b) = holder_and_watcher(&server);
    drop(a);
    check_orphaned(&server, &mut b);
}

/// Orphaning: the same when the connection is reset (RST, `SO_LINGER` 0),
/// also with unread replies pending.
fn rst_orphans_locks_and_forgets_the_name(kind: Kind) {
    let server = kind.start();
    let (mut a, mut b) = holder_and_watcher(&server);
    a.send(b"i x\ni y\n");
    a.reset();
    check_orphaned(&server, &mut b);
}

/// Orphaning: a burst of 100 closes (more than one batch of the server's
/// hang-up poll) is released in full before the next command of another
/// connection is served.
fn burst_of_closes_is_released_before_the_next_command(kind: Kind) {
    let server = kind.start();
    let mut watcher = server.connect();
    let mut holders: Vec<Conn> = (0..100)
        .map(|i| {
            let mut c = server.connect_unix();
            assert_eq!(
                c.cmd(&format!("g burst{i}")),
                format!("1 Lock Get Success: burst{i}\n")
            );
            c
        })
        .collect();
    assert_eq!(watcher.stat("locks"), 100);
    holders.clear();
    // As in q_gauges_and_counters: polled on a node (a known gap).
    if kind.is_cluster() {
        watcher.wait_for_stat("orphans", 100);
    }
    assert_eq!(watcher.stat("orphans"), 100);
    assert_eq!(watcher.stat("locks"), 0);
}

/// Orphaning: a Unix-socket connection that closes loses its locks too.
fn unix_close_orphans_locks(kind: Kind) {
    let server = kind.start();
    let mut u = server.connect_unix();
    let mut b = server.connect();
    u.cmd("g x");
    u.cmd("sg s");
    u.cmd("iam unixer");
    drop(u);
    // Reaped before b's next command is served: no waiting. (Polled on a
    // cluster node, as in q_gauges_and_counters: a known gap.)
    if kind.is_cluster() {
        b.wait_for_stat("orphans", 1);
        b.wait_for_stat("shared_orphans", 1);
    }
    assert_eq!(b.stat("shared_orphans"), 1);
    assert_eq!(b.stat("orphans"), 1);
    assert_eq!(b.cmd("g x"), "1 Lock Get Success: x\n");
    assert_eq!(b.cmd("si s"), "0 Shared Lock Not Locked: s\n");
    assert_bytes(b.multi(b"who"), b"");
}

/// Orphaning: a `g` or `wg` of a lock whose holder has just closed is
/// granted as the first command after the close. (The server grants a free
/// lock without first looking for hang-ups, and looks when it is not free.)
fn get_of_a_lock_whose_holder_just_closed_is_granted(kind: Kind) {
    let server = kind.start();
    let mut b = server.connect();
    for round in 1..=20 {
        let mut a = server.connect();
        a.cmd("g x");
        a.cmd("g y");
        drop(a);
        // As in q_gauges_and_counters: polled on a node (a known gap).
        if kind.is_cluster() {
            b.wait_for_stat("orphans", 2 * round);
        }
        assert_eq!(b.cmd("g x"), "1 Lock Get Success: x\n", "round {round}");
        // `wg` answers with the grant's fencing token.
        let granted = b.cmd("wg 0 y");
        assert!(
            granted.ends_with(" Lock Get Success: y\n") && !granted.starts_with('0'),
            "round {round}: {granted:?}"
        );
        assert_eq!(b.cmd("r x"), "1 Lock Release Success: x\n");
        assert_eq!(b.cmd("r y"), "1 Lock Release Success: y\n");
    }
}

/// Orphaning: releasing with `r`/`sr` before closing is not an orphan.
fn released_locks_are_not_orphans(kind: Kind) {
    let server = kind.start();
    let mut a = server.connect();
    let mut b = server.connect();
    a.cmd("g x");
    a.cmd("sg s");
    a.cmd("r x");
    a.cmd("sr s");
    a.cmd("g kept");
    drop(a);
    // Reaped before b's next command is served: no waiting. (Polled on a
    // cluster node, as in q_gauges_and_counters: a known gap.)
    if kind.is_cluster() {
        b.wait_for_stat("orphans", 1);
    }
    assert_eq!(b.stat("orphans"), 1);
    assert_eq!(server.live_connections(), 1);
    assert_eq!(
        without_key(&b.q(), "command_q"),
        without_key(
            &expected_q(&[
                ("command_g", 2),
                ("command_r", 1),
                ("command_sg", 1),
                ("command_sr", 1),
                ("connections", 1),
                ("orphans", 1),
            ]),
            "command_q"
        )
    );
}
