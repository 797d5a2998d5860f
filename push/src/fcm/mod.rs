//! FCM HTTP v1: a thin typed client over the crate's own HTTP/2 channel.
//!
//! `google-fcm1` was considered and not used; `push/README.md` records why.

mod auth;
mod client;
mod message;

use std::time::Duration;

use serde::Deserialize;

pub use client::{FcmClient, FcmResponse};
pub use message::{
    AndroidConfig, AndroidNotification, AndroidPriority, ApnsOverride, FcmMessage, FcmNotification,
    MESSAGE_MAX,
};

use crate::{ConnOptions, PushError, TrustRoots};

/// Google's FCM endpoint.
pub const FCM_URL: &str = "https://fcm.googleapis.com";
/// The OAuth2 scope for sending.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The token grant for a signed JWT assertion.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The fields of a Google service-account JSON key that the client uses.
#[derive(Clone, Deserialize)]
pub struct ServiceAccount {
    /// Firebase project id.
    pub project_id: String,
    /// The account's e-mail: the JWT `iss`.
    pub client_email: String,
    /// RSA private key, PKCS#8 PEM.
    pub private_key: String,
    /// Key id, sent as the JWT `kid` when present.
    #[serde(default)]
    pub private_key_id: Option<String>,
    /// OAuth2 token endpoint (`https://oauth2.googleapis.com/token`).
    pub token_uri: String,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("ServiceAccount")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl ServiceAccount {
    /// Parses a service-account JSON key file.
    pub fn from_json(json: &[u8]) -> Result<Self, PushError> {
        serde_json::from_slice(json)
            .map_err(|e| PushError::Config(format!("service account JSON: {e}")))
    }
}

/// Configuration of one FCM project (one connection plus its token source).
#[derive(Debug, Clone)]
pub struct FcmConfig {
    /// The service account.
    pub account: ServiceAccount,
    /// `https://fcm.googleapis.com`, or a loopback mock.
    pub base_url: String,
    /// Which CAs to trust, for both FCM and the token endpoint.
    pub trust: TrustRoots,
    /// Connection tuning.
    pub conn: ConnOptions,
    /// OAuth2 scope requested.
    pub scope: String,
    /// How long before `expires_in` runs out the access token is refreshed.
    pub refresh_margin: Duration,
}

impl FcmConfig {
    /// Production defaults for `account`; the token URI is the account's own.
    pub fn new(account: ServiceAccount) -> Self {
        Self {
            account,
            base_url: FCM_URL.to_owned(),
            trust: TrustRoots::WebPki,
            conn: ConnOptions::default(),
            scope: SCOPE.to_owned(),
            refresh_margin: Duration::from_secs(60),
        }
    }

    /// Targets `url` instead of Google.
    pub fn base_url(&mut self, url: impl Into<String>) -> &mut Self {
        self.base_url = url.into();
        self
    }

    /// Overrides the service account's token URI.
    pub fn token_uri(&mut self, url: impl Into<String>) -> &mut Self {
        self.account.token_uri = url.into();
        self
    }
}
