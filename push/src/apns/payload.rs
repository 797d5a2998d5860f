//! APNs request fields and the JSON payload, validated before anything is sent.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::PayloadError;

/// Largest payload for every push type but VoIP.
pub const PAYLOAD_MAX: usize = 4096;
/// Largest VoIP payload.
pub const PAYLOAD_MAX_VOIP: usize = 5120;
/// Largest `apns-collapse-id`, in bytes.
pub const COLLAPSE_ID_MAX: usize = 64;

/// `apns-push-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PushType {
    /// A visible notification.
    Alert,
    /// A silent wake-up (`content-available: 1`, priority 5).
    Background,
    /// A VoIP call (topic suffix `.voip`).
    Voip,
    /// Location query (topic suffix `.location-query`).
    Location,
    /// watchOS complication (topic suffix `.complication`).
    Complication,
    /// File provider (topic suffix `.pushkit.fileprovider`).
    FileProvider,
    /// Device management.
    Mdm,
    /// Live Activity (topic suffix `.push-type.liveactivity`).
    LiveActivity,
    /// Push to talk (topic suffix `.voip-ptt`).
    PushToTalk,
}

impl PushType {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alert => "alert",
            Self::Background => "background",
            Self::Voip => "voip",
            Self::Location => "location",
            Self::Complication => "complication",
            Self::FileProvider => "fileprovider",
            Self::Mdm => "mdm",
            Self::LiveActivity => "liveactivity",
            Self::PushToTalk => "pushtotalk",
        }
    }

    /// Parses a header value.
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "alert" => Self::Alert,
            "background" => Self::Background,
            "voip" => Self::Voip,
            "location" => Self::Location,
            "complication" => Self::Complication,
            "fileprovider" => Self::FileProvider,
            "mdm" => Self::Mdm,
            "liveactivity" => Self::LiveActivity,
            "pushtotalk" => Self::PushToTalk,
            _ => return None,
        })
    }

    /// The suffix Apple requires on `apns-topic` for this type (empty for most).
    pub fn topic_suffix(self) -> &'static str {
        match self {
            Self::Voip => ".voip",
            Self::Location => ".location-query",
            Self::Complication => ".complication",
            Self::FileProvider => ".pushkit.fileprovider",
            Self::LiveActivity => ".push-type.liveactivity",
            Self::PushToTalk => ".voip-ptt",
            Self::Alert | Self::Background | Self::Mdm => "",
        }
    }

    /// The payload size limit for this type.
    pub fn payload_limit(self) -> usize {
        if self == Self::Voip {
            PAYLOAD_MAX_VOIP
        } else {
            PAYLOAD_MAX
        }
    }
}

/// `apns-priority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Priority {
    /// 10: deliver now. Must show an alert, sound or badge.
    Immediate,
    /// 5: power-aware; required for background pushes.
    PowerAware,
    /// 1: lowest, never wakes the device.
    Low,
}

impl Priority {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Immediate => "10",
            Self::PowerAware => "5",
            Self::Low => "1",
        }
    }
}

/// The visible part of an alert.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Title line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Subtitle line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subtitle: Option<String>,
    /// Body text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// The `aps` dictionary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Aps {
    /// Visible alert.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<Alert>,
    /// App icon badge (0 clears it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub badge: Option<u32>,
    /// Sound name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sound: Option<String>,
    /// Notification grouping.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// Actionable notification category.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// `1` for a silent wake-up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_available: Option<u8>,
    /// `1` lets a Notification Service Extension fetch or decrypt the content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutable_content: Option<u8>,
}

/// The JSON body: `aps` plus custom keys beside it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApnsPayload {
    /// Apple's dictionary.
    pub aps: Aps,
    /// App-defined keys, serialised next to `aps`.
    #[serde(flatten)]
    pub custom: serde_json::Map<String, serde_json::Value>,
}

/// One notification to one device.
#[derive(Debug, Clone, PartialEq)]
pub struct ApnsNotification {
    /// Hex device token.
    pub device_token: String,
    /// `apns-topic`: the bundle id, plus the push type's suffix.
    pub topic: String,
    /// `apns-push-type`.
    pub push_type: PushType,
    /// `apns-priority`; `None` picks 5 for background and 10 otherwise.
    pub priority: Option<Priority>,
    /// `apns-expiration` in UNIX seconds (`Some(0)`: try once, don't store).
    pub expiration: Option<u64>,
    /// `apns-collapse-id` (≤ 64 bytes).
    pub collapse_id: Option<String>,
    /// `apns-id`, a lowercase UUID; APNs generates one when absent.
    pub apns_id: Option<String>,
    /// The body.
    pub payload: ApnsPayload,
}

impl ApnsNotification {
    /// A visible alert (push type `alert`, priority 10).
    pub fn alert(
        device_token: impl Into<String>,
        topic: impl Into<String>,
        title: &str,
        body: &str,
    ) -> Self {
        let aps = Aps {
            alert: Some(Alert {
                title: Some(title.to_owned()),
                subtitle: None,
                body: Some(body.to_owned()),
            }),
            ..Aps::default()
        };
        Self::new(device_token, topic, PushType::Alert, aps)
    }

    /// A silent wake-up: `content-available: 1`, push type `background`, priority 5, and no
    /// alert, sound or badge (Apple throttles or rejects background pushes that carry them).
    pub fn wake_up(device_token: impl Into<String>, topic: impl Into<String>) -> Self {
        let aps = Aps {
            content_available: Some(1),
            ..Aps::default()
        };
        Self::new(device_token, topic, PushType::Background, aps)
    }

    fn new(
        device_token: impl Into<String>,
        topic: impl Into<String>,
        push_type: PushType,
        aps: Aps,
    ) -> Self {
        Self {
            device_token: device_token.into(),
            topic: topic.into(),
            push_type,
            priority: None,
            expiration: None,
            collapse_id: None,
            apns_id: None,
            payload: ApnsPayload {
                aps,
                custom: serde_json::Map::new(),
            },
        }
    }

    /// The priority actually sent.
    pub fn effective_priority(&self) -> Priority {
        self.priority.unwrap_or(match self.push_type {
            PushType::Background => Priority::PowerAware,
            _ => Priority::Immediate,
        })
    }

    /// Validates the headers and encodes the body, refusing what APNs would refuse
    /// (`BadCollapseId`, `BadMessageId`, `PayloadTooLarge`…) before a byte goes out.
    pub fn encode(&self) -> Result<Bytes, PayloadError> {
        validate_device_token(&self.device_token)?;
        if self.topic.is_empty() || !self.topic.is_ascii() {
            return Err(PayloadError::Invalid {
                field: "apns-topic",
                why: "empty or not ASCII".into(),
            });
        }
        if let Some(id) = &self.collapse_id {
            if id.len() > COLLAPSE_ID_MAX {
                return Err(PayloadError::CollapseIdTooLong(id.len()));
            }
            if id.bytes().any(|b| b.is_ascii_control()) {
                return Err(PayloadError::Invalid {
                    field: "apns-collapse-id",
                    why: "control character".into(),
                });
            }
        }
        if let Some(id) = &self.apns_id
            && !is_uuid(id)
        {
            return Err(PayloadError::Invalid {
                field: "apns-id",
                why: "not a lowercase 8-4-4-4-12 UUID".into(),
            });
        }
        if self.push_type == PushType::Background
            && self.effective_priority() == Priority::Immediate
        {
            return Err(PayloadError::Invalid {
                field: "apns-priority",
                why: "10 on a background push".into(),
            });
        }
        let body =
            serde_json::to_vec(&self.payload).map_err(|e| PayloadError::Encode(e.to_string()))?;
        let limit = self.push_type.payload_limit();
        if body.len() > limit {
            return Err(PayloadError::TooLarge {
                size: body.len(),
                limit,
            });
        }
        Ok(Bytes::from(body))
    }
}

fn validate_device_token(token: &str) -> Result<(), PayloadError> {
    // Apple documents tokens as opaque hex of varying length; anything else would be spliced
    // into the request path.
    if token.is_empty() || token.len() > 200 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PayloadError::Invalid {
            field: "device token",
            why: "not hex".into(),
        });
    }
    Ok(())
}

/// Whether `s` is a canonical lowercase UUID (8-4-4-4-12), as `apns-id` requires.
pub(crate) fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn alert_and_wake_up_bodies() {
        let mut n = ApnsNotification::alert(TOKEN, "com.example", "Ann", "hi");
        n.payload.aps.badge = Some(3);
        let body: serde_json::Value =
            serde_json::from_slice(&n.encode().expect("encode")).expect("json");
        assert_eq!(body["aps"]["alert"]["body"], "hi");
        assert_eq!(body["aps"]["badge"], 3);
        assert_eq!(n.effective_priority(), Priority::Immediate);

        let w = ApnsNotification::wake_up(TOKEN, "com.example");
        let body: serde_json::Value =
            serde_json::from_slice(&w.encode().expect("encode")).expect("json");
        assert_eq!(body, serde_json::json!({"aps": {"content-available": 1}}));
        assert_eq!(w.effective_priority(), Priority::PowerAware);
    }

    #[test]
    fn limits_are_checked_before_sending() {
        let mut n = ApnsNotification::alert(TOKEN, "com.example", "t", &"x".repeat(5000));
        assert!(matches!(
            n.encode(),
            Err(PayloadError::TooLarge { limit: 4096, .. })
        ));
        n.push_type = PushType::Voip;
        n.payload.aps.alert = Some(Alert {
            body: Some("x".repeat(4500)),
            ..Alert::default()
        });
        assert!(n.encode().is_ok(), "VoIP allows 5 KiB");
        n.collapse_id = Some("c".repeat(65));
        assert_eq!(n.encode(), Err(PayloadError::CollapseIdTooLong(65)));
        n.collapse_id = Some("c".repeat(64));
        n.apns_id = Some("not-a-uuid".into());
        assert!(matches!(
            n.encode(),
            Err(PayloadError::Invalid {
                field: "apns-id",
                ..
            })
        ));
    }

    #[test]
    fn uuid_shape() {
        assert!(is_uuid("123e4567-e89b-12d3-a456-426614174000"));
        assert!(!is_uuid("123E4567-E89B-12D3-A456-426614174000"));
        assert!(!is_uuid("123e4567e89b12d3a456426614174000"));
    }
}
