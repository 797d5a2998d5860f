//! `imgate-bench`: imgate measured the way operators would, side by side with mosquitto and
//! nats-server. One subcommand per scenario; each starts its servers as child processes,
//! drives them from this process (idle connections: from several child processes), prints a
//! table and writes a JSON file and a PNG plot under `bench/results/`.
//!
//! ```text
//! imgate-bench [--smoke] [--targets imgate,mosquitto-qos1,mosquitto-qos0,nats] <scenario>
//! scenarios: idle, routed, latency, fanout, resume, all
//! imgate-bench summary FILE... [--markdown OUT.md]   # medians over repeated runs
//! ```
#![forbid(unsafe_code)]

mod client;
mod report;
mod scenarios;
mod server;
mod summary;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// imgate load generator: idle, routed, latency, fanout and resume-storm scenarios.
#[derive(Debug, Parser)]
#[command(about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// Tiny counts: every scenario in seconds (for CI and the smoke test).
    #[arg(long, global = true)]
    smoke: bool,
    /// Comma-separated: imgate, mosquitto-qos1, mosquitto-qos0, nats (peers not installed are
    /// skipped).
    #[arg(
        long,
        global = true,
        default_value = "imgate,mosquitto-qos1,mosquitto-qos0,nats"
    )]
    targets: String,
    /// Results directory (JSON and PNG per run).
    #[arg(long, global = true, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    out: PathBuf,
    /// The imgate binary (default: `imgate` next to this executable, else embedded).
    #[arg(long, global = true)]
    imgate_bin: Option<PathBuf>,
    /// Run imgate as this binary's `serve-imgate` (the same library) instead of the binary.
    #[arg(long, global = true)]
    embedded: bool,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// N idle connections: server bytes per connection, connect time, heartbeat CPU.
    Idle(scenarios::IdleArgs),
    /// Users messaging random users with acknowledged delivery: msgs/s, CPU per million, loss.
    Routed(scenarios::RoutedArgs),
    /// Paced senders: end-to-end latency percentiles.
    Latency(scenarios::LatencyArgs),
    /// One room, many members: deliveries/s, publish → last delivery.
    Fanout(scenarios::FanoutArgs),
    /// Every client cut at once with pending messages, then resumed (imgate only).
    Resume(scenarios::ResumeArgs),
    /// Every scenario with its defaults (use with --smoke for a quick check).
    All,
    /// Medians over repeated runs: a Markdown table (and plots) from result JSON files.
    Summary(summary::SummaryArgs),
    /// (internal) Hold idle connections for the `idle` scenario.
    #[command(hide = true)]
    IdleClient(scenarios::IdleClientArgs),
    /// (internal) Run the imgate library as a server, like `imgate serve`.
    #[command(hide = true)]
    ServeImgate {
        #[arg(long)]
        config: PathBuf,
    },
}

/// Each connection needs a descriptor; lift the soft limit to the hard one (children inherit).
fn raise_fd_limit() {
    if let Ok((soft, hard)) = rlimit::Resource::NOFILE.get()
        && soft < hard
    {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    raise_fd_limit();
    if let Cmd::ServeImgate { config } = &cli.command {
        return match server::serve_embedded(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("serve-imgate: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Cmd::Summary(args) = &cli.command {
        return match summary::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("summary: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(scenarios::run(&cli, &cli.command));
    // Do not wait for connection tasks still parked in the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("imgate-bench: imgate failed a check (errors or losses above)");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("imgate-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
