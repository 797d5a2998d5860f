//! Why a connection could not be opened: what, where and why, typed.

use std::fmt;
use std::time::Duration;

use imgate_codec::CloseCode;
use imgate_transports::TransportError;

use crate::Endpoint;

/// A connection attempt that failed, naming the endpoint it was made to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot connect to {endpoint}: {cause}")]
pub struct ConnectFailure {
    /// Where the client tried to connect.
    pub endpoint: Endpoint,
    /// Why it failed.
    pub cause: ConnectCause,
}

/// Why a connection attempt failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectCause {
    /// Nothing listens there (TCP connection refused).
    Refused,
    /// The transport handshake or the `Welcome` did not arrive within the connect time-out
    /// ([`ClientConfig::handshake_timeout`](crate::ClientConfig::handshake_timeout)).
    Timeout(Duration),
    /// The TLS (or QUIC crypto) handshake failed; the text is rustls' reason, e.g. an
    /// untrusted certificate.
    Tls(String),
    /// The WebSocket upgrade was answered with this HTTP status instead of `101`.
    HttpStatus(u16),
    /// The server answered `Hello` with an error (e.g. `2001 UNAUTHENTICATED`,
    /// `2004 UNKNOWN_APP`).
    Rejected {
        /// The code.
        code: CloseCode,
        /// The server's message.
        message: String,
    },
    /// The server closed the connection before `Welcome`.
    Closed,
    /// Anything else (the transport's message).
    Other(String),
}

impl fmt::Display for ConnectCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused => {
                f.write_str("connection refused (is the server running on this port?)")
            }
            Self::Timeout(after) => write!(f, "no answer within {after:?}"),
            Self::Tls(reason) if reason.contains("UnknownIssuer") => write!(
                f,
                "TLS: {reason} (trust the server's certificate or its CA: \
                 ClientConfig::trust_pem_file, or trust_dev_certificate for `imgate serve`)"
            ),
            Self::Tls(reason) if reason.contains("CaUsedAsEndEntity") => write!(
                f,
                "TLS: {reason} (the server's certificate is a CA certificate; serve a leaf \
                 certificate signed by it)"
            ),
            Self::Tls(reason) => write!(f, "TLS: {reason}"),
            Self::HttpStatus(404) => f.write_str(
                "the WebSocket upgrade was answered with HTTP 404 (wrong path? see \
                 ClientConfig::ws_path)",
            ),
            Self::HttpStatus(status) => {
                write!(f, "the WebSocket upgrade was answered with HTTP {status}")
            }
            Self::Rejected { code, message } => write!(f, "refused with {code}: {message}"),
            Self::Closed => f.write_str("the server closed the connection during the handshake"),
            Self::Other(message) => f.write_str(message),
        }
    }
}

impl ConnectCause {
    /// Classifies a transport error.
    pub(crate) fn from_transport(error: &TransportError) -> Self {
        if let Some(status) = error.http_status() {
            return Self::HttpStatus(status);
        }
        match error {
            TransportError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                Self::Refused
            }
            TransportError::HandshakeTimeout(after) => Self::Timeout(*after),
            TransportError::Tls(tls) => Self::Tls(tls.to_string()),
            // QUIC reports a rejected certificate as a crypto transport error.
            other if other.to_string().contains("invalid peer certificate") => {
                Self::Tls(other.to_string())
            }
            other => Self::Other(other.to_string()),
        }
    }
}
