//! The typed FCM HTTP v1 `Message` (the subset a chat gateway sends).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use serde::{Serialize, Serializer};

use crate::PayloadError;
use crate::apns::ApnsPayload;

/// FCM's limit on a message to a token.
pub const MESSAGE_MAX: usize = 4096;

/// `message` of `messages:send`, addressed to one registration token.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FcmMessage {
    /// Registration token (the only target a gateway uses).
    pub token: String,
    /// Visible notification; `None` makes a data-only (wake-up) message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification: Option<FcmNotification>,
    /// Key/value data; FCM accepts only string values, which the type enforces.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Android options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub android: Option<AndroidConfig>,
    /// Override block for iOS devices reached through FCM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apns: Option<ApnsOverride>,
}

/// `notification`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FcmNotification {
    /// Title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Image URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// `android.priority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AndroidPriority {
    /// May be delayed by Doze.
    Normal,
    /// Wakes the device; what a chat wake-up needs.
    High,
}

/// `android`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AndroidConfig {
    /// Delivery priority.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<AndroidPriority>,
    /// Messages with the same key replace each other while undelivered (≤ 4 keys per device).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collapse_key: Option<String>,
    /// How long FCM keeps the message (serialised as `"3600s"`; max 4 weeks).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "duration_string"
    )]
    pub ttl: Option<Duration>,
    /// Only deliver to this package.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restricted_package_name: Option<String>,
    /// Notification options. Set it only on a message with a `notification`: on a data-only
    /// message it would make Android show one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification: Option<AndroidNotification>,
}

/// `android.notification` (the part a chat gateway sets).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AndroidNotification {
    /// The unread count Android shows with the notification and on launchers that draw
    /// badges (`notification_count`, an integer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification_count: Option<u32>,
}

/// `apns`: headers and payload FCM forwards to APNs for iOS tokens.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ApnsOverride {
    /// APNs headers (`apns-priority`, `apns-push-type`, `apns-expiration`, `apns-collapse-id`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// APNs payload (`aps` and custom keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<ApnsPayload>,
}

fn duration_string<S: Serializer>(ttl: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match ttl {
        Some(d) if d.subsec_nanos() == 0 => s.serialize_str(&format!("{}s", d.as_secs())),
        Some(d) => s.serialize_str(&format!("{}.{:09}s", d.as_secs(), d.subsec_nanos())),
        None => s.serialize_none(),
    }
}

#[derive(Serialize)]
struct SendRequest<'a> {
    message: &'a FcmMessage,
}

impl FcmMessage {
    /// A visible notification.
    pub fn notification(token: impl Into<String>, title: &str, body: &str) -> Self {
        Self {
            token: token.into(),
            notification: Some(FcmNotification {
                title: Some(title.to_owned()),
                body: Some(body.to_owned()),
                image: None,
            }),
            ..Self::default()
        }
    }

    /// A data-only wake-up at high priority: the app wakes and fetches without showing
    /// anything itself.
    pub fn wake_up(token: impl Into<String>, data: BTreeMap<String, String>) -> Self {
        Self {
            token: token.into(),
            data,
            android: Some(AndroidConfig {
                priority: Some(AndroidPriority::High),
                ..AndroidConfig::default()
            }),
            ..Self::default()
        }
    }

    /// Validates and encodes the `messages:send` body.
    pub fn encode(&self) -> Result<Bytes, PayloadError> {
        if self.token.is_empty() {
            return Err(PayloadError::Invalid {
                field: "token",
                why: "empty".into(),
            });
        }
        let body = serde_json::to_vec(&SendRequest { message: self })
            .map_err(|e| PayloadError::Encode(e.to_string()))?;
        if body.len() > MESSAGE_MAX {
            return Err(PayloadError::TooLarge {
                size: body.len(),
                limit: MESSAGE_MAX,
            });
        }
        Ok(Bytes::from(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape() {
        let mut m =
            FcmMessage::wake_up("tok", BTreeMap::from([("conv".to_owned(), "7".to_owned())]));
        if let Some(a) = &mut m.android {
            a.collapse_key = Some("conv-7".into());
            a.ttl = Some(Duration::from_secs(3600));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&m.encode().expect("encode")).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"message": {"token": "tok", "data": {"conv": "7"},
                "android": {"priority": "HIGH", "collapse_key": "conv-7", "ttl": "3600s"}}})
        );
        let big = FcmMessage::notification("tok", "t", &"x".repeat(5000));
        assert!(matches!(big.encode(), Err(PayloadError::TooLarge { .. })));
    }
}
