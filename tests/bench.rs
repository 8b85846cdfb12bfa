//! The benchmark library (`lockd::bench`, issues 6 and 8): a sub-second
//! run of every workload against an in-process server passes its
//! correctness checks and reports every figure; a server that refuses locks
//! fails a check. No speed is asserted.

use lockd::bench::{self, BenchError, BenchOptions, Target, Workload};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

fn tiny() -> BenchOptions {
    let mut opts = BenchOptions::default();
    opts.duration = Duration::from_millis(100);
    opts.connections = 4;
    opts.contenders = 3;
    opts.churners = 2;
    opts.release_samples = 10;
    opts.idle_connections = 20;
    opts.lockd_binary = Some(PathBuf::from(env!("CARGO_BIN_EXE_lockd")));
    opts
}

#[test]
fn every_workload_passes_its_checks_and_reports() {
    let mut out = Vec::new();
    let report = match bench::run(&tiny(), &mut out) {
        Ok(report) => report,
        Err(e) => panic!("{e}\n{}", String::from_utf8_lossy(&out)),
    };
    let printed = String::from_utf8_lossy(&out);
    for workload in Workload::ALL {
        for target in [Target::Echo, Target::Lockd] {
            let row = report
                .row(workload, target)
                .unwrap_or_else(|| panic!("no {workload} {target} row in\n{printed}"));
            assert!(row.rate.is_some(), "{workload} {target}: no figure");
        }
        let lockd = report.row(workload, Target::Lockd).unwrap();
        assert!(lockd.ratio.is_some(), "{workload}: no ratio");
    }
    assert!(printed.contains("FCFS ok"), "{printed}");
    assert!(printed.contains("orphans freed"), "{printed}");
    let mut tsv = Vec::new();
    report.write_tsv(&mut tsv).unwrap();
    let tsv = String::from_utf8(tsv).unwrap();
    // Two header lines, echo and lockd rows for six workloads, and client
    // rows for W1 and W2.
    assert_eq!(tsv.lines().count(), 2 + 12 + 2, "{tsv}");
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
    let mut opts = tiny();
    opts.server = Some(refusing_server());
    opts.workloads = vec![Workload::W1];
    opts.echo = false;
    let mut out = Vec::new();
    let err = bench::run(&opts, &mut out).expect_err("a refused g must fail");
    assert!(err.is_check_failure(), "{err}");
    assert!(matches!(
        err,
        BenchError::Check {
            workload: Workload::W1,
            ..
        }
    ));
    assert!(String::from_utf8_lossy(&out).contains("CHECK FAILED"));
}
