//! Helper processes of a test (Node and Python drivers): run with a time
//! bound, output captured to files, killed when the bound passes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// How a helper process ended, with everything it printed.
pub struct Finished {
    /// Exited 0.
    pub success: bool,
    /// How it ended, in words.
    pub status: String,
    /// What it printed.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `command` with output to files in `dir` (no pipe to fill up), without
/// blocking the runtime the gateway runs on; killed after `timeout`.
pub async fn run(mut command: Command, dir: &Path, label: &str, timeout: Duration) -> Finished {
    let stdout_path = dir.join(format!("{label}.stdout"));
    let stderr_path = dir.join(format!("{label}.stderr"));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("create stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("create stderr file"))
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {label} ({command:?}): {e}; run scripts/install-test-deps.sh")
        });
    let deadline = tokio::time::Instant::now() + timeout;
    let (success, status) = loop {
        match child.try_wait().expect("wait for helper process") {
            Some(status) => break (status.success(), format!("{label} exited with {status}")),
            None if tokio::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break (
                    false,
                    format!("{label} killed after {timeout:?} without finishing"),
                );
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    Finished {
        success,
        status,
        stdout: std::fs::read_to_string(&stdout_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
    }
}
