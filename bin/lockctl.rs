//! `lockctl`, the lockd client command: run a command under a lock, and
//! inspect a server. Everything lives in `lockd::cli::lockctl`.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(lockd::cli::lockctl::main(
        std::env::args_os().skip(1).collect(),
    ))
}
