//! imgate transports: TCP, TLS, WebSocket, WSS and QUIC behind one framed connection.
//!
//! A [`Listener`] per transport accepts connections and runs the transport handshake under a
//! deadline; a [`Connector`] per transport opens client connections. Both yield the same
//! [`FramedConn`], which moves `imgate_codec` frames and splits into a [`FrameReader`] and a
//! [`FrameWriter`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), imgate_transports::TransportError> {
//! use imgate_transports::*;
//! let identity = Identity::self_signed(&["localhost"])?;
//! let config = ListenerConfig::new(TransportKind::Tls, "127.0.0.1:0".parse().unwrap())
//!     .with_identity(identity.clone());
//! let mut listener = Listener::bind(config).await?;
//! let connector = Connector::new(ConnectorConfig::new(TransportKind::Tls, identity.root_store()))?;
//! let mut client = connector.connect(listener.local_addr()).await?;
//! client.send(&imgate_codec::Ping::default().into()).await?;
//! let mut server = listener.accept().await.unwrap();
//! let ping = server.recv().await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - `framed`, `read`, `write`: the connection, its reader (no buffer held while idle: reads
//!   go through a per-thread scratch buffer) and writer (coalescing queue).
//! - `tcp`-based listeners in `listener`, with `tls` and `ws` handshakes; `quic`.
//! - `connector`: the client side. `cert`: PEM loading, dev certificates, rustls configs.
//! - `limits` (global and per-IP), `accept` (back-off on EMFILE), `stats` (counters).
//!
//! # Memory
//!
//! An idle connection holds no read buffer (reads go through a per-thread scratch buffer), no
//! outbound queue (created by the first queued frame, dropped once written) and shares its
//! codec settings with the listener. Split a connection *before* moving it into its task:
//! a task future that captures the `FramedConn` and splits it inside stores both layouts.
//! Measured figures per transport are in `README.md` (`bench` binary `idle_conns`).
//!
//! # Cancel safety
//!
//! [`FrameReader::recv`], [`FrameWriter::flush`] and [`Listener::accept`] are cancel-safe,
//! so a connection task can `tokio::select!` over reading, flushing and its timers.
//!
//! TLS uses rustls with the `ring` provider only (no OpenSSL), TLS 1.2 and 1.3.
#![forbid(unsafe_code)]

mod accept;
mod cert;
mod config;
mod connector;
mod error;
mod framed;
mod limits;
mod listener;
mod quic;
mod read;
mod stats;
mod tls;
mod write;
mod ws;

pub use accept::{AcceptBackoff, is_connection_error};
pub use cert::{ALPN_HTTP1, ALPN_IMGATE, Identity};
pub use config::{
    ConnectorConfig, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_HEARTBEAT, DEFAULT_WS_PATH, ListenerConfig,
    QuicConfig, WS_SUBPROTOCOL, WsConfig,
};
pub use connector::Connector;
pub use error::TransportError;
pub use framed::{ConnInfo, FramedConn, TransportKind};
pub use limits::{ConnGuard, ConnLimits, LimitError};
pub use listener::Listener;
pub use read::FrameReader;
pub use stats::{HandshakeFailure, StatsSnapshot, TransportStats};
pub use write::{EncodedFrame, FrameWriter};

pub use rustls::RootCertStore;
