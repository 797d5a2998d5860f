//! A `nats-server` with JetStream on loopback (Debian's package; `.ci/run` installs it).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The server, killed (and its store removed) when dropped.
pub(crate) struct Nats {
    child: Child,
    pub(crate) url: String,
    dir: PathBuf,
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `nats-server` on PATH (or Debian's path); None, with a note, when it is missing and CI
/// does not require it (`IMGATE_REQUIRE_NATS=1`, set by `.ci/run`).
pub(crate) fn binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nats-server"))
        .find(|path| path.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("IMGATE_REQUIRE_NATS").is_none(),
            "nats-server is required (IMGATE_REQUIRE_NATS is set): apt-get install nats-server"
        );
        eprintln!("skipped: nats-server not found (apt-get install nats-server)");
    }
    found
}

impl Nats {
    /// Starts a server with JetStream in `dir`, and returns once it says it is ready.
    pub(crate) fn start(binary: &Path, dir: &Path) -> Self {
        let port = free_port();
        std::fs::create_dir_all(dir).expect("nats dir");
        let mut child = Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.join("js"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nats-server");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|line| line.contains("Server is ready"));
        assert!(ready, "nats-server exited before it was ready");
        // Keep draining its log so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            dir: dir.to_owned(),
        }
    }

    /// Stops the server (SIGKILL): NATS is gone for the cluster.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on now (the OS's pick, released for nats-server to bind).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
