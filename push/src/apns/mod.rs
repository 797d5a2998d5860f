//! APNs provider API over HTTP/2: token (.p8 ES256 JWT) or certificate authentication.

mod client;
mod jwt;
mod payload;

use std::time::Duration;

pub use client::{ApnsClient, ApnsResponse};
#[cfg(feature = "mock")]
pub(crate) use payload::is_uuid as payload_is_uuid;
pub use payload::{
    Alert, ApnsNotification, ApnsPayload, Aps, COLLAPSE_ID_MAX, PAYLOAD_MAX, PAYLOAD_MAX_VOIP,
    Priority, PushType,
};

use crate::{ConnOptions, TrustRoots};

/// Apple's production endpoint.
pub const PRODUCTION_URL: &str = "https://api.push.apple.com";
/// Apple's development (sandbox) endpoint.
pub const SANDBOX_URL: &str = "https://api.sandbox.push.apple.com";
/// The alternative port Apple serves on for firewalls that block 443.
pub const ALT_PORT: u16 = 2197;

/// How the provider proves who it is.
#[derive(Clone)]
pub enum ApnsAuth {
    /// Token auth: an ES256 JWT signed with the team's `.p8` key (PKCS#8 PEM). One key serves
    /// every app of the team.
    Token {
        /// The `.p8` file's contents.
        key_pem: Vec<u8>,
        /// The 10-character Key ID (`kid`).
        key_id: String,
        /// The 10-character Team ID (`iss`).
        team_id: String,
    },
    /// Certificate auth: a TLS client certificate per app. Convert a `.p12` with
    /// `openssl pkcs12 -in cert.p12 -nodes` into a PEM chain and key.
    Certificate {
        /// PEM certificate chain.
        chain_pem: Vec<u8>,
        /// PEM private key.
        key_pem: Vec<u8>,
    },
}

impl std::fmt::Debug for ApnsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        match self {
            Self::Token {
                key_id, team_id, ..
            } => f
                .debug_struct("Token")
                .field("key_id", key_id)
                .field("team_id", team_id)
                .finish(),
            Self::Certificate { .. } => f.write_str("Certificate"),
        }
    }
}

/// Configuration of one APNs credential (one connection).
#[derive(Debug, Clone)]
pub struct ApnsConfig {
    /// `https://host[:port]`: [`PRODUCTION_URL`], [`SANDBOX_URL`], or a loopback mock.
    pub base_url: String,
    /// Credentials.
    pub auth: ApnsAuth,
    /// Which CAs to trust ([`TrustRoots::WebPki`] for Apple).
    pub trust: TrustRoots,
    /// Connection tuning.
    pub conn: ConnOptions,
    /// JWT age at which a new one is minted. Apple wants 20–60 minutes; 50 leaves margin on
    /// both sides.
    pub token_refresh: Duration,
}

impl ApnsConfig {
    /// Token auth against production.
    pub fn token(
        key_pem: impl Into<Vec<u8>>,
        key_id: impl Into<String>,
        team_id: impl Into<String>,
    ) -> Self {
        Self::with_auth(ApnsAuth::Token {
            key_pem: key_pem.into(),
            key_id: key_id.into(),
            team_id: team_id.into(),
        })
    }

    /// Certificate auth against production.
    pub fn certificate(chain_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        Self::with_auth(ApnsAuth::Certificate {
            chain_pem: chain_pem.into(),
            key_pem: key_pem.into(),
        })
    }

    fn with_auth(auth: ApnsAuth) -> Self {
        Self {
            base_url: PRODUCTION_URL.to_owned(),
            auth,
            trust: TrustRoots::WebPki,
            conn: ConnOptions::default(),
            token_refresh: Duration::from_secs(50 * 60),
        }
    }

    /// Targets Apple's sandbox.
    pub fn sandbox(&mut self) -> &mut Self {
        self.base_url = SANDBOX_URL.to_owned();
        self
    }

    /// Targets `url` (a mock, or Apple on port 2197).
    pub fn base_url(&mut self, url: impl Into<String>) -> &mut Self {
        self.base_url = url.into();
        self
    }

    /// Trusts only the CAs in `pem`.
    pub fn trust_pem(&mut self, pem: impl Into<Vec<u8>>) -> &mut Self {
        self.trust = TrustRoots::Pem(pem.into());
        self
    }
}
