//! Resume latency: how long from a dropped connection to the first replayed message.
//!
//! Starts a gateway in-process (every transport on 127.0.0.1), connects a sender (TCP) and
//! a receiver per transport, then repeatedly: cuts the receiver's connection
//! (`debug_drop_connection`), sends it a message while it is away, and times the drop →
//! that message arriving (reconnect, handshake, resume, replay). Reports p50/p99/max per
//! transport with `hdrhistogram`.
//!
//! ```text
//! cargo run --release -p imgate-client --example resume_latency [-- <resumes per transport>]
//! ```
//!
//! The receiver's reconnect back-off is set to 1 ms (the first reconnect waits a uniform
//! 0–1 ms); with the default (100 ms) each figure grows by a uniform 0–100 ms of jitter.

use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use imgate::auth::StaticTokens;
use imgate::backend::RelayBackend;
use imgate::ids::{AppId, UserId};
use imgate::rate_limit::RateLimit;
use imgate::session::SessionConfig;
use imgate::{App, Gateway, ServerConfig};
use imgate_client::{Client, ClientConfig, Endpoint, ReconnectPolicy, Target, TransportKind};
use imgate_transports::{Identity, ListenerConfig};
use tokio::time::Instant;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let resumes: u64 = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(500);
    let identity = Identity::self_signed(&["localhost"])?;
    let mut tokens = StaticTokens::new();
    tokens.insert("tok-sender", UserId::new("sender"));
    tokens.insert("tok-receiver", UserId::new("receiver"));
    let app = App {
        id: AppId::new("chat"),
        authenticator: Arc::new(tokens),
        backend: Arc::new(RelayBackend::default()),
        session: Arc::new(SessionConfig::default()),
        push: Arc::new(imgate::offline::NoPush),
    };
    let server = ServerConfig {
        message_rate: RateLimit::new(1e6, 1e6),
        ..ServerConfig::default()
    };
    let mut builder = Gateway::builder().app(app).config(server);
    for kind in TransportKind::ALL {
        builder = builder.listener(
            ListenerConfig::new(kind, "127.0.0.1:0".parse()?).with_identity(identity.clone()),
        );
    }
    let gw = builder.start().await?;
    let endpoint = |kind| -> Result<Endpoint, String> {
        let addr = gw.local_addr(kind).ok_or(format!("no {kind} listener"))?;
        Ok(Endpoint::new(kind, addr))
    };
    let sender_config = ClientConfig::new(
        endpoint(TransportKind::Tcp)?,
        identity.root_store(),
        "tok-sender",
        "chat",
        "bench",
    );
    let (sender, _sender_in) = Client::connect(sender_config).await?;

    println!("resume latency, drop -> first replayed message, {resumes} resumes per transport");
    println!();
    println!("| transport | p50 | p99 | max |");
    println!("|---|---|---|---|");
    for kind in TransportKind::ALL {
        let mut config = ClientConfig::new(
            endpoint(kind)?,
            identity.root_store(),
            "tok-receiver",
            "chat",
            kind.as_str(),
        );
        config.reconnect = ReconnectPolicy {
            initial: Duration::from_millis(1),
            ..ReconnectPolicy::default()
        };
        let (receiver, mut incoming) = Client::connect(config).await?;
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        for n in 0..resumes {
            receiver.debug_drop_connection();
            let dropped = Instant::now();
            sender.send(Target::user("receiver"), n.to_string()).await?;
            let message = tokio::time::timeout(Duration::from_secs(10), incoming.recv())
                .await?
                .ok_or("receiver stopped")?;
            let elapsed = dropped.elapsed();
            assert_eq!(message.payload, n.to_string().as_bytes(), "in order");
            histogram.record(u64::try_from(elapsed.as_micros())?.max(1))?;
        }
        receiver.close().await;
        let ms = |us: u64| format!("{:.2} ms", us as f64 / 1000.0);
        println!(
            "| {kind} | {} | {} | {} |",
            ms(histogram.value_at_quantile(0.5)),
            ms(histogram.value_at_quantile(0.99)),
            ms(histogram.max()),
        );
    }
    sender.close().await;
    gw.shutdown().await;
    Ok(())
}
