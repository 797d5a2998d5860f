//! Plain configuration structs with safe defaults; the gateway maps its TOML onto them.

use std::net::SocketAddr;
#[cfg(feature = "tls")]
use std::sync::Arc;
use std::time::Duration;

use imgate_codec::DEFAULT_MAX_FRAME;
#[cfg(feature = "tls")]
use rustls::RootCertStore;

#[cfg(feature = "tls")]
use crate::Identity;
use crate::TransportKind;

/// ALPN protocol id of imgate over TLS and QUIC.
pub const ALPN_IMGATE: &str = "imgate/1";
/// ALPN protocol id offered by WSS (the upgrade is HTTP/1.1).
pub const ALPN_HTTP1: &str = "http/1.1";

/// Default transport handshake deadline (TLS, WebSocket upgrade, QUIC + stream opening).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default heartbeat interval the gateway announces; the QUIC idle timeout derives from it.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);
/// Default WebSocket path.
pub const DEFAULT_WS_PATH: &str = "/ws";
/// Default base path of the HTTP fallback (`POST /imgate` opens, `/imgate/send` and
/// `/imgate/close` carry a connection's requests).
pub const DEFAULT_HTTP_PATH: &str = "/imgate";
/// WebSocket subprotocol of imgate v1.
pub const WS_SUBPROTOCOL: &str = "imgate.v1";

/// One listener: which transport, where, and its limits.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ListenerConfig {
    /// The transport.
    pub kind: TransportKind,
    /// Address to bind (port 0 picks a free port; see `Listener::local_addr`).
    pub bind: SocketAddr,
    /// Certificate and key; required for TLS, WSS and QUIC.
    #[cfg(feature = "tls")]
    pub identity: Option<Identity>,
    /// Largest inbound frame (flags + body). Default 1 MiB.
    pub max_frame: usize,
    /// Largest outbound frame the peer accepts. Default 1 MiB.
    pub peer_max_frame: usize,
    /// Bytes queued for a connection before it counts as a slow consumer. Default 2 MiB.
    pub max_outbound_bytes: usize,
    /// Deadline for the transport handshake after accept. Default 10 s.
    pub handshake_timeout: Duration,
    /// Global connection maximum. Default 1,000,000.
    pub max_connections: usize,
    /// Per-IP connection maximum. Default 4,096: generous because carrier-grade NAT puts
    /// many phones behind one address.
    pub max_per_ip: Option<usize>,
    /// Established connections waiting for `Listener::accept`. Default 1,024.
    pub accept_queue: usize,
    /// WebSocket settings (WS and WSS only).
    pub ws: WsConfig,
    /// QUIC settings (QUIC only).
    pub quic: QuicConfig,
    /// HTTP-fallback settings (HTTP and HTTPS only).
    pub http: HttpConfig,
}

impl ListenerConfig {
    /// Defaults for `kind` on `bind`.
    pub fn new(kind: TransportKind, bind: SocketAddr) -> Self {
        Self {
            kind,
            bind,
            #[cfg(feature = "tls")]
            identity: None,
            max_frame: DEFAULT_MAX_FRAME,
            peer_max_frame: DEFAULT_MAX_FRAME,
            max_outbound_bytes: 2 * DEFAULT_MAX_FRAME,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_connections: 1_000_000,
            max_per_ip: Some(4096),
            accept_queue: 1024,
            ws: WsConfig::default(),
            quic: QuicConfig::default(),
            http: HttpConfig::default(),
        }
    }

    /// Sets the certificate and key.
    #[cfg(feature = "tls")]
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }
}

/// WebSocket settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WsConfig {
    /// Upgrade path. Default `/ws`.
    pub path: String,
    /// If set, browsers (requests carrying `Origin`) must come from one of these origins,
    /// e.g. `https://app.example.com`. Requests without `Origin` (native apps) pass.
    pub allowed_origins: Option<Vec<String>>,
    /// tungstenite's read buffer, held for the whole life of the connection. Default 1 KiB
    /// (tungstenite's own default, 128 KiB zero-filled, would cost 128 KiB per idle
    /// connection). Larger frames still work; they are read in reads of this size.
    pub read_buffer_size: usize,
    /// Outbound bytes tungstenite buffers before writing; queued frames are flushed
    /// together anyway. Default 16 KiB.
    pub write_buffer_size: usize,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            path: DEFAULT_WS_PATH.to_owned(),
            allowed_origins: None,
            read_buffer_size: 1024,
            write_buffer_size: 16 * 1024,
        }
    }
}

/// HTTP-fallback settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HttpConfig {
    /// Base path. Default `/imgate`: `POST /imgate` opens a connection, `POST /imgate/send`
    /// and `POST /imgate/close` carry its frames and its end.
    pub path: String,
    /// If set, browsers (requests carrying `Origin`) must come from one of these origins;
    /// requests from others are refused `403` and get no CORS headers. Unset: every origin
    /// may connect (the token in `Hello`, never a cookie, is what authenticates, so another
    /// origin gains nothing it could not do with its own token).
    pub allowed_origins: Option<Vec<String>>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            path: DEFAULT_HTTP_PATH.to_owned(),
            allowed_origins: None,
        }
    }
}

/// QUIC settings, sized for many small, mostly idle connections.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct QuicConfig {
    /// Idle timeout: the connection dies after this long without packets. Default 2.5 ×
    /// the 30 s default heartbeat, matching the gateway's silent-connection rule.
    pub idle_timeout: Duration,
    /// Keep-alive sent by this side (clients set it below the NAT timeout). Default none.
    pub keep_alive: Option<Duration>,
    /// Flow-control window of the one stream: how far the peer may send ahead of what this
    /// side has read. Default 128 KiB. Windows cost nothing while a connection is idle (quinn
    /// allocates as data arrives); they bound what quinn buffers for a connection whose
    /// reader stalls, and a frame larger than the window still passes, one window per round
    /// trip (a 1 MiB frame takes 8 round trips at the default).
    pub stream_receive_window: u32,
    /// Connection-wide receive window (one stream, so the same as the stream's). Default
    /// 128 KiB.
    pub receive_window: u32,
    /// Connection-wide send window: bytes sent and not yet acknowledged, which quinn keeps
    /// for retransmission. Default 128 KiB.
    pub send_window: u64,
    /// Probe for a path MTU above QUIC's 1200-byte baseline. Default off: it costs ~2.5 KB
    /// per idle connection and only helps bulk transfers.
    pub mtu_discovery: bool,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            idle_timeout: DEFAULT_HEARTBEAT * 5 / 2,
            keep_alive: None,
            stream_receive_window: 128 * 1024,
            receive_window: 128 * 1024,
            send_window: 128 * 1024,
            mtu_discovery: false,
        }
    }
}

/// A client connector's settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectorConfig {
    /// The transport.
    pub kind: TransportKind,
    /// Trusted roots for TLS, WSS and QUIC.
    #[cfg(feature = "tls")]
    pub roots: Arc<RootCertStore>,
    /// Name to verify the server certificate against (and send as SNI). Default `localhost`.
    pub server_name: String,
    /// WebSocket path. Default `/ws`.
    pub ws_path: String,
    /// `Origin` header to send on WebSocket upgrades and HTTP-fallback requests (browsers
    /// always send one).
    pub ws_origin: Option<String>,
    /// Base path of the HTTP fallback. Default `/imgate`.
    pub http_path: String,
    /// WebSocket buffer settings.
    pub ws: WsConfig,
    /// Largest inbound frame. Default 1 MiB.
    pub max_frame: usize,
    /// Largest outbound frame the server accepts. Default 1 MiB.
    pub peer_max_frame: usize,
    /// Outbound queue bound. Default 2 MiB.
    pub max_outbound_bytes: usize,
    /// Deadline for connect + handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// Local address of the QUIC client endpoint. Default `0.0.0.0:0`.
    pub quic_bind: SocketAddr,
    /// QUIC settings.
    pub quic: QuicConfig,
}

impl ConnectorConfig {
    /// Defaults for `kind`, trusting `roots`.
    #[cfg(feature = "tls")]
    pub fn new(kind: TransportKind, roots: RootCertStore) -> Self {
        Self {
            roots: Arc::new(roots),
            ..Self::plain(kind)
        }
    }

    /// Defaults for `kind` with no trusted roots: for the transports without TLS (TCP, WS),
    /// and the only constructor when the `tls` feature is off.
    pub fn plain(kind: TransportKind) -> Self {
        Self {
            kind,
            #[cfg(feature = "tls")]
            roots: Arc::new(RootCertStore::empty()),
            server_name: "localhost".to_owned(),
            ws_path: DEFAULT_WS_PATH.to_owned(),
            ws_origin: None,
            http_path: DEFAULT_HTTP_PATH.to_owned(),
            ws: WsConfig::default(),
            max_frame: DEFAULT_MAX_FRAME,
            peer_max_frame: DEFAULT_MAX_FRAME,
            max_outbound_bytes: 2 * DEFAULT_MAX_FRAME,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            quic_bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            quic: QuicConfig::default(),
        }
    }
}
