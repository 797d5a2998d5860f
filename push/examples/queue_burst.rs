//! A burst through the durable queue: submits N pushes at once to a dispatcher over a redb
//! queue file on disk and the loopback APNs mock, and prints when the last one was delivered.
//!
//! This is the push side of a half-dead device: its whole outbox times out at once and every
//! message becomes a push. Each submit, send mark and removal is a queue write, so the figure
//! is set by how many fsyncs the queue makes.
//!
//! `cargo run --release -p imgate-push --example queue_burst -- [-n 1000] [--dir PATH]`
//! (`--dir` must not be tmpfs for a meaningful figure; default: `target/queue-burst`).

use std::sync::Arc;

use imgate_push::mock::{ApnsTestKey, MockApns, MockApnsConfig};
use imgate_push::{
    ApnsClient, ApnsConfig, Device, Dispatcher, DispatcherConfig, Platform, PushKind, PushMetrics,
    PushOutcome, PushRequest, RedbQueue, Routes,
};
use tokio::time::Instant;

// Current-thread, like the gateway's push thread: a blocking commit stalls every send.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let n: u64 = value("-n").and_then(|v| v.parse().ok()).unwrap_or(1000);
    let dir =
        std::path::PathBuf::from(value("--dir").unwrap_or_else(|| "target/queue-burst".into()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("push-queue.redb");
    let _ = std::fs::remove_file(&path);

    let key = ApnsTestKey::generate()?;
    let mock = MockApns::start(MockApnsConfig {
        record: false,
        ..MockApnsConfig::token(&key)
    })
    .await?;
    let mut config =
        ApnsConfig::token(key.key_pem.clone(), key.key_id.clone(), key.team_id.clone());
    config.base_url(mock.url()).trust_pem(mock.ca_pem());
    let mut routes = Routes::new();
    routes.apns(
        "chat",
        Arc::new(ApnsClient::new(&config)?),
        "com.example.chat",
    );
    let queue = Arc::new(RedbQueue::open(&path)?);
    let (dispatcher, mut outcomes) = Dispatcher::start(
        DispatcherConfig::default(),
        routes,
        queue,
        PushMetrics::unregistered(),
    );

    let started = Instant::now();
    for i in 0..n {
        dispatcher.submit(PushRequest {
            app: "chat".into(),
            device: Device {
                platform: Platform::Apns,
                token: format!("{i:064x}"),
                registered_at_ms: 0,
            },
            kind: PushKind::Alert {
                title: "Ann".into(),
                body: "hello".into(),
            },
            badge: Some(1),
            collapse_id: None,
            ttl_secs: 3600,
            data: Default::default(),
        })?;
    }
    let submitted = started.elapsed();
    let (mut delivered, mut first, mut median, mut last) = (0u64, None, None, started.elapsed());
    while delivered < n {
        match outcomes.recv().await {
            Some(PushOutcome::Delivered { .. }) => {
                delivered += 1;
                last = started.elapsed();
                first.get_or_insert(last);
                if delivered == n / 2 {
                    median = Some(last);
                }
            }
            Some(other) => return Err(format!("not delivered: {other:?}").into()),
            None => return Err("outcome channel closed".into()),
        }
    }
    dispatcher.shutdown().await;
    println!(
        "queue_burst n={n} dir={} submitted_in_ms={} first_ms={} median_ms={} last_ms={}",
        dir.display(),
        submitted.as_millis(),
        first.unwrap_or_default().as_millis(),
        median.unwrap_or_default().as_millis(),
        last.as_millis(),
    );
    Ok(())
}
