//! Integration tests over real sockets on 127.0.0.1 (one binary, to link once).
#![allow(missing_docs, clippy::unwrap_used)] // reason: test binary

mod bad_input;
mod common;
#[cfg(feature = "http")]
mod http;
mod limits;
#[cfg(feature = "quic")]
mod quic_migration;
#[cfg(feature = "quic")]
mod quic_windows;
#[cfg(feature = "tls")]
mod resumption;
mod scenario;
