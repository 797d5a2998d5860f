//! Downstream delivery: targets, options and per-device reports.

use std::sync::Arc;

use bytes::Bytes;

use crate::ids::{DeviceId, MessageId, RoomId, SessionId, UserId};

/// Who a delivery is for (within one app).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Every device of a user.
    User(UserId),
    /// One device of a user.
    Device(UserId, DeviceId),
    /// One session.
    Session(SessionId),
    /// Every member of a room.
    Room(RoomId),
}

/// How to deliver.
#[derive(Clone, Debug, Default)]
pub struct DeliveryOptions {
    /// Sender shown to recipients.
    pub from: Option<UserId>,
    /// Skip this session (a room message is not echoed to the device that sent it). A room
    /// member whose only session is skipped is not reported, so the sender is never pushed
    /// their own message.
    pub exclude_session: Option<SessionId>,
    /// How to push the message to devices it cannot reach over a connection (None: no push).
    pub push: Option<PushOptions>,
    /// Keep this message id instead of assigning one: a re-delivery of a message that was
    /// given an id before (the relay's offline queue), so devices can de-duplicate by it.
    pub message_id: Option<MessageId>,
    /// When the message was first sent (ms since the Unix epoch); None: now.
    pub sent_at_ms: Option<u64>,
}

/// How a message is pushed when its recipient is offline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushOptions {
    /// A visible alert (title, body); None sends a silent wake-up (`content-available` /
    /// FCM data, high priority) so the app fetches the message itself.
    pub alert: Option<PushAlert>,
    /// Collapse id: newer pushes with the same id replace older ones on the device.
    pub collapse_id: Option<String>,
    /// How long the push service keeps trying, in seconds (0: provider default).
    pub ttl_secs: u32,
    /// Custom data delivered with the push (small: the whole push is limited to 4 KiB).
    pub data: Vec<(String, String)>,
}

/// The visible part of an alert push.
///
/// Shared text: a backend that attaches an alert to every message (the relay: the sender's
/// id and "New message") pays no copy per message; the text is copied only into a push that
/// is actually sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushAlert {
    /// Title line.
    pub title: Arc<str>,
    /// Body text.
    pub body: Arc<str>,
}

/// A delivery request.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Recipients.
    pub target: Target,
    /// Opaque payload, shared by every recipient without copying.
    pub payload: Bytes,
    /// Options.
    pub options: DeliveryOptions,
}

/// What happened for one device.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceOutcome {
    /// Queued on the device's attached connection with this sequence number; the device
    /// acknowledges it (or push covers it after the ack time-out).
    Sent {
        /// Sequence number in the device's session.
        seq: u64,
    },
    /// The device's session is detached; buffered for its resume.
    Buffered {
        /// Sequence number in the device's session.
        seq: u64,
    },
    /// Handed to the offline path (backend notice, push).
    Offline,
    /// Not delivered: the cluster node holding the device's session (or, without a
    /// session, the cluster directory) did not answer in time. Nothing was pushed or
    /// reported for it: the caller decides (retry, or its own offline path).
    Unreachable,
}

/// The outcome for one device (or, with no session at all, for the user).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceReport {
    /// The user.
    pub user: UserId,
    /// The session, if the user had one.
    pub session: Option<SessionId>,
    /// The device, if the user had a session.
    pub device: Option<DeviceId>,
    /// What happened.
    pub outcome: DeviceOutcome,
}

/// The result of one `deliver` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Server-assigned id of the message (the same on every device).
    pub message_id: MessageId,
    /// One entry per device reached, or per user with no session.
    pub devices: Vec<DeviceReport>,
}
