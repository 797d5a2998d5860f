//! Why a token was refused, and the wire code each refusal closes the connection with.

use imgate_codec::CloseCode;

/// A refused token.
///
/// Messages go to the client in the `Error` frame: they name what failed, never a secret,
/// and never echo the token or claim values (which could be anything, of any length).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// `Hello.token` was empty.
    #[error("no token in Hello")]
    MissingToken,
    /// Not a decodable token (bad base64, JSON, header or claim types).
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The signature does not verify with this app's key.
    #[error("token signature does not verify")]
    BadSignature,
    /// The header names an algorithm other than the one configured for this app
    /// (including `none`).
    #[error("token algorithm is not the one configured for this app")]
    WrongAlgorithm,
    /// A required claim is absent.
    #[error("token has no `{0}` claim")]
    MissingClaim(&'static str),
    /// A claim is present but unusable.
    #[error("token claim `{claim}` is invalid: {reason}")]
    InvalidClaim {
        /// The claim's name.
        claim: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The `iss` claim is absent or not the configured issuer.
    #[error("token issuer is not trusted")]
    UntrustedIssuer,
    /// The token is not one of the configured static tokens.
    #[error("unknown token")]
    UnknownToken,
    /// `exp` (plus leeway) has passed.
    #[error("token expired at {expired_at} (unix seconds)")]
    Expired {
        /// The token's `exp` claim.
        expired_at: u64,
    },
    /// `nbf` (minus leeway) is still in the future.
    #[error("token is not valid before {not_before} (unix seconds)")]
    NotYetValid {
        /// The token's `nbf` claim.
        not_before: u64,
    },
    /// The `app_id` claim names another app than `Hello.app_id`.
    #[error("token was issued for another app")]
    WrongApp,
    /// The `aud` claim is absent or does not include the configured audience.
    #[error("token audience does not include this gateway")]
    WrongAudience,
    /// The `device_id` claim names another device than `Hello.device_id`.
    #[error("token was issued for another device")]
    WrongDevice,
    /// `Hello.app_id` names no app configured on this server.
    #[error("app is not configured on this server")]
    UnknownApp,
    /// A backend that verifies tokens itself refused this one.
    #[error("backend refused the token: {0}")]
    Backend(String),
    /// A backend that verifies tokens itself could not be reached; the client may retry.
    #[error("authentication backend unavailable: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// The wire code to close the connection with.
    ///
    /// The split tells a client what to do next: `UNAUTHENTICATED` means get a new
    /// credential, `TOKEN_EXPIRED` means refresh the one it has, `FORBIDDEN` means the
    /// credential is fine but not for this app, audience or device.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::MissingToken
            | Self::Malformed(_)
            | Self::BadSignature
            | Self::WrongAlgorithm
            | Self::MissingClaim(_)
            | Self::InvalidClaim { .. }
            // An unexpected issuer means we do not trust who vouched for the user at all,
            // which is unauthenticated rather than "authenticated but not allowed here".
            | Self::UntrustedIssuer
            | Self::UnknownToken
            | Self::Backend(_) => CloseCode::UNAUTHENTICATED,
            Self::Expired { .. } | Self::NotYetValid { .. } => CloseCode::TOKEN_EXPIRED,
            Self::WrongApp | Self::WrongAudience | Self::WrongDevice => CloseCode::FORBIDDEN,
            Self::UnknownApp => CloseCode::UNKNOWN_APP,
            Self::Unavailable(_) => CloseCode::BACKEND_UNAVAILABLE,
        }
    }
}

impl From<&AuthError> for CloseCode {
    fn from(error: &AuthError) -> Self {
        error.close_code()
    }
}
