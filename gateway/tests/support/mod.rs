//! Shared test support: start a gateway, a scripted raw-frame client, a tiny HTTP client, test keys.
#![allow(dead_code, unreachable_pub)] // reason: each test binary uses a different subset

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use imgate::auth::StaticTokens;
use imgate::backend::{
    Backend, Origin, RelayBackend, UpstreamOutcome, UpstreamRequest, async_trait,
};
use imgate::ids::{AppId, DeviceId, MessageId, UserId};
use imgate::offline::{PushPolicy, PushTrigger};
use imgate::session::{Identity, SessionConfig, Undelivered, UndeliveredReason};
use imgate::{App, Gateway, GatewayBuilder, GatewayHandle, RunningGateway, ServerConfig};
use imgate_codec::{Frame, Hello, Kind, Receipt, Resume, Send, Welcome};
use imgate_transports::{Connector, ConnectorConfig, FramedConn, ListenerConfig, TransportKind};
use rustls::RootCertStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub mod pipe;
pub mod process;

/// Users `alice`, `bob`, `carol` with tokens `tok-<user>`.
pub fn tokens() -> StaticTokens {
    let mut tokens = StaticTokens::new();
    for user in ["alice", "bob", "carol"] {
        tokens.insert(format!("tok-{user}"), UserId::new(user));
    }
    tokens
}

/// A relay that also records what the offline path received; `reported` counts the
/// records, so a test can wait for them.
#[derive(Debug, Default, Clone)]
pub struct RecordingRelay {
    relay: RelayBackend,
    pub undelivered: Arc<Mutex<Vec<(String, Undelivered, UndeliveredReason)>>>,
    pub reported: Arc<tokio::sync::watch::Sender<usize>>,
}

#[async_trait]
impl Backend for RecordingRelay {
    async fn on_upstream(
        &self,
        gateway: &GatewayHandle,
        origin: &Origin,
        request: UpstreamRequest,
    ) -> UpstreamOutcome {
        self.relay.on_upstream(gateway, origin, request).await
    }

    async fn on_undelivered(
        &self,
        _gateway: &GatewayHandle,
        _app: &AppId,
        user: &UserId,
        messages: &[Undelivered],
        reason: UndeliveredReason,
    ) {
        let mut log = self.undelivered.lock().expect("lock");
        for m in messages {
            log.push((user.to_string(), m.clone(), reason));
        }
        self.reported.send_replace(log.len());
    }
}

/// What the gateway told a [`WatchedPush`], in order.
#[derive(Clone, Debug, Default)]
pub struct PushLog {
    /// (user, messages, trigger) of every push asked for.
    pub pushes: Vec<(String, Vec<MessageId>, PushTrigger)>,
    /// (user, messages) of every acknowledgement reported.
    pub acked: Vec<(String, Vec<MessageId>)>,
}

/// A push policy that pushes nothing and records what the gateway tells it, so a test can
/// wait for the call that proves a session got as far as it expects (an ack processed, a
/// detach past the push grace) instead of waiting for time to pass.
#[derive(Debug)]
pub struct WatchedPush {
    log: tokio::sync::watch::Sender<PushLog>,
}

impl Default for WatchedPush {
    fn default() -> Self {
        Self {
            log: tokio::sync::watch::channel(PushLog::default()).0,
        }
    }
}

impl WatchedPush {
    /// Waits (5 s at most) until the log satisfies `reached`; returns it.
    pub async fn until(&self, what: &str, reached: impl FnMut(&PushLog) -> bool) -> PushLog {
        let mut log = self.log.subscribe();
        tokio::time::timeout(Duration::from_secs(5), log.wait_for(reached))
            .await
            .unwrap_or_else(|_| panic!("{what}: {:?}", *self.log.borrow()))
            .expect("sender alive")
            .clone()
    }
}

impl PushPolicy for WatchedPush {
    fn push(
        &self,
        _app: &AppId,
        user: &UserId,
        _device: Option<&DeviceId>,
        messages: &[MessageId],
        trigger: PushTrigger,
    ) {
        self.log.send_modify(|log| {
            log.pushes
                .push((user.to_string(), messages.to_vec(), trigger));
        });
    }

    fn acked(&self, identity: &Identity, messages: &[MessageId]) {
        self.log.send_modify(|log| {
            log.acked
                .push((identity.user.to_string(), messages.to_vec()));
        });
    }
}

/// An app `chat` with static tokens and `backend`.
pub fn app(backend: Arc<dyn Backend>, session: SessionConfig) -> App {
    App {
        id: AppId::new("chat"),
        authenticator: Arc::new(tokens()),
        backend,
        session: Arc::new(session),
        push: Arc::new(imgate::offline::NoPush),
    }
}

/// A builder with a TCP listener on 127.0.0.1:0.
pub fn builder(app: App, server: ServerConfig) -> GatewayBuilder {
    Gateway::builder()
        .app(app)
        .config(server)
        .listener(ListenerConfig::new(TransportKind::Tcp, loopback()))
}

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The default relay gateway on TCP.
pub async fn start() -> RunningGateway {
    start_with(ServerConfig::default()).await
}

/// The relay gateway on TCP with server-wide settings `server`.
pub async fn start_with(server: ServerConfig) -> RunningGateway {
    builder(
        app(Arc::new(RelayBackend::default()), SessionConfig::default()),
        server,
    )
    .start()
    .await
    .expect("start")
}

/// The relay gateway on TCP, counting into `metrics`.
pub async fn start_with_metrics(metrics: imgate::metrics::Metrics) -> RunningGateway {
    builder(
        app(Arc::new(RelayBackend::default()), SessionConfig::default()),
        ServerConfig::default(),
    )
    .metrics(metrics)
    .start()
    .await
    .expect("start")
}

/// A gateway serving `app` on TCP with the default server settings.
pub async fn start_app(app: App) -> RunningGateway {
    builder(app, ServerConfig::default())
        .start()
        .await
        .expect("start")
}

pub async fn connect(gw: &RunningGateway) -> FramedConn {
    let connector = Connector::new(ConnectorConfig::new(
        TransportKind::Tcp,
        RootCertStore::empty(),
    ))
    .expect("connector");
    connector
        .connect(gw.local_addr(TransportKind::Tcp).expect("tcp"))
        .await
        .expect("connect")
}

/// The next frame's kind (5 s at most).
pub async fn recv(conn: &mut FramedConn) -> Kind {
    tokio::time::timeout(Duration::from_secs(5), conn.recv())
        .await
        .expect("timely frame")
        .expect("frame")
        .expect("open")
        .kind
        .expect("kind")
}

pub fn hello_frame(token: &str, device: &str, resume: Option<Resume>) -> Frame {
    Hello {
        version: 1,
        token: token.into(),
        app_id: "chat".into(),
        device_id: device.into(),
        resume,
        ..Default::default()
    }
    .into()
}

pub async fn hello(conn: &mut FramedConn, token: &str, resume: Option<Resume>) -> Welcome {
    conn.send(&hello_frame(token, "phone", resume))
        .await
        .expect("send hello");
    match recv(conn).await {
        Kind::Welcome(w) => w,
        other => panic!("expected Welcome, got {other:?}"),
    }
}

/// A connection that has said [`hello`] as `token` and got its `Welcome`.
pub async fn login(gw: &RunningGateway, token: &str) -> FramedConn {
    let mut conn = connect(gw).await;
    hello(&mut conn, token, None).await;
    conn
}

/// The next frame, which must be a `Receipt`.
pub async fn receipt(conn: &mut FramedConn) -> Receipt {
    match recv(conn).await {
        Kind::Receipt(r) => r,
        other => panic!("expected Receipt, got {other:?}"),
    }
}

pub fn text(msg_id: u64, to: &str, body: &'static str) -> Frame {
    Send {
        msg_id,
        to: Some(imgate_codec::proto::send::To::User(to.into())),
        payload: Bytes::from_static(body.as_bytes()),
        ack: 0,
    }
    .into()
}

pub fn resume_of(welcome: &Welcome, last_seq: u64) -> Resume {
    Resume {
        session_id: welcome.session_id,
        resume_secret: welcome.resume_secret.clone(),
        last_seq,
    }
}

/// The raw response (status line, headers and body) to one request written as it is.
pub async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .expect("timely")
        .expect("read");
    response
}

/// One HTTP/1.1 request over a fresh connection; returns (status, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    http_with_token(addr, method, path, body, None).await
}

/// [`http`] with an `Authorization: Bearer` header.
pub async fn http_with_token(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .expect("timely response")
        .expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// One RSA key per test process (FCM service accounts), cached in Cargo's per-target temp
/// dir: generation is slow in a debug build.
pub fn rsa_key() -> &'static imgate_push::mock::RsaTestKey {
    static KEY: std::sync::OnceLock<imgate_push::mock::RsaTestKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        let (private, public) = (dir.join("gw-push-rsa.pem"), dir.join("gw-push-rsa.pub.pem"));
        if let (Ok(private_pem), Ok(public_pem)) = (
            std::fs::read_to_string(&private),
            std::fs::read_to_string(&public),
        ) {
            return imgate_push::mock::RsaTestKey {
                private_pem,
                public_pem,
            };
        }
        let key = imgate_push::mock::RsaTestKey::generate().expect("RSA key");
        // Written whole then renamed: a concurrent test never reads half a key.
        for (path, pem) in [(&private, &key.private_pem), (&public, &key.public_pem)] {
            let partial = path.with_extension(format!("{}.part", std::process::id()));
            let _ = std::fs::write(&partial, pem).and_then(|()| std::fs::rename(&partial, path));
        }
        key
    })
}
