//! Plain configuration structs with safe defaults.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use imgate_codec::Platform;
use imgate_transports::{RootCertStore, TransportKind};

use crate::ClientError;

/// One server address and the transport to reach it with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The transport.
    pub kind: TransportKind,
    /// The server's address.
    pub addr: SocketAddr,
}

impl Endpoint {
    /// `kind` at `addr`.
    pub fn new(kind: TransportKind, addr: SocketAddr) -> Self {
        Self { kind, addr }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.kind, self.addr)
    }
}

/// Everything a [`Client`](crate::Client) needs to connect, and how it behaves.
///
/// Build it with [`ClientConfig::new`] and adjust the public fields; every field has a safe
/// default.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Where to connect. The client starts with the first endpoint and moves to the next one
    /// on every reconnect (wrapping around), so a list rotates through servers or transports;
    /// a session resumes on any of them.
    pub endpoints: Vec<Endpoint>,
    /// Roots trusted for TLS, WSS and QUIC.
    pub roots: Arc<RootCertStore>,
    /// Name the server certificate is verified against (and sent as SNI). Default `localhost`.
    pub server_name: String,
    /// Path of the WebSocket upgrade (`ws` and `wss`). Default `/ws`, as `imgate serve`.
    pub ws_path: String,
    /// Base path of the HTTP fallback (`http` and `https`). Default `/imgate`, as
    /// `imgate serve`.
    pub http_path: String,
    /// Bearer credential sent in every `Hello`.
    pub token: String,
    /// Application id.
    pub app_id: String,
    /// Stable id of this installation (one session per device).
    pub device_id: String,
    /// Platform, which selects the server's heartbeat and push defaults. Default unspecified.
    pub platform: Platform,
    /// Compression features offered to the server.
    pub features: Features,
    /// Back-off between connection attempts.
    pub reconnect: ReconnectPolicy,
    /// When cumulative acks are sent.
    pub acks: AckPolicy,
    /// Heartbeat and liveness.
    pub heartbeat: HeartbeatPolicy,
    /// Upstream request bounds and re-sending.
    pub requests: RequestPolicy,
    /// The connect time-out: the deadline for connecting (transport handshake included) and
    /// receiving `Welcome`, on every attempt. Default 10 s.
    pub handshake_timeout: Duration,
    /// Received messages buffered for the application before the client stops reading the
    /// socket (the server then buffers, and eventually sheds a slow consumer). Default 1,024.
    pub incoming_capacity: usize,
}

impl ClientConfig {
    /// A configuration for one endpoint, with defaults for everything else.
    pub fn new(
        endpoint: Endpoint,
        roots: RootCertStore,
        token: impl Into<String>,
        app_id: impl Into<String>,
        device_id: impl Into<String>,
    ) -> Self {
        Self {
            endpoints: vec![endpoint],
            roots: Arc::new(roots),
            server_name: "localhost".to_owned(),
            ws_path: imgate_transports::DEFAULT_WS_PATH.to_owned(),
            http_path: imgate_transports::DEFAULT_HTTP_PATH.to_owned(),
            token: token.into(),
            app_id: app_id.into(),
            device_id: device_id.into(),
            platform: Platform::Unspecified,
            features: Features::default(),
            reconnect: ReconnectPolicy::default(),
            acks: AckPolicy::default(),
            heartbeat: HeartbeatPolicy::default(),
            requests: RequestPolicy::default(),
            handshake_timeout: Duration::from_secs(10),
            incoming_capacity: 1024,
        }
    }

    /// Replaces the endpoint list (rotated through on every reconnect).
    pub fn with_endpoints(mut self, endpoints: Vec<Endpoint>) -> Self {
        self.endpoints = endpoints;
        self
    }

    /// Also trusts every certificate in the PEM file at `path`: a private CA, or a server's
    /// own self-signed certificate (e.g. the development certificate `imgate serve` writes,
    /// see [`ClientConfig::trust_dev_certificate`]).
    pub fn trust_pem_file(mut self, path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let path = path.as_ref();
        let roots =
            imgate_transports::roots_from_pem_file(path).map_err(|e| ClientError::Certificate {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        Arc::make_mut(&mut self.roots).roots.extend(roots.roots);
        Ok(self)
    }

    /// Trusts the development certificate `imgate serve` writes when no `[tls]` certificate
    /// is configured ([`imgate_transports::dev_certificate_dir`]`/cert.pem`; the server prints
    /// the path at start).
    pub fn trust_dev_certificate(self) -> Result<Self, ClientError> {
        self.trust_pem_file(imgate_transports::dev_certificate_dir().join("cert.pem"))
    }
}

/// Optional protocol features.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Features {
    /// Offer LZ4 compression. Default on.
    pub lz4: bool,
    /// Offer the built-in dictionary (only with `lz4`). Default on.
    pub builtin_dictionary: bool,
}

impl Default for Features {
    fn default() -> Self {
        Self {
            lz4: true,
            builtin_dictionary: true,
        }
    }
}

/// Exponential back-off with full jitter: attempt `n` (from 0) waits a uniformly random
/// time in `[0, min(max, initial × 2ⁿ)]`. A connection that reached `Welcome` resets `n`.
#[derive(Clone, Debug, PartialEq)]
pub struct ReconnectPolicy {
    /// Reconnect (and resume) automatically after a connection drops. Default on. Off: the
    /// client stops with [`StopReason::Disconnected`](crate::StopReason::Disconnected)
    /// instead. [`Client::connect`](crate::Client::connect) never retries its first
    /// connection either way; [`Client::start`](crate::Client::start) does when this is on.
    pub automatic: bool,
    /// Upper bound of the first delay. Default 100 ms.
    pub initial: Duration,
    /// Largest delay. Default 10 s.
    pub max: Duration,
    /// After a `GoAway` the client waits `reconnect_after_ms` plus a jitter uniform in
    /// `[0, max(reconnect_after_ms, goaway_jitter)]` (protocol §11). Default 1 s.
    pub goaway_jitter: Duration,
    /// How long the client keeps reading (receipts, acks settling) after a `GoAway` before
    /// it leaves. Default 2 s.
    pub goaway_linger: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            automatic: true,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            goaway_jitter: Duration::from_secs(1),
            goaway_linger: Duration::from_secs(2),
        }
    }
}

/// Cumulative acks: sent after `every` new messages or `delay` after the first unacked one,
/// whichever comes first, and piggy-backed on every `Send` and `Ping`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckPolicy {
    /// Messages per ack. Default 32.
    pub every: u64,
    /// Longest an ack waits. Default 100 ms.
    pub delay: Duration,
}

impl Default for AckPolicy {
    fn default() -> Self {
        Self {
            every: 32,
            delay: Duration::from_millis(100),
        }
    }
}

/// Heartbeats: the interval comes from `Welcome.heartbeat_ms`.
#[derive(Clone, Debug, PartialEq)]
pub struct HeartbeatPolicy {
    /// The connection counts as dead after this many intervals with nothing received.
    /// Default 2.5 (as the server's rule).
    pub liveness_factor: f32,
    /// Interval to use if the server announces none. Default 30 s.
    pub fallback_interval: Duration,
}

impl Default for HeartbeatPolicy {
    fn default() -> Self {
        Self {
            liveness_factor: 2.5,
            fallback_interval: Duration::from_secs(30),
        }
    }
}

/// Upstream requests (`Send`, `JoinRoom`, `LeaveRoom`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestPolicy {
    /// Most requests waiting for their receipt; further calls wait. Default 256.
    pub max_in_flight: usize,
    /// What to do with un-receipted requests when a resume is refused and the server starts
    /// a fresh session. Default [`OnFreshSession::Resend`].
    pub on_fresh_session: OnFreshSession,
    /// After a reconnect, re-send un-receipted requests one at a time (each once the
    /// previous one is answered) and hold new requests back until all are answered.
    /// Default off: an imgate server keeps a session's requests in order at the backend by
    /// itself, even while it is still forwarding one for the previous connection (it hands
    /// the backend one request per session at a time). Turn it on for a server that does
    /// not; it costs one round trip per re-sent request.
    pub ordered_resend: bool,
    /// When the oldest request has waited this long for its receipt on one connection, it
    /// is sent again (same `msg_id`: the server forwards it at most once and answers with
    /// the receipt it has). Guards against a receipt lost inside the server. Default 10 s.
    pub receipt_timeout: Duration,
}

impl Default for RequestPolicy {
    fn default() -> Self {
        Self {
            max_in_flight: 256,
            on_fresh_session: OnFreshSession::Resend,
            ordered_resend: false,
            receipt_timeout: Duration::from_secs(10),
        }
    }
}

/// Un-receipted requests after a refused resume.
///
/// The server de-duplicates re-sent requests by `msg_id` only within a session. Re-sending
/// into a fresh session is therefore *at least once*: a request the old session already
/// forwarded (but whose receipt was lost with the connection) reaches the backend again.
/// Failing instead is *at most once*: the caller learns the outcome is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFreshSession {
    /// Re-send them in the fresh session (at least once).
    Resend,
    /// Fail them with [`ClientError::SessionLost`](crate::ClientError::SessionLost).
    Fail,
}
