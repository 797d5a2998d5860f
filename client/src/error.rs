//! The one error type of the SDK.

use imgate_codec::CloseCode;
use imgate_transports::TransportError;

use crate::{ConnectFailure, StopReason};

/// Errors of the client API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The configuration cannot work (e.g. no endpoint).
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// [`Client::connect`](crate::Client::connect) could not open its first connection:
    /// where and why (refused, TLS, HTTP status, time-out, the server's refusal).
    #[error(transparent)]
    Connect(#[from] ConnectFailure),
    /// [`Client::logout`](crate::Client::logout) needs a live connection to tell the server;
    /// the client stopped anyway (the server ends the session when its resume window ends).
    #[error("not connected: the server could not be told to end the session")]
    NotConnected,
    /// A certificate file for [`ClientConfig::trust_pem_file`](crate::ClientConfig::trust_pem_file)
    /// could not be read.
    #[error("trusting {path}: {reason}")]
    Certificate {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// A transport could not be set up (e.g. binding the QUIC endpoint).
    #[error("transport setup failed: {0}")]
    Transport(#[from] TransportError),
    /// The server rejected the request: its receipt said `rejected`.
    #[error("request {msg_id} rejected with {code}: {reason}")]
    Rejected {
        /// The request's id.
        msg_id: u64,
        /// Why, as a stable code (e.g. `4101 INVALID_TARGET`).
        code: CloseCode,
        /// Human-readable reason.
        reason: String,
    },
    /// A resume was refused and [`OnFreshSession::Fail`](crate::OnFreshSession::Fail) is
    /// configured: whether the request reached the backend is unknown.
    #[error("request {msg_id}: session lost before its receipt arrived")]
    SessionLost {
        /// The request's id.
        msg_id: u64,
    },
    /// The client stopped for good (closed, taken over, kicked, refused); pending requests
    /// fail with this.
    #[error("client stopped: {0}")]
    Stopped(StopReason),
}
