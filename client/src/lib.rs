//! imgate client SDK: connect over any transport, reconnect, resume, acks and receipts.
//!
//! A [`Client`] talks to an imgate gateway over TCP, TLS, WebSocket, WSS or QUIC
//! (docs/protocol.md). One background task, the connection driver, owns the socket; the
//! application sends through cheap [`Client`] handles and reads an [`Incoming`] stream.
//!
//! ```no_run
//! # async fn demo() -> Result<(), imgate_client::ClientError> {
//! use imgate_client::{Client, ClientConfig, Endpoint, Target};
//! use imgate_transports::{RootCertStore, TransportKind};
//!
//! let endpoint = Endpoint::new(TransportKind::Tcp, "127.0.0.1:7100".parse().unwrap());
//! // `imgate serve` on its defaults: TCP on 7100, app `default`, JWT tokens minted by
//! // `imgate token --user alice`. For TLS, WSS or QUIC add `.trust_dev_certificate()?`.
//! let token = std::env::var("IMGATE_TOKEN").unwrap_or_default();
//! let config = ClientConfig::new(endpoint, RootCertStore::empty(), token, "default", "phone");
//! let (client, mut incoming) = Client::connect(config).await?;
//! let receipt = client.send(Target::user("bob"), "hi bob").await?;
//! println!("accepted as message {}", receipt.message_id);
//! while let Some(message) = incoming.recv().await {
//!     println!("{}: {:?}", message.from, message.payload);
//! }
//! client.close().await;
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//!
//! - **Downstream, exactly once and in order**: the client keeps the session id, resume
//!   secret and the highest `seq` received in order; after any drop it reconnects (on the
//!   next endpoint of [`ClientConfig::endpoints`], so a session may resume on another
//!   transport) with `Hello.resume`, and drops replayed messages it already has. When a
//!   resume is refused the server starts a fresh session: [`Event::ResumeRefused`] says so
//!   and the application should re-sync its history from the backend.
//! - **Upstream, exactly once within a session**: requests carry increasing `msg_id`s and
//!   are re-sent (same id) after every reconnect until their receipt arrives; the server
//!   de-duplicates them within the session. After a refused resume they are re-sent into
//!   the fresh session (at least once) or failed ([`OnFreshSession`]).
//! - **Liveness**: a `Ping` goes out when nothing was sent for `Welcome.heartbeat_ms`; a
//!   connection silent for 2.5 intervals is treated as dead and replaced.
//! - `GoAway{drain, overload, slow consumer}`: reconnect after the suggested delay plus
//!   jitter. `GoAway{takeover, kicked}`: stop ([`StopReason`]).
//!
//! # Layout
//! - `client`: the [`Client`] handle. `message`: [`Target`], [`Message`], [`Incoming`].
//! - `driver`: the connection task (select loop over socket, requests, timers).
//! - `connect`: transport connect and the `Hello`/`Welcome` handshake.
//! - `state`: the session as the client keeps it (seq, acks, pending requests); no I/O.
//! - `config`, `event`, `error`, `backoff`.
#![forbid(unsafe_code)]
#![deny(missing_debug_implementations)]

mod backoff;
mod client;
mod config;
mod connect;
mod driver;
mod error;
mod event;
mod failure;
mod message;
mod state;

pub use client::Client;
pub use config::{
    AckPolicy, ClientConfig, Endpoint, Features, HeartbeatPolicy, OnFreshSession, ReconnectPolicy,
    RequestPolicy,
};
pub use error::ClientError;
pub use event::{ConnectionState, DisconnectReason, Event, StopReason};
pub use failure::{ConnectCause, ConnectFailure};
pub use imgate_codec::{GoAwayReason, Platform, Receipt, ReceiptStatus, ResumeRefused};
pub use imgate_transports::{RootCertStore, TransportKind, dev_certificate_dir};
pub use message::{Incoming, Message, Target};
