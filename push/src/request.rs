//! The provider-neutral push the gateway submits.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which push service a device token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Platform {
    /// Apple Push Notification service.
    Apns,
    /// Firebase Cloud Messaging.
    Fcm,
}

impl Platform {
    /// Metric label and log name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Apns => "apns",
            Self::Fcm => "fcm",
        }
    }
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Push service.
    pub platform: Platform,
    /// The provider's device/registration token.
    pub token: String,
    /// When the device (last) registered this token, ms since the epoch. An APNs 410 whose
    /// `timestamp` predates it does not prune the token.
    pub registered_at_ms: u64,
}

/// What the device should do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PushKind {
    /// A visible notification.
    Alert {
        /// Title.
        title: String,
        /// Body.
        body: String,
    },
    /// A silent wake-up: the app fetches its messages itself.
    WakeUp,
}

/// One push for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRequest {
    /// App id: selects the provider route and the per-app concurrency limit.
    pub app: String,
    /// Target device.
    pub device: Device,
    /// Alert or wake-up.
    pub kind: PushKind,
    /// Unread badge (APNs `aps.badge`; FCM data `badge`). Not sent on an APNs wake-up, which
    /// must carry no badge.
    pub badge: Option<u32>,
    /// Collapse id (`apns-collapse-id` / `collapse_key`), e.g. the conversation id.
    pub collapse_id: Option<String>,
    /// Time to live, seconds: also the deadline for retries.
    pub ttl_secs: u64,
    /// Custom string data for the app.
    pub data: BTreeMap<String, String>,
}
