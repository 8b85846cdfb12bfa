//! Running the `lockctl` binary from a test: spawn it against a server,
//! then collect its exit status and output, killing it by PID past a
//! deadline.

use super::TestServer;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The `lockctl` binary.
pub const LOCKCTL: &str = env!("CARGO_BIN_EXE_lockctl");

/// How long a `lockctl` run may take before the test kills it.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// What a `lockctl` run gave.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Starts `lockctl --server SERVER ARGS` with piped output and no stdin.
pub fn spawn(server: &str, args: &[&str]) -> Child {
    Command::new(LOCKCTL)
        .arg("--server")
        .arg(server)
        .args(args)
        .env_remove("LOCKD_SERVER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lockctl")
}

/// Waits for `child` (killing it by PID past the deadline) and collects
/// its output.
pub fn finish(child: Child) -> Out {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(DEADLINE) {
        Ok(output) => output.expect("wait for lockctl"),
        Err(_) => {
            let _ = super::send_signal(pid, libc::SIGKILL);
            panic!("lockctl did not exit within {DEADLINE:?}");
        }
    };
    Out {
        code: output.status.code().expect("lockctl exited by a signal"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `lockctl ARGS` against `server` to the end.
pub fn lockctl(server: &TestServer, args: &[&str]) -> Out {
    finish(spawn(&server.addr.to_string(), args))
}
