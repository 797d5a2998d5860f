//! Keys generated at test time, so no secret is ever committed.

use crate::PushError;

/// An APNs `.p8`-style key: P-256, PKCS#8 PEM, with made-up Key and Team ids.
#[derive(Clone)]
pub struct ApnsTestKey {
    /// PKCS#8 PEM private key (what an Apple `.p8` contains).
    pub key_pem: String,
    /// SPKI PEM public key, for the mock.
    pub public_pem: String,
    /// 10-character Key ID.
    pub key_id: String,
    /// 10-character Team ID.
    pub team_id: String,
}

impl std::fmt::Debug for ApnsTestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsTestKey")
            .field("key_id", &self.key_id)
            .field("team_id", &self.team_id)
            .finish()
    }
}

impl ApnsTestKey {
    /// Generates a fresh key.
    pub fn generate() -> Result<Self, PushError> {
        let pair = rcgen::KeyPair::generate()
            .map_err(|e| PushError::Config(format!("generate P-256: {e}")))?;
        Ok(Self {
            key_pem: pair.serialize_pem(),
            public_pem: pair.public_key_pem(),
            key_id: "KEYID12345".into(),
            team_id: "TEAMID1234".into(),
        })
    }
}

/// An RSA-2048 key pair for a test service account.
#[derive(Clone)]
pub struct RsaTestKey {
    /// PKCS#8 PEM private key (the service account's `private_key`).
    pub private_pem: String,
    /// SPKI PEM public key, for the mock token endpoint.
    pub public_pem: String,
}

impl std::fmt::Debug for RsaTestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RsaTestKey")
    }
}

impl RsaTestKey {
    /// Generates a fresh key. Pure Rust (`rsa`): milliseconds in release builds, a few seconds
    /// unoptimised, so tests should generate one per process and share it.
    pub fn generate() -> Result<Self, PushError> {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let err = |e: &dyn std::fmt::Display| PushError::Config(format!("generate RSA: {e}"));
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).map_err(|e| err(&e))?;
        let private_pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| err(&e))?
            .to_string();
        let public_pem = key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| err(&e))?;
        Ok(Self {
            private_pem,
            public_pem,
        })
    }

    /// A service account for `project` using this key, whose token URI is `token_uri`.
    pub fn service_account(&self, project: &str, token_uri: &str) -> crate::fcm::ServiceAccount {
        crate::fcm::ServiceAccount {
            project_id: project.to_owned(),
            client_email: format!("push@{project}.iam.gserviceaccount.com"),
            private_key: self.private_pem.clone(),
            private_key_id: Some("test-key-1".into()),
            token_uri: token_uri.to_owned(),
        }
    }
}
