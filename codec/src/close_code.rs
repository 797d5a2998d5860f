//! Stable numeric error codes carried by `Error.code` and `Receipt.reason_code`.

use std::fmt;

/// A stable wire error code (docs/protocol.md, "Error codes").
///
/// Ranges: `1xxx` protocol, `2xxx` authentication, `3xxx` limits, `4xxx` session and
/// routing, `5xxx` server. A client that meets a code it does not know treats it by range.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $value:literal;)*) => {
        impl CloseCode {
            $($(#[$doc])* pub const $name: Self = Self($value);)*

            /// The constant's name (e.g. `"FRAME_TOO_LARGE"`), for logs and metric labels.
            pub fn name(self) -> &'static str {
                match self.0 {
                    $($value => stringify!($name),)*
                    _ => "UNKNOWN",
                }
            }

            /// Every code this version defines, in ascending order.
            pub const ALL: &'static [Self] = &[$(Self::$name),*];
        }
    };
}

codes! {
    /// Orderly close, no error.
    NORMAL = 1000;
    /// Malformed frame: bad flags, truncated header, invalid protobuf, unknown frame kind.
    PROTOCOL_ERROR = 1001;
    /// A frame larger than the negotiated maximum.
    FRAME_TOO_LARGE = 1002;
    /// `Hello.version` is not supported.
    UNSUPPORTED_VERSION = 1003;
    /// A frame that is valid but not allowed in the current state (e.g. `Send` before `Hello`).
    UNEXPECTED_FRAME = 1004;
    /// Corrupt LZ4 body, decompression bomb, or an unknown dictionary id.
    COMPRESSION_ERROR = 1005;
    /// `Hello` did not arrive within the handshake deadline.
    HANDSHAKE_TIMEOUT = 1006;
    /// Nothing received for about 2.5 heartbeat intervals.
    HEARTBEAT_TIMEOUT = 1007;
    /// A frame on a transport that only carries binary frames (e.g. a WebSocket text message).
    UNSUPPORTED_DATA = 1008;
    /// The token is missing, malformed or its signature does not verify.
    UNAUTHENTICATED = 2001;
    /// The token has expired (or is not yet valid).
    TOKEN_EXPIRED = 2002;
    /// The token was issued for another app, audience or user.
    FORBIDDEN = 2003;
    /// `Hello.app_id` names no app configured on this server.
    UNKNOWN_APP = 2004;
    /// Too many messages or handshakes in too short a time.
    RATE_LIMITED = 3001;
    /// The server (or this client address) is at its connection limit.
    CONNECTION_LIMIT = 3002;
    /// The client did not read fast enough; its outbound queue overflowed.
    SLOW_CONSUMER = 3003;
    /// The server is overloaded; retry after the suggested delay.
    OVERLOADED = 3004;
    /// A newer connection of the same device took over this session.
    SESSION_TAKEN_OVER = 4001;
    /// An operator or the backend ended the session.
    KICKED = 4002;
    /// The server is draining; reconnect and resume elsewhere.
    GOING_AWAY = 4003;
    /// Client to server: the user logged out on this device; end the session for good.
    LOGGED_OUT = 4004;
    /// A `Send` names no valid destination.
    INVALID_TARGET = 4101;
    /// The backend refused the message.
    BACKEND_REJECTED = 4102;
    /// The backend could not be reached; the client may re-send later.
    BACKEND_UNAVAILABLE = 4103;
    /// `Receipt.reason_code` of an accepted message: the recipient has no session and its
    /// offline queue is full, so the message is only pushed, not stored.
    OFFLINE_QUEUE_FULL = 4104;
    /// An internal server error (details are only in the server's logs).
    INTERNAL = 5000;
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl From<CloseCode> for u32 {
    fn from(code: CloseCode) -> Self {
        Self::from(code.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_named() {
        let mut seen = std::collections::HashSet::new();
        for code in CloseCode::ALL {
            assert!(seen.insert(code.0), "duplicate code {}", code.0);
            assert_ne!(code.name(), "UNKNOWN");
        }
        assert_eq!(CloseCode(9999).name(), "UNKNOWN");
        assert_eq!(
            format!("{}", CloseCode::FRAME_TOO_LARGE),
            "FRAME_TOO_LARGE(1002)"
        );
    }
}
