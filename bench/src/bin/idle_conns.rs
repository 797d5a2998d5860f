//! Memory per idle connection, per transport.
//!
//! ```text
//! cargo run --release -p imgate-bench --bin idle_conns -- --transport tcp --conns 5000
//! ```
//!
//! The process is the server. It binds a listener, reads its own resident set size, then
//! starts itself again as the client (`--role client`, a separate process so the client's
//! sockets, descriptors and memory are not counted). The client opens N connections, sends
//! one `Ping` on each (for QUIC this is what opens the stream) and then holds them idle.
//! Every server connection is in the state the gateway keeps it in: accepted, transport
//! handshake done, first frame read, a task parked in `recv()`. After everything has
//! settled the server reads its RSS again and reports `(after - before) / N`.
//! `--untuned` uses the libraries' default buffer and window sizes instead of ours.
//! `--reply` has the server answer each first frame with one frame, as the gateway answers
//! `Hello`, so the figure includes what a connection keeps after having sent something.
//! `task_future_bytes` in the output is the size of one server connection task's future.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use imgate_transports::{
    Connector, ConnectorConfig, Identity, Listener, ListenerConfig, RootCertStore, TransportKind,
};

struct Args {
    role: String,
    kind: TransportKind,
    conns: usize,
    addr: Option<String>,
    cert: Option<String>,
    settle: Duration,
    /// The server's transport handshake deadline (HTTP fallback: also how long an idle
    /// POST socket is kept).
    handshake_timeout: Duration,
    untuned: bool,
    floor: bool,
    reply: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        role: "server".into(),
        kind: TransportKind::Tcp,
        conns: 5000,
        addr: None,
        cert: None,
        settle: Duration::from_secs(3),
        handshake_timeout: Duration::from_secs(60),
        untuned: false,
        floor: false,
        reply: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--role" => args.role = value()?,
            "--transport" => args.kind = value()?.parse().map_err(|e| format!("{e}"))?,
            "--conns" => args.conns = value()?.parse().map_err(|e| format!("--conns: {e}"))?,
            "--addr" => args.addr = Some(value()?),
            "--cert" => args.cert = Some(value()?),
            "--settle-secs" => {
                args.settle = Duration::from_secs(
                    value()?
                        .parse()
                        .map_err(|e| format!("--settle-secs: {e}"))?,
                );
            }
            "--handshake-timeout-secs" => {
                args.handshake_timeout = Duration::from_secs(
                    value()?
                        .parse()
                        .map_err(|e| format!("--handshake-timeout-secs: {e}"))?,
                );
            }
            "--untuned" => args.untuned = true,
            "--floor" => args.floor = true,
            "--reply" => args.reply = true,
            "-h" | "--help" => {
                return Err(
                    "usage: idle_conns [--transport tcp|tls|ws|wss|quic|http|https] [--conns N] \
                            [--settle-secs S] [--handshake-timeout-secs S] [--untuned] [--floor] \
                            [--reply]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(64);
        }
    };
    raise_fd_limit(args.conns);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("runtime: {e}");
            std::process::exit(70);
        }
    };
    let result = if args.role == "client" {
        runtime.block_on(client(&args))
    } else {
        runtime.block_on(server(&args))
    };
    if let Err(message) = result {
        eprintln!("idle_conns ({}): {message}", args.role);
        std::process::exit(1);
    }
}

/// Each connection needs a descriptor; lift the soft limit towards the hard one.
fn raise_fd_limit(conns: usize) {
    let want = conns as u64 + 1024;
    if let Ok((soft, hard)) = rlimit::Resource::NOFILE.get()
        && soft < want
    {
        let _ = rlimit::Resource::NOFILE.set(want.min(hard), hard);
    }
}

/// Resident set size of this process in bytes (VmRSS).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
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

async fn server(args: &Args) -> Result<(), String> {
    let identity = Identity::self_signed(&["localhost"]).map_err(|e| e.to_string())?;
    let cert_path = std::env::temp_dir().join(format!("idle_conns_{}.der", std::process::id()));
    std::fs::write(&cert_path, identity.leaf().as_ref()).map_err(|e| e.to_string())?;
    let mut config = ListenerConfig::new(args.kind, "127.0.0.1:0".parse().map_err(|_| "addr")?)
        .with_identity(identity);
    config.max_connections = args.conns + 16;
    config.max_per_ip = None;
    config.handshake_timeout = args.handshake_timeout;
    if args.untuned {
        // The libraries' defaults, for the before/after comparison.
        config.ws.read_buffer_size = 128 * 1024;
        config.ws.write_buffer_size = 128 * 1024;
        config.quic.stream_receive_window = 1_250_000;
        config.quic.receive_window = u32::MAX;
        config.quic.send_window = 10_000_000;
        config.quic.mtu_discovery = true;
    }
    let ready = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&ready);
    // Size of one connection task's future: tokio stores it inside the task, rounded up
    // (with the task header) to 128-byte lines, so it is part of every idle connection.
    let task_bytes = Arc::new(AtomicUsize::new(0));
    let task_size = Arc::clone(&task_bytes);
    let addr = if args.floor {
        floor_server(Arc::clone(&ready)).await?
    } else {
        let mut listener = Listener::bind(config).await.map_err(|e| e.to_string())?;
        let addr = listener.local_addr();
        let reply = args.reply;
        tokio::spawn(async move {
            while let Some(conn) = listener.accept().await {
                let counter = Arc::clone(&counter);
                // Split before spawning: a task that captured `conn` and split it inside would
                // carry both layouts in its future.
                let (mut reader, mut writer) = conn.split();
                // The connection task the gateway runs: read, handle, park in recv() when idle.
                let task = async move {
                    let mut first = true;
                    // A plain `while` condition drops the frame before the body runs: held
                    // across the flush below (as `while let Ok(Some(frame))` would hold it),
                    // it would widen every connection's task by the size of a `Frame`.
                    while matches!(reader.recv().await, Ok(Some(_))) {
                        if first {
                            // As the gateway answers `Hello`: the server has sent something.
                            // `queue` then `flush` rather than `send(&frame).await`: the frame
                            // would be held across the await, and a task's future is as large
                            // as its largest await point, parked in `recv()` or not.
                            if reply {
                                if writer.queue(&imgate_codec::Pong::default().into()).is_err() {
                                    return;
                                }
                                if writer.flush().await.is_err() {
                                    return;
                                }
                            }
                            counter.fetch_add(1, Ordering::Relaxed);
                            first = false;
                        }
                    }
                    // Used in place rather than rebound (`let _writer = writer;`): a rebound
                    // capture is stored twice in the task's future.
                    drop(writer);
                };
                task_size.store(std::mem::size_of_val(&task), Ordering::Relaxed);
                tokio::spawn(task);
            }
        });
        addr
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss();

    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(["--role", "client", "--transport", args.kind.as_str()])
        .args([
            "--conns",
            &args.conns.to_string(),
            "--addr",
            &addr.to_string(),
        ])
        .args(["--cert", &cert_path.to_string_lossy()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the client: {e}"))?;
    let stdout = child.stdout.take().ok_or("client stdout")?;
    let connect_line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        line
    })
    .await
    .map_err(|e| e.to_string())?;
    let connect_ms: f64 = connect_line
        .trim()
        .strip_prefix("connected_ms=")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("client failed: {connect_line:?}"))?;
    for _ in 0..600 {
        if ready.load(Ordering::Relaxed) >= args.conns {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let established = ready.load(Ordering::Relaxed);
    tokio::time::sleep(args.settle).await;
    let after = rss();
    // Closing its stdin tells the client to exit; kill it if it does not.
    drop(child.stdin.take());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&cert_path);

    let per_conn = (after.saturating_sub(before)) as f64 / established.max(1) as f64;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{{\"transport\":\"{}{}\",\"tuned\":{},\"conns\":{},\"established\":{},\"rss_before\":{},\"rss_after\":{},\
         \"bytes_per_conn\":{:.0},\"task_future_bytes\":{},\"connect_ms\":{:.0}}}",
        args.kind,
        if args.floor { "-floor" } else { "" },
        !args.untuned,
        args.conns,
        established,
        before,
        after,
        per_conn,
        task_bytes.load(Ordering::Relaxed),
        connect_ms
    );
    if established < args.conns {
        return Err(format!(
            "only {established} of {} connections established",
            args.conns
        ));
    }
    Ok(())
}

/// The floor for TCP: a bare tokio task per socket, parked in `readable()`, reading with
/// `try_read` into a per-thread scratch buffer; no framing, no limits, no queues.
async fn floor_server(ready: Arc<AtomicUsize>) -> Result<std::net::SocketAddr, String> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 16 * 1024]);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let ready = Arc::clone(&ready);
            tokio::spawn(async move {
                let mut first = true;
                while stream.readable().await.is_ok() {
                    let read = SCRATCH.with(|s| stream.try_read(&mut s.borrow_mut()));
                    match read {
                        Ok(0) => return,
                        Ok(_) if first => {
                            first = false;
                            ready.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => return,
                    }
                }
            });
        }
    });
    Ok(addr)
}

async fn client(args: &Args) -> Result<(), String> {
    let addr = args
        .addr
        .as_deref()
        .ok_or("--addr")?
        .parse()
        .map_err(|e| format!("--addr: {e}"))?;
    let mut roots = RootCertStore::empty();
    if let Some(path) = &args.cert {
        let der = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
        roots
            .add(rustls::pki_types::CertificateDer::from(der))
            .map_err(|e| e.to_string())?;
    }
    let mut config = ConnectorConfig::new(args.kind, roots);
    config.quic_bind = "127.0.0.1:0".parse().map_err(|_| "addr")?;
    config.handshake_timeout = args.handshake_timeout;
    let connector = Arc::new(Connector::new(config).map_err(|e| e.to_string())?);
    let started = tokio::time::Instant::now();
    // Bounded concurrency: a burst of thousands of handshakes would only overflow the
    // listen backlog (or the UDP receive buffer) and measure retries.
    let mut conns = Vec::with_capacity(args.conns);
    let mut pending = tokio::task::JoinSet::new();
    let ping: imgate_codec::Frame = imgate_codec::Ping::default().into();
    for i in 0..args.conns {
        if pending.len() >= 64
            && let Some(done) = pending.join_next().await
        {
            conns.push(done.map_err(|e| e.to_string())??);
        }
        let connector = Arc::clone(&connector);
        let ping = ping.clone();
        pending.spawn(async move {
            let mut conn = connector
                .connect(addr)
                .await
                .map_err(|e| format!("connection {i}: {e}"))?;
            conn.send(&ping)
                .await
                .map_err(|e| format!("connection {i}: {e}"))?;
            Ok::<_, String>(conn)
        });
    }
    while let Some(done) = pending.join_next().await {
        conns.push(done.map_err(|e| e.to_string())??);
    }
    let elapsed = started.elapsed();
    println!("connected_ms={:.1}", elapsed.as_secs_f64() * 1000.0);
    // Hold the connections until the server closes our stdin.
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
    })
    .await;
    drop(conns);
    Ok(())
}
