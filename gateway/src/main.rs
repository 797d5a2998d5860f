//! The `imgate` binary: thin on purpose; everything lives in the library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};

#[path = "cli/chat.rs"]
mod chat;
use imgate::admin::AdminServer;
use imgate::config::{Config, DEFAULT_CONFIG};
use imgate::ids::{AppId, UserId};

/// `--version`: the crate version and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("IMGATE_GIT_COMMIT"),
    ")"
);

/// imgate: an IM connection gateway.
#[derive(Debug, Parser)]
#[command(version = VERSION, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format: text (colours only on a terminal) or json (every line on stdout is JSON).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Set once at start: announcements (listening addresses, …) are JSON log lines too.
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (embedded defaults without --config: loopback listeners, relay backend).
    Serve {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file and exit (64 if invalid).
    CheckConfig {
        /// TOML configuration file.
        file: PathBuf,
    },
    /// Print the default configuration (every key, commented).
    PrintDefaultConfig,
    /// Print a development token for a user: an HS256 JWT minted with the app's secret (or
    /// the user's static token) from the configuration.
    Token {
        /// User id (`sub`).
        #[arg(long)]
        user: String,
        /// App id (`app_id` claim).
        #[arg(long, default_value = "default")]
        app: String,
        /// TOML configuration file (default: the embedded one `imgate serve` uses).
        #[arg(long)]
        config: Option<PathBuf>,
        /// HS256 secret (default: the app's, from the configuration).
        #[arg(long)]
        secret: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl: u64,
    },
    /// Chat from the terminal: log in as a user, join rooms, send and receive, see receipts.
    Chat(chat::ChatArgs),
}

/// Exit code for a bad configuration (sysexits EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::CheckConfig { file } => match with_runtime(|| Config::load(&file)) {
            Ok(config) => {
                for warning in &config.warnings {
                    eprintln!("{}: warning: {warning}", file.display());
                }
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{}: {error}", file.display());
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::PrintDefaultConfig => {
            print!("{DEFAULT_CONFIG}");
            ExitCode::SUCCESS
        }
        Command::Token {
            user,
            app,
            config,
            secret,
            ttl,
        } => {
            let ttl = Duration::from_secs(ttl);
            let token = match secret {
                Some(secret) => {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    Ok(imgate::auth::mint_dev_token(
                        secret.as_bytes(),
                        &AppId::new(app),
                        &UserId::new(user),
                        ttl,
                        now,
                    ))
                }
                None => with_runtime(|| match &config {
                    Some(path) => Config::load(path),
                    None => Config::parse(DEFAULT_CONFIG),
                })
                .and_then(|config| config.dev_token(&app, &user, ttl)),
            };
            match token {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("{error}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Command::Chat(args) => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("cannot start the runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(chat::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("imgate chat: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Runs `f` inside a (throwaway) runtime: building some backends starts tasks.
fn with_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => {
            let _entered = runtime.enter();
            f()
        }
        Err(_) => f(),
    }
}

fn serve(path: Option<PathBuf>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // One registry for every metric: the gateway's, the push dispatchers', the admin's.
    let mut registry = prometheus_client::registry::Registry::default();
    // Building some backends starts tasks.
    let entered = runtime.enter();
    let config = match &path {
        Some(path) => Config::load(path),
        None => Config::embedded(),
    };
    let config = match config {
        Ok(config) => config,
        Err(error) => {
            eprintln!("configuration error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for warning in &config.warnings {
        tracing::warn!("configuration: {warning}");
    }
    let mut admin_config = config.admin.clone();
    let demo = config.demo.clone();
    let drain_grace = config.drain_grace;
    let ticket_keys = config.ticket_keys.clone();
    let dev_certificate = config.dev_certificate;
    let metrics = imgate::metrics::Metrics::new(&mut registry);
    let store = match config.open_session_store(&metrics) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("cannot open the session store: {error}");
            return ExitCode::FAILURE;
        }
    };
    let builder = match config.into_builder_with_registry(&mut registry) {
        Ok(builder) => builder,
        Err(error) => {
            eprintln!("configuration error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    drop(entered);
    runtime.block_on(async move {
        if path.is_none() {
            tracing::warn!("no --config given: running on embedded defaults (development only)");
        }
        if dev_certificate {
            tracing::warn!(
                "USING A SELF-SIGNED DEVELOPMENT CERTIFICATE for TLS, WSS and QUIC: \
                 clients trust it only if told to; set [tls] cert and key for production"
            );
        }
        let mut builder = builder.metrics(metrics);
        if let Some(store) = store {
            builder = builder.store(store);
        }
        let gateway = match builder.start().await {
            Ok(gateway) => gateway,
            Err(error) => {
                eprintln!("cannot start: {error}");
                return ExitCode::FAILURE;
            }
        };
        admin_config.demo = demo.and_then(|demo| demo_page(demo, &gateway));
        let demo_on = admin_config.demo.is_some();
        let admin = match AdminServer::start(admin_config, gateway.handle().clone(), registry).await
        {
            Ok(admin) => admin,
            Err(error) => {
                eprintln!("cannot start the admin listener: {error}");
                gateway.shutdown().await;
                return ExitCode::FAILURE;
            }
        };
        // Installed before the addresses are announced: from then on a SIGHUP reloads.
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        let signals = Signals::install();
        tokio::spawn(reload_on_sighup(hangup, ticket_keys, path.clone()));
        for (kind, addr) in gateway.local_addrs() {
            announce(format_args!("imgate listening: {kind} on {addr}"));
        }
        if dev_certificate {
            let cert = imgate_transports::dev_certificate_dir().join("cert.pem");
            announce(format_args!(
                "imgate development certificate: {} (trust it in clients)",
                cert.display()
            ));
        }
        announce(format_args!(
            "imgate admin: http://{}/metrics /healthz /readyz /v1/deliver",
            admin.local_addr()
        ));
        announce(format_args!(
            "imgate console: http://{}/console/",
            admin.local_addr()
        ));
        if demo_on {
            announce(format_args!(
                "imgate demo chat: http://{}/demo/ (development only: it logs anyone in)",
                admin.local_addr()
            ));
        }
        match signals.next().await {
            Signal::Terminate => {
                tracing::info!(grace = ?drain_grace, "SIGTERM: draining");
                let report = gateway.drain(drain_grace, Duration::from_secs(1)).await;
                tracing::info!(
                    sessions = report.sessions,
                    ended = report.ended,
                    messages_handed_offline = report.messages_handed_offline,
                    kept = report.kept,
                    messages_kept = report.messages_kept,
                    clean = report.clean,
                    "drained"
                );
                announce(format_args!("imgate drained: {report}"));
            }
            Signal::Interrupt => {
                tracing::info!("SIGINT: shutting down now");
                gateway.shutdown().await;
            }
        }
        drop(admin);
        ExitCode::SUCCESS
    })
}

/// The demo page's settings once the gateway listens: its clients connect to the first `ws`
/// listener (on loopback if it listens on every address).
fn demo_page(
    demo: imgate::config::DemoSettings,
    gateway: &imgate::RunningGateway,
) -> Option<imgate::admin::DemoConfig> {
    let mut addr = gateway.local_addr(imgate::TransportKind::Ws)?;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("ws://{addr}{}", demo.ws_path);
    let http_url = demo.http_path.as_ref().and_then(|path| {
        let mut addr = gateway.local_addr(imgate::TransportKind::Http)?;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        Some(format!("http://{addr}{path}"))
    });
    let app = demo.app.clone();
    let mint: imgate::admin::MintToken = std::sync::Arc::new(move |user| {
        demo.token(user, DEMO_TOKEN_TTL).map_err(|e| e.to_string())
    });
    Some(imgate::admin::DemoConfig {
        app,
        url,
        http_url,
        mint,
    })
}

/// How long a demo page's login token lasts (the page asks again on each connection).
const DEMO_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// SIGHUP re-reads `[tls] ticket_keys` from the config file (the list and the files; key
/// rotation without a restart); with none configured it is logged and ignored, never the
/// default "terminate". The outcome goes to stdout too, where deploy scripts (and the e2e
/// test) read the listening addresses.
async fn reload_on_sighup(
    hangup: std::io::Result<tokio::signal::unix::Signal>,
    keys: Option<imgate_transports::TicketKeys>,
    config: Option<PathBuf>,
) {
    let mut hangup = match hangup {
        Ok(signal) => signal,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGHUP: ticket keys cannot be reloaded");
            return;
        }
    };
    while hangup.recv().await.is_some() {
        let (Some(keys), Some(config)) = (&keys, &config) else {
            tracing::info!("SIGHUP: nothing to reload (no [tls] ticket_keys)");
            continue;
        };
        let reloaded = Config::ticket_key_files(config)
            .map_err(|e| e.to_string())
            .and_then(|files| {
                if files.is_empty() {
                    Err("[tls] ticket_keys was removed: that takes a restart".to_owned())
                } else {
                    keys.reload_from(&files).map_err(|e| e.to_string())
                }
            });
        match reloaded {
            Ok(count) => {
                tracing::info!(count, "SIGHUP: ticket keys reloaded");
                announce(format_args!("imgate ticket keys reloaded: {count}"));
            }
            Err(error) => {
                tracing::error!(%error, "SIGHUP: ticket keys NOT reloaded, the previous ones stay");
                announce(format_args!("imgate ticket keys not reloaded: {error}"));
            }
        }
    }
}

/// A line on stdout for whoever started us (in JSON mode a JSON log line, like every other
/// line there); nobody reading is not an error.
fn announce(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::info!("{line}");
        return;
    }
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

enum Signal {
    Terminate,
    Interrupt,
}

/// SIGTERM drains gracefully; SIGINT (Ctrl-C) stops at once.
///
/// SIGTERM and SIGINT handlers, installed before the addresses are announced: a signal sent
/// right after the announcement must drain, not kill with the default action.
struct Signals {
    terminate: std::io::Result<tokio::signal::unix::Signal>,
    interrupt: std::io::Result<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Self {
            terminate: signal(SignalKind::terminate()),
            interrupt: signal(SignalKind::interrupt()),
        }
    }

    /// The next SIGTERM (drain) or SIGINT (stop at once).
    async fn next(self) -> Signal {
        let (mut terminate, mut interrupt) = match (self.terminate, self.interrupt) {
            (Ok(terminate), Ok(interrupt)) => (terminate, interrupt),
            (Err(error), _) | (_, Err(error)) => {
                tracing::error!(%error, "cannot listen for SIGTERM/SIGINT; Ctrl-C still works");
                let _ = tokio::signal::ctrl_c().await;
                return Signal::Interrupt;
            }
        };
        tokio::select! {
            _ = terminate.recv() => Signal::Terminate,
            _ = interrupt.recv() => Signal::Interrupt,
        }
    }
}

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => {
            JSON_LOGS.store(true, std::sync::atomic::Ordering::Relaxed);
            builder.json().init();
        }
        // Escape codes only where a terminal renders them, not in files, pipes or journald.
        LogFormat::Text => builder.with_ansi(std::io::stdout().is_terminal()).init(),
    }
}
