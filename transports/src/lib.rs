//! imgate transports: TCP, TLS, WebSocket, WSS, QUIC and the HTTP fallback (HTTP, HTTPS)
//! behind one framed connection.
//!
//! A [`Listener`] per transport accepts connections and runs the transport handshake under a
//! deadline; a [`Connector`] per transport opens client connections. Both yield the same
//! [`FramedConn`], which moves `imgate_codec` frames and splits into a [`FrameReader`] and a
//! [`FrameWriter`].
//!
//! ```no_run
//! # #[cfg(feature = "tls")]
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
//! # Features
//!
//! Plain TCP is always compiled in. `tls` (rustls, ring), `ws` (tokio-tungstenite), `wss`
//! (= `ws` + `tls`), `quic` (quinn; implies `tls`), `http` (hyper) and `https` (= `http` +
//! `tls`) add the others; all are on by default. With `--no-default-features` none of
//! rustls, tungstenite, quinn or hyper is built, and binding a
//! listener or creating a connector for a transport compiled out fails with a
//! [`TransportError::Config`] naming the feature ([`TransportKind::is_available`] asks first).
//! `Identity`, `RootCertStore` and `ConnectorConfig::new` need `tls`;
//! [`ConnectorConfig::plain`] is always there. `pipe` (off by default, for tests and fuzzing)
//! adds `FramedConn::pipe`: a connection over an in-memory pipe with a listener's codec and
//! limits, so that a server runs on tokio's paused clock without sockets.
//!
//! # Layout
//! - `framed`, `read`, `write`: the connection, its reader (no buffer held while idle: reads
//!   go through a per-thread scratch buffer) and writer (coalescing queue).
//! - `tcp`-based listeners in `listener`, with `tls` and `ws` handshakes; `quic`; `http`
//!   (the fallback: hyper per socket, each logical connection a pair of byte queues).
//! - `connector`: the client side. `cert`: PEM loading, dev certificates, rustls configs.
//! - `limits` (global and per-IP), `accept` (back-off on EMFILE), `stats` (counters).
//! - `pipe` (feature `pipe`): the in-memory connection.
//!
//! # Memory
//!
//! An idle connection holds no read buffer (reads go through a per-thread scratch buffer), no
//! outbound queue (created by the first queued frame, dropped once written) and shares its
//! codec settings with the listener. Its cold state (peer info, limit guard, counters and,
//! for plain TCP, the socket itself) is one allocation both halves point to, and every
//! transport other than plain TCP sits behind one more pointer, so a [`FrameReader`] is four
//! words, a [`FrameWriter`] five, and `recv()`'s future one. That matters because tokio
//! stores a task's whole future in the task, rounded up to 128 bytes: keep connection tasks
//! small. Split a connection *before* moving it into its task (a future that captures the
//! `FramedConn` and splits it inside stores both layouts), and do not rebind captured halves
//! (`let w = writer;` inside an `async move` block stores the writer twice; so does an
//! `async fn` for its arguments). Measured figures per transport are in `README.md` (`bench`
//! binary `idle_conns`).
//!
//! # Cancel safety
//!
//! [`FrameReader::recv`], [`FrameWriter::flush`] and [`Listener::accept`] are cancel-safe,
//! so a connection task can `tokio::select!` over reading, flushing and its timers.
//!
//! TLS uses rustls with the `ring` provider only (no OpenSSL), TLS 1.2 and 1.3.
#![forbid(unsafe_code)]

mod accept;
#[cfg(feature = "tls")]
mod cert;
mod config;
mod connector;
mod error;
mod framed;
#[cfg(feature = "http")]
mod http;
mod limits;
mod listener;
#[cfg(any(feature = "ws", feature = "http"))]
mod maybe_tls;
#[cfg(feature = "pipe")]
mod pipe;
#[cfg(feature = "quic")]
mod quic;
#[cfg(feature = "quic")]
mod quic_tls;
mod read;
mod stats;
#[cfg(feature = "tls")]
mod tickets;
#[cfg(feature = "tls")]
mod tls;
mod write;
#[cfg(feature = "ws")]
mod ws;

pub use accept::{AcceptBackoff, is_connection_error};
#[cfg(feature = "tls")]
pub use cert::{Identity, dev_certificate_dir, roots_from_pem_file};
pub use config::{
    ALPN_HTTP1, ALPN_IMGATE, ConnectorConfig, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_HEARTBEAT,
    DEFAULT_HTTP_PATH, DEFAULT_WS_PATH, HttpConfig, ListenerConfig, QuicConfig, WS_SUBPROTOCOL,
    WsConfig,
};
pub use connector::Connector;
pub use error::TransportError;
pub use framed::{ConnInfo, FramedConn, TransportKind};
pub use limits::{ConnGuard, ConnLimits, LimitError};
pub use listener::Listener;
#[cfg(feature = "pipe")]
pub use pipe::PIPE_PEER;
pub use read::FrameReader;
pub use stats::{HandshakeFailure, StatsSnapshot, TransportStats};
#[cfg(feature = "tls")]
pub use tickets::{TICKET_KEY_LEN, TICKET_LIFETIME_SECS, TicketKeys};
pub use write::{EncodedFrame, FrameWriter};

#[cfg(feature = "tls")]
pub use rustls::RootCertStore;
