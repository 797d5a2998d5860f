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
#![forbid(unsafe_code)]
#![deny(missing_debug_implementations)]

pub mod admin;
mod app;
pub mod auth;
pub mod backend;
pub mod config;
pub mod deliver;
mod handle;
mod handoff;
pub mod ids;
pub mod metrics;
pub mod offline;
pub mod push_policy;
pub mod rate_limit;
mod registry;
pub mod server;
pub mod session;
mod sharded;
pub mod store;
mod until_cancelled;

pub use app::App;
pub use handle::{DeliverError, GatewayHandle, SessionInfo};
pub use server::{Gateway, GatewayBuilder, GatewayError, RunningGateway, ServerConfig};
