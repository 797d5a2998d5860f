//! The gRPC backend: ONE bidirectional stream per gateway (`GatewayBackend.Connect` in
//! `proto/backend.proto`) carries upstream requests, session events and undelivered notices
//! to the backend, and receipts, deliveries, room changes and kicks back.
//!
//! # Two-phase start
//! An [`App`](crate::App) takes its backend before the gateway exists, so
//! [`GrpcBackend::new`] starts the stream at once and executes the backend's commands once it
//! knows the gateway: pass it with [`GrpcBackend::attach`] after `Gateway::start`, or let the
//! first callback (every `Backend` method receives the handle) capture it. The backend keeps
//! only a weak reference, so it never keeps a stopped gateway alive.
//!
//! # Back-pressure
//! Gateway → backend: a queue of `queue_capacity` events, then a stream buffer of
//! `stream_buffer` events, then HTTP/2 flow control. An upstream request waits for room in
//! the queue and for its result within `request_timeout` in total, then is answered
//! `BACKEND_UNAVAILABLE`; a request that timed out while queued is never sent. Backend →
//! gateway: commands are read one at a time and executed without waiting (delivery never
//! blocks), so a fast backend is slowed by HTTP/2 flow control, never by a growing buffer.
//!
//! # Reconnect
//! When the stream cannot be opened or breaks, requests already sent on it are answered
//! `BACKEND_UNAVAILABLE` at once, and the gateway reconnects after an exponential back-off
//! with jitter (reset once a stream opens). Requests still queued go out on the next stream.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use imgate_codec::{CloseCode, Platform, ReceiptStatus};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use super::{Backend, Origin, UpstreamOutcome, UpstreamRequest, async_trait};
use crate::GatewayHandle;
use crate::deliver::{Delivery, DeliveryOptions, DeviceOutcome, PushAlert, PushOptions, Target};
use crate::handle::{Shared, wall_ms};
use crate::ids::{AppId, DeviceId, MessageId, RoomId, SessionId, UserId};
use crate::session::{Undelivered, UndeliveredReason, UpstreamTarget};

/// Types and client generated from `proto/backend.proto` (and the server trait, for
/// backends written in Rust and for tests).
#[allow(missing_docs, unreachable_pub, clippy::use_self)] // reason: generated code
pub mod proto {
    tonic::include_proto!("imgate.backend.v1");
}

use proto::gateway_event::Event as EventKind;

/// Version of the stream protocol sent in `Hello.protocol_version`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Settings of a [`GrpcBackend`]. Build with [`GrpcBackendConfig::new`]; every other field has
/// a safe default.
#[derive(Clone)]
pub struct GrpcBackendConfig {
    /// `http://host:port` (plain HTTP/2) or `https://host:port` (TLS with rustls).
    pub endpoint: String,
    /// This gateway's name, sent in `Hello`. Default `"imgate"`.
    pub gateway_id: String,
    /// Time-out of opening a connection. Default 5 s.
    pub connect_timeout: Duration,
    /// How long an upstream request waits in total (queue + the backend's answer) before
    /// its client is answered `BACKEND_UNAVAILABLE`. Default 5 s.
    pub request_timeout: Duration,
    /// Events (requests, notices) queued for the backend at most. Default 1024.
    pub queue_capacity: usize,
    /// Events handed to the HTTP/2 stream but not yet written, at most. Default 64.
    pub stream_buffer: usize,
    /// First reconnect delay; doubled per failure up to `reconnect_backoff_max`, with jitter.
    /// Default 100 ms.
    pub reconnect_backoff_base: Duration,
    /// Largest reconnect delay. Default 5 s.
    pub reconnect_backoff_max: Duration,
    /// For `https`: PEM CA certificate(s) to trust instead of the bundled webpki roots.
    pub tls_ca_pem: Option<Vec<u8>>,
}

impl GrpcBackendConfig {
    /// A configuration for `endpoint` with the defaults documented per field.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            gateway_id: "imgate".into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            queue_capacity: 1024,
            stream_buffer: 64,
            reconnect_backoff_base: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_secs(5),
            tls_ca_pem: None,
        }
    }
}

impl fmt::Debug for GrpcBackendConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcBackendConfig")
            .field("endpoint", &self.endpoint)
            .field("gateway_id", &self.gateway_id)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("queue_capacity", &self.queue_capacity)
            .field("stream_buffer", &self.stream_buffer)
            .field("reconnect_backoff_base", &self.reconnect_backoff_base)
            .field("reconnect_backoff_max", &self.reconnect_backoff_max)
            .field("tls_ca_pem", &self.tls_ca_pem.is_some())
            .finish()
    }
}

/// A [`GrpcBackendConfig`] that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrpcConfigError {
    /// The endpoint is not a valid `http`/`https` URI.
    #[error("grpc backend endpoint {0:?}: {1}")]
    Endpoint(String, String),
    /// A count that must be positive is zero.
    #[error("grpc backend {0} must be at least 1")]
    Zero(&'static str),
}

/// The gRPC backend; see the [module docs](self). Dropping it closes the stream.
pub struct GrpcBackend {
    inner: Arc<Inner>,
    task: AbortHandle,
}

struct Inner {
    config: GrpcBackendConfig,
    events: mpsc::Sender<proto::GatewayEvent>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_request_id: AtomicU64,
    gateway: OnceLock<Weak<Shared>>,
    connected: AtomicBool,
    streams_opened: AtomicU64,
}

/// An upstream request waiting for its result.
struct Pending {
    answer: oneshot::Sender<UpstreamOutcome>,
    /// Handed to a stream (so a break answers it at once).
    sent: bool,
}

impl fmt::Debug for GrpcBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcBackend")
            .field("config", &self.inner.config)
            .field("connected", &self.is_connected())
            .field("streams_opened", &self.streams_opened())
            .finish_non_exhaustive()
    }
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GrpcBackend {
    /// Starts the stream task (call within a tokio runtime). The backend's commands run
    /// once the gateway is known: see [`attach`](Self::attach).
    pub fn new(config: GrpcBackendConfig) -> Result<Self, GrpcConfigError> {
        if config.queue_capacity == 0 {
            return Err(GrpcConfigError::Zero("queue_capacity"));
        }
        if config.stream_buffer == 0 {
            return Err(GrpcConfigError::Zero("stream_buffer"));
        }
        let endpoint = endpoint(&config)?;
        let (events, events_rx) = mpsc::channel(config.queue_capacity);
        let inner = Arc::new(Inner {
            config,
            events,
            pending: Mutex::default(),
            next_request_id: AtomicU64::new(1),
            gateway: OnceLock::new(),
            connected: AtomicBool::new(false),
            streams_opened: AtomicU64::new(0),
        });
        let task = tokio::spawn(run(inner.clone(), endpoint, events_rx)).abort_handle();
        Ok(Self { inner, task })
    }

    /// Gives the backend the gateway its commands act on (the first call wins; later ones
    /// and the automatic capture on callbacks are no-ops).
    pub fn attach(&self, gateway: &GatewayHandle) {
        self.inner.attach(gateway);
    }

    /// Whether a stream is open right now.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// Streams opened since start (1 + reconnects that succeeded).
    pub fn streams_opened(&self) -> u64 {
        self.inner.streams_opened.load(Ordering::Relaxed)
    }

    /// Queues a notice that must not be lost, waiting while the event queue is full
    /// (back-pressure on the offline hand-off's task).
    async fn notify_reliably(&self, event: EventKind) {
        let event = proto::GatewayEvent { event: Some(event) };
        if self.inner.events.send(event).await.is_err() {
            tracing::error!("grpc backend stopped; notice lost");
        }
    }

    /// Queues a best-effort notice (connect, disconnect); dropped with a warning when the
    /// queue is full.
    fn notify(&self, event: EventKind) {
        if let Err(error) = self
            .inner
            .events
            .try_send(proto::GatewayEvent { event: Some(event) })
        {
            tracing::warn!(%error, "grpc backend queue full or closed; notice dropped");
        }
    }
}

fn endpoint(config: &GrpcBackendConfig) -> Result<Endpoint, GrpcConfigError> {
    let bad =
        |e: &dyn fmt::Display| GrpcConfigError::Endpoint(config.endpoint.clone(), e.to_string());
    let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
        .map_err(|e| bad(&e))?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    match endpoint.uri().scheme_str() {
        Some("http") => {}
        Some("https") => {
            let tls = match &config.tls_ca_pem {
                Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
                None => ClientTlsConfig::new().with_webpki_roots(),
            };
            endpoint = endpoint.tls_config(tls).map_err(|e| bad(&e))?;
        }
        _ => return Err(bad(&"scheme must be http or https")),
    }
    Ok(endpoint)
}

impl Inner {
    fn attach(&self, gateway: &GatewayHandle) {
        let _ = self.gateway.set(Arc::downgrade(&gateway.shared));
    }

    fn gateway(&self) -> Option<GatewayHandle> {
        let shared = self.gateway.get()?.upgrade()?;
        Some(GatewayHandle { shared })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending
            .lock()
            .expect("invariant: pending lock not poisoned")
    }

    /// Marks an upstream request as handed to the stream; false when it already timed out
    /// (then it is not sent at all).
    fn mark_sent(&self, event: &proto::GatewayEvent) -> bool {
        match &event.event {
            Some(EventKind::Upstream(request)) => match self.pending().get_mut(&request.request_id)
            {
                Some(pending) => {
                    pending.sent = true;
                    true
                }
                None => false,
            },
            _ => true,
        }
    }

    /// The stream broke: requests sent on it get no result, so answer them now.
    fn fail_sent(&self) {
        let mut pending = self.pending();
        let sent: Vec<u64> = pending
            .iter()
            .filter(|(_, p)| p.sent)
            .map(|(id, _)| *id)
            .collect();
        for id in sent {
            if let Some(p) = pending.remove(&id) {
                let _ = p.answer.send(unavailable("backend stream broke"));
            }
        }
    }

    /// Executes one command; the result to send back, if the command asked for one.
    async fn execute(&self, command: proto::BackendCommand) -> Option<proto::CommandResult> {
        use proto::backend_command::Command;
        let command_id = command.command_id;
        let result = match command.command? {
            Command::UpstreamResult(result) => {
                if let Some(pending) = self.pending().remove(&result.request_id) {
                    let _ = pending.answer.send(outcome(&result));
                }
                return None;
            }
            command => match self.gateway() {
                None => Err("gateway not attached yet".to_owned()),
                Some(gateway) => apply(&gateway, command).await,
            },
        };
        if command_id == 0 {
            if let Err(error) = &result {
                tracing::warn!(%error, "grpc backend command failed");
            }
            return None;
        }
        Some(match result {
            Ok(mut done) => {
                done.command_id = command_id;
                done.ok = true;
                done
            }
            Err(error) => proto::CommandResult {
                command_id,
                ok: false,
                error,
                ..Default::default()
            },
        })
    }
}

/// Carries out a delivery, room change or kick.
async fn apply(
    gateway: &GatewayHandle,
    command: proto::backend_command::Command,
) -> Result<proto::CommandResult, String> {
    use proto::backend_command::Command;
    let changed = |changed| proto::CommandResult {
        changed,
        ..Default::default()
    };
    match command {
        Command::UpstreamResult(_) => unreachable!("invariant: handled by the caller"),
        Command::Deliver(deliver) => {
            let app = AppId::new(deliver.app.as_str());
            let delivery = delivery(deliver)?;
            let report = gateway
                .deliver(&app, delivery)
                .await
                .map_err(|e| e.to_string())?;
            Ok(proto::CommandResult {
                delivery: Some(proto::DeliveryReport {
                    message_id: report.message_id.0,
                    devices: report
                        .devices
                        .into_iter()
                        .map(|d| {
                            let (outcome, seq) = match d.outcome {
                                DeviceOutcome::Sent { seq } => (proto::DeviceOutcome::Sent, seq),
                                DeviceOutcome::Buffered { seq } => {
                                    (proto::DeviceOutcome::Buffered, seq)
                                }
                                DeviceOutcome::Offline => (proto::DeviceOutcome::Offline, 0),
                                _ => (proto::DeviceOutcome::Unreachable, 0),
                            };
                            proto::DeviceResult {
                                user: d.user.to_string(),
                                device: d.device.map(|d| d.to_string()).unwrap_or_default(),
                                session_id: d.session.map_or(0, |s| s.0),
                                outcome: outcome.into(),
                                seq,
                            }
                        })
                        .collect(),
                }),
                ..Default::default()
            })
        }
        Command::JoinRoom(m) => Ok(changed(gateway.join_room(
            &AppId::new(m.app.as_str()),
            &RoomId::new(m.room.as_str()),
            UserId::new(m.user.as_str()),
        ))),
        Command::LeaveRoom(m) => Ok(changed(gateway.leave_room(
            &AppId::new(m.app.as_str()),
            &RoomId::new(m.room.as_str()),
            &UserId::new(m.user.as_str()),
        ))),
        Command::Kick(kick) => match kick.target {
            Some(proto::kick::Target::SessionId(id)) => Ok(changed(gateway.kick(SessionId(id)))),
            Some(proto::kick::Target::User(user)) => {
                let sessions = gateway.user_sessions(
                    &AppId::new(user.app.as_str()),
                    &UserId::new(user.user.as_str()),
                );
                let mut any = false;
                for session in sessions {
                    any |= gateway.kick(session.id);
                }
                Ok(changed(any))
            }
            None => Err("kick without a target".to_owned()),
        },
    }
}

fn delivery(deliver: proto::Deliver) -> Result<Delivery, String> {
    use proto::deliver::Target as T;
    let target = match deliver.target {
        Some(T::User(user)) => Target::User(UserId::new(user.as_str())),
        Some(T::Device(d)) => Target::Device(
            UserId::new(d.user.as_str()),
            DeviceId::new(d.device.as_str()),
        ),
        Some(T::SessionId(id)) => Target::Session(SessionId(id)),
        Some(T::Room(room)) => Target::Room(RoomId::new(room.as_str())),
        None => return Err("deliver without a target".to_owned()),
    };
    let push = deliver.push.map(|p| PushOptions {
        alert: (!p.alert_title.is_empty() || !p.alert_body.is_empty()).then_some(PushAlert {
            title: p.alert_title.into(),
            body: p.alert_body.into(),
        }),
        collapse_id: (!p.collapse_id.is_empty()).then_some(p.collapse_id),
        ttl_secs: p.ttl_secs,
        data: p.data.into_iter().collect(),
    });
    Ok(Delivery {
        target,
        payload: deliver.payload,
        options: DeliveryOptions {
            from: (!deliver.from.is_empty()).then(|| UserId::new(deliver.from.as_str())),
            exclude_session: (deliver.exclude_session_id != 0)
                .then_some(SessionId(deliver.exclude_session_id)),
            push,
            ..DeliveryOptions::default()
        },
    })
}

fn unavailable(reason: &str) -> UpstreamOutcome {
    UpstreamOutcome::rejected(CloseCode::BACKEND_UNAVAILABLE, reason)
}

/// The receipt for a backend's `UpstreamResult`.
fn outcome(result: &proto::UpstreamResult) -> UpstreamOutcome {
    let message_id = (result.message_id != 0).then_some(MessageId(result.message_id));
    match result.status() {
        proto::ReceiptStatus::Unspecified | proto::ReceiptStatus::Accepted => {
            UpstreamOutcome::ok(ReceiptStatus::Accepted, message_id)
        }
        proto::ReceiptStatus::Delivered => {
            UpstreamOutcome::ok(ReceiptStatus::Delivered, message_id)
        }
        proto::ReceiptStatus::StoredOffline => {
            UpstreamOutcome::ok(ReceiptStatus::StoredOffline, message_id)
        }
        proto::ReceiptStatus::Rejected => {
            let code = u16::try_from(result.reason_code)
                .ok()
                .filter(|&c| c != 0)
                .map_or(CloseCode::BACKEND_REJECTED, CloseCode);
            let reason = if result.reason.is_empty() {
                "rejected by the backend".to_owned()
            } else {
                result.reason.clone()
            };
            UpstreamOutcome::rejected(code, reason)
        }
    }
}

/// Reconnects for ever (until the backend is dropped and this task aborted).
async fn run(
    inner: Arc<Inner>,
    endpoint: Endpoint,
    mut events: mpsc::Receiver<proto::GatewayEvent>,
) {
    let mut failures = 0u32;
    loop {
        match stream_once(&inner, &endpoint, &mut events, &mut failures).await {
            Ok(()) => {
                tracing::warn!(endpoint = %inner.config.endpoint, "grpc backend stream ended")
            }
            Err(error) => {
                tracing::warn!(endpoint = %inner.config.endpoint, %error, "grpc backend stream failed");
            }
        }
        inner.connected.store(false, Ordering::Relaxed);
        inner.fail_sent();
        let delay = backoff(
            inner.config.reconnect_backoff_base,
            inner.config.reconnect_backoff_max,
            failures,
        );
        failures = failures.saturating_add(1);
        tokio::time::sleep(delay).await;
    }
}

/// Opens one stream and pumps it until it breaks.
async fn stream_once(
    inner: &Inner,
    endpoint: &Endpoint,
    events: &mut mpsc::Receiver<proto::GatewayEvent>,
    failures: &mut u32,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let channel = endpoint.connect().await?;
    let mut client = proto::gateway_backend_client::GatewayBackendClient::new(channel);
    let (out, out_rx) = mpsc::channel(inner.config.stream_buffer);
    let hello = proto::GatewayEvent {
        event: Some(EventKind::Hello(proto::Hello {
            gateway_id: inner.config.gateway_id.clone(),
            protocol_version: PROTOCOL_VERSION,
        })),
    };
    out.try_send(hello)
        .expect("invariant: a fresh channel has room for the hello");
    let mut commands = client
        .connect(ReceiverStream::new(out_rx))
        .await?
        .into_inner();
    inner.connected.store(true, Ordering::Relaxed);
    inner.streams_opened.fetch_add(1, Ordering::Relaxed);
    *failures = 0;
    tracing::info!(endpoint = %inner.config.endpoint, "grpc backend stream open");

    let writer = async {
        while let Some(event) = events.recv().await {
            if inner.mark_sent(&event) && out.send(event).await.is_err() {
                return;
            }
        }
    };
    let reader = async {
        loop {
            match commands.message().await? {
                None => return Ok(()),
                Some(command) => {
                    if let Some(result) = inner.execute(command).await {
                        let event = proto::GatewayEvent {
                            event: Some(EventKind::CommandResult(result)),
                        };
                        if out.try_send(event).is_err() {
                            tracing::warn!(
                                "grpc backend stream buffer full; command result dropped"
                            );
                        }
                    }
                }
            }
        }
    };
    tokio::select! {
        () = writer => Ok(()),
        result = reader => result.map_err(|e: tonic::Status| e.into()),
    }
}

/// Exponential back-off with equal jitter.
fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let full = base.saturating_mul(1 << attempt.min(16)).min(max);
    let half = full / 2;
    let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    half + Duration::from_millis(fastrand::u64(0..=jitter_ms))
}

fn session_ref(origin: &Origin) -> proto::SessionRef {
    let identity = &origin.identity;
    proto::SessionRef {
        app: identity.app.to_string(),
        user: identity.user.to_string(),
        device: identity.device.to_string(),
        session_id: origin.session.0,
        platform: match identity.platform {
            Platform::Unspecified => "unspecified",
            Platform::Ios => "ios",
            Platform::Android => "android",
            Platform::Web => "web",
            Platform::Desktop => "desktop",
        }
        .to_owned(),
    }
}

/// Removes a pending request however `on_upstream` ends (answered, timed out, cancelled).
struct PendingGuard<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.inner.pending().remove(&self.id);
    }
}

#[async_trait]
impl Backend for GrpcBackend {
    async fn on_connect(&self, gateway: &GatewayHandle, origin: &Origin) {
        self.inner.attach(gateway);
        self.notify(EventKind::Connected(session_ref(origin)));
    }

    async fn on_upstream(
        &self,
        gateway: &GatewayHandle,
        origin: &Origin,
        request: UpstreamRequest,
    ) -> UpstreamOutcome {
        use proto::upstream_request::Request as R;
        let inner = &*self.inner;
        inner.attach(gateway);
        let room_change = match &request {
            UpstreamRequest::JoinRoom(room) => Some((true, room.clone())),
            UpstreamRequest::LeaveRoom(room) => Some((false, room.clone())),
            _ => None,
        };
        let body = match request {
            UpstreamRequest::Message { to, payload } => R::Message(proto::UpstreamMessage {
                to: match to {
                    UpstreamTarget::User(user) => {
                        Some(proto::upstream_message::To::User(user.to_string()))
                    }
                    UpstreamTarget::Room(room) => {
                        Some(proto::upstream_message::To::Room(room.to_string()))
                    }
                    UpstreamTarget::Backend => None,
                },
                payload,
            }),
            UpstreamRequest::JoinRoom(room) => R::JoinRoom(room.to_string()),
            UpstreamRequest::LeaveRoom(room) => R::LeaveRoom(room.to_string()),
        };
        let timeout = inner.config.request_timeout;
        let deadline = Instant::now() + timeout;
        let now_ms = wall_ms();
        let request_id = inner.next_request_id.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        inner.pending().insert(
            request_id,
            Pending {
                answer,
                sent: false,
            },
        );
        let _guard = PendingGuard {
            inner,
            id: request_id,
        };
        let event = proto::GatewayEvent {
            event: Some(EventKind::Upstream(proto::UpstreamRequest {
                request_id,
                origin: Some(session_ref(origin)),
                request: Some(body),
                received_at_ms: now_ms,
                deadline_ms: now_ms
                    .saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
            })),
        };
        match tokio::time::timeout_at(deadline, inner.events.send(event)).await {
            Ok(Ok(())) => {}
            Ok(Err(_closed)) => return unavailable("backend unavailable"),
            Err(_elapsed) => return unavailable("backend busy"),
        }
        let outcome = match tokio::time::timeout_at(deadline, answered).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_dropped)) => unavailable("backend unavailable"),
            Err(_elapsed) => unavailable("backend did not answer in time"),
        };
        if let Some((join, room)) = room_change
            && outcome.status != ReceiptStatus::Rejected
        {
            let (app, user) = (&origin.identity.app, &origin.identity.user);
            if join {
                gateway.join_room(app, &room, user.clone());
            } else {
                gateway.leave_room(app, &room, user);
            }
        }
        outcome
    }

    async fn on_disconnect(&self, gateway: &GatewayHandle, origin: &Origin) {
        self.inner.attach(gateway);
        self.notify(EventKind::Disconnected(session_ref(origin)));
    }

    async fn on_undelivered(
        &self,
        gateway: &GatewayHandle,
        app: &AppId,
        user: &UserId,
        messages: &[Undelivered],
        reason: UndeliveredReason,
    ) {
        self.inner.attach(gateway);
        let reason = match reason {
            UndeliveredReason::BufferOverflow => proto::UndeliveredReason::BufferOverflow,
            UndeliveredReason::SessionEnded => proto::UndeliveredReason::SessionEnded,
            UndeliveredReason::NoSession => proto::UndeliveredReason::NoSession,
            UndeliveredReason::TooLarge => proto::UndeliveredReason::TooLarge,
        };
        let event = EventKind::Undelivered(proto::Undelivered {
            app: app.to_string(),
            user: user.to_string(),
            reason: reason.into(),
            messages: messages
                .iter()
                .map(|m| proto::UndeliveredMessage {
                    message_id: m.message_id.0,
                    seq: m.seq,
                })
                .collect(),
        });
        self.notify_reliably(event).await;
    }

    async fn on_push_token_invalid(
        &self,
        app: &AppId,
        user: &UserId,
        device: &crate::ids::DeviceId,
        token: &str,
        reason: &str,
    ) {
        let event = EventKind::PushTokenInvalid(proto::PushTokenInvalid {
            app: app.to_string(),
            user: user.to_string(),
            device: device.to_string(),
            token: token.to_owned(),
            reason: reason.to_owned(),
        });
        self.notify_reliably(event).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_map_to_receipts() {
        let result = |status: proto::ReceiptStatus, code: u32| proto::UpstreamResult {
            request_id: 1,
            status: status.into(),
            reason_code: code,
            reason: String::new(),
            message_id: 9,
        };
        let o = outcome(&result(proto::ReceiptStatus::Unspecified, 0));
        assert_eq!(
            (o.status, o.message_id),
            (ReceiptStatus::Accepted, Some(MessageId(9)))
        );
        let o = outcome(&result(proto::ReceiptStatus::Rejected, 0));
        assert_eq!(o.reason_code, Some(CloseCode::BACKEND_REJECTED));
        let o = outcome(&result(proto::ReceiptStatus::Rejected, 3001));
        assert_eq!(o.reason_code, Some(CloseCode::RATE_LIMITED));
    }

    #[test]
    fn bad_endpoints_are_refused() {
        assert!(endpoint(&GrpcBackendConfig::new("ftp://x")).is_err());
        assert!(endpoint(&GrpcBackendConfig::new("not a uri")).is_err());
        assert!(endpoint(&GrpcBackendConfig::new("http://127.0.0.1:1")).is_ok());
    }
}
