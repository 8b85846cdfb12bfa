//! `--http` (issue 13): `/metrics` read by a real Prometheus parser, the
//! `/locks.json` data, `/healthz`, the secret, and read-only answers.

mod common;

use common::{wait_until, Conn, Daemon, TempDir, TestServer, LISTENING};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

/// One HTTP/1.0 request: (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, headers: &[&str]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to --http");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: lockd\r\n");
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("reply");
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let (head, body) = reply.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, body.to_string())
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(addr, "GET", path, &[])
}

fn http_server(adjust: impl FnOnce(&mut lockd::ServerConfig)) -> (TestServer, SocketAddr) {
    let server = TestServer::with_config(|config| {
        config.http = Some("127.0.0.1:0".into());
        adjust(config);
    });
    let addr = server
        .handle
        .as_ref()
        .and_then(|h| h.http_addr())
        .expect("an --http address");
    (server, addr)
}

/// Parses a scrape with the Python `prometheus_client` parser, which
/// rejects malformed lines, and prints one `NAME{LABELS} VALUE` line per
/// sample with labels sorted; also fails on a sample outside a declared
/// family, a repeated series, or non-cumulative buckets. `None` when there
/// is no python3 (the test then says it skipped).
fn parse_with_prometheus_client(scrape: &str) -> Option<Vec<String>> {
    const SCRIPT: &str = r##"
import sys
try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    sys.exit("the prometheus_client Python package is missing: pip install prometheus_client (.ci/run installs it)")
text = sys.stdin.read()
declared = set()
for line in text.splitlines():
    if line.startswith("# TYPE "):
        declared.add(line.split()[2])
seen = set()
buckets = {}
for family in text_string_to_metric_families(text):
    for s in family.samples:
        base = s.name
        for suffix in ("_bucket", "_sum", "_count"):
            if family.type == "histogram" and base.endswith(suffix):
                base = base[: -len(suffix)]
        assert base in declared or s.name in declared, "undeclared " + s.name
        labels = ",".join('%s="%s"' % (k, v) for k, v in sorted(s.labels.items()))
        key = "%s{%s}" % (s.name, labels) if labels else s.name
        assert key not in seen, "repeated series " + key
        seen.add(key)
        if s.name.endswith("_bucket"):
            rest = ",".join('%s="%s"' % (k, v) for k, v in sorted(s.labels.items()) if k != "le")
            series = buckets.setdefault(s.name + "{" + rest + "}", [])
            if series:
                assert s.value >= series[-1], "buckets not cumulative: " + key
            series.append(s.value)
        print("%s %s" % (key, repr(float(s.value))))
"##;
    let mut child = match Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: python3 is not installed, so /metrics was not parsed");
            return None;
        }
        Err(e) => panic!("cannot run python3: {e}"),
    };
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(scrape.as_bytes()).expect("write scrape");
    drop(stdin);
    let output = child.wait_with_output().expect("python3");
    assert!(
        output.status.success(),
        "the Prometheus parser rejected /metrics: {}\n{scrape}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(
        String::from_utf8(output.stdout)
            .expect("utf-8")
            .lines()
            .map(String::from)
            .collect(),
    )
}

fn sample(samples: &[String], series: &str) -> f64 {
    let prefix = format!("{series} ");
    samples
        .iter()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no sample {series} in {samples:#?}"))
        .parse()
        .expect("a number")
}

/// Every `q` counter, connections by transport, grants, timeouts and
/// deadlocks, the wait and hold histograms (overall and per selected
/// lock, capped), the token mark, and process metrics, all through a
/// real parser.
#[test]
fn metrics_parse_and_count_what_happened() {
    let state = TempDir::new("http-state");
    let state_dir = state.path.clone();
    let (server, http_addr) = http_server(|config| {
        config.state_dir = Some(state_dir);
        config.metrics_locks = vec!["jobs/*".into()];
    });
    let mut a = server.connect2();
    let mut b = server.connect2();
    let _unix = server.connect_unix();
    assert_eq!(a.cmd("g jobs/a"), "1 Lock Get Success: jobs/a\n");
    assert_eq!(b.cmd("g jobs/b"), "1 Lock Get Success: jobs/b\n");
    // A timeout, then a deadlock: b waits for a's lock, a asks for b's.
    assert_eq!(b.cmd("wg 50 jobs/a"), "0 Lock Get Timeout: jobs/a\n");
    b.send(b"wg 10000 jobs/a\n");
    server.wait_for_stat2("waiting", 1);
    assert_eq!(a.cmd("wg 10000 jobs/b"), "0 Lock Get Deadlock: jobs/b\n");
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(a.cmd("r jobs/a"), "1 Lock Release Success: jobs/a\n");
    assert!(b.line_string().ends_with(" Lock Get Success: jobs/a\n"));
    assert_eq!(a.cmd("sg pool"), "1 Shared Lock Get Success: pool\n");
    // Past the cap of per-lock series: 105 more names that match.
    for i in 0..lockd::metrics::MAX_LOCK_SERIES + 5 {
        let name = format!("jobs/n{i:03}");
        assert_eq!(
            a.cmd(&format!("g {name}")),
            format!("1 Lock Get Success: {name}\n")
        );
        assert_eq!(
            a.cmd(&format!("r {name}")),
            format!("1 Lock Release Success: {name}\n")
        );
    }
    let (status, scrape) = get(http_addr, "/metrics");
    assert_eq!(status, 200, "{scrape}");
    let Some(samples) = parse_with_prometheus_client(&scrape) else {
        return;
    };
    let s = |series: &str| sample(&samples, series);
    assert_eq!(s("lockd_commands_total{verb=\"g\"}"), 107.0);
    assert_eq!(s("lockd_commands_total{verb=\"wg\"}"), 3.0);
    assert_eq!(s("lockd_connections"), 3.0);
    assert_eq!(s("lockd_transport_connections{transport=\"tcp\"}"), 2.0);
    assert_eq!(s("lockd_transport_connections{transport=\"unix\"}"), 1.0);
    assert_eq!(
        s("lockd_transport_connections{transport=\"websocket\"}"),
        0.0
    );
    assert_eq!(s("lockd_deadlocks_total"), 1.0);
    assert_eq!(s("lockd_wait_timeouts_total"), 1.0);
    assert_eq!(s("lockd_grants_total"), 108.0);
    assert_eq!(s("lockd_lock_grants_total{kind=\"exclusive\"}"), 108.0);
    assert_eq!(s("lockd_lock_grants_total{kind=\"shared\"}"), 1.0);
    assert_eq!(s("lockd_locks"), 2.0);
    assert_eq!(s("lockd_waiting"), 0.0);
    assert_eq!(s("lockd_orphans_total"), 0.0);
    let wait = "lockd_wait_seconds_count{kind=\"exclusive\",outcome=";
    assert_eq!(s(&format!("{wait}\"timeout\"}}")), 1.0);
    assert_eq!(s(&format!("{wait}\"granted\"}}")), 1.0);
    assert!(s("lockd_wait_seconds_sum{kind=\"exclusive\",outcome=\"timeout\"}") >= 0.05);
    assert_eq!(
        s("lockd_wait_seconds_bucket{kind=\"exclusive\",le=\"0.01\",outcome=\"timeout\"}"),
        0.0
    );
    assert_eq!(
        s("lockd_wait_seconds_bucket{kind=\"exclusive\",le=\"+Inf\",outcome=\"timeout\"}"),
        1.0
    );
    // jobs/a: held by a, then by b (still held); 105 short holds.
    assert_eq!(s("lockd_hold_seconds_count{kind=\"exclusive\"}"), 106.0);
    let per_lock = "lockd_lock_hold_seconds_count{kind=\"exclusive\",lock=";
    assert_eq!(s(&format!("{per_lock}\"jobs/a\"}}")), 1.0);
    assert_eq!(
        s("lockd_lock_wait_seconds_count{kind=\"exclusive\",lock=\"jobs/a\",outcome=\"timeout\"}"),
        1.0
    );
    // Series are made at the first observation: jobs/a (its timeout) and
    // the first 99 of the jobs/nNNN (their release); jobs/b, still held
    // and never waited for, has none; the last 6 names were dropped.
    let series: Vec<&String> = samples.iter().filter(|l| l.starts_with(per_lock)).collect();
    assert_eq!(series.len(), lockd::metrics::MAX_LOCK_SERIES, "{series:#?}");
    assert_eq!(s("lockd_lock_series_dropped_total"), 6.0);
    // Held now: b holds jobs/a and jobs/b; the gauges see them at once.
    assert!(s("lockd_oldest_hold_seconds{kind=\"exclusive\"}") > 0.0);
    assert!(s("lockd_lock_held_seconds{kind=\"exclusive\",lock=\"jobs/b\"}") > 0.0);
    assert_eq!(
        s("lockd_lock_waiters{kind=\"exclusive\",lock=\"jobs/a\"}"),
        0.0
    );
    assert!(!samples
        .iter()
        .any(|l| l.contains("lock=\"jobs/n000\"") && l.starts_with("lockd_lock_held")));
    assert!(s("lockd_token_high_water_mark") > s("lockd_token_next"));
    assert!(s("process_resident_memory_bytes") > 0.0);
    assert!(s("process_open_fds") > 0.0);
    assert!(s("process_threads") > 1.0);
    assert!(s("process_cpu_seconds_total") >= 0.0);
    assert!(
        !samples.iter().any(|l| l.starts_with("lockd_etcd_")),
        "group commit's figures only in cluster mode"
    );
    drop(server);
}

/// A cluster node's scrape adds group commit's figures: every `g` and `r`
/// is one command sent to etcd, and concurrent clients share requests.
#[test]
fn a_cluster_nodes_metrics_count_group_commits_requests_and_commands() {
    let server = common::etcd::node_server(|config| config.http = Some("127.0.0.1:0".into()));
    let http_addr = server
        .handle
        .as_ref()
        .and_then(|h| h.http_addr())
        .expect("an --http address");
    const CLIENTS: usize = 8;
    const ROUNDS: usize = 10;
    let start = std::sync::Barrier::new(CLIENTS);
    std::thread::scope(|scope| {
        for c in 0..CLIENTS {
            let (server, start) = (&server, &start);
            scope.spawn(move || {
                let mut conn = Conn::tcp(server.addr);
                start.wait();
                for _ in 0..ROUNDS {
                    assert_eq!(
                        conn.cmd(&format!("g own{c}")),
                        format!("1 Lock Get Success: own{c}\n")
                    );
                    assert_eq!(
                        conn.cmd(&format!("r own{c}")),
                        format!("1 Lock Release Success: own{c}\n")
                    );
                }
            });
        }
    });
    let (status, scrape) = get(http_addr, "/metrics");
    assert_eq!(status, 200, "{scrape}");
    let Some(samples) = parse_with_prometheus_client(&scrape) else {
        return;
    };
    let s = |series: &str| sample(&samples, series);
    let commands = s("lockd_etcd_commands_total");
    let requests = s("lockd_etcd_requests_total");
    assert!(
        commands >= (2 * CLIENTS * ROUNDS) as f64,
        "{commands} commands"
    );
    assert!(
        requests >= 1.0 && requests <= commands,
        "{requests} requests"
    );
    let largest = s("lockd_etcd_largest_batch");
    assert!(
        largest >= 1.0 && largest <= commands,
        "largest batch {largest}"
    );
}

/// A lock name with quotes, backslashes, control bytes and invalid UTF-8
/// still makes a scrape the parser accepts, one series per name.
#[test]
fn metrics_label_every_byte_safely() {
    let (server, http_addr) = http_server(|config| {
        config.metrics_locks = vec!["*".into()];
    });
    let mut conn = server.connect();
    let names: [&[u8]; 5] = [
        b"q\"uote",
        b"back\\slash",
        b"\\xFF",
        b"\xff\xfe",
        b"bell\x07",
    ];
    for name in names {
        for verb in [&b"g "[..], b"r "] {
            let line = [verb, name].concat();
            assert!(conn.cmd_bytes(&line).starts_with(b"1 Lock "), "{line:?}");
        }
    }
    let (_, scrape) = get(http_addr, "/metrics");
    let Some(samples) = parse_with_prometheus_client(&scrape) else {
        return;
    };
    let counts = samples
        .iter()
        .filter(|l| {
            l.starts_with("lockd_lock_grants_total")
                || l.contains("lockd_lock_hold_seconds_count{kind=\"exclusive\"")
        })
        .count();
    // One grants series per kind (exclusive, shared, read), one hold
    // series per name.
    assert_eq!(counts, 3 + names.len(), "{samples:#?}");
    assert!(
        samples.iter().any(|l| l.contains("lock=\"q\"uote\"")),
        "{samples:#?}"
    );
}

/// `/locks.json` has `dj`'s fields (registered and default names, token,
/// waiters in order), hold times, and filters and pages; `/healthz`
/// answers; anything but GET and HEAD is refused; `--no-dump` refuses
/// the data as `dj` does.
#[test]
fn locks_json_healthz_and_read_only() {
    let (server, http_addr) = http_server(|_| {});
    assert_eq!(get(http_addr, "/healthz"), (200, "ok\n".into()));
    let mut holder = server.connect2();
    assert_eq!(holder.cmd("iam builder"), "1 ok\n");
    assert_eq!(holder.cmd("g deploy"), "1 Lock Get Success: deploy\n");
    let mut waiters: Vec<Conn> = (0..2).map(|_| server.connect2()).collect();
    for (i, waiter) in waiters.iter_mut().enumerate() {
        waiter.send(b"wg 10000 deploy\n");
        server.wait_for_stat2("waiting", i as u64 + 1);
    }
    let names: Vec<String> = waiters.iter().map(Conn::name).collect();
    assert_eq!(
        holder.cmd("wsg 0 2 pool"),
        "1 Shared Lock Get Success: pool\n"
    );
    let mut reader = server.connect2();
    assert_eq!(reader.cmd("wr 0 docs"), "1 Read Lock Get Success: docs\n");
    let (status, body) = get(http_addr, "/locks.json");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!(
            "\"readers\":{{\"docs\":{{\"holders\":[\"{}\"],\"waiters\":[],\"held_ms\":[",
            reader.name()
        )),
        "{body}"
    );
    let expected = format!(
        "{{\"exclusive\":{{\"deploy\":{{\"holder\":\"{}\",\"name\":\"builder\",\"token\":1,\"waiters\":[\"{}\",\"{}\"],\"held_ms\":",
        holder.name(),
        names[0],
        names[1]
    );
    assert!(body.starts_with(&expected), "{body}\n{expected}");
    assert!(body.contains(&format!("\"pool\":{{\"holders\":[\"{}\"],\"waiters\":[],\"holder_names\":[\"builder\"],\"held_ms\":[", holder.name())), "{body}");
    assert!(body.contains("\"counts\":{\"exclusive\":1,\"shared\":1,\"exclusive_matched\":1,\"shared_matched\":1}"), "{body}");
    let (_, filtered) = get(http_addr, "/locks.json?match=po&limit=10");
    assert!(
        filtered.starts_with("{\"exclusive\":{},\"shared\":{\"pool\""),
        "{filtered}"
    );
    let (_, paged) = get(http_addr, "/locks.json?offset=1");
    assert!(
        paged.starts_with("{\"exclusive\":{},\"shared\":{},\"readers\":{\"docs\""),
        "{paged}"
    );
    for method in ["POST", "PUT", "DELETE"] {
        assert_eq!(
            http(http_addr, method, "/locks.json", &[]).0,
            405,
            "{method}"
        );
    }
    assert_eq!(get(http_addr, "/nowhere").0, 404);
    let (status, page) = get(http_addr, "/");
    assert_eq!(status, 200);
    assert!(page.contains("<script src=\"page.js\""), "{page}");
    assert_eq!(get(http_addr, "/page.js").0, 200);
    assert_eq!(get(http_addr, "/history.json").0, 200);
    drop(server);

    let (_server, http_addr) = http_server(|config| config.dump = false);
    assert_eq!(get(http_addr, "/locks.json").0, 403);
    assert_eq!(get(http_addr, "/metrics").0, 200);
}

/// With `--auth-file`, every path but `/healthz` needs the bearer secret;
/// the secret never reaches the log, whatever is sent.
#[test]
fn the_secret_guards_every_path_but_healthz_and_is_never_logged() {
    let dir = TempDir::new("http-auth");
    let secret = "s3cret-Xyzzy-42";
    let file = dir.path.join("secret");
    std::fs::write(&file, format!("{secret}\n")).expect("secret file");
    let mut daemon = Daemon::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--no-state",
            "--verbose",
            "--auth-file",
            file.to_str().expect("utf-8"),
        ],
        0,
    );
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let line = daemon.wait_line(|l| l.starts_with(LISTENING));
        addrs.push(line[LISTENING.len()..].to_string());
    }
    let http_addr: SocketAddr = addrs
        .iter()
        .find_map(|a| a.strip_prefix("http://"))
        .and_then(|a| a.parse().ok())
        .expect("an http listener in the log");
    let lock_addr: SocketAddr = addrs
        .iter()
        .find_map(|a| a.parse().ok())
        .expect("a lock listener");
    assert_eq!(get(http_addr, "/healthz").0, 200);
    let good = format!("Authorization: Bearer {secret}");
    for path in ["/", "/metrics", "/locks.json", "/history.json", "/page.js"] {
        assert_eq!(get(http_addr, path).0, 401, "{path}");
        let wrong = format!("Authorization: Bearer {secret}x");
        assert_eq!(http(http_addr, "GET", path, &[&wrong]).0, 401, "{path}");
        assert_eq!(
            http(http_addr, "GET", path, &["Authorization: Basic czNjcmV0"]).0,
            401
        );
        assert_eq!(http(http_addr, "GET", path, &[&good]).0, 200, "{path}");
    }
    let lower = format!("authorization: bearer {secret}");
    assert_eq!(http(http_addr, "GET", "/metrics", &[&lower]).0, 200);
    let mut conn = Conn::tcp(lock_addr);
    assert_eq!(conn.cmd(&format!("auth {secret}")), "1 Auth Ok\n");
    assert_eq!(conn.cmd("g x"), "1 Lock Get Success: x\n");
    drop(conn);
    daemon.wait_line(|l| l.contains("closed"));
    daemon.signal(libc::SIGTERM);
    daemon.wait_line(|l| l.contains("stopped"));
    wait_until("lockd to exit", || {
        matches!(daemon.child.try_wait(), Ok(Some(_)))
    });
    for line in &daemon.log {
        assert!(!line.contains(secret), "the secret was logged: {line}");
    }
}
