//! Pushes N notifications to each loopback mock and prints pushes/s and latency percentiles.
//!
//! `cargo run --release -p imgate-push --example push_bench -- [-n 20000] [-c 256] [--json]`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use imgate_push::apns::ApnsNotification;
use imgate_push::fcm::FcmMessage;
use imgate_push::mock::{
    ApnsTestKey, MockApns, MockApnsConfig, MockFcm, MockFcmConfig, RsaTestKey,
};
use imgate_push::{ApnsClient, ApnsConfig, FcmClient, FcmConfig, PushError, Verdict};
use tokio::time::Instant;

struct Report {
    provider: &'static str,
    pushes: u64,
    failures: u64,
    secs: f64,
    connections: u64,
    hist: Histogram<u64>,
}

impl Report {
    fn rate(&self) -> f64 {
        self.pushes as f64 / self.secs
    }
    fn us(&self, q: f64) -> u64 {
        self.hist.value_at_quantile(q)
    }
}

async fn run<F, Fut>(n: u64, concurrency: u64, send: F) -> (u64, f64, Histogram<u64>)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Verdict, PushError>> + Send,
{
    let send = Arc::new(send);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (send, next) = (Arc::clone(&send), Arc::clone(&next));
        tasks.spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            let mut failures = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let t = Instant::now();
                let ok = matches!(send(i).await, Ok(Verdict::Delivered));
                let _ = hist.record(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
                failures += u64::from(!ok);
            }
            (hist, failures)
        });
    }
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let mut failures = 0;
    while let Some(r) = tasks.join_next().await {
        let (h, f) = r.expect("join");
        hist.add(h).expect("merge");
        failures += f;
    }
    (failures, started.elapsed().as_secs_f64(), hist)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = arg("-n", 20_000);
    let concurrency = arg("-c", 256).max(1);
    let json = args.iter().any(|a| a == "--json");
    let mut reports = Vec::new();

    // APNs: TLS + HTTP/2, ES256 JWT checked on every request.
    let key = ApnsTestKey::generate()?;
    let mock = MockApns::start(MockApnsConfig {
        record: false,
        ..MockApnsConfig::token(&key)
    })
    .await?;
    let mut config =
        ApnsConfig::token(key.key_pem.clone(), key.key_id.clone(), key.team_id.clone());
    config.base_url(mock.url()).trust_pem(mock.ca_pem());
    let client = Arc::new(ApnsClient::new(&config)?);
    let c = Arc::clone(&client);
    let warm = ApnsNotification::alert(format!("{:064x}", 0), "com.example.chat", "warm", "up");
    c.send(&warm).await?;
    let (failures, secs, hist) = run(n, concurrency, move |i| {
        let c = Arc::clone(&c);
        async move {
            let mut note = ApnsNotification::alert(
                format!("{i:064x}"),
                "com.example.chat",
                "Ann",
                "hello there",
            );
            note.payload.aps.badge = Some(1);
            Ok(c.send(&note).await?.classification.verdict)
        }
    })
    .await;
    reports.push(Report {
        provider: "apns",
        pushes: n,
        failures,
        secs,
        connections: mock.connections(),
        hist,
    });
    drop(mock);

    // FCM: h2c + OAuth2 bearer checked on every request.
    let rsa = RsaTestKey::generate()?;
    let mock = MockFcm::start(MockFcmConfig {
        record: false,
        ..MockFcmConfig::new("bench", &rsa)
    })
    .await?;
    let mut config = FcmConfig::new(rsa.service_account("bench", &mock.token_uri()));
    config.base_url(mock.url());
    let client = Arc::new(FcmClient::new(&config)?);
    client
        .send(&FcmMessage::notification("warm", "warm", "up"))
        .await?;
    let c = Arc::clone(&client);
    let (failures, secs, hist) = run(n, concurrency, move |i| {
        let c = Arc::clone(&c);
        async move {
            Ok(c.send(&FcmMessage::notification(
                format!("tok-{i}"),
                "Ann",
                "hello there",
            ))
            .await?
            .classification
            .verdict)
        }
    })
    .await;
    reports.push(Report {
        provider: "fcm",
        pushes: n,
        failures,
        secs,
        connections: client.connections_opened(),
        hist,
    });
    drop(mock);

    if json {
        let rows: Vec<_> = reports
            .iter()
            .map(|r| {
                serde_json::json!({
                    "provider": r.provider, "pushes": r.pushes, "failures": r.failures,
                    "concurrency": concurrency, "seconds": r.secs, "pushes_per_sec": r.rate(),
                    "p50_us": r.us(0.5), "p99_us": r.us(0.99), "max_us": r.hist.max(),
                    "connections": r.connections,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for r in &reports {
            println!(
                "{:5} {} pushes, {} failed, concurrency {}: {:.0} pushes/s, p50 {:?}, p99 {:?}, {} connection(s)",
                r.provider,
                r.pushes,
                r.failures,
                concurrency,
                r.rate(),
                Duration::from_micros(r.us(0.5)),
                Duration::from_micros(r.us(0.99)),
                r.connections
            );
        }
    }
    Ok(())
}
