//! What a session asks of the world around it.

use bytes::Bytes;
use imgate_codec::{CloseCode, GoAwayReason, PushProvider};

use crate::ids::{MessageId, RoomId, UserId};

/// Destination of an upstream message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamTarget {
    /// A user of the same app.
    User(UserId),
    /// A room of the same app.
    Room(RoomId),
    /// No destination given: for the backend itself.
    Backend,
}

/// An upstream request from the client, forwarded once per `msg_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upstream {
    /// A message.
    Message {
        /// Destination.
        to: UpstreamTarget,
        /// Opaque payload.
        payload: Bytes,
    },
    /// Join a room.
    JoinRoom(RoomId),
    /// Leave a room.
    LeaveRoom(RoomId),
    /// Register this device's push token.
    RegisterPush {
        /// Provider of the token.
        provider: PushProvider,
        /// The token.
        token: String,
        /// APNs topic (bundle id).
        topic: String,
        /// APNs sandbox environment.
        sandbox: bool,
    },
}

/// Why messages could not be delivered over the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UndeliveredReason {
    /// The unacknowledged buffer was full.
    BufferOverflow,
    /// The session ended (expired, refused resume, taken over, kicked) with them unacknowledged.
    SessionEnded,
    /// The user had no session to deliver to.
    NoSession,
    /// The message's frame would exceed the frame limit the device's client announced
    /// (`Hello.max_frame`): it was never sent to that device.
    TooLarge,
}

/// One message the session hands to the offline path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Undelivered {
    /// The server-assigned message id.
    pub message_id: MessageId,
    /// The sequence number it had in this session (0 if it never got one).
    pub seq: u64,
}

/// Output of a session, drained with `Session::poll_event`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Forward to the backend; answer with `Session::handle_receipt(msg_id, …)`.
    Upstream {
        /// The client's id of the request.
        msg_id: u64,
        /// The request.
        request: Upstream,
    },
    /// The client acknowledged these messages (badges can be reset).
    Acked {
        /// Highest sequence number now acknowledged.
        seq: u64,
        /// Messages newly acknowledged, in order.
        message_ids: Vec<MessageId>,
    },
    /// Messages of the attached client not acknowledged within the ack time-out (transmitted,
    /// or waiting behind a socket that takes nothing): push should cover them.
    /// Reported once per message; they stay buffered in case the ack still comes.
    AckOverdue {
        /// The overdue messages, in order.
        message_ids: Vec<MessageId>,
    },
    /// The session has been detached longer than the push grace period: push should cover
    /// these buffered messages, and every later delivery until the client resumes.
    PushGraceElapsed {
        /// Messages buffered so far, in order.
        message_ids: Vec<MessageId>,
    },
    /// Messages that will not reach the client over this session: the offline path owns them.
    Undelivered {
        /// Why.
        reason: UndeliveredReason,
        /// The messages, in order.
        messages: Vec<Undelivered>,
    },
    /// Close the connection after flushing what `poll_transmit` returned.
    CloseConnection {
        /// Code sent to the client (in an `Error` or `GoAway` frame).
        code: CloseCode,
        /// The `GoAway` reason when the close is a go-away rather than an error.
        go_away: Option<GoAwayReason>,
    },
    /// The session is over (resume window expired, taken over, kicked); forget it.
    Ended,
}
