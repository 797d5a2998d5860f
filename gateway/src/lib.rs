//! imgate: an IM connection gateway (sessions, routing, backends, delivery, push fallback).
//!
//! # Layout
//! - [`session`]: the sans-IO session state machine (handshake, heartbeats, sequenced
//!   delivery, acks, upstream de-duplication, resume). It never touches tokio's runtime,
//!   sockets or the clock: time comes in as arguments.
//! - [`ids`]: newtype identifiers.
#![forbid(unsafe_code)]
#![deny(missing_debug_implementations)]

pub mod ids;
pub mod session;
