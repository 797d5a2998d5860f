//! The webhook's JSON: what the gateway POSTs (schema version 1) and what it reads back.
//!
//! Every field is documented in `docs/backends.md`; ids that may exceed 2^53 are strings so
//! JavaScript receivers keep them exact.

use base64::Engine;
use imgate_codec::{Platform, ReceiptStatus};
use serde::{Deserialize, Serialize};

use crate::backend::{Origin, UpstreamRequest};
use crate::ids::{AppId, DeviceId, UserId};
use crate::session::{Undelivered, UndeliveredReason, UpstreamTarget};

/// Version of the event schema, sent as `"v"`.
pub(super) const SCHEMA_VERSION: u32 = 1;

/// One event POSTed to the webhook.
#[derive(Debug, Serialize)]
pub(super) struct Event<'a> {
    /// Schema version.
    pub(super) v: u32,
    /// Unique per gateway process; the same on every retry (receivers de-duplicate on it).
    pub(super) id: String,
    /// `message`, `join_room`, `leave_room`, `connect`, `disconnect`, `undelivered` or
    /// `push_token_invalid`.
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) app: &'a str,
    pub(super) user: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) device: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) platform: Option<&'static str>,
    /// The session id (16 hex digits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) session: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) target: Option<Target<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) room: Option<&'a str>,
    /// Standard base64 (with padding).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) payload: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) reason: Option<&'a str>,
    /// The dead push token (`push_token_invalid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) messages: Option<Vec<UndeliveredMessage>>,
    /// When the gateway produced the event, ms since the Unix epoch.
    pub(super) ts_ms: u64,
}

/// Destination of a `message` event.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum Target<'a> {
    /// A user of the same app.
    User { id: &'a str },
    /// A room of the same app.
    Room { id: &'a str },
    /// The client named no destination: the message is for the backend itself.
    Backend,
}

/// One message of an `undelivered` event.
#[derive(Debug, Serialize)]
pub(super) struct UndeliveredMessage {
    /// Server-assigned message id, decimal.
    pub(super) message_id: String,
    /// Its sequence number in the session (0 if it never had one).
    pub(super) seq: u64,
}

impl<'a> Event<'a> {
    fn base(id: u64, kind: &'static str, app: &'a str, user: &'a str, ts_ms: u64) -> Self {
        Self {
            v: SCHEMA_VERSION,
            id: id.to_string(),
            kind,
            app,
            user,
            device: None,
            platform: None,
            session: None,
            target: None,
            room: None,
            payload: None,
            reason: None,
            token: None,
            messages: None,
            ts_ms,
        }
    }

    /// A session event (`connect`, `disconnect`) or the frame of an upstream request.
    pub(super) fn session(id: u64, kind: &'static str, origin: &'a Origin, ts_ms: u64) -> Self {
        let identity = &origin.identity;
        Self {
            device: Some(identity.device.as_str()),
            platform: Some(platform_name(identity.platform)),
            session: Some(origin.session.to_string()),
            ..Self::base(
                id,
                kind,
                identity.app.as_str(),
                identity.user.as_str(),
                ts_ms,
            )
        }
    }

    /// An upstream request.
    pub(super) fn upstream(
        id: u64,
        origin: &'a Origin,
        request: &'a UpstreamRequest,
        ts_ms: u64,
    ) -> Self {
        match request {
            UpstreamRequest::Message { to, payload } => Self {
                target: Some(match to {
                    UpstreamTarget::User(user) => Target::User { id: user.as_str() },
                    UpstreamTarget::Room(room) => Target::Room { id: room.as_str() },
                    UpstreamTarget::Backend => Target::Backend,
                }),
                payload: Some(base64::engine::general_purpose::STANDARD.encode(payload)),
                ..Self::session(id, "message", origin, ts_ms)
            },
            UpstreamRequest::JoinRoom(room) => Self {
                room: Some(room.as_str()),
                ..Self::session(id, "join_room", origin, ts_ms)
            },
            UpstreamRequest::LeaveRoom(room) => Self {
                room: Some(room.as_str()),
                ..Self::session(id, "leave_room", origin, ts_ms)
            },
        }
    }

    /// Messages for `user` that went to the offline path.
    pub(super) fn undelivered(
        id: u64,
        app: &'a AppId,
        user: &'a UserId,
        messages: &[Undelivered],
        reason: UndeliveredReason,
        ts_ms: u64,
    ) -> Self {
        Self {
            reason: Some(match reason {
                UndeliveredReason::BufferOverflow => "buffer_overflow",
                UndeliveredReason::SessionEnded => "session_ended",
                UndeliveredReason::NoSession => "no_session",
                UndeliveredReason::TooLarge => "too_large",
            }),
            messages: Some(
                messages
                    .iter()
                    .map(|m| UndeliveredMessage {
                        message_id: m.message_id.0.to_string(),
                        seq: m.seq,
                    })
                    .collect(),
            ),
            ..Self::base(id, "undelivered", app.as_str(), user.as_str(), ts_ms)
        }
    }
}

impl<'a> Event<'a> {
    /// A device's push token was found dead and deleted; `reason` is the provider's.
    pub(super) fn push_token_invalid(
        id: u64,
        app: &'a AppId,
        user: &'a UserId,
        device: &'a DeviceId,
        token: &'a str,
        reason: &'a str,
        ts_ms: u64,
    ) -> Self {
        Self {
            device: Some(device.as_str()),
            token: Some(token),
            reason: Some(reason),
            ..Self::base(id, "push_token_invalid", app.as_str(), user.as_str(), ts_ms)
        }
    }
}

fn platform_name(platform: Platform) -> &'static str {
    match platform {
        Platform::Unspecified => "unspecified",
        Platform::Ios => "ios",
        Platform::Android => "android",
        Platform::Web => "web",
        Platform::Desktop => "desktop",
    }
}

/// The optional JSON body of a 2xx answer to a `message`, `join_room` or `leave_room` event.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Answer {
    /// Receipt status; absent means `accepted`.
    #[serde(default)]
    pub(super) status: Option<AnswerStatus>,
    /// Reason shown to the client when rejected.
    #[serde(default)]
    pub(super) reason: Option<String>,
    /// Message id the backend assigned, as a number or a decimal string.
    #[serde(default)]
    pub(super) message_id: Option<NumberOrString>,
}

/// `status` of an [`Answer`].
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(super) enum AnswerStatus {
    Accepted,
    Delivered,
    StoredOffline,
    Rejected,
}

impl From<AnswerStatus> for ReceiptStatus {
    fn from(status: AnswerStatus) -> Self {
        match status {
            AnswerStatus::Accepted => Self::Accepted,
            AnswerStatus::Delivered => Self::Delivered,
            AnswerStatus::StoredOffline => Self::StoredOffline,
            AnswerStatus::Rejected => Self::Rejected,
        }
    }
}

/// A u64 written either way.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum NumberOrString {
    Number(u64),
    String(String),
}

impl NumberOrString {
    pub(super) fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Number(n) => Some(*n),
            Self::String(s) => s.parse().ok(),
        }
    }
}
