//! Provider response → what to do with the push and the token.
//!
//! The status codes and reasons are the ones Apple and Google document (see
//! `shared/research/push-apis.md`). Tokens are pruned only on APNs `410 Unregistered` and FCM
//! `UNREGISTERED`; `BadDeviceToken` is usually a sandbox/production or topic mix-up, so it raises
//! an alert instead of deleting tokens en masse.

use std::time::{Duration, UNIX_EPOCH};

use serde::Deserialize;

/// What a provider response means for the push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted by the provider.
    Delivered,
    /// The token is dead (APNs 410 `Unregistered`, FCM `UNREGISTERED`): prune it unless it was
    /// re-registered after `since_ms` (see [`should_prune`]). Never retried.
    Unregistered {
        /// APNs' `timestamp`: when the token stopped being valid (ms since the epoch).
        since_ms: Option<u64>,
    },
    /// Transient: try again later.
    Retryable {
        /// The provider's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
        /// A floor on the next delay (FCM asks for ≥ 1 min after `QUOTA_EXCEEDED`).
        min_delay: Option<Duration>,
    },
    /// The provider token expired (APNs `ExpiredProviderToken`, FCM 401): mint a new one and
    /// retry once.
    RefreshAuth,
    /// Credentials or provider configuration refused: alert an operator, don't retry.
    AuthConfig,
    /// Will never succeed as sent: don't retry.
    Permanent {
        /// The token looks wrong for this app/environment (`BadDeviceToken`,
        /// `DeviceTokenNotForTopic`, `SENDER_ID_MISMATCH`…): alert, but keep the token.
        bad_token: bool,
    },
}

/// A classified provider response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// HTTP status.
    pub status: u16,
    /// The provider's reason (`BadDeviceToken`, `UNREGISTERED`…), or `"Success"`.
    pub reason: String,
    /// What to do.
    pub verdict: Verdict,
}

/// Whether an `Unregistered` verdict should delete a token registered at `registered_at_ms`.
///
/// APNs' 410 can arrive late (an Apple engineer: it is "never meant to be an immediate
/// response"); a token the device registered again after `since_ms` is alive and stays.
pub fn should_prune(since_ms: Option<u64>, registered_at_ms: u64) -> bool {
    since_ms.is_none_or(|since| registered_at_ms <= since)
}

#[derive(Deserialize)]
struct ApnsErrorBody {
    #[serde(default)]
    reason: String,
    timestamp: Option<u64>,
}

/// Classifies an APNs response. `retry_after` is the raw header, `now_ms` the current UNIX time.
pub fn classify_apns(
    status: u16,
    body: &[u8],
    retry_after: Option<&str>,
    now_ms: u64,
) -> Classification {
    let parsed: Option<ApnsErrorBody> = serde_json::from_slice(body).ok();
    let (reason, timestamp) = match parsed {
        Some(b) => (b.reason, b.timestamp),
        None => (String::new(), None),
    };
    let retry_after = retry_after.and_then(|v| parse_retry_after(v, now_ms));
    let verdict = match (status, reason.as_str()) {
        (200, _) => Verdict::Delivered,
        (410, "Unregistered") => Verdict::Unregistered {
            since_ms: timestamp,
        },
        (400 | 410, "BadDeviceToken" | "DeviceTokenNotForTopic" | "ExpiredToken") => {
            Verdict::Permanent { bad_token: true }
        }
        // APNs closed an idle connection under the request; a fresh connection will do.
        (400, "IdleTimeout") => Verdict::Retryable {
            retry_after,
            min_delay: None,
        },
        (403, "ExpiredProviderToken") => Verdict::RefreshAuth,
        (403, _) => Verdict::AuthConfig,
        (429, _) => Verdict::Retryable {
            retry_after,
            min_delay: None,
        },
        (500..=599, _) => Verdict::Retryable {
            retry_after,
            min_delay: None,
        },
        _ => Verdict::Permanent { bad_token: false },
    };
    let reason = if status == 200 {
        "Success".to_owned()
    } else {
        reason
    };
    Classification {
        status,
        reason,
        verdict,
    }
}

#[derive(Deserialize)]
struct FcmErrorBody {
    error: FcmError,
}

#[derive(Deserialize)]
struct FcmError {
    #[serde(default)]
    status: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    details: Vec<FcmErrorDetail>,
}

#[derive(Deserialize)]
struct FcmErrorDetail {
    #[serde(rename = "@type", default)]
    kind: String,
    #[serde(rename = "errorCode")]
    error_code: Option<String>,
}

/// Google asks for at least a minute's wait after `QUOTA_EXCEEDED` without `Retry-After`.
const FCM_QUOTA_MIN_DELAY: Duration = Duration::from_secs(60);

/// Classifies an FCM HTTP v1 response.
///
/// `status` in the body is ambiguous (404 `NOT_FOUND` also means a wrong project), so the
/// `FcmError` `errorCode` decides; only `UNREGISTERED` prunes.
pub fn classify_fcm(
    status: u16,
    body: &[u8],
    retry_after: Option<&str>,
    now_ms: u64,
) -> Classification {
    let parsed: Option<FcmErrorBody> = serde_json::from_slice(body).ok();
    let (code, rpc_status, message) = match parsed {
        Some(FcmErrorBody { error }) => {
            let code = error
                .details
                .iter()
                .filter(|d| d.kind.ends_with("FcmError") || d.kind.is_empty())
                .find_map(|d| d.error_code.clone());
            (code, error.status, error.message)
        }
        None => (None, String::new(), String::new()),
    };
    let retry_after = retry_after.and_then(|v| parse_retry_after(v, now_ms));
    let retry = |min_delay| Verdict::Retryable {
        retry_after,
        min_delay,
    };
    let verdict = match (status, code.as_deref()) {
        (200, _) => Verdict::Delivered,
        (_, Some("UNREGISTERED")) => Verdict::Unregistered { since_ms: None },
        (_, Some("INVALID_ARGUMENT")) | (400, None) => Verdict::Permanent {
            // A malformed token is the one INVALID_ARGUMENT that is about the token.
            bad_token: message.contains("registration token"),
        },
        (_, Some("SENDER_ID_MISMATCH")) => Verdict::Permanent { bad_token: true },
        (_, Some("THIRD_PARTY_AUTH_ERROR")) => Verdict::AuthConfig,
        (_, Some("QUOTA_EXCEEDED")) | (429, None) => retry(Some(FCM_QUOTA_MIN_DELAY)),
        (_, Some("UNAVAILABLE" | "INTERNAL")) => retry(None),
        (401, _) => Verdict::RefreshAuth,
        (403, _) => Verdict::AuthConfig,
        (500..=599, _) => retry(None),
        _ => Verdict::Permanent { bad_token: false },
    };
    let reason = match (status, code) {
        (200, _) => "Success".to_owned(),
        (_, Some(code)) => code,
        _ => rpc_status,
    };
    Classification {
        status,
        reason,
        verdict,
    }
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now_ms: u64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at_ms = u64::try_from(at.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()?;
    Some(Duration::from_millis(at_ms.saturating_sub(now_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn apns(status: u16, body: &str, retry_after: Option<&str>) -> Classification {
        classify_apns(status, body.as_bytes(), retry_after, NOW)
    }

    fn fcm(status: u16, code: Option<&str>, rpc: &str, message: &str) -> Classification {
        let details = match code {
            Some(c) => format!(
                r#"[{{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"{c}"}}]"#
            ),
            None => "[]".into(),
        };
        let body = format!(
            r#"{{"error":{{"code":{status},"message":"{message}","status":"{rpc}","details":{details}}}}}"#
        );
        classify_fcm(status, body.as_bytes(), None, NOW)
    }

    #[test]
    fn apns_success_and_prune() {
        assert_eq!(apns(200, "", None).verdict, Verdict::Delivered);
        let c = apns(
            410,
            r#"{"reason":"Unregistered","timestamp":1699999999000}"#,
            None,
        );
        assert_eq!(
            c.verdict,
            Verdict::Unregistered {
                since_ms: Some(1_699_999_999_000)
            }
        );
        assert_eq!(c.reason, "Unregistered");
    }

    #[test]
    fn apns_bad_tokens_alert_but_are_not_pruned() {
        for reason in ["BadDeviceToken", "DeviceTokenNotForTopic"] {
            let c = apns(400, &format!(r#"{{"reason":"{reason}"}}"#), None);
            assert_eq!(
                c.verdict,
                Verdict::Permanent { bad_token: true },
                "{reason}"
            );
        }
        assert_eq!(
            apns(410, r#"{"reason":"ExpiredToken"}"#, None).verdict,
            Verdict::Permanent { bad_token: true }
        );
    }

    #[test]
    fn apns_request_bugs_are_permanent() {
        for (status, reason) in [
            (400, "BadCollapseId"),
            (400, "BadExpirationDate"),
            (400, "BadMessageId"),
            (400, "BadPriority"),
            (400, "BadTopic"),
            (400, "DuplicateHeaders"),
            (400, "InvalidPushType"),
            (400, "MissingTopic"),
            (400, "PayloadEmpty"),
            (400, "TopicDisallowed"),
            (404, "BadPath"),
            (405, "MethodNotAllowed"),
            (413, "PayloadTooLarge"),
        ] {
            let c = apns(status, &format!(r#"{{"reason":"{reason}"}}"#), None);
            assert_eq!(
                c.verdict,
                Verdict::Permanent { bad_token: false },
                "{status} {reason}"
            );
        }
    }

    #[test]
    fn apns_auth() {
        assert_eq!(
            apns(403, r#"{"reason":"ExpiredProviderToken"}"#, None).verdict,
            Verdict::RefreshAuth
        );
        for reason in [
            "BadCertificate",
            "BadCertificateEnvironment",
            "Forbidden",
            "InvalidProviderToken",
            "MissingProviderToken",
        ] {
            assert_eq!(
                apns(403, &format!(r#"{{"reason":"{reason}"}}"#), None).verdict,
                Verdict::AuthConfig
            );
        }
    }

    #[test]
    fn apns_retryable_with_retry_after() {
        let c = apns(429, r#"{"reason":"TooManyRequests"}"#, Some("12"));
        assert_eq!(
            c.verdict,
            Verdict::Retryable {
                retry_after: Some(Duration::from_secs(12)),
                min_delay: None
            }
        );
        for (status, reason) in [
            (500, "InternalServerError"),
            (503, "ServiceUnavailable"),
            (503, "Shutdown"),
            (429, "TooManyProviderTokenUpdates"),
        ] {
            let c = apns(status, &format!(r#"{{"reason":"{reason}"}}"#), None);
            assert!(matches!(c.verdict, Verdict::Retryable { .. }), "{reason}");
        }
        // A proxy's HTML error page still classifies by status.
        assert!(matches!(
            apns(502, "<html>bad gateway</html>", None).verdict,
            Verdict::Retryable { .. }
        ));
    }

    #[test]
    fn fcm_codes() {
        assert_eq!(
            classify_fcm(200, br#"{"name":"projects/p/messages/1"}"#, None, NOW).verdict,
            Verdict::Delivered
        );
        let c = fcm(
            404,
            Some("UNREGISTERED"),
            "NOT_FOUND",
            "Requested entity was not found.",
        );
        assert_eq!(c.verdict, Verdict::Unregistered { since_ms: None });
        assert_eq!(c.reason, "UNREGISTERED");
        // A 404 without UNREGISTERED (wrong project) must not delete tokens.
        assert_eq!(
            fcm(404, None, "NOT_FOUND", "x").verdict,
            Verdict::Permanent { bad_token: false }
        );
        let bad = fcm(
            400,
            Some("INVALID_ARGUMENT"),
            "INVALID_ARGUMENT",
            "The registration token is not a valid FCM registration token",
        );
        assert_eq!(bad.verdict, Verdict::Permanent { bad_token: true });
        let bug = fcm(
            400,
            Some("INVALID_ARGUMENT"),
            "INVALID_ARGUMENT",
            "Invalid value at 'message.android.ttl'",
        );
        assert_eq!(bug.verdict, Verdict::Permanent { bad_token: false });
        assert_eq!(
            fcm(403, Some("SENDER_ID_MISMATCH"), "PERMISSION_DENIED", "x").verdict,
            Verdict::Permanent { bad_token: true }
        );
        assert_eq!(
            fcm(401, Some("THIRD_PARTY_AUTH_ERROR"), "UNAUTHENTICATED", "x").verdict,
            Verdict::AuthConfig
        );
        assert_eq!(
            fcm(401, None, "UNAUTHENTICATED", "x").verdict,
            Verdict::RefreshAuth
        );
        assert_eq!(
            fcm(403, None, "PERMISSION_DENIED", "x").verdict,
            Verdict::AuthConfig
        );
        assert!(matches!(
            fcm(503, Some("UNAVAILABLE"), "UNAVAILABLE", "x").verdict,
            Verdict::Retryable { .. }
        ));
        assert!(matches!(
            fcm(500, Some("INTERNAL"), "INTERNAL", "x").verdict,
            Verdict::Retryable { .. }
        ));
    }

    #[test]
    fn fcm_quota_honours_retry_after_with_a_floor() {
        let body = br#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"QUOTA_EXCEEDED"}]}}"#;
        let c = classify_fcm(429, body, Some("120"), NOW);
        assert_eq!(
            c.verdict,
            Verdict::Retryable {
                retry_after: Some(Duration::from_secs(120)),
                min_delay: Some(FCM_QUOTA_MIN_DELAY)
            }
        );
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after(" 5 ", NOW), Some(Duration::from_secs(5)));
        let date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(NOW + 30_000));
        assert_eq!(parse_retry_after(&date, NOW), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("soon", NOW), None);
    }

    #[test]
    fn prune_respects_reregistration() {
        assert!(should_prune(None, 10));
        assert!(
            should_prune(Some(100), 50),
            "registered before the 410 timestamp: dead"
        );
        assert!(
            !should_prune(Some(100), 150),
            "registered again after it: alive"
        );
    }
}
