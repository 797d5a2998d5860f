//! Registration checks: token shapes, and whether the app can push to that token at all.

use imgate_codec::PushProvider;
use imgate_push::Platform;

use super::ApnsEnvironment;
use super::store::DeviceRegistration;
use crate::ids::{DeviceId, UserId};
use crate::offline::PushRegistration;

/// Shortest APNs device token, hex digits (32 bytes; Apple says it may grow).
pub(crate) const APNS_TOKEN_MIN: usize = 64;
/// Longest APNs token accepted, hex digits.
pub(crate) const APNS_TOKEN_MAX: usize = 200;
/// Longest FCM registration token accepted, bytes.
pub(crate) const FCM_TOKEN_MAX: usize = 4096;

/// What the app is configured for.
#[derive(Clone, Debug)]
pub(crate) struct Checks {
    /// APNs topic and environment, when APNs is configured.
    pub(crate) apns: Option<(String, ApnsEnvironment)>,
    /// Whether FCM is configured.
    pub(crate) fcm: bool,
}

impl Checks {
    pub(crate) fn check(
        &self,
        user: &UserId,
        device: &DeviceId,
        r: PushRegistration,
    ) -> Result<DeviceRegistration, String> {
        if user.as_str().contains('\0') || device.as_str().contains('\0') {
            return Err("user and device ids must not contain NUL".into());
        }
        let platform = match r.provider {
            PushProvider::Apns => Platform::Apns,
            PushProvider::Fcm => Platform::Fcm,
            PushProvider::Unspecified => return Err("push provider is unspecified".into()),
        };
        match platform {
            Platform::Apns => {
                let Some((topic, environment)) = &self.apns else {
                    return Err("APNs is not configured for this app".into());
                };
                let len = r.token.len();
                if !(APNS_TOKEN_MIN..=APNS_TOKEN_MAX).contains(&len)
                    || !r.token.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err(format!(
                        "APNs token must be {APNS_TOKEN_MIN} to {APNS_TOKEN_MAX} hex digits"
                    ));
                }
                if r.topic.is_empty() {
                    return Err("APNs registration needs a topic (bundle id)".into());
                }
                if r.topic != *topic {
                    return Err(format!(
                        "APNs topic {:?} is not this app's ({topic:?})",
                        r.topic
                    ));
                }
                // A sandbox token sent to production (or the reverse) comes back as
                // BadDeviceToken: refuse the mix-up here instead.
                let refused = match environment {
                    ApnsEnvironment::Production => r.sandbox,
                    ApnsEnvironment::Sandbox => !r.sandbox,
                    ApnsEnvironment::Custom => false,
                };
                if refused {
                    return Err(format!(
                        "{} APNs token, but this app pushes to APNs {}",
                        if r.sandbox { "sandbox" } else { "production" },
                        if r.sandbox { "production" } else { "sandbox" },
                    ));
                }
            }
            Platform::Fcm => {
                if !self.fcm {
                    return Err("FCM is not configured for this app".into());
                }
                if r.token.is_empty() || r.token.len() > FCM_TOKEN_MAX {
                    return Err(format!("FCM token must be 1 to {FCM_TOKEN_MAX} bytes"));
                }
            }
        }
        Ok(DeviceRegistration {
            platform,
            token: r.token,
            topic: if platform == Platform::Apns {
                r.topic
            } else {
                String::new()
            },
            sandbox: r.sandbox && platform == Platform::Apns,
            registered_at_ms: super::worker::wall_ms(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks() -> Checks {
        Checks {
            apns: Some(("com.example.chat".into(), ApnsEnvironment::Production)),
            fcm: true,
        }
    }

    fn reg(provider: PushProvider, token: &str, topic: &str, sandbox: bool) -> PushRegistration {
        PushRegistration {
            provider,
            token: token.into(),
            topic: topic.into(),
            sandbox,
        }
    }

    #[test]
    fn token_shapes() {
        let (c, u, d) = (checks(), UserId::new("ann"), DeviceId::new("phone"));
        let hex = "ab".repeat(32);
        let topic = "com.example.chat";
        assert!(
            c.check(&u, &d, reg(PushProvider::Apns, &hex, topic, false))
                .is_ok()
        );
        for bad in [
            reg(PushProvider::Apns, &hex[..62], topic, false),
            reg(PushProvider::Apns, &"zz".repeat(32), topic, false),
            reg(PushProvider::Apns, &hex, "", false),
            reg(PushProvider::Apns, &hex, "com.other", false),
            reg(PushProvider::Apns, &hex, topic, true),
            reg(PushProvider::Fcm, "", "", false),
            reg(PushProvider::Fcm, &"x".repeat(4097), "", false),
            reg(PushProvider::Unspecified, "x", "", false),
        ] {
            assert!(c.check(&u, &d, bad.clone()).is_err(), "{bad:?}");
        }
        let fcm = c
            .check(&u, &d, reg(PushProvider::Fcm, "fcm-token", "ignored", true))
            .expect("fcm");
        assert_eq!((fcm.topic.as_str(), fcm.sandbox), ("", false));
        let no_fcm = Checks {
            fcm: false,
            ..checks()
        };
        assert!(
            no_fcm
                .check(&u, &d, reg(PushProvider::Fcm, "t", "", false))
                .is_err()
        );
    }
}
