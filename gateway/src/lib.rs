//! imgate: an IM connection gateway (sessions, routing, backends, delivery, push fallback).
//!
//! # Layout
//! - [`session`]: the sans-IO session state machine (handshake, heartbeats, sequenced
//!   delivery, acks, upstream de-duplication, resume). It never touches tokio's runtime,
//!   sockets or the clock: time comes in as arguments.
//! - [`auth`]: token verification (`Authenticator`; JWT and static tokens built in).
//! - [`backend`]: the `Backend` trait and the built-in in-process relay.
//! - [`GatewayHandle`]: delivery to users, devices, sessions and rooms; room membership;
//!   session listing and kicking.
//! - [`ids`]: newtype identifiers.
//!
//! # Features
//! Each only adds API; a library user can turn the default off (`default-features = false`).
//! - `cli` (default): the `imgate` binary (command line, log setup, `imgate chat`); implies
//!   `config`.
//! - `config`: `imgate::config`, the binary's TOML file validated into this crate's types;
//!   implies `grpc`.
//! - `grpc`: `imgate::backend::GrpcBackend`, a backend reached over gRPC (tonic).
//! - `cluster` (in `cli`): [`cluster`], many gateway nodes on NATS (async-nats).
//!
//! # A backend in twenty lines
//! An echo service: every message a client sends comes back to the same user's devices.
//!
//! ```no_run
//! use imgate::backend::{Backend, Origin, UpstreamOutcome, UpstreamRequest, async_trait};
//! use imgate::codec::{CloseCode, ReceiptStatus};
//! use imgate::deliver::{Delivery, DeliveryOptions, Target};
//! use imgate::{App, Gateway, GatewayHandle, ListenerConfig, TransportKind, auth::StaticTokens};
//!
//! #[derive(Debug)]
//! struct Echo;
//!
//! #[async_trait]
//! impl Backend for Echo {
//!     async fn on_upstream(&self, gateway: &GatewayHandle, origin: &Origin, request: UpstreamRequest) -> UpstreamOutcome {
//!         let UpstreamRequest::Message { payload, .. } = request else {
//!             return UpstreamOutcome::ok(ReceiptStatus::Accepted, None);
//!         };
//!         let target = Target::User(origin.identity.user.clone());
//!         let delivery = Delivery { target, payload, options: DeliveryOptions::default() };
//!         match gateway.deliver(&origin.identity.app, delivery).await {
//!             Ok(report) => UpstreamOutcome::ok(ReceiptStatus::Delivered, Some(report.message_id)),
//!             Err(e) => UpstreamOutcome::rejected(CloseCode::INTERNAL, e.to_string()),
//!         }
//!     }
//! }
//!
//! # async fn run() -> Result<(), imgate::GatewayError> {
//! let mut tokens = StaticTokens::new();
//! tokens.insert("tok-alice", "alice".into());
//! let gateway = Gateway::builder()
//!     .app(App::new("echo", tokens).with_backend(Echo))
//!     .listener(ListenerConfig::new(TransportKind::Tcp, "127.0.0.1:7100".parse().unwrap()))
//!     .start()
//!     .await?;
//! # drop(gateway); Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_debug_implementations)]

pub mod admin;
mod app;
pub mod auth;
pub mod backend;
#[cfg(feature = "cluster")]
pub mod cluster;
#[cfg(feature = "config")]
pub mod config;
pub mod deliver;
mod handle;
mod handoff;
pub mod ids;
pub mod metrics;
pub mod offline;
pub mod push_policy;
pub mod rate_limit;
pub mod recent;
mod registry;
pub mod server;
pub mod session;
mod sharded;
pub mod store;
mod until_cancelled;

pub use app::App;
/// Payloads are [`bytes::Bytes`], shared without copying.
pub use bytes;
pub use handle::{DeliverError, GatewayHandle, SessionInfo};
/// The wire types and error codes a backend names (`ReceiptStatus`, `CloseCode`, frames).
pub use imgate_codec as codec;
/// Listener settings, for [`GatewayBuilder::listener`].
pub use imgate_transports::{ListenerConfig, TransportKind};
pub use server::{Gateway, GatewayBuilder, GatewayError, RunningGateway, ServerConfig};
