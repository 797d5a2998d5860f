//! The crate's one error type.

use std::io;
use std::time::Duration;

use imgate_codec::{CloseCode, CodecError};

use crate::limits::LimitError;

/// Everything that can go wrong binding, connecting, handshaking, reading or writing.
///
/// [`TransportError::close_code`] says which wire code to send when the error is the peer's
/// fault (bad bytes, too large, text on WebSocket) or a limit; errors with no one left to tell
/// (a reset socket) or caused locally map to `None`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A socket error.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The peer's bytes are not valid frames (or a local frame exceeds the peer's limit).
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A WebSocket text message: this protocol carries binary frames only.
    #[error("WebSocket text message received; only binary messages carry frames")]
    UnsupportedData,
    /// A WebSocket message larger than the frame limit.
    #[error("WebSocket message of {size} bytes exceeds the frame limit of {limit} bytes")]
    MessageTooLarge {
        /// Size announced by the peer.
        size: usize,
        /// The frame limit.
        limit: usize,
    },
    /// A request of the HTTP fallback broke the transport's rules (an oversize or slow POST,
    /// a body that ends inside a frame): the connection closes with `code`.
    #[error("HTTP request refused: {reason}")]
    HttpRequest {
        /// The code the connection closes with.
        code: CloseCode,
        /// What was wrong, for the peer's `Error.message`.
        reason: &'static str,
    },
    /// The HTTP fallback's server answered a request with an error status (and, if it said
    /// why in an `Error` frame, [`TransportError::ClosedByPeer`] is returned instead).
    #[error("HTTP status {status}")]
    HttpStatus {
        /// The status code.
        status: u16,
    },
    /// The TLS handshake or a TLS record failed.
    #[cfg(feature = "tls")]
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The TLS peer did not negotiate our ALPN protocol.
    #[error("ALPN mismatch: expected {expected:?}, negotiated {negotiated:?}")]
    Alpn {
        /// The protocol this transport speaks.
        expected: &'static str,
        /// What the handshake produced.
        negotiated: Option<String>,
    },
    /// A WebSocket protocol or handshake error.
    #[cfg(feature = "ws")]
    #[error("WebSocket: {0}")]
    WebSocket(#[source] Box<tokio_tungstenite::tungstenite::Error>),
    /// A QUIC connection could not be started.
    #[cfg(feature = "quic")]
    #[error("QUIC connect: {0}")]
    QuicConnect(#[from] quinn::ConnectError),
    /// A QUIC connection failed or was lost.
    #[cfg(feature = "quic")]
    #[error("QUIC connection: {0}")]
    Quic(#[from] quinn::ConnectionError),
    /// The transport handshake (TLS, WebSocket upgrade, QUIC) did not finish in time.
    #[error("transport handshake did not finish within {0:?}")]
    HandshakeTimeout(Duration),
    /// The peer closed the connection and said why.
    #[error("peer closed the connection with {code}: {reason}")]
    ClosedByPeer {
        /// The peer's close code.
        code: CloseCode,
        /// The peer's reason text.
        reason: String,
    },
    /// The outbound queue is over its bound: the peer does not read fast enough.
    #[error("outbound queue over its limit of {limit} bytes")]
    SlowConsumer {
        /// The configured bound.
        limit: usize,
    },
    /// A connection limit refused the connection.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// Invalid configuration (missing certificate, bad name, bad PEM file).
    #[error("configuration: {0}")]
    Config(String),
}

impl TransportError {
    /// The code to send the peer before closing, when there is someone to tell and the
    /// cause is theirs (or a limit); `None` for local failures and dead connections.
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            Self::Codec(CodecError::Io(_)) => None,
            Self::Codec(e) => Some(e.close_code()),
            Self::UnsupportedData => Some(CloseCode::UNSUPPORTED_DATA),
            Self::MessageTooLarge { .. } => Some(CloseCode::FRAME_TOO_LARGE),
            #[cfg(feature = "ws")]
            Self::WebSocket(e) => match **e {
                tokio_tungstenite::tungstenite::Error::Protocol(_)
                | tokio_tungstenite::tungstenite::Error::Utf8(_) => Some(CloseCode::PROTOCOL_ERROR),
                _ => None,
            },
            Self::HandshakeTimeout(_) => Some(CloseCode::HANDSHAKE_TIMEOUT),
            Self::SlowConsumer { .. } => Some(CloseCode::SLOW_CONSUMER),
            Self::Limit(_) => Some(CloseCode::CONNECTION_LIMIT),
            Self::HttpRequest { code, .. } => Some(*code),
            Self::HttpStatus { .. } => None,
            #[cfg(feature = "tls")]
            Self::Tls(_) => None,
            #[cfg(feature = "quic")]
            Self::QuicConnect(_) | Self::Quic(_) => None,
            Self::Io(_) | Self::Alpn { .. } | Self::ClosedByPeer { .. } | Self::Config(_) => None,
        }
    }

    /// The text for the peer's `Error.message`: ours, never a library's (whose wording is not
    /// stable and can name internals). Pair it with [`TransportError::close_code`].
    pub fn peer_message(&self) -> String {
        match self {
            Self::Codec(CodecError::Protobuf(_)) => "invalid protobuf frame".to_owned(),
            Self::Codec(CodecError::Decompress(_)) => "corrupt LZ4 block".to_owned(),
            // The codec's other texts are its own, and say what was wrong with the frame.
            Self::Codec(e) => e.to_string(),
            Self::UnsupportedData | Self::MessageTooLarge { .. } | Self::Limit(_) => {
                self.to_string()
            }
            #[cfg(feature = "ws")]
            Self::WebSocket(_) => "WebSocket protocol violation".to_owned(),
            Self::HandshakeTimeout(_) => "transport handshake did not finish in time".to_owned(),
            Self::SlowConsumer { .. } => "outbound queue overflowed".to_owned(),
            Self::HttpRequest { reason, .. } => (*reason).to_owned(),
            _ => "connection failed".to_owned(),
        }
    }

    /// The HTTP status a WebSocket upgrade or an HTTP-fallback request was answered with
    /// when that is why connecting failed (e.g. `404` for a wrong path).
    pub fn http_status(&self) -> Option<u16> {
        match self {
            #[cfg(feature = "ws")]
            Self::WebSocket(e) => match &**e {
                tokio_tungstenite::tungstenite::Error::Http(response) => {
                    Some(response.status().as_u16())
                }
                _ => None,
            },
            Self::HttpStatus { status } => Some(*status),
            _ => None,
        }
    }

    /// Unwraps errors that I/O adapters (tokio-rustls, quinn streams) wrap in `io::Error`.
    pub(crate) fn from_io(e: io::Error) -> Self {
        #[cfg(feature = "http")]
        if let Some(refusal) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<crate::http::Refusal>())
        {
            return Self::HttpRequest {
                code: refusal.code,
                reason: refusal.reason,
            };
        }
        #[cfg(feature = "tls")]
        if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
            if let Some(Ok(tls)) = e.into_inner().map(|b| b.downcast::<rustls::Error>()) {
                return Self::Tls(*tls);
            }
            return Self::Io(io::Error::other("TLS error"));
        }
        #[cfg(feature = "quic")]
        if e.get_ref()
            .is_some_and(|inner| inner.is::<quinn::ReadError>())
        {
            if let Some(Ok(read)) = e.into_inner().map(|b| b.downcast::<quinn::ReadError>()) {
                return Self::from_quic_read(*read);
            }
            return Self::Io(io::Error::other("QUIC read error"));
        }
        Self::Io(e)
    }

    #[cfg(feature = "quic")]
    pub(crate) fn from_quic_read(e: quinn::ReadError) -> Self {
        match e {
            quinn::ReadError::ConnectionLost(lost) => Self::from_quic_connection(lost),
            other => Self::Io(io::Error::other(other)),
        }
    }

    #[cfg(feature = "quic")]
    pub(crate) fn from_quic_connection(e: quinn::ConnectionError) -> Self {
        match e {
            quinn::ConnectionError::ApplicationClosed(close) => Self::ClosedByPeer {
                code: CloseCode(u16::try_from(close.error_code.into_inner()).unwrap_or(u16::MAX)),
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            },
            other => Self::Quic(other),
        }
    }
}

#[cfg(feature = "ws")]
impl From<tokio_tungstenite::tungstenite::Error> for TransportError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        use tokio_tungstenite::tungstenite::Error as WsError;
        use tokio_tungstenite::tungstenite::error::CapacityError;
        match e {
            WsError::Io(io) => Self::from_io(io),
            WsError::Tls(_) => Self::Io(io::Error::other("WebSocket TLS error")),
            WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                Self::MessageTooLarge {
                    size,
                    limit: max_size,
                }
            }
            other => Self::WebSocket(Box::new(other)),
        }
    }
}
