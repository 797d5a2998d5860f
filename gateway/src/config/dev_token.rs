//! Tokens for development tools (`imgate token`, `imgate chat`), from the same
//! configuration the gateway verifies them with.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::ConfigError;
use crate::ids::{AppId, UserId};

/// How a development token is made for one app.
#[derive(Clone)]
pub(super) enum DevToken {
    /// Minted as an HS256 JWT with the app's secret.
    Hs256(Vec<u8>),
    /// Looked up in the app's static tokens (user → token).
    Static(BTreeMap<String, String>),
    /// The app verifies with a public key: tokens come from its issuer.
    PublicKey,
}

impl std::fmt::Debug for DevToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret or a token.
        f.write_str(match self {
            Self::Hs256(_) => "Hs256",
            Self::Static(_) => "Static",
            Self::PublicKey => "PublicKey",
        })
    }
}

impl DevToken {
    /// A token `user` can log in to `app` with, valid for `ttl`.
    pub(super) fn token(
        &self,
        app: &str,
        user: &str,
        ttl: Duration,
    ) -> Result<String, ConfigError> {
        match self {
            Self::Hs256(secret) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                Ok(crate::auth::mint_dev_token(
                    secret,
                    &AppId::new(app),
                    &UserId::new(user),
                    ttl,
                    now,
                ))
            }
            Self::Static(tokens) => tokens
                .iter()
                .find(|(_, owner)| owner.as_str() == user)
                .map(|(token, _)| token.clone())
                .ok_or_else(|| {
                    ConfigError(format!(
                        "app {app}: [app.auth] tokens has no token for user {user:?}"
                    ))
                }),
            Self::PublicKey => Err(ConfigError(format!(
                "app {app}: [app.auth] verifies RS256/ES256 tokens: get one from the issuer \
                 (pass --token)"
            ))),
        }
    }
}
