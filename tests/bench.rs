//! The benchmark (`lockctl bench`, issues 6 and 8), run through the
//! binary: a sub-second run of every workload against an in-process server
//! passes its correctness checks and reports every figure; a server that
//! refuses locks fails a check (exit 70). No speed is asserted.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, Output};

const TINY: &[&str] = &[
    "--duration",
    "100ms",
    "--connections",
    "4",
    "--contenders",
    "3",
    "--churners",
    "2",
    "--idle",
    "20",
];

fn lockctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lockctl"))
        .args(args)
        .env_remove("LOCKD_SERVER")
        .output()
        .expect("run lockctl")
}

#[test]
fn every_workload_passes_its_checks_and_reports() {
    let dir = std::env::temp_dir().join(format!("lockd-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let tsv_path = dir.join("bench.tsv");
    let tsv_arg = tsv_path.to_str().expect("utf-8 temp path");
    let mut args = vec![
        "bench",
        "--in-process",
        "--lockd",
        env!("CARGO_BIN_EXE_lockd"),
    ];
    args.extend_from_slice(TINY);
    args.extend_from_slice(&["--tsv", tsv_arg]);
    let out = lockctl(&args);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("FCFS ok"), "{printed}");
    assert!(printed.contains("orphans freed"), "{printed}");
    let tsv = std::fs::read_to_string(&tsv_path).expect("the --tsv file");
    std::fs::remove_dir_all(&dir).expect("remove temp dir");
    // A comment, a header, then a row per workload and target, and the
    // client rows of W1 and W2.
    assert_eq!(tsv.lines().count(), 2 + 12 + 2, "{tsv}");
    let header: Vec<&str> = tsv.lines().nth(1).expect("header").split('\t').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|c| *c == name)
            .unwrap_or_else(|| panic!("no {name} column in {header:?}"))
    };
    let (workload, target, rate, ratio) = (
        column("workload"),
        column("target"),
        column("rate"),
        column("ratio"),
    );
    for w in ["W1", "W2", "W3", "W4", "W5", "W6"] {
        let targets: &[&str] = match w {
            "W1" | "W2" => &["echo", "lockd", "client"],
            _ => &["echo", "lockd"],
        };
        for &t in targets {
            let row: Vec<&str> = tsv
                .lines()
                .skip(2)
                .map(|line| line.split('\t').collect::<Vec<_>>())
                .find(|row| row[workload] == w && row[target] == t)
                .unwrap_or_else(|| panic!("no {w} {t} row in\n{tsv}"));
            assert!(!row[rate].is_empty(), "{w} {t}: no figure in\n{tsv}");
            if t != "echo" {
                assert!(!row[ratio].is_empty(), "{w}: no ratio in\n{tsv}");
            }
        }
    }
}

/// A "lock server" that answers every line `0 Lock Get Failure`.
fn refusing_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut writer = &stream;
                for line in BufReader::new(&stream).split(b'\n') {
                    if line.is_err() || writer.write_all(b"0 Lock Get Failure: x\n").is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr.to_string()
}

#[test]
fn a_refused_lock_fails_a_check() {
    let server = refusing_server();
    let mut args = vec![
        "--server",
        &server,
        "bench",
        "--workloads",
        "W1",
        "--no-echo",
    ];
    args.extend_from_slice(TINY);
    let out = lockctl(&args);
    let printed = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(70), "{printed}{err}");
    assert!(printed.contains("CHECK FAILED"), "{printed}");
    assert!(err.contains("check failed in W1"), "{err}");
}

#[test]
fn json_report_on_stdout_progress_on_stderr() {
    let out = lockctl(&[
        "bench",
        "--in-process",
        "--workloads",
        "W1",
        "--duration",
        "50ms",
        "--rounds",
        "1",
        "--no-echo",
        "--json",
    ]);
    let printed = String::from_utf8_lossy(&out.stdout);
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{printed}{progress}");
    let report: serde_json::Value = serde_json::from_str(&printed).expect(&printed);
    assert_eq!(report["rows"][0]["workload"], "W1", "{printed}");
    assert_eq!(report["rows"][0]["target"], "lockd", "{printed}");
    assert!(report["rows"][0]["rate"].as_f64().is_some(), "{printed}");
    assert!(report["machine"]["cpus"].as_u64().is_some(), "{printed}");
    assert!(progress.contains("W1"), "{progress}");
}
