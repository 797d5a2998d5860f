//! What the application sends and receives.

use bytes::Bytes;
use imgate_codec::Deliver;
use tokio::sync::mpsc;

/// Where a message goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A user of the same app (every device of theirs).
    User(String),
    /// A room of the same app.
    Room(String),
    /// The backend itself.
    Backend,
}

impl Target {
    /// A user.
    pub fn user(user: impl Into<String>) -> Self {
        Self::User(user.into())
    }

    /// A room.
    pub fn room(room: impl Into<String>) -> Self {
        Self::Room(room.into())
    }
}

/// A message received from the server: one `Deliver`, handed over exactly once and in order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// The session it arrived in.
    pub session_id: u64,
    /// Its sequence number in that session (1, 2, …; a fresh session restarts at 1).
    pub seq: u64,
    /// Server-assigned id, stable across devices and re-deliveries: use it to de-duplicate
    /// a message seen both by push and by the connection, or across sessions.
    pub message_id: u64,
    /// Sending user; empty for messages from the backend.
    pub from: String,
    /// Room; empty for direct messages.
    pub room: String,
    /// The application payload.
    pub payload: Bytes,
    /// When the server accepted it (ms since the Unix epoch).
    pub sent_at_ms: u64,
}

impl Message {
    pub(crate) fn new(session_id: u64, deliver: Deliver) -> Self {
        Self {
            session_id,
            seq: deliver.seq,
            message_id: deliver.message_id,
            from: deliver.from,
            room: deliver.room,
            payload: deliver.payload,
            sent_at_ms: deliver.sent_at_ms,
        }
    }
}

/// The stream of received messages, in order, each exactly once (duplicates replayed after
/// a resume are dropped by sequence number).
///
/// Read it promptly: when its buffer ([`ClientConfig::incoming_capacity`](crate::ClientConfig))
/// is full the client stops reading the connection, the server buffers, and a client that
/// falls too far behind is shed as a slow consumer (it then resumes).
#[derive(Debug)]
pub struct Incoming {
    rx: mpsc::Receiver<Message>,
}

impl Incoming {
    pub(crate) fn new(rx: mpsc::Receiver<Message>) -> Self {
        Self { rx }
    }

    /// The next message; `None` once the client has stopped and every message was read.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a message is only taken when this returns it.
    pub async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// The next message if one is ready.
    pub fn try_recv(&mut self) -> Option<Message> {
        self.rx.try_recv().ok()
    }
}
