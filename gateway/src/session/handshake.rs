//! The first frame of a connection: `Hello`, within a deadline.

use std::time::Duration;

use imgate_codec::{CloseCode, Frame, Hello, Kind, MIN_MAX_FRAME, PROTOCOL_VERSION};
use tokio::time::Instant;

/// Longest `app_id`, `device_id` or token accepted, in bytes.
pub const MAX_ID_LEN: usize = 256;
/// Longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// A refused handshake: the code and message sent in the `Error` frame before closing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("handshake refused ({code}): {message}")]
pub struct HandshakeRefused {
    /// Wire code.
    pub code: CloseCode,
    /// Message for the client.
    pub message: String,
}

impl HandshakeRefused {
    /// A refusal with `code` and `message`.
    pub fn new(code: CloseCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Sans-IO handshake state of a new connection: waits for a valid `Hello` until a deadline.
#[derive(Debug)]
pub struct Handshake {
    deadline: Instant,
}

impl Handshake {
    /// A handshake that must finish within `timeout` of `now`.
    pub fn new(now: Instant, timeout: Duration) -> Self {
        Self {
            deadline: now + timeout,
        }
    }

    /// When the handshake times out.
    pub fn poll_timeout(&self) -> Instant {
        self.deadline
    }

    /// Call when the timer fires: the refusal once the deadline has passed.
    pub fn handle_timeout(&self, now: Instant) -> Option<HandshakeRefused> {
        (now >= self.deadline).then(|| {
            HandshakeRefused::new(CloseCode::HANDSHAKE_TIMEOUT, "no Hello within the deadline")
        })
    }

    /// Validates the first frame: it must be a well-formed `Hello` of a supported version,
    /// with a `max_frame` of 0 or at least [`MIN_MAX_FRAME`].
    pub fn handle_frame(&self, frame: Frame) -> Result<Hello, HandshakeRefused> {
        let Some(Kind::Hello(hello)) = frame.kind else {
            return Err(HandshakeRefused::new(
                CloseCode::UNEXPECTED_FRAME,
                "the first frame must be Hello",
            ));
        };
        if hello.version != PROTOCOL_VERSION {
            return Err(HandshakeRefused::new(
                CloseCode::UNSUPPORTED_VERSION,
                format!(
                    "protocol version {} is not supported (this server speaks {PROTOCOL_VERSION})",
                    hello.version
                ),
            ));
        }
        let too_long = |field: &str, limit| field.len() > limit;
        if hello.app_id.is_empty() || too_long(&hello.app_id, MAX_ID_LEN) {
            return Err(HandshakeRefused::new(
                CloseCode::PROTOCOL_ERROR,
                format!("app_id must be 1..={MAX_ID_LEN} bytes"),
            ));
        }
        if hello.device_id.is_empty() || too_long(&hello.device_id, MAX_ID_LEN) {
            return Err(HandshakeRefused::new(
                CloseCode::PROTOCOL_ERROR,
                format!("device_id must be 1..={MAX_ID_LEN} bytes"),
            ));
        }
        if hello.max_frame != 0 && (hello.max_frame as usize) < MIN_MAX_FRAME {
            // Below it not even the server's own frames (receipts, errors) would fit.
            return Err(HandshakeRefused::new(
                CloseCode::PROTOCOL_ERROR,
                format!("max_frame must be 0 or at least {MIN_MAX_FRAME} bytes"),
            ));
        }
        if too_long(&hello.token, MAX_TOKEN_LEN) {
            return Err(HandshakeRefused::new(
                CloseCode::UNAUTHENTICATED,
                format!("token longer than {MAX_TOKEN_LEN} bytes"),
            ));
        }
        Ok(hello)
    }
}
