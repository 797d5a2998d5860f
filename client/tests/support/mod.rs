//! A real gateway on 127.0.0.1 with every transport, and client configs for it.
#![allow(dead_code, unreachable_pub)] // reason: each test file uses a subset

use std::sync::Arc;
use std::time::Duration;

use imgate::auth::StaticTokens;
use imgate::backend::RelayBackend;
use imgate::ids::{AppId, UserId};
use imgate::rate_limit::RateLimit;
use imgate::session::SessionConfig;
use imgate::{App, Gateway, RunningGateway, ServerConfig};
use imgate_client::{ClientConfig, Endpoint, ReconnectPolicy, RootCertStore, TransportKind};
use imgate_transports::{Identity, ListenerConfig};

/// The gateway and the roots that trust its self-signed certificate.
pub struct TestGateway {
    pub gw: RunningGateway,
    pub roots: RootCertStore,
}

pub async fn start(session: SessionConfig) -> TestGateway {
    start_with(
        session,
        Identity::self_signed(&["localhost"]).expect("identity"),
    )
    .await
}

/// A gateway serving `identity` on its TLS, WSS and QUIC listeners.
pub async fn start_with(session: SessionConfig, identity: Identity) -> TestGateway {
    let mut tokens = StaticTokens::new();
    for user in ["alice", "bob", "carol"] {
        tokens.insert(format!("tok-{user}"), UserId::new(user));
    }
    let app = App {
        id: AppId::new("chat"),
        authenticator: Arc::new(tokens),
        backend: Arc::new(RelayBackend::default()),
        session: Arc::new(session),
        push: Arc::new(imgate::offline::NoPush),
    };
    let server = ServerConfig {
        // The chaos runs send thousands of frames per second per connection.
        message_rate: RateLimit::new(1e6, 1e6),
        ..ServerConfig::default()
    };
    let mut builder = Gateway::builder().app(app).config(server);
    for kind in TransportKind::ALL {
        builder = builder.listener(
            ListenerConfig::new(kind, "127.0.0.1:0".parse().expect("addr"))
                .with_identity(identity.clone()),
        );
    }
    let gw = builder.start().await.expect("start gateway");
    TestGateway {
        gw,
        roots: identity.root_store(),
    }
}

impl TestGateway {
    pub fn endpoint(&self, kind: TransportKind) -> Endpoint {
        Endpoint::new(kind, self.gw.local_addr(kind).expect("listener"))
    }

    /// A config for `user` (device `phone`) on `kinds` (rotated on every reconnect), with
    /// fast reconnects.
    pub fn config(&self, user: &str, kinds: &[TransportKind]) -> ClientConfig {
        let endpoints = kinds.iter().map(|k| self.endpoint(*k)).collect();
        let mut config = ClientConfig::new(
            self.endpoint(kinds[0]),
            self.roots.clone(),
            format!("tok-{user}"),
            "chat",
            "phone",
        )
        .with_endpoints(endpoints);
        config.reconnect = ReconnectPolicy {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(100),
            ..ReconnectPolicy::default()
        };
        config.handshake_timeout = Duration::from_secs(5);
        config
    }
}

/// Waits (at most 10 s) until `client` stopped, and says why.
pub async fn stopped(client: &imgate_client::Client) -> imgate_client::StopReason {
    let mut state = client.state();
    let state = tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|s| matches!(s, imgate_client::ConnectionState::Stopped { .. })),
    )
    .await
    .expect("timely stop")
    .expect("state")
    .clone();
    match state {
        imgate_client::ConnectionState::Stopped { reason } => reason,
        _ => unreachable!("waited for Stopped"),
    }
}

/// Payload `"<tag>:<n>"`.
pub fn payload(tag: &str, n: u64) -> String {
    format!("{tag}:{n}")
}

/// The `n` of a `"<tag>:<n>"` payload.
pub fn payload_id(payload: &[u8]) -> (String, u64) {
    let text = std::str::from_utf8(payload).expect("utf-8 payload");
    let (tag, n) = text.split_once(':').expect("tag:n");
    (tag.to_owned(), n.parse().expect("number"))
}

pub mod proxy;
