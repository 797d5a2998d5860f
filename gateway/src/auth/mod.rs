//! Token verification: who is this client, and may it use the app it named in `Hello`?
//!
//! Runs right after [`crate::session::Handshake`] has checked the shape of `Hello`.
//! The gateway keeps one [`Authenticator`] per app (see [`PerApp`]), so a token verified here
//! was always checked against the app the client asked for.
//!
//! # Layout
//! - [`Authenticator`]: the pluggable, object-safe verifier trait.
//! - [`AuthError`]: every refusal, mapped to a wire code by [`AuthError::close_code`].
//! - [`JwtAuthenticator`]: built-in JWT verification (HS256, RS256, ES256) for one app, and
//!   [`mint_dev_token`] for `imgate token` and tests.
//! - [`StaticTokens`]: a fixed token → user map for development.
//! - [`PerApp`]: routes a request to its app's authenticator (`UNKNOWN_APP` otherwise).

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use crate::ids::{AppId, DeviceId, UserId};

mod error;
mod jwt;
mod per_app;
mod static_tokens;
#[cfg(test)]
mod tests;

pub use error::AuthError;
pub use jwt::{
    DEFAULT_LEEWAY_SECS, JwtAlgorithm, JwtAuthenticator, JwtConfig, JwtConfigError, JwtKey,
    MIN_HMAC_SECRET_LEN, mint_dev_token,
};
pub use per_app::PerApp;
pub use static_tokens::StaticTokens;

/// Longest user id accepted, in bytes: the JWT authenticator refuses a longer `sub` claim,
/// and the gateway refuses a connection whose authenticator returned a longer id (it
/// travels in `Welcome`, which must fit the smallest frame limit a client may announce).
pub const MAX_USER_ID_LEN: usize = 256;

/// What a client presented in `Hello`, for an [`Authenticator`] to verify.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthRequest {
    /// The app the client named (`Hello.app_id`).
    pub app: AppId,
    /// The device the client named (`Hello.device_id`).
    pub device: DeviceId,
    /// The bearer token (`Hello.token`); never logged.
    pub token: String,
    /// The client's address, when the transport knows it.
    pub peer: Option<SocketAddr>,
}

// Hand-written so that `{:?}` in a log line can never print a bearer token.
impl fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthRequest")
            .field("app", &self.app)
            .field("device", &self.device)
            .field("token", &format_args!("<{} bytes>", self.token.len()))
            .field("peer", &self.peer)
            .finish()
    }
}

/// A verified client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated {
    /// The user the token speaks for (unique within the request's app).
    pub user: UserId,
    /// When the credential stops being valid (unix seconds), if it expires.
    pub expires_at: Option<u64>,
}

/// The future returned by [`Authenticator::authenticate`].
pub type AuthFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Authenticated, AuthError>> + Send + 'a>>;

/// Verifies the token of a new connection.
///
/// Object-safe (a boxed future rather than `async fn`) so the gateway can hold
/// `Arc<dyn Authenticator>` per app and a backend can plug in its own verification.
/// `Debug` is a supertrait so that structs holding one can derive `Debug`.
pub trait Authenticator: Send + Sync + fmt::Debug {
    /// Verifies `request`, returning the user it speaks for or why it was refused.
    fn authenticate<'a>(&'a self, request: &'a AuthRequest) -> AuthFuture<'a>;
}
