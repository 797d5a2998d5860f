//! The `imgate` binary as a child process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

/// Kills the server if the test fails half-way (CI kills nothing for us).
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Server {
    /// Sends `signal` (a `kill` name: TERM, KILL, STOP, CONT, HUP) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal}");
    }

    /// Waits (bounded) for the process to exit; its status.
    ///
    /// A thread blocks in `waitid(WNOWAIT)` until the exit, which leaves the process for
    /// `Child` to reap: the test wakes on the exit itself, not on a poll.
    pub async fn exited(&mut self, within: std::time::Duration) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_raw(self.0.id() as i32).expect("a child's pid");
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let options =
                rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT;
            let _ = tx.send(rustix::process::waitid(
                rustix::process::WaitId::Pid(pid),
                options,
            ));
        });
        let waited = tokio::time::timeout(within, rx)
            .await
            .expect("imgate exits in time")
            .expect("the waiting thread answers");
        waited.expect("waitid");
        self.0
            .try_wait()
            .expect("wait")
            .expect("an exited child has a status")
    }
}

/// The rest of the binary's stdout, line by line.
pub type Output = std::io::Lines<BufReader<std::process::ChildStdout>>;

/// Starts `imgate serve --config config` and reads where it listens from its stdout (the
/// listeners, then the admin address); the rest of stdout is returned for later lines.
pub fn spawn_with_output(
    config: &std::path::Path,
) -> (Server, Vec<(String, SocketAddr)>, SocketAddr, Output) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_imgate"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn imgate");
    let stdout = child.stdout.take().expect("stdout");
    let server = Server(child);
    let mut listeners = Vec::new();
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next() {
        let line = line.expect("line");
        if let Some(rest) = line.strip_prefix("imgate listening: ") {
            let (kind, addr) = rest.split_once(" on ").expect("listener line");
            listeners.push((kind.to_owned(), addr.parse().expect("addr")));
        } else if let Some(rest) = line.strip_prefix("imgate admin: http://") {
            let addr = rest.split('/').next().expect("admin addr");
            return (server, listeners, addr.parse().expect("admin addr"), lines);
        }
    }
    panic!("imgate exited before listening");
}

/// [`spawn_with_output`] without the rest of stdout.
pub fn spawn(config: &std::path::Path) -> (Server, Vec<(String, SocketAddr)>, SocketAddr) {
    let (server, listeners, admin, _) = spawn_with_output(config);
    (server, listeners, admin)
}
