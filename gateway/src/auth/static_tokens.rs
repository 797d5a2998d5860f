//! A fixed token → user map, for development and tests.

use std::collections::HashMap;
use std::fmt;

use super::{AuthError, AuthFuture, AuthRequest, Authenticated, Authenticator};
use crate::ids::UserId;

/// Accepts exactly the configured tokens, each standing for one user; they never expire.
///
/// For development only: tokens sit in configuration in the clear. A hash-map lookup is not
/// constant-time, which is acceptable for that use. `Debug` prints only how many tokens
/// there are.
#[derive(Clone, Default)]
pub struct StaticTokens {
    tokens: HashMap<String, UserId>,
}

impl fmt::Debug for StaticTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticTokens")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl StaticTokens {
    /// No tokens: every request is refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `token` as `user`, replacing any earlier user for the same token.
    pub fn insert(&mut self, token: impl Into<String>, user: UserId) -> &mut Self {
        self.tokens.insert(token.into(), user);
        self
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether no token is accepted.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Looks `request.token` up.
    pub fn verify(&self, request: &AuthRequest) -> Result<Authenticated, AuthError> {
        if request.token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        let user = self
            .tokens
            .get(&request.token)
            .ok_or(AuthError::UnknownToken)?;
        Ok(Authenticated {
            user: user.clone(),
            expires_at: None,
        })
    }
}

impl<T: Into<String>> FromIterator<(T, UserId)> for StaticTokens {
    fn from_iter<I: IntoIterator<Item = (T, UserId)>>(iter: I) -> Self {
        Self {
            tokens: iter
                .into_iter()
                .map(|(token, user)| (token.into(), user))
                .collect(),
        }
    }
}

impl Authenticator for StaticTokens {
    fn authenticate<'a>(&'a self, request: &'a AuthRequest) -> AuthFuture<'a> {
        Box::pin(std::future::ready(self.verify(request)))
    }
}
