//! Servers under test, each a child process: imgate (the real binary, or the same library
//! embedded in this binary), mosquitto, nats-server. Every server runs under `timeout`, so it
//! stops by itself even if this process is killed; dropping a `Server` kills it at once.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use imgate_transports::TransportKind;
use tokio::time::Instant;

/// Which server a target runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ServerKind {
    Imgate,
    Mosquitto,
    Nats,
}

/// Settings of the imgate configuration the bench generates.
#[derive(Clone, Debug)]
pub(crate) struct ImgateSettings {
    pub heartbeat_secs: u64,
    pub max_unacked: usize,
    pub resume_window_secs: u64,
    /// A listener for this transport besides the TCP one (which readiness checks use).
    pub transport: TransportKind,
    /// Sessions in the session store (`durability = "disk"`) rather than in memory.
    pub durable: bool,
    /// A cluster node: the NATS url and this node's name (`[cluster]`).
    pub cluster: Option<(String, String)>,
}

impl Default for ImgateSettings {
    fn default() -> Self {
        Self {
            heartbeat_secs: 30,
            max_unacked: 1024,
            resume_window_secs: 120,
            transport: TransportKind::Tcp,
            durable: false,
            cluster: None,
        }
    }
}

/// How to start imgate.
#[derive(Clone, Debug)]
pub(crate) enum ImgateExe {
    /// The real `imgate` binary.
    Binary(PathBuf),
    /// This binary's `serve-imgate` subcommand (the same library and configuration path).
    Embedded,
}

impl ImgateExe {
    /// `--imgate-bin PATH`, else `imgate` next to this executable, else embedded.
    pub(crate) fn resolve(explicit: Option<&Path>, embedded: bool) -> Self {
        if embedded {
            return Self::Embedded;
        }
        if let Some(path) = explicit {
            return Self::Binary(path.to_owned());
        }
        let sibling = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("imgate")));
        match sibling {
            Some(path) if path.exists() => Self::Binary(path),
            _ => Self::Embedded,
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Binary(path) => path.display().to_string(),
            Self::Embedded => "embedded (imgate-bench serve-imgate)".into(),
        }
    }
}

/// A running server.
pub(crate) struct Server {
    #[allow(dead_code)] // reason: kept for debugging output
    pub kind: ServerKind,
    child: Child,
    /// The server process itself (the child of `timeout`).
    pub pid: u32,
    pub addr: SocketAddr,
    /// imgate: the listener of `ImgateSettings::transport` (`addr` for TCP and the peers).
    pub transport_addr: SocketAddr,
    /// imgate over TLS, WSS or QUIC: the PEM certificate clients must trust.
    pub ca: Option<PathBuf>,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

fn scratch_dir(tag: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!(
        "imgate-bench-{tag}-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// Writes a self-signed certificate for `localhost` and `127.0.0.1` into `dir`: (cert, key)
/// PEM paths. A file rather than imgate's built-in development certificate, because the
/// client processes must be told to trust it.
fn write_certificate(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .map_err(|e| format!("generating a certificate: {e}"))?;
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).map_err(|e| format!("{}: {e}", cert.display()))?;
    std::fs::write(&key, certified.key_pair.serialize_pem())
        .map_err(|e| format!("{}: {e}", key.display()))?;
    Ok((cert, key))
}

/// One `[[listener]]` on an ephemeral loopback port, without connection caps.
fn listener_section(transport: TransportKind) -> String {
    format!(
        "[[listener]]\ntransport = \"{transport}\"\nbind = \"127.0.0.1:0\"\n\
         max_connections = 1000000\nmax_per_ip = 0\n\n"
    )
}

/// The imgate configuration for a bench run: a TCP listener on an ephemeral port (plus one for
/// `settings.transport` when it is not TCP, with `[tls]` pointing at `tls`: cert and key PEM
/// paths), JWT auth with the development secret, admin on an ephemeral port. The handshake
/// and per-connection frame rate limits are lifted (a load generator is not an abusive
/// client; the defaults, 2,000 handshakes/s and 200 frames/s per connection, would measure
/// the limiter).
pub(crate) fn imgate_config(
    settings: &ImgateSettings,
    tls: Option<(&Path, &Path)>,
    data_dir: &Path,
) -> String {
    let mut listeners = listener_section(TransportKind::Tcp);
    if settings.transport != TransportKind::Tcp {
        listeners.push_str(&listener_section(settings.transport));
    }
    // Debug quoting escapes `"` and `\` as TOML basic strings do (enough for temp paths).
    let toml_str = |p: &Path| format!("{:?}", p.display().to_string());
    let tls = tls.map_or_else(String::new, |(cert, key)| {
        format!(
            "[tls]\ncert = {}\nkey = {}\n\n",
            toml_str(cert),
            toml_str(key)
        )
    });
    let cluster = settings
        .cluster
        .as_ref()
        .map_or_else(String::new, |(url, node)| {
            format!("[cluster]\nurls = [{url:?}]\nnode = {node:?}\n\n")
        });
    format!(
        r#"{cluster}[server]
handshakes_per_sec = 1000000.0
frames_per_sec_per_connection = 1000000000.0
drain_grace_secs = 1
data_dir = {data_dir}

[admin]
bind = "127.0.0.1:0"

{tls}{listeners}
[[app]]
id = "default"
backend = "relay"

[app.auth]
kind = "jwt"
algorithm = "HS256"
secret = "{secret}"

[app.session]
heartbeat_secs = {hb}
max_unacked = {unacked}
max_unacked_bytes = {bytes}
resume_window_secs = {resume}
push_grace_secs = {resume}
ack_timeout_secs = {resume}
durability = "{durability}"
"#,
        secret = crate::client::JWT_SECRET,
        hb = settings.heartbeat_secs,
        unacked = settings.max_unacked,
        bytes = settings.max_unacked * 1024,
        resume = settings.resume_window_secs,
        data_dir = toml_str(data_dir),
        durability = if settings.durable { "disk" } else { "memory" },
    )
}

impl Server {
    /// Starts `kind`; it is killed after `max_secs` whatever happens.
    pub(crate) fn start(
        kind: ServerKind,
        imgate: &ImgateExe,
        settings: &ImgateSettings,
        max_secs: u64,
    ) -> Result<Self, String> {
        let dir = scratch_dir(match kind {
            ServerKind::Imgate => "imgate",
            ServerKind::Mosquitto => "mosquitto",
            ServerKind::Nats => "nats",
        })?;
        let mut cmd = timeout_command(max_secs);
        let mut port = 0;
        let mut ca = None;
        match kind {
            ServerKind::Imgate => {
                let tls = if settings.transport.uses_tls() {
                    Some(write_certificate(&dir)?)
                } else {
                    None
                };
                let config = dir.join("imgate.toml");
                let text = imgate_config(
                    settings,
                    tls.as_ref()
                        .map(|(cert, key)| (cert.as_path(), key.as_path())),
                    &dir.join("data"),
                );
                std::fs::write(&config, text).map_err(|e| e.to_string())?;
                ca = tls.map(|(cert, _)| cert);
                imgate_args(&mut cmd, imgate, &config)?;
            }
            ServerKind::Mosquitto => {
                port = free_port()?;
                let config = dir.join("mosquitto.conf");
                std::fs::write(
                    &config,
                    format!(
                        "listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\n\
                         persistence false\nmax_inflight_messages 256\nmax_queued_messages 100000\n\
                         log_dest none\n"
                    ),
                )
                .map_err(|e| e.to_string())?;
                cmd.arg(which("mosquitto").ok_or("mosquitto not installed")?);
                cmd.arg("-c").arg(&config);
            }
            ServerKind::Nats => {
                port = free_port()?;
                cmd.arg(which("nats-server").ok_or("nats-server not installed")?);
                cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
                // An imgate cluster's NATS: JetStream for the directory (`settings.cluster`
                // only marks that this server is for a cluster).
                if settings.cluster.is_some() {
                    cmd.arg("-js").arg("-sd").arg(dir.join("js"));
                }
            }
        }
        let (child, pid, addr, transport_addr) = launch(kind, cmd, port, settings.transport)?;
        Ok(Self {
            kind,
            child,
            pid,
            addr,
            transport_addr,
            ca,
            dir,
        })
    }

    /// Kills imgate with SIGKILL (a crash: nothing is flushed, no drain) and starts it again
    /// on the same configuration and data directory; returns how long the new process took
    /// to accept connections (restoring the session store happens before that).
    pub(crate) fn crash_and_restart(
        &mut self,
        imgate: &ImgateExe,
        settings: &ImgateSettings,
        max_secs: u64,
    ) -> Result<Duration, String> {
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let started = Instant::now();
        // A process holding 10,000 sockets takes a while to die, and it holds the store's
        // lock until it has: start the new one only then (as a supervisor would).
        while self.alive() {
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "imgate (pid {}) survived SIGKILL for 30 s",
                    self.pid
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut cmd = timeout_command(max_secs);
        imgate_args(&mut cmd, imgate, &self.dir.join("imgate.toml"))?;
        let (child, pid, addr, transport_addr) =
            launch(ServerKind::Imgate, cmd, 0, settings.transport)?;
        self.child = child;
        self.pid = pid;
        self.addr = addr;
        self.transport_addr = transport_addr;
        Ok(started.elapsed())
    }
}

/// `timeout --kill-after=5 MAX_SECS …`: the server dies by itself whatever the bench does.
fn timeout_command(max_secs: u64) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args(["--kill-after=5", &max_secs.to_string()]);
    cmd
}

/// The imgate program and arguments of `cmd`, serving `config`.
fn imgate_args(cmd: &mut Command, imgate: &ImgateExe, config: &Path) -> Result<(), String> {
    match imgate {
        ImgateExe::Binary(path) => {
            cmd.arg(path);
            cmd.arg("serve");
        }
        ImgateExe::Embedded => {
            cmd.arg(std::env::current_exe().map_err(|e| e.to_string())?);
            cmd.arg("serve-imgate");
        }
    }
    cmd.arg("--config").arg(config);
    cmd.env("RUST_LOG", "warn");
    Ok(())
}

/// Starts `cmd` and waits until it accepts: (child, server pid, TCP address, `transport`
/// address). imgate reports its addresses on stdout; the peers listen on `port`.
fn launch(
    kind: ServerKind,
    mut cmd: Command,
    port: u16,
    transport: TransportKind,
) -> Result<(Child, u32, SocketAddr, SocketAddr), String> {
    // IMGATE_BENCH_SERVER_STDERR=1 shows the servers' logs (debugging a failed run).
    let stderr = if std::env::var_os("IMGATE_BENCH_SERVER_STDERR").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    };
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr);
    let mut child = cmd.spawn().map_err(|e| format!("starting {kind:?}: {e}"))?;
    let wrapper = child.id();
    let (addr, transport_addr) = if kind == ServerKind::Imgate {
        let stdout = child.stdout.take().ok_or("stdout")?;
        match reported_listeners(stdout, transport) {
            Ok(addrs) => addrs,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
    } else {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        (addr, addr)
    };
    let started = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            return Err(format!("{kind:?} is not accepting on {addr}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = child_of(wrapper).unwrap_or(wrapper);
    Ok((child, pid, addr, transport_addr))
}

impl Server {
    pub(crate) fn rss(&self) -> u64 {
        rss_of(self.pid)
    }

    pub(crate) fn cpu(&self) -> f64 {
        cpu_of(self.pid)
    }

    /// Whether the server process is still alive.
    pub(crate) fn alive(&self) -> bool {
        Path::new(&format!("/proc/{}/stat", self.pid)).exists()
    }
}

/// Reads imgate's `imgate listening: KIND on ADDR` lines until both the TCP listener and the
/// `transport` one are reported: (TCP address, `transport` address). Keeps draining stdout
/// afterwards so the server never blocks on a full pipe.
fn reported_listeners(
    stdout: std::process::ChildStdout,
    transport: TransportKind,
) -> Result<(SocketAddr, SocketAddr), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("imgate listening: ") {
                let _ = tx.send(rest.trim().to_owned());
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut tcp, mut other) = (None, None);
    while tcp.is_none() || other.is_none() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let reported = rx.recv_timeout(remaining).map_err(|_| {
            format!("imgate did not report its tcp and {transport} listeners within 30 s")
        })?;
        let Some((kind, addr)) = reported.split_once(" on ") else {
            continue;
        };
        let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
        if kind == TransportKind::Tcp.as_str() {
            tcp = Some(addr);
        }
        if kind == transport.as_str() {
            other = Some(addr);
        }
    }
    match (tcp, other) {
        (Some(tcp), Some(other)) => Ok((tcp, other)),
        _ => Err("imgate listeners".into()),
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.exists())
}

/// Whether the peer's server binary is installed.
pub(crate) fn installed(kind: ServerKind) -> bool {
    match kind {
        ServerKind::Imgate => true,
        ServerKind::Mosquitto => which("mosquitto").is_some(),
        ServerKind::Nats => which("nats-server").is_some(),
    }
}

fn child_of(pid: u32) -> Option<u32> {
    for _ in 0..100 {
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            && let Some(child) = children.split_whitespace().next()
        {
            return child.parse().ok();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// VmRSS of a process, bytes.
pub(crate) fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// utime + stime of a process, seconds (`/proc/<pid>/stat`, clock ticks of 1/100 s).
pub(crate) fn cpu_of(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name may contain spaces; fields resume after the last ')'.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / clock_ticks()
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU seconds of this process.
pub(crate) fn self_cpu() -> f64 {
    cpu_of(std::process::id())
}

/// Runs the imgate library as this process, like `imgate serve --config FILE`, until stdin
/// closes or SIGTERM/SIGINT.
pub(crate) fn serve_embedded(config: &Path) -> Result<(), String> {
    let config = imgate::config::Config::load(config).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = imgate::metrics::Metrics::new(&mut registry);
        let store = config
            .open_session_store(&metrics)
            .map_err(|e| e.to_string())?;
        let mut builder = config
            .into_builder()
            .map_err(|e| e.to_string())?
            .metrics(metrics);
        if let Some(store) = store {
            builder = builder.store(store);
        }
        let gateway = builder.start().await.map_err(|e| e.to_string())?;
        for (kind, addr) in gateway.local_addrs() {
            println!("imgate listening: {kind} on {addr}");
        }
        let stdin_closed = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin()
                .read_line(&mut sink)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
        });
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        tokio::select! {
            _ = stdin_closed => {}
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        gateway.shutdown().await;
        Ok(())
    })
}
