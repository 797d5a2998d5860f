//! Connection states and events, as the application sees them.

use std::fmt;
use std::time::Duration;

use imgate_codec::{CloseCode, GoAwayReason, ResumeRefused};

use crate::{ConnectFailure, Endpoint};

/// The connection's current state (see [`Client::state`](crate::Client::state)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// Connecting (or waiting to, after a back-off).
    Connecting {
        /// Where.
        endpoint: Endpoint,
        /// Attempts since the last successful connection (0: the first).
        attempt: u32,
    },
    /// `Welcome` received: requests flow.
    Connected {
        /// The session.
        session_id: u64,
        /// Whether the previous session was resumed.
        resumed: bool,
        /// Where.
        endpoint: Endpoint,
    },
    /// The connection ended; the client will reconnect.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
    },
    /// The client stopped for good.
    Stopped {
        /// Why.
        reason: StopReason,
    },
}

/// Something that happened to the connection (see [`Client::events`](crate::Client::events)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A connection attempt starts.
    Connecting {
        /// Where.
        endpoint: Endpoint,
        /// Attempts since the last successful connection (0: the first).
        attempt: u32,
    },
    /// `Welcome` received.
    Connected {
        /// The session.
        session_id: u64,
        /// Whether the previous session was resumed.
        resumed: bool,
        /// Where.
        endpoint: Endpoint,
    },
    /// A requested resume was refused: the server started a fresh session; messages after
    /// the last received one went to the offline path (re-sync history from the backend).
    ResumeRefused {
        /// Why.
        reason: ResumeRefused,
        /// The session that could not be resumed.
        old_session: u64,
        /// The fresh session.
        new_session: u64,
    },
    /// The server asked the client to leave.
    GoAway {
        /// Why.
        reason: GoAwayReason,
        /// The server's suggested delay before reconnecting.
        reconnect_after: Duration,
    },
    /// The connection ended; the client will reconnect.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
    },
    /// A request waited [`RequestPolicy::receipt_timeout`](crate::RequestPolicy) for its
    /// receipt on a live connection and was sent again. A correct server always answers,
    /// so this points at a receipt lost inside the server.
    ReceiptOverdue {
        /// The request.
        msg_id: u64,
    },
    /// The client stopped for good.
    Stopped {
        /// Why.
        reason: StopReason,
    },
}

/// Why a connection ended (the client reconnects after each of these).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// Connecting or the handshake failed (where and why).
    ConnectFailed(ConnectFailure),
    /// The server closed the connection.
    ClosedByServer,
    /// The transport failed.
    Transport(String),
    /// The server sent a retryable `Error` (e.g. `1007 HEARTBEAT_TIMEOUT`, `3xxx`, `4003`).
    ServerError {
        /// The code.
        code: CloseCode,
        /// The server's message.
        message: String,
    },
    /// Nothing arrived for the liveness timeout.
    HeartbeatTimeout(Duration),
    /// A `Deliver` skipped a sequence number (a correct server never does this).
    SequenceGap {
        /// The sequence number expected.
        expected: u64,
        /// The one received.
        got: u64,
    },
    /// The server sent `GoAway` with a reason that calls for a reconnect.
    GoAway(GoAwayReason),
    /// [`Client::debug_drop_connection`](crate::Client::debug_drop_connection) cut it.
    Dropped,
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConnectFailed(failure) => failure.fmt(f),
            Self::ClosedByServer => f.write_str("closed by the server"),
            Self::Transport(e) => write!(f, "transport failed: {e}"),
            Self::ServerError { code, message } => write!(f, "server error {code}: {message}"),
            Self::HeartbeatTimeout(after) => write!(f, "nothing received for {after:?}"),
            Self::SequenceGap { expected, got } => {
                write!(f, "sequence gap: expected {expected}, got {got}")
            }
            Self::GoAway(reason) => write!(f, "server sent GoAway ({})", reason.as_str_name()),
            Self::Dropped => f.write_str("dropped by the debug hook"),
        }
    }
}

/// Why the client stopped for good (it does not reconnect after these).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// [`Client::close`](crate::Client::close) was called (or every handle was dropped).
    Closed,
    /// A newer connection of this device took the session (`GoAway{takeover}`, `4001`).
    TakenOver,
    /// An operator or the backend ended the session (`GoAway{kicked}`, `4002`).
    Kicked,
    /// The server refused the client with a non-retryable error (e.g. `2001
    /// UNAUTHENTICATED`: refresh the token and connect again).
    Refused {
        /// The code.
        code: CloseCode,
        /// The server's message.
        message: String,
    },
    /// The connection ended and automatic reconnection is off
    /// ([`ReconnectPolicy::automatic`](crate::ReconnectPolicy::automatic)), or the first
    /// connection of [`Client::connect`](crate::Client::connect) failed.
    Disconnected(DisconnectReason),
    /// [`Client::logout`](crate::Client::logout) ended the session for good.
    LoggedOut,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("closed"),
            Self::TakenOver => f.write_str("session taken over by a newer connection"),
            Self::Kicked => f.write_str("kicked by the server"),
            Self::Refused { code, message } => write!(f, "refused with {code}: {message}"),
            Self::Disconnected(reason) => write!(f, "disconnected: {reason}"),
            Self::LoggedOut => f.write_str("logged out"),
        }
    }
}
