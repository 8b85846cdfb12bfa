//! The status page in a real browser (issue 13): headless Chromium loads
//! `/` from a live `lockd --http`, runs the page's script against
//! `/locks.json`, and the rendered DOM must show the locks, holders and
//! waiters, with a client named `<script>alert(1)</script>` shown as text.
//! A screenshot is kept at `target/status-page.png`.
//!
//! Skips (saying so) when Chromium is not installed, unless `CI` is set:
//! `.ci/run` installs Debian's `chromium`, so there a missing browser fails.

mod common;

use common::{Conn, Daemon, TempDir, LISTENING};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The first of Debian's and other distributions' names on `PATH`.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Runs the browser to its exit, killing it (by PID) after `limit`.
fn run_browser(mut command: Command, limit: Duration) -> String {
    let mut child: Child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
        out
    });
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium did not finish within {limit:?}");
            }
        }
    }
    reader.join().expect("stdout reader")
}

fn browser(chromium: &Path, profile: &Path, extra: &[&str], url: &str) -> Command {
    let mut command = Command::new(chromium);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--window-size=1200,900",
            // Virtual time runs the page's fetches and timers before the
            // dump, without sleeping in real time.
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url);
    command
}

#[test]
fn the_status_page_shows_locks_holders_and_waiters_and_escapes_names() {
    let Some(chromium) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is missing on CI: .ci/run should have installed it"
        );
        eprintln!("SKIPPED: chromium is not installed (apt-get install chromium), so the status page was not rendered");
        return;
    };
    let mut daemon = Daemon::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--no-state",
        ],
        0,
    );
    let mut lock_addr = None;
    let mut http_addr = None;
    for _ in 0..2 {
        let line = daemon.wait_line(|l| l.starts_with(LISTENING));
        let addr = &line[LISTENING.len()..];
        match addr.strip_prefix("http://") {
            Some(http) => http_addr = http.parse::<SocketAddr>().ok(),
            None => lock_addr = addr.parse::<SocketAddr>().ok(),
        }
    }
    let (lock_addr, http_addr) = (
        lock_addr.expect("a lock listener"),
        http_addr.expect("an http listener"),
    );

    let mut evil = Conn::tcp(lock_addr);
    assert_eq!(evil.cmd("iam <script>alert(1)</script>"), "1 ok\n");
    assert_eq!(evil.cmd("g deploy"), "1 Lock Get Success: deploy\n");
    assert_eq!(
        evil.cmd("g <img src=x onerror=alert(2)>"),
        "1 Lock Get Success: <img src=x onerror=alert(2)>\n"
    );
    let mut builder = Conn::tcp(lock_addr);
    assert_eq!(builder.cmd("iam builder"), "1 ok\n");
    assert_eq!(
        builder.cmd("wsg 0 2 pool"),
        "1 Shared Lock Get Success: pool\n"
    );
    assert_eq!(
        evil.cmd("wsg 0 2 pool"),
        "2 Shared Lock Get Success: pool\n"
    );
    // Two waiters for deploy, in this order, and one for a place in pool.
    let mut waiters: Vec<Conn> = (0..3).map(|_| Conn::tcp(lock_addr)).collect();
    let mut probe = Conn::tcp(lock_addr);
    probe.hello2();
    for (i, (waiter, command)) in waiters
        .iter_mut()
        .zip(["wg 30000 deploy", "wg 30000 deploy", "wsg 30000 2 pool"])
        .enumerate()
    {
        waiter.send(format!("{command}\n").as_bytes());
        probe.wait_for_stat("waiting", i as u64 + 1);
    }
    let names: Vec<String> = waiters.iter().map(Conn::name).collect();

    let profile = TempDir::new("chromium");
    let url = format!("http://{http_addr}/");
    let dom = run_browser(
        browser(&chromium, &profile.path, &["--dump-dom"], &url),
        Duration::from_secs(15),
    );
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/")
        .join("status-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let shot = format!("--screenshot={}", screenshot.display());
    run_browser(
        browser(&chromium, &profile.path, &[&shot], &url),
        Duration::from_secs(15),
    );

    assert!(dom.contains("updated "), "the page never updated: {dom}");
    assert!(!dom.contains("cannot update"), "{dom}");
    // Names are text, never markup: the DOM holds them escaped, and holds
    // no element the names spell.
    assert!(dom.contains("<td class=\"name\">deploy</td>"), "{dom}");
    assert!(
        dom.contains("<td class=\"name\">&lt;img src=x onerror=alert(2)&gt;</td>"),
        "{dom}"
    );
    assert!(
        dom.contains("<span class=\"registered\">&lt;script&gt;alert(1)&lt;/script&gt;</span>"),
        "{dom}"
    );
    assert!(!dom.contains("<script>alert"), "{dom}");
    assert!(!dom.contains("<img"), "{dom}");
    // Holders with both names, waiters in order, semaphore fill.
    let evil_default = format!("({})", evil.name());
    assert!(dom.contains(&evil_default), "{dom}");
    assert!(
        dom.contains("<span class=\"registered\">builder</span>"),
        "{dom}"
    );
    let order = format!(
        "<ol><li><span>{}</span></li><li><span>{}</span></li></ol>",
        names[0], names[1]
    );
    assert!(dom.contains(&order), "waiters out of order: {dom}");
    assert!(
        dom.contains(&format!("<span>{} (limit 2)</span>", names[2])),
        "{dom}"
    );
    assert!(dom.contains("2 / 2"), "{dom}");
    assert!(
        screenshot.is_file(),
        "no screenshot at {}",
        screenshot.display()
    );
    eprintln!("status page screenshot: {}", screenshot.display());
    drop(waiters);
    drop(daemon);
}
