//! The scenarios. Each runs once per target against a fresh server and returns table rows.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

use clap::Args;
use hdrhistogram::Histogram;
use imgate_transports::TransportKind;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::client::{ClientConfig, Conn, Dest, OnMessage, Target, parse_payload, payload};
use crate::report::{Row, emit};
use crate::server::{ImgateExe, ImgateSettings, Server, cpu_of, installed, self_cpu};
use crate::{Cli, Cmd};

/// Nanoseconds on this process's monotonic clock (payload timestamps).
fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    u64::try_from(BASE.get_or_init(Instant::now).elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Set in idle-client processes: their parent draws the progress.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn bar(len: u64, what: &str) -> ProgressBar {
    if QUIET.load(Ordering::Relaxed) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>24} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_owned());
    bar
}

#[derive(Debug, Args)]
pub(crate) struct IdleArgs {
    /// Connection counts, comma-separated.
    #[arg(long, default_value = "5000,15000")]
    conns: String,
    /// Connections per client process (each process stays under the 20k descriptor limit).
    #[arg(long, default_value_t = 5000)]
    per_proc: usize,
    /// Heartbeat interval during the measured window (the CPU is scaled to 30 s).
    #[arg(long, default_value_t = 5)]
    heartbeat_secs: u64,
    /// Length of the measured idle window, seconds.
    #[arg(long, default_value_t = 20)]
    measure_secs: u64,
    /// imgate transports, comma-separated (tcp, tls, ws, wss, quic): one imgate row per
    /// transport and count. Peers stay TCP.
    #[arg(long, default_value = "tcp")]
    transports: String,
}

#[derive(Debug, Args)]
pub(crate) struct IdleClientArgs {
    #[arg(long)]
    target: String,
    #[arg(long)]
    addr: std::net::SocketAddr,
    #[arg(long)]
    conns: usize,
    #[arg(long)]
    first: usize,
    #[arg(long)]
    heartbeat_secs: u64,
    #[arg(long)]
    max_secs: u64,
    /// imgate transport of `addr`.
    #[arg(long, default_value = "tcp")]
    transport: TransportKind,
    /// PEM certificate to trust (TLS, WSS, QUIC).
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct RoutedArgs {
    #[arg(long, default_value_t = 1000)]
    users: usize,
    #[arg(long, default_value_t = 4)]
    senders: usize,
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Payload bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Un-receipted sends per sender (imgate Receipts, MQTT QoS 1 in-flight).
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// imgate session durability, comma-separated (memory, disk): one imgate row each.
    #[arg(long, default_value = "memory,disk")]
    durability: String,
}

#[derive(Debug, Args)]
pub(crate) struct LatencyArgs {
    #[arg(long, default_value_t = 1000)]
    users: usize,
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// Messages per second, all senders together.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    #[arg(long, default_value_t = 10)]
    secs: u64,
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// imgate variants, comma-separated: memory, disk (session durability), cluster-same
    /// (a cluster node on NATS, senders and receivers on it: the directory lookup),
    /// cluster-hop (senders on node a, receivers on node b: lookup plus the hop). One row each.
    #[arg(long, default_value = "memory,disk")]
    durability: String,
}

#[derive(Debug, Args)]
pub(crate) struct FanoutArgs {
    #[arg(long, default_value_t = 10_000)]
    members: usize,
    #[arg(long, default_value_t = 100)]
    publishes: u64,
    /// Publishes per second.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    #[arg(long, default_value_t = 100)]
    size: usize,
}

#[derive(Debug, Args)]
pub(crate) struct ResumeArgs {
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Messages sent to each client while it is cut off.
    #[arg(long, default_value_t = 2)]
    pending: u64,
    /// Durable sessions, and imgate is killed (SIGKILL) and restarted once the pending
    /// messages are receipted: the clients resume on the restarted process.
    #[arg(long)]
    crash: bool,
}

struct Ctx {
    out: std::path::PathBuf,
    imgate: ImgateExe,
    targets: Vec<Target>,
    smoke: bool,
}

/// Runs a command; `Ok(false)` if imgate failed a check (error or loss).
pub(crate) async fn run(cli: &Cli, cmd: &Cmd) -> Result<bool, String> {
    let mut targets = Vec::new();
    for name in cli
        .targets
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let target = Target::parse(name)?;
        if installed(target.server()) {
            targets.push(target);
        } else {
            eprintln!("skipping {name}: {:?} is not installed", target.server());
        }
    }
    let ctx = Ctx {
        out: cli.out.clone(),
        imgate: ImgateExe::resolve(cli.imgate_bin.as_deref(), cli.embedded),
        targets,
        smoke: cli.smoke,
    };
    if !matches!(cmd, Cmd::IdleClient(_)) {
        eprintln!("imgate server: {}", ctx.imgate.describe());
    }
    match cmd {
        Cmd::IdleClient(args) => idle_client(args).await.map(|()| true),
        Cmd::Idle(args) => idle(&ctx, args).await,
        Cmd::Routed(args) => routed(&ctx, args).await,
        Cmd::Latency(args) => latency(&ctx, args).await,
        Cmd::Fanout(args) => fanout(&ctx, args).await,
        Cmd::Resume(args) => resume(&ctx, args).await,
        Cmd::All => {
            let mut ok = true;
            let idle_args = IdleArgs {
                conns: "5000,15000".into(),
                per_proc: 5000,
                heartbeat_secs: 5,
                measure_secs: 20,
                transports: "tcp".into(),
            };
            ok &= idle(&ctx, &idle_args).await?;
            let routed_args = RoutedArgs {
                users: 1000,
                senders: 4,
                messages: 1_000_000,
                size: 100,
                window: 256,
                durability: "memory,disk".into(),
            };
            ok &= routed(&ctx, &routed_args).await?;
            let latency_args = LatencyArgs {
                users: 1000,
                senders: 4,
                rate: 20_000,
                secs: 10,
                size: 100,
                durability: "memory,disk".into(),
            };
            ok &= latency(&ctx, &latency_args).await?;
            let fanout_args = FanoutArgs {
                members: 10_000,
                publishes: 100,
                rate: 10.0,
                size: 100,
            };
            ok &= fanout(&ctx, &fanout_args).await?;
            ok &= resume(
                &ctx,
                &ResumeArgs {
                    clients: 10_000,
                    pending: 2,
                    crash: false,
                },
            )
            .await?;
            Ok(ok)
        }
        Cmd::ServeImgate { .. } | Cmd::Summary(_) => Err("handled in main".into()),
    }
}

/// The runs of a scenario: every target once, imgate once per durability (`memory` keeps the
/// row name `imgate`, so earlier results stay comparable; `disk` is `imgate-disk`).
fn variants(
    targets: &[Target],
    durability: &str,
) -> Result<Vec<(Target, &'static str, ImgateSettings)>, String> {
    let mut runs = Vec::new();
    for &target in targets {
        if target != Target::Imgate {
            runs.push((target, target.name(), ImgateSettings::default()));
            continue;
        }
        for mode in durability.split(',').map(str::trim) {
            let (name, durable, cluster) = match mode {
                "memory" => ("imgate", false, None),
                "disk" => ("imgate-disk", true, None),
                // The NATS url is filled in when the run starts its nats-server.
                "cluster-same" => (
                    "imgate-cluster-same",
                    false,
                    Some((String::new(), "a".into())),
                ),
                "cluster-hop" => (
                    "imgate-cluster-hop",
                    false,
                    Some((String::new(), "b".into())),
                ),
                other => {
                    return Err(format!(
                        "unknown variant {other:?} (memory, disk, cluster-same, cluster-hop)"
                    ));
                }
            };
            let settings = ImgateSettings {
                durable,
                cluster,
                ..ImgateSettings::default()
            };
            runs.push((target, name, settings));
        }
    }
    Ok(runs)
}

fn start_server(
    ctx: &Ctx,
    target: Target,
    settings: &ImgateSettings,
    max_secs: u64,
) -> Result<Server, String> {
    Server::start(target.server(), &ctx.imgate, settings, max_secs)
}

fn client_config(
    target: Target,
    server: &Server,
    window: usize,
    heartbeat: Duration,
) -> ClientConfig {
    ClientConfig {
        target,
        addr: server.addr,
        window,
        heartbeat,
        transport: TransportKind::Tcp,
        ca: None,
    }
}

/// Connects `names` (64 handshakes in flight), with a progress bar.
async fn connect_many(
    config: &ClientConfig,
    names: &[String],
    on_message: &OnMessage,
    what: &str,
) -> Result<Vec<Conn>, String> {
    let progress = bar(names.len() as u64, what);
    let mut conns: Vec<Option<Conn>> = (0..names.len()).map(|_| None).collect();
    let mut pending = tokio::task::JoinSet::new();
    let mut next = 0;
    while next < names.len() || !pending.is_empty() {
        while next < names.len() && pending.len() < 64 {
            let config = config.clone();
            let name = names[next].clone();
            let on = Arc::clone(on_message);
            let i = next;
            pending.spawn(async move { (i, Conn::connect(&config, &name, on).await) });
            next += 1;
        }
        if let Some(done) = pending.join_next().await {
            let (i, conn) = done.map_err(|e| e.to_string())?;
            conns[i] = Some(conn?);
            progress.inc(1);
        }
    }
    progress.finish_and_clear();
    Ok(conns.into_iter().flatten().collect())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------------
// idle

/// `--transports`: imgate transports by name, in the order given.
fn parse_transports(list: &str) -> Result<Vec<TransportKind>, String> {
    let transports: Vec<TransportKind> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|name| name.parse().map_err(|e| format!("--transports: {e}")))
        .collect::<Result<_, _>>()?;
    if transports.is_empty() {
        return Err("--transports: name at least one of tcp, tls, ws, wss, quic".into());
    }
    Ok(transports)
}

/// The rows to run for `target`: every listed transport for imgate, TCP alone for the peers.
fn idle_transports(target: Target, transports: &[TransportKind]) -> Vec<TransportKind> {
    if target == Target::Imgate {
        transports.to_vec()
    } else {
        vec![TransportKind::Tcp]
    }
}

/// `imgate@N` for a TCP-only run (the label earlier runs used), `imgate-tls@N` once several
/// transports are compared; the peers as before (MQTT idle does not depend on QoS).
fn idle_label(target: Target, transport: TransportKind, tcp_only: bool, n: usize) -> String {
    match target {
        Target::Imgate if !tcp_only => format!("imgate-{transport}@{n}"),
        Target::MqttQos1 => format!("mosquitto@{n}"),
        _ => format!("{}@{n}", target.name()),
    }
}

async fn idle(ctx: &Ctx, args: &IdleArgs) -> Result<bool, String> {
    // Smoke mode covers every transport, so none of the listener configurations can rot.
    let transports = if ctx.smoke {
        TransportKind::ALL.to_vec()
    } else {
        parse_transports(&args.transports)?
    };
    let tcp_only = transports == [TransportKind::Tcp];
    let (counts, per_proc, hb, measure) = if ctx.smoke {
        (vec![200], 100, 1, 2)
    } else {
        let counts: Result<Vec<usize>, _> = args
            .conns
            .split(',')
            .map(|s| s.trim().parse::<usize>())
            .collect();
        (
            counts.map_err(|e| format!("--conns: {e}"))?,
            args.per_proc.clamp(1, 18_000),
            args.heartbeat_secs.max(1),
            args.measure_secs.max(1),
        )
    };
    let mut rows = Vec::new();
    let mut ok = true;
    for &n in &counts {
        for &target in &ctx.targets {
            if target == Target::MqttQos0 {
                continue; // idle MQTT does not depend on QoS
            }
            for transport in idle_transports(target, &transports) {
                let label = idle_label(target, transport, tcp_only, n);
                eprintln!("idle: {label}");
                let shape = IdleShape {
                    n,
                    per_proc,
                    hb,
                    measure,
                };
                let mut row = match idle_one(ctx, target, transport, &shape).await {
                    Ok(row) => row,
                    Err(e) => {
                        ok &= target != Target::Imgate;
                        let mut row = Row::new(label.clone());
                        row.note("error", e);
                        row
                    }
                };
                row.label = label;
                rows.push(row);
            }
        }
    }
    let transport_names: Vec<&str> = transports.iter().map(|t| t.as_str()).collect();
    emit(
        &ctx.out,
        "idle",
        json!({"conns": counts, "per_proc": per_proc, "heartbeat_secs": hb, "measure_secs": measure, "transports": transport_names, "smoke": ctx.smoke}),
        &rows,
    )?;
    Ok(ok)
}

/// Size and timing of one idle measurement.
struct IdleShape {
    /// Connections.
    n: usize,
    /// Connections per client process.
    per_proc: usize,
    /// Heartbeat interval, seconds.
    hb: u64,
    /// Measured window, seconds.
    measure: u64,
}

async fn idle_one(
    ctx: &Ctx,
    target: Target,
    transport: TransportKind,
    shape: &IdleShape,
) -> Result<Row, String> {
    let IdleShape {
        n,
        per_proc,
        hb,
        measure,
    } = *shape;
    let settings = ImgateSettings {
        heartbeat_secs: hb,
        transport,
        ..ImgateSettings::default()
    };
    let server = start_server(ctx, target, &settings, 600)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let procs = n.div_ceil(per_proc);
    let started = Instant::now();
    let mut children = Vec::new();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    for p in 0..procs {
        let count = per_proc.min(n - p * per_proc);
        let mut command = Command::new(&exe);
        command.args([
            "idle-client",
            "--target",
            target.name(),
            "--addr",
            &server.transport_addr.to_string(),
            "--transport",
            transport.as_str(),
        ]);
        if let Some(ca) = &server.ca {
            command.arg("--ca").arg(ca);
        }
        let mut child = command
            .args([
                "--conns",
                &count.to_string(),
                "--first",
                &(p * per_proc).to_string(),
            ])
            .args(["--heartbeat-secs", &hb.to_string(), "--max-secs", "300"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("client process: {e}"))?;
        let stdout = child.stdout.take().ok_or("stdout")?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        children.push(child);
    }
    let progress = bar(procs as u64, "client processes ready");
    let mut client_ms: f64 = 0.0;
    let mut failure = None;
    for _ in 0..procs {
        let line = tokio::task::spawn_blocking({
            let rx_line = rx.recv_timeout(Duration::from_secs(240));
            move || rx_line
        })
        .await
        .map_err(|e| e.to_string())?;
        match line
            .ok()
            .as_deref()
            .map(str::trim)
            .and_then(|l| l.strip_prefix("connected_ms="))
        {
            Some(v) => client_ms = client_ms.max(v.parse().unwrap_or(f64::NAN)),
            None => failure = Some("a client process failed to connect everything".to_owned()),
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    let wall_ms = ms(started.elapsed());
    let pids: Vec<u32> = children.iter().map(std::process::Child::id).collect();
    let result = if let Some(e) = failure {
        Err(e)
    } else {
        tokio::time::sleep(Duration::from_secs(if ctx.smoke { 1 } else { 3 })).await;
        let after = server.rss();
        let cpu0 = server.cpu();
        let client0: f64 = pids.iter().map(|p| cpu_of(*p)).sum();
        tokio::time::sleep(Duration::from_secs(measure)).await;
        let cpu = server.cpu() - cpu0;
        let client_cpu: f64 = pids.iter().map(|p| cpu_of(*p)).sum::<f64>() - client0;
        let pings = n as f64 * measure as f64 / hb as f64;
        let us_per_ping = cpu / pings * 1e6;
        let mut row = Row::new(target.name());
        row.fig(
            "server_bytes_per_conn",
            after.saturating_sub(before) as f64 / n as f64,
        )
        .fig("connect_all_ms", wall_ms)
        .fig("server_cpu_us_per_hb", us_per_ping)
        .fig(
            "hb_cpu_ms_per_min_at_30s",
            us_per_ping * n as f64 * 2.0 / 1000.0,
        )
        .fig("client_cpu_us_per_hb", client_cpu / pings * 1e6)
        .note("conns", n)
        .note("transport", transport.as_str())
        .note("client_procs", procs)
        .note("client_connect_ms_max", client_ms)
        .note("rss_before", before)
        .note("rss_after", after)
        .note("server_cpu_s_in_window", cpu)
        .note("server_alive", server.alive());
        Ok(row)
    };
    for child in &mut children {
        drop(child.stdin.take());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    drop(server);
    result
}

async fn idle_client(args: &IdleClientArgs) -> Result<(), String> {
    QUIET.store(true, Ordering::Relaxed);
    let target = Target::parse(&args.target)?;
    let config = ClientConfig {
        target,
        addr: args.addr,
        window: 16,
        heartbeat: Duration::from_secs(args.heartbeat_secs),
        transport: args.transport,
        ca: args.ca.clone(),
    };
    let names: Vec<String> = (args.first..args.first + args.conns)
        .map(|i| format!("idle{i}"))
        .collect();
    let on: OnMessage = Arc::new(|_: &[u8]| {});
    let started = Instant::now();
    let result = connect_many(&config, &names, &on, "connecting").await;
    let mut out = std::io::stdout().lock();
    let conns = match result {
        Ok(conns) => {
            let _ = writeln!(out, "connected_ms={:.1}", ms(started.elapsed()));
            conns
        }
        Err(e) => {
            let _ = writeln!(out, "error={e}");
            return Err(e);
        }
    };
    let _ = out.flush();
    drop(out);
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
    });
    tokio::select! {
        _ = stdin_closed => {}
        () = tokio::time::sleep(Duration::from_secs(args.max_secs)) => {}
    }
    drop(conns);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// routed and latency

/// Exactly-once bookkeeping over message ids 0..n.
struct Ledger {
    seen: Vec<AtomicU8>,
    delivered: AtomicU64,
    duplicates: AtomicU64,
    last_ns: AtomicU64,
    hist: Option<Mutex<Histogram<u64>>>,
}

impl Ledger {
    fn new(n: u64, with_hist: bool) -> Arc<Self> {
        Arc::new(Self {
            seen: (0..n).map(|_| AtomicU8::new(0)).collect(),
            delivered: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
            hist: with_hist.then(|| {
                Mutex::new(
                    Histogram::new_with_bounds(1, 60_000_000, 3)
                        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!())),
                )
            }),
        })
    }

    fn on_message(self: &Arc<Self>) -> OnMessage {
        let ledger = Arc::clone(self);
        Arc::new(move |bytes: &[u8]| {
            let Some((id, sent)) = parse_payload(bytes) else {
                return;
            };
            let now = now_ns();
            let Some(slot) = usize::try_from(id).ok().and_then(|i| ledger.seen.get(i)) else {
                return;
            };
            if slot.fetch_add(1, Ordering::Relaxed) == 0 {
                ledger.delivered.fetch_add(1, Ordering::Relaxed);
            } else {
                ledger.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            ledger.last_ns.fetch_max(now, Ordering::Relaxed);
            if let Some(hist) = &ledger.hist
                && let Ok(mut h) = hist.lock()
            {
                let _ = h.record((now.saturating_sub(sent) / 1000).max(1));
            }
        })
    }
}

/// Waits until `ledger` has `n` deliveries, or nothing new arrived for `stall`, or `deadline`.
async fn wait_delivered(ledger: &Ledger, n: u64, stall: Duration, deadline: Instant, what: &str) {
    let progress = bar(n, what);
    let mut last = 0;
    let mut last_change = Instant::now();
    loop {
        let got = ledger.delivered.load(Ordering::Relaxed);
        progress.set_position(got);
        if got >= n || Instant::now() > deadline {
            break;
        }
        if got != last {
            last = got;
            last_change = Instant::now();
        } else if last_change.elapsed() > stall {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    progress.finish_and_clear();
}

async fn routed(ctx: &Ctx, args: &RoutedArgs) -> Result<bool, String> {
    let (users, messages) = if ctx.smoke {
        (50, 2_000)
    } else {
        (args.users, args.messages)
    };
    let mut rows = Vec::new();
    let mut ok = true;
    for (target, name, settings) in variants(&ctx.targets, &args.durability)? {
        eprintln!("routed: {name}");
        let row = routed_one(
            ctx,
            (target, name, &settings),
            users,
            args.senders,
            messages,
            args.size,
            args.window,
        )
        .await;
        let row = row.unwrap_or_else(|e| {
            let mut row = Row::new(name);
            row.note("error", e);
            row
        });
        if target == Target::Imgate {
            ok &= !row.extra.contains_key("error")
                && row.extra.get("lost").and_then(serde_json::Value::as_u64) == Some(0);
            ok &= row
                .extra
                .get("duplicates")
                .and_then(serde_json::Value::as_u64)
                == Some(0);
        }
        rows.push(row);
    }
    emit(
        &ctx.out,
        "routed",
        json!({"users": users, "senders": args.senders, "messages": messages, "size": args.size, "window": args.window, "smoke": ctx.smoke}),
        &rows,
    )?;
    Ok(ok)
}

fn user_names(n: usize, prefix: &str) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

async fn routed_one(
    ctx: &Ctx,
    (target, name, settings): (Target, &'static str, &ImgateSettings),
    users: usize,
    senders: usize,
    messages: u64,
    size: usize,
    window: usize,
) -> Result<Row, String> {
    let server = start_server(ctx, target, settings, 900)?;
    let config = client_config(target, &server, window, Duration::from_secs(30));
    let ledger = Ledger::new(messages, false);
    let names = Arc::new(user_names(users, "user"));
    let _receivers = connect_many(&config, &names, &ledger.on_message(), "receivers").await?;
    let noop: OnMessage = Arc::new(|_: &[u8]| {});
    let sender_conns =
        connect_many(&config, &user_names(senders, "sender"), &noop, "senders").await?;
    let server_cpu0 = server.cpu();
    let client_cpu0 = self_cpu();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (s, conn) in sender_conns.into_iter().enumerate() {
        let names = Arc::clone(&names);
        tasks.push(tokio::spawn(async move {
            let mut id = s as u64;
            while id < messages {
                let to = &names[fastrand::usize(..names.len())];
                if let Err(e) = conn.send(Dest::User(to), payload(id, now_ns(), size)).await {
                    return (conn, Err(e));
                }
                id += senders as u64;
            }
            conn.flush().await;
            (conn, Ok(()))
        }));
    }
    let deadline = start + Duration::from_secs(if ctx.smoke { 30 } else { 600 });
    wait_delivered(
        &ledger,
        messages,
        Duration::from_secs(10),
        deadline,
        "delivered",
    )
    .await;
    let mut send_error = None;
    let mut receipts = 0;
    for task in tasks {
        if let Ok((conn, result)) = task.await {
            receipts += conn.acks.load(Ordering::Relaxed);
            if let Err(e) = result {
                send_error = Some(e);
            }
        }
    }
    let server_cpu = server.cpu() - server_cpu0;
    let client_cpu = self_cpu() - client_cpu0;
    let delivered = ledger.delivered.load(Ordering::Relaxed);
    let last = ledger.last_ns.load(Ordering::Relaxed);
    let start_ns = now_ns().saturating_sub(u64::try_from(start.elapsed().as_nanos()).unwrap_or(0));
    let secs = (last.saturating_sub(start_ns)) as f64 / 1e9;
    let mut row = Row::new(name);
    row.fig("delivered_msgs_per_s", delivered as f64 / secs.max(1e-9))
        .cpu_per_million(server_cpu, client_cpu, delivered)
        .fig("seconds", secs)
        .note("messages", messages)
        .note("delivered", delivered)
        .note("lost", messages - delivered.min(messages))
        .note("duplicates", ledger.duplicates.load(Ordering::Relaxed))
        .note("receipts_or_pubacks", receipts)
        .note("server_alive", server.alive());
    if let Some(e) = send_error {
        row.note("error", e);
    }
    Ok(row)
}

async fn latency(ctx: &Ctx, args: &LatencyArgs) -> Result<bool, String> {
    let (users, rate, secs) = if ctx.smoke {
        (50, 2_000, 2)
    } else {
        (args.users, args.rate, args.secs)
    };
    let mut rows = Vec::new();
    let mut ok = true;
    for (target, name, settings) in variants(&ctx.targets, &args.durability)? {
        eprintln!("latency: {name}");
        let row = latency_one(
            ctx,
            (target, name, &settings),
            users,
            args.senders,
            rate,
            secs,
            args.size,
        )
        .await;
        let row = row.unwrap_or_else(|e| {
            let mut row = Row::new(name);
            row.note("error", e);
            row
        });
        if target == Target::Imgate {
            ok &= !row.extra.contains_key("error")
                && row.extra.get("lost").and_then(serde_json::Value::as_u64) == Some(0);
        }
        rows.push(row);
    }
    emit(
        &ctx.out,
        "latency",
        json!({"users": users, "senders": args.senders, "rate": rate, "secs": secs, "size": args.size, "smoke": ctx.smoke}),
        &rows,
    )?;
    Ok(ok)
}

async fn latency_one(
    ctx: &Ctx,
    (target, name, settings): (Target, &'static str, &ImgateSettings),
    users: usize,
    senders: usize,
    rate: u64,
    secs: u64,
    size: usize,
) -> Result<Row, String> {
    // A cluster variant: a nats-server with JetStream, node a for the senders, and for
    // `cluster-hop` node b for the receivers (every message crosses from a to b).
    let nats = match &settings.cluster {
        Some(_) => Some(Server::start(
            crate::server::ServerKind::Nats,
            &ctx.imgate,
            settings,
            300,
        )?),
        None => None,
    };
    let node = |name: &str| {
        let mut node = settings.clone();
        if let Some(nats) = &nats {
            node.cluster = Some((format!("nats://{}", nats.addr), name.to_owned()));
        }
        node
    };
    let server = start_server(ctx, target, &node("a"), 300)?;
    let hop = match &settings.cluster {
        Some((_, name)) if name == "b" => Some(start_server(ctx, target, &node("b"), 300)?),
        _ => None,
    };
    let config = client_config(target, &server, 1024, Duration::from_secs(30));
    let receiving = client_config(
        target,
        hop.as_ref().unwrap_or(&server),
        1024,
        Duration::from_secs(30),
    );
    let total = rate * secs;
    let ledger = Ledger::new(total, true);
    let names = Arc::new(user_names(users, "user"));
    let _receivers = connect_many(&receiving, &names, &ledger.on_message(), "receivers").await?;
    let noop: OnMessage = Arc::new(|_: &[u8]| {});
    let sender_conns =
        connect_many(&config, &user_names(senders, "sender"), &noop, "senders").await?;
    let servers_cpu = || {
        server.cpu()
            + hop.as_ref().map_or(0.0, Server::cpu)
            + nats.as_ref().map_or(0.0, Server::cpu)
    };
    let server_cpu0 = servers_cpu();
    let client_cpu0 = self_cpu();
    let start = Instant::now();
    let per_sender = rate as f64 / senders as f64;
    let mut tasks = Vec::new();
    for (s, conn) in sender_conns.into_iter().enumerate() {
        let names = Arc::clone(&names);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut k: u64 = 0; // this sender's message count
            loop {
                tick.tick().await;
                let due = (start.elapsed().as_secs_f64() * per_sender) as u64;
                while k < due {
                    let id = k * senders as u64 + s as u64;
                    if id >= total {
                        conn.flush().await;
                        return conn;
                    }
                    // Stamped when handed to the connection (after pacing): senders release a
                    // burst per 1 ms timer tick, and the tick's lateness is not counted.
                    let to = &names[fastrand::usize(..names.len())];
                    if conn
                        .send(Dest::User(to), payload(id, now_ns(), size))
                        .await
                        .is_err()
                    {
                        return conn;
                    }
                    k += 1;
                }
                conn.flush().await;
            }
        }));
    }
    let deadline = start + Duration::from_secs(secs + 30);
    wait_delivered(
        &ledger,
        total,
        Duration::from_secs(5),
        deadline,
        "delivered",
    )
    .await;
    for task in tasks {
        let _ = task.await;
    }
    let server_cpu = servers_cpu() - server_cpu0;
    let client_cpu = self_cpu() - client_cpu0;
    let delivered = ledger.delivered.load(Ordering::Relaxed);
    let hist = ledger
        .hist
        .as_ref()
        .and_then(|h| h.lock().ok().map(|h| h.clone()))
        .ok_or("histogram")?;
    let mut row = Row::new(name);
    row.fig("p50_us", hist.value_at_quantile(0.5) as f64)
        .fig("p90_us", hist.value_at_quantile(0.9) as f64)
        .fig("p99_us", hist.value_at_quantile(0.99) as f64)
        .fig("p999_us", hist.value_at_quantile(0.999) as f64)
        .fig("max_us", hist.max() as f64)
        .fig("server_cpu_pct", server_cpu / secs as f64 * 100.0)
        .fig("client_cpu_pct", client_cpu / secs as f64 * 100.0)
        .note("messages", total)
        .note("delivered", delivered)
        .note("lost", total - delivered.min(total))
        .note("duplicates", ledger.duplicates.load(Ordering::Relaxed));
    Ok(row)
}

// ---------------------------------------------------------------------------------------------
// fanout

async fn fanout(ctx: &Ctx, args: &FanoutArgs) -> Result<bool, String> {
    let (members, publishes, rate) = if ctx.smoke {
        (200, 10, 20.0)
    } else {
        (args.members, args.publishes, args.rate)
    };
    let mut rows = Vec::new();
    let mut ok = true;
    for &target in &ctx.targets {
        eprintln!("fanout: {}", target.name());
        let row = fanout_one(ctx, target, members, publishes, rate, args.size).await;
        let row = row.unwrap_or_else(|e| {
            let mut row = Row::new(target.name());
            row.note("error", e);
            row
        });
        if target == Target::Imgate {
            ok &= !row.extra.contains_key("error")
                && row.extra.get("lost").and_then(serde_json::Value::as_u64) == Some(0);
        }
        rows.push(row);
    }
    emit(
        &ctx.out,
        "fanout",
        json!({"members": members, "publishes": publishes, "rate": rate, "size": args.size, "smoke": ctx.smoke}),
        &rows,
    )?;
    Ok(ok)
}

struct FanoutLedger {
    counts: Vec<AtomicU64>,
    last_ns: Vec<AtomicU64>,
    total: AtomicU64,
    hist: Mutex<Histogram<u64>>,
}

async fn fanout_one(
    ctx: &Ctx,
    target: Target,
    members: usize,
    publishes: u64,
    rate: f64,
    size: usize,
) -> Result<Row, String> {
    let server = start_server(ctx, target, &ImgateSettings::default(), 600)?;
    let config = client_config(target, &server, 64, Duration::from_secs(30));
    let ledger = Arc::new(FanoutLedger {
        counts: (0..publishes).map(|_| AtomicU64::new(0)).collect(),
        last_ns: (0..publishes).map(|_| AtomicU64::new(0)).collect(),
        total: AtomicU64::new(0),
        hist: Mutex::new(Histogram::new(3).map_err(|e| e.to_string())?),
    });
    let on: OnMessage = {
        let ledger = Arc::clone(&ledger);
        Arc::new(move |bytes: &[u8]| {
            let Some((id, sent)) = parse_payload(bytes) else {
                return;
            };
            let now = now_ns();
            let Some(i) = usize::try_from(id).ok() else {
                return;
            };
            if let (Some(c), Some(l)) = (ledger.counts.get(i), ledger.last_ns.get(i)) {
                c.fetch_add(1, Ordering::Relaxed);
                l.fetch_max(now, Ordering::Relaxed);
                ledger.total.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut h) = ledger.hist.lock() {
                    let _ = h.record((now.saturating_sub(sent) / 1000).max(1));
                }
            }
        })
    };
    let names = user_names(members, "member");
    let mut conns = connect_many(&config, &names, &on, "members").await?;
    let progress = bar(members as u64, "joining the room");
    for conn in &mut conns {
        if target == Target::Nats {
            conn.join_nats("r", Arc::clone(&on)).await?;
        } else {
            conn.join("r").await?;
        }
    }
    let join_deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let joined: u64 = conns
            .iter()
            .map(|c| c.acks.load(Ordering::Relaxed).min(1))
            .sum();
        progress.set_position(joined);
        if joined >= members as u64 {
            break;
        }
        if Instant::now() > join_deadline {
            return Err(format!("only {joined} of {members} joined"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    progress.finish_and_clear();
    // MQTT/NATS subscriptions propagate asynchronously inside the server: give them a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let noop: OnMessage = Arc::new(|_: &[u8]| {});
    let publisher = Conn::connect(&config, "publisher", noop).await?;
    let server_cpu0 = server.cpu();
    let client_cpu0 = self_cpu();
    let start = Instant::now();
    let start_ns = now_ns();
    let mut sent_ns = Vec::with_capacity(publishes as usize);
    for i in 0..publishes {
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(at).await;
        let t = now_ns();
        sent_ns.push(t);
        publisher.send(Dest::Room("r"), payload(i, t, size)).await?;
        publisher.flush().await;
    }
    let expected = publishes * members as u64;
    let progress = bar(expected, "deliveries");
    let deadline = Instant::now() + Duration::from_secs(if ctx.smoke { 10 } else { 60 });
    let mut last = 0;
    let mut last_change = Instant::now();
    loop {
        let got = ledger.total.load(Ordering::Relaxed);
        progress.set_position(got);
        if got >= expected
            || Instant::now() > deadline
            || last_change.elapsed() > Duration::from_secs(5)
        {
            break;
        }
        if got != last {
            last = got;
            last_change = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    progress.finish_and_clear();
    let server_cpu = server.cpu() - server_cpu0;
    let client_cpu = self_cpu() - client_cpu0;
    let total = ledger.total.load(Ordering::Relaxed);
    let mut to_last = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    let mut complete = 0;
    let mut last_ns = 0;
    for (i, sent) in sent_ns.iter().enumerate() {
        let l = ledger.last_ns[i].load(Ordering::Relaxed);
        last_ns = last_ns.max(l);
        if ledger.counts[i].load(Ordering::Relaxed) >= members as u64 {
            complete += 1;
            let _ = to_last.record((l.saturating_sub(*sent) / 1000).max(1));
        }
    }
    let span = (last_ns.saturating_sub(start_ns)) as f64 / 1e9;
    let hist = ledger.hist.lock().map_err(|_| "histogram")?.clone();
    let mut row = Row::new(target.name());
    row.fig("deliveries_per_s", total as f64 / span.max(1e-9))
        .fig(
            "pub_to_last_p50_ms",
            to_last.value_at_quantile(0.5) as f64 / 1000.0,
        )
        .fig(
            "pub_to_last_p99_ms",
            to_last.value_at_quantile(0.99) as f64 / 1000.0,
        )
        .fig(
            "delivery_p50_ms",
            hist.value_at_quantile(0.5) as f64 / 1000.0,
        )
        .cpu_per_million(server_cpu, client_cpu, total)
        .fig("server_cpu_s", server_cpu)
        .fig("client_cpu_s", client_cpu)
        .note("members", members)
        .note("publishes", publishes)
        .note("complete_publishes", complete)
        .note("deliveries", total)
        .note("lost", expected.saturating_sub(total));
    drop(conns);
    Ok(row)
}

// ---------------------------------------------------------------------------------------------
// resume storm

async fn resume(ctx: &Ctx, args: &ResumeArgs) -> Result<bool, String> {
    let (clients, pending) = if ctx.smoke {
        (200, 2)
    } else {
        (args.clients, args.pending)
    };
    if !ctx.targets.contains(&Target::Imgate) {
        return Ok(true);
    }
    eprintln!("resume: imgate");
    let name = if args.crash {
        "imgate-disk-sigkill"
    } else {
        "imgate"
    };
    let row = resume_one(ctx, clients, pending, args.crash)
        .await
        .unwrap_or_else(|e| {
            let mut row = Row::new(name);
            row.note("error", e);
            row
        });
    let ok = !row.extra.contains_key("error")
        && row.extra.get("lost").and_then(serde_json::Value::as_u64) == Some(0)
        && row
            .extra
            .get("duplicates")
            .and_then(serde_json::Value::as_u64)
            == Some(0);
    emit(
        &ctx.out,
        "resume",
        json!({"clients": clients, "pending_per_client": pending, "crash": args.crash, "smoke": ctx.smoke}),
        std::slice::from_ref(&row),
    )?;
    Ok(ok)
}

async fn resume_one(ctx: &Ctx, clients: usize, pending: u64, crash: bool) -> Result<Row, String> {
    let settings = ImgateSettings {
        durable: crash,
        ..ImgateSettings::default()
    };
    let mut server = start_server(ctx, Target::Imgate, &settings, 600)?;
    let mut config = client_config(Target::Imgate, &server, 256, Duration::from_secs(30));
    let total = clients as u64 * pending;
    let ledger = Ledger::new(total, false);
    let names = user_names(clients, "client");
    let conns = connect_many(&config, &names, &ledger.on_message(), "clients").await?;
    let sessions: Vec<_> = conns
        .iter()
        .map(|c| c.session().unwrap_or_default())
        .collect();
    for conn in conns {
        conn.cut();
    }
    // Let the server see every socket close (the sessions detach).
    tokio::time::sleep(Duration::from_millis(if ctx.smoke { 300 } else { 1500 })).await;
    let noop: OnMessage = Arc::new(|_: &[u8]| {});
    let sender = Conn::connect(&config, "resume-sender", noop).await?;
    let progress = bar(total, "pending messages sent");
    for (u, name) in names.iter().enumerate() {
        for k in 0..pending {
            sender
                .send(
                    Dest::User(name),
                    payload(u as u64 * pending + k, now_ns(), 100),
                )
                .await?;
        }
        progress.set_position((u as u64 + 1) * pending);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while sender.acks.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    progress.finish_and_clear();
    let restart = if crash {
        let restart = server.crash_and_restart(&ctx.imgate, &settings, 600)?;
        config = client_config(Target::Imgate, &server, 256, Duration::from_secs(30));
        Some(restart)
    } else {
        None
    };
    let server_cpu0 = server.cpu();
    let client_cpu0 = self_cpu();
    let start = Instant::now();
    let resumed = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let progress = bar(clients as u64, "resumed");
    let mut pending_set = tokio::task::JoinSet::new();
    let mut next = 0;
    let mut reconnected = Vec::with_capacity(clients);
    let mut all_resumed = Duration::ZERO;
    let on = ledger.on_message();
    let mut errors = 0;
    while next < clients || !pending_set.is_empty() {
        // Everyone at once, with 512 handshakes in flight (the listen backlog would otherwise
        // drop SYNs and measure TCP retransmission timers).
        while next < clients && pending_set.len() < 512 {
            let config = config.clone();
            let name = names[next].clone();
            let session = sessions[next].clone();
            let on = Arc::clone(&on);
            let resumed = Arc::clone(&resumed);
            let refused = Arc::clone(&refused);
            pending_set.spawn(async move {
                let conn = Conn::connect_resume(&config, &name, on, Some(session)).await;
                if let Ok(conn) = &conn {
                    if conn.session().is_some_and(|(s, _)| s.resumed) {
                        resumed.fetch_add(1, Ordering::Relaxed);
                    } else {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                conn
            });
            next += 1;
        }
        if let Some(done) = pending_set.join_next().await {
            match done {
                Ok(Ok(conn)) => reconnected.push(conn),
                _ => errors += 1,
            }
            progress.inc(1);
            if next >= clients && pending_set.is_empty() {
                all_resumed = start.elapsed();
            }
        }
    }
    progress.finish_and_clear();
    wait_delivered(
        &ledger,
        total,
        Duration::from_secs(10),
        Instant::now() + Duration::from_secs(60),
        "pending delivered",
    )
    .await;
    let all_delivered =
        Duration::from_nanos(ledger.last_ns.load(Ordering::Relaxed).saturating_sub(
            now_ns().saturating_sub(u64::try_from(start.elapsed().as_nanos()).unwrap_or(0)),
        ));
    let server_cpu = server.cpu() - server_cpu0;
    let client_cpu = self_cpu() - client_cpu0;
    let delivered = ledger.delivered.load(Ordering::Relaxed);
    let mut row = Row::new(if crash {
        "imgate-disk-sigkill"
    } else {
        "imgate"
    });
    if let Some(restart) = restart {
        // From SIGKILL to the restarted process accepting, every session restored.
        row.fig("restart_ms", ms(restart));
    }
    row.fig("all_resumed_ms", ms(all_resumed))
        .fig("all_delivered_ms", ms(all_delivered.max(all_resumed)))
        .fig(
            "resumes_per_s",
            clients as f64 / all_resumed.as_secs_f64().max(1e-9),
        )
        .fig("server_cpu_s", server_cpu)
        .fig("client_cpu_s", client_cpu)
        .note("clients", clients)
        .note("resumed", resumed.load(Ordering::Relaxed))
        .note("refused", refused.load(Ordering::Relaxed))
        .note("connect_errors", errors)
        .note("pending_messages", total)
        .note("delivered", delivered)
        .note("lost", total - delivered.min(total))
        .note("duplicates", ledger.duplicates.load(Ordering::Relaxed));
    if refused.load(Ordering::Relaxed) > 0 || errors > 0 {
        row.note(
            "error",
            format!(
                "{} refused resumes, {errors} connect errors",
                refused.load(Ordering::Relaxed)
            ),
        );
    }
    drop(reconnected);
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_parse_in_order_and_reject_unknown_names() {
        assert_eq!(
            parse_transports("tcp, quic,wss"),
            Ok(vec![
                TransportKind::Tcp,
                TransportKind::Quic,
                TransportKind::Wss
            ])
        );
        assert!(parse_transports("tcp,carrier-pigeon").is_err());
        assert!(parse_transports(" , ").is_err());
    }

    #[test]
    fn tcp_only_runs_keep_their_labels_and_peers_stay_tcp() {
        let tcp = TransportKind::Tcp;
        assert_eq!(idle_label(Target::Imgate, tcp, true, 5000), "imgate@5000");
        assert_eq!(
            idle_label(Target::Imgate, tcp, false, 5000),
            "imgate-tcp@5000"
        );
        let tls = TransportKind::Tls;
        assert_eq!(idle_label(Target::Imgate, tls, false, 5), "imgate-tls@5");
        assert_eq!(idle_label(Target::MqttQos1, tcp, false, 5), "mosquitto@5");
        assert_eq!(idle_transports(Target::Nats, &[tls, tcp]), vec![tcp]);
        assert_eq!(idle_transports(Target::Imgate, &[tls, tcp]), vec![tls, tcp]);
    }
}
