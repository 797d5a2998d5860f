//! JWT verification for one app (HS256, RS256 or ES256, pinned by configuration).

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{AuthError, AuthFuture, AuthRequest, Authenticated, Authenticator, MAX_USER_ID_LEN};
use crate::ids::{AppId, UserId};

/// Default allowance for clock skew between the token issuer and this gateway, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 60;

/// Shortest HS256 secret accepted: RFC 7518 §3.2 requires a key at least as long as the
/// hash output (256 bits).
pub const MIN_HMAC_SECRET_LEN: usize = 32;

/// The signature algorithm an app's tokens must use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256 and a shared secret.
    Hs256,
    /// RSASSA-PKCS1-v1_5 with SHA-256; verified with an RSA public key.
    Rs256,
    /// ECDSA on P-256 with SHA-256; verified with an EC public key.
    Es256,
}

impl JwtAlgorithm {
    fn to_jsonwebtoken(self) -> Algorithm {
        match self {
            Self::Hs256 => Algorithm::HS256,
            Self::Rs256 => Algorithm::RS256,
            Self::Es256 => Algorithm::ES256,
        }
    }
}

/// The verification key of an app.
#[derive(Clone, PartialEq, Eq)]
pub enum JwtKey {
    /// The shared HS256 secret (at least [`MIN_HMAC_SECRET_LEN`] bytes).
    Secret(Vec<u8>),
    /// A PEM public key (`PUBLIC KEY`, or `RSA PUBLIC KEY` for RS256).
    PublicKeyPem(String),
}

// Hand-written so that printing a config never prints the shared secret.
impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secret(secret) => write!(f, "Secret(<{} bytes>)", secret.len()),
            Self::PublicKeyPem(_) => f.write_str("PublicKeyPem(..)"),
        }
    }
}

/// How to verify one app's tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtConfig {
    /// The only algorithm accepted; the token header's `alg` must match it.
    pub algorithm: JwtAlgorithm,
    /// The key matching `algorithm`.
    pub key: JwtKey,
    /// If set, the `aud` claim must contain this value.
    pub audience: Option<String>,
    /// If set, the `iss` claim must equal this value.
    pub issuer: Option<String>,
    /// Clock-skew allowance applied to `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

impl JwtConfig {
    /// HS256 with a shared `secret`, no audience or issuer, [`DEFAULT_LEEWAY_SECS`].
    pub fn hs256(secret: impl Into<Vec<u8>>) -> Self {
        Self::new(JwtAlgorithm::Hs256, JwtKey::Secret(secret.into()))
    }

    /// RS256 with an RSA public key in PEM, no audience or issuer, [`DEFAULT_LEEWAY_SECS`].
    pub fn rs256(public_key_pem: impl Into<String>) -> Self {
        Self::new(
            JwtAlgorithm::Rs256,
            JwtKey::PublicKeyPem(public_key_pem.into()),
        )
    }

    /// ES256 with a P-256 public key in PEM, no audience or issuer, [`DEFAULT_LEEWAY_SECS`].
    pub fn es256(public_key_pem: impl Into<String>) -> Self {
        Self::new(
            JwtAlgorithm::Es256,
            JwtKey::PublicKeyPem(public_key_pem.into()),
        )
    }

    fn new(algorithm: JwtAlgorithm, key: JwtKey) -> Self {
        Self {
            algorithm,
            key,
            audience: None,
            issuer: None,
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }
}

/// A [`JwtConfig`] that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtConfigError {
    /// The HS256 secret is shorter than [`MIN_HMAC_SECRET_LEN`].
    #[error("HS256 secret is {len} bytes; at least {MIN_HMAC_SECRET_LEN} are required")]
    SecretTooShort {
        /// The configured secret's length.
        len: usize,
    },
    /// A secret for RS256/ES256, or a PEM key for HS256.
    #[error("{algorithm:?} needs {expected}")]
    KeyKindMismatch {
        /// The configured algorithm.
        algorithm: JwtAlgorithm,
        /// The kind of key it needs.
        expected: &'static str,
    },
    /// The PEM public key does not parse for the configured algorithm.
    #[error("invalid {algorithm:?} public key PEM: {reason}")]
    InvalidPem {
        /// The configured algorithm.
        algorithm: JwtAlgorithm,
        /// Why it was rejected.
        reason: String,
    },
}

/// Verifies JWTs for one app.
///
/// Checks, in order: the signature with the pinned algorithm (the header's `alg` is never
/// trusted), `exp` (required) and `nbf`, `iss` and `aud` when configured, `app_id` against
/// `Hello.app_id`, `sub` (the user id, 1..=[`MAX_USER_ID_LEN`] bytes), and `device_id`
/// against `Hello.device_id` when the claim is present.
#[derive(Clone)]
pub struct JwtAuthenticator {
    algorithm: JwtAlgorithm,
    key: DecodingKey,
    validation: Validation,
    audience: Option<String>,
    issuer: Option<String>,
    leeway_secs: u64,
}

impl fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("algorithm", &self.algorithm)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway_secs", &self.leeway_secs)
            .finish_non_exhaustive()
    }
}

impl JwtAuthenticator {
    /// Checks `config` and prepares its key.
    pub fn new(config: JwtConfig) -> Result<Self, JwtConfigError> {
        let JwtConfig {
            algorithm,
            key,
            audience,
            issuer,
            leeway_secs,
        } = config;
        let invalid_pem = |e: jsonwebtoken::errors::Error| JwtConfigError::InvalidPem {
            algorithm,
            reason: e.to_string(),
        };
        let key = match (algorithm, key) {
            (JwtAlgorithm::Hs256, JwtKey::Secret(secret)) => {
                if secret.len() < MIN_HMAC_SECRET_LEN {
                    return Err(JwtConfigError::SecretTooShort { len: secret.len() });
                }
                DecodingKey::from_secret(&secret)
            }
            (JwtAlgorithm::Rs256, JwtKey::PublicKeyPem(pem)) => {
                DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(invalid_pem)?
            }
            (JwtAlgorithm::Es256, JwtKey::PublicKeyPem(pem)) => {
                DecodingKey::from_ec_pem(pem.as_bytes()).map_err(invalid_pem)?
            }
            (JwtAlgorithm::Hs256, JwtKey::PublicKeyPem(_)) => {
                return Err(JwtConfigError::KeyKindMismatch {
                    algorithm,
                    expected: "a shared secret",
                });
            }
            (JwtAlgorithm::Rs256 | JwtAlgorithm::Es256, JwtKey::Secret(_)) => {
                return Err(JwtConfigError::KeyKindMismatch {
                    algorithm,
                    expected: "a PEM public key",
                });
            }
        };
        // jsonwebtoken only checks the signature and the pinned algorithm here: its time
        // checks read the system clock, and we want `verify` deterministic in `now_unix`,
        // and its claim errors do not say which close code applies. We check claims below.
        let mut validation = Validation::new(algorithm.to_jsonwebtoken());
        validation.required_spec_claims = HashSet::new();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        Ok(Self {
            algorithm,
            key,
            validation,
            audience,
            issuer,
            leeway_secs,
        })
    }

    /// The algorithm this authenticator accepts.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.algorithm
    }

    /// Verifies `request` as of `now_unix` (unix seconds); [`Authenticator::authenticate`]
    /// calls this with the system clock.
    pub fn verify(&self, request: &AuthRequest, now_unix: u64) -> Result<Authenticated, AuthError> {
        if request.token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        let claims = jsonwebtoken::decode::<Claims>(&request.token, &self.key, &self.validation)
            .map_err(|e| map_decode_error(e.kind()))?
            .claims;

        let exp = claims.exp.ok_or(AuthError::MissingClaim("exp"))?;
        // RFC 7519 §4.1.4: the current time must be before `exp`.
        if now_unix >= exp.saturating_add(self.leeway_secs) {
            return Err(AuthError::Expired { expired_at: exp });
        }
        // (No let-chains: the MSRV is 1.85.)
        if let Some(nbf) = claims
            .nbf
            .filter(|&nbf| now_unix.saturating_add(self.leeway_secs) < nbf)
        {
            return Err(AuthError::NotYetValid { not_before: nbf });
        }
        if self
            .issuer
            .as_ref()
            .is_some_and(|issuer| claims.iss.as_ref() != Some(issuer))
        {
            return Err(AuthError::UntrustedIssuer);
        }
        if let Some(audience) = &self.audience
            && !claims
                .aud
                .as_ref()
                .is_some_and(|aud| aud.contains(audience))
        {
            return Err(AuthError::WrongAudience);
        }
        let app = claims.app_id.ok_or(AuthError::MissingClaim("app_id"))?;
        // Multi-app isolation: a token minted for app A must never open a session in app B,
        // even when both apps share a key.
        if app != request.app.as_str() {
            return Err(AuthError::WrongApp);
        }
        let sub = claims.sub.ok_or(AuthError::MissingClaim("sub"))?;
        if sub.is_empty() || sub.len() > MAX_USER_ID_LEN {
            return Err(AuthError::InvalidClaim {
                claim: "sub",
                reason: "must be 1..=256 bytes",
            });
        }
        if claims
            .device_id
            .is_some_and(|device| device != request.device.as_str())
        {
            return Err(AuthError::WrongDevice);
        }
        Ok(Authenticated {
            user: UserId::new(sub),
            expires_at: Some(exp),
        })
    }
}

impl Authenticator for JwtAuthenticator {
    fn authenticate<'a>(&'a self, request: &'a AuthRequest) -> AuthFuture<'a> {
        // A clock before 1970 makes every token look not-yet-valid, which fails closed.
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        Box::pin(std::future::ready(self.verify(request, now_unix)))
    }
}

/// Claims read from a token. All optional so a missing one is reported by name rather than
/// as a JSON error; numbers must be integers (RFC 7519 NumericDate without fractions).
#[derive(Deserialize)]
struct Claims {
    exp: Option<u64>,
    nbf: Option<u64>,
    iss: Option<String>,
    aud: Option<Audience>,
    sub: Option<String>,
    app_id: Option<String>,
    device_id: Option<String>,
}

/// RFC 7519 §4.1.3: `aud` is a string or an array of strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, wanted: &str) -> bool {
        match self {
            Self::One(aud) => aud == wanted,
            Self::Many(auds) => auds.iter().any(|aud| aud == wanted),
        }
    }
}

fn map_decode_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        // `InvalidAlgorithm`: the header's `alg` is not the pinned one (algorithm confusion).
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AuthError::WrongAlgorithm,
        ErrorKind::InvalidToken => AuthError::Malformed("not three base64url parts"),
        ErrorKind::Base64(_) => AuthError::Malformed("invalid base64url"),
        // Includes a header with an unknown `alg` such as `none`, which fails to parse.
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            AuthError::Malformed("header or claims are not the expected JSON")
        }
        // Key-shape and crypto errors (e.g. an ECDSA signature of the wrong length) mean the
        // signature cannot be verified with this app's key.
        _ => AuthError::BadSignature,
    }
}

#[derive(Serialize)]
struct DevClaims<'a> {
    sub: &'a str,
    app_id: &'a str,
    iat: u64,
    exp: u64,
}

/// Mints an HS256 token for `user` of `app`, valid from `now_unix` for `ttl`
/// (for `imgate token` and tests; production tokens come from the app's own issuer).
pub fn mint_dev_token(
    secret: &[u8],
    app: &AppId,
    user: &UserId,
    ttl: Duration,
    now_unix: u64,
) -> String {
    let claims = DevClaims {
        sub: user.as_str(),
        app_id: app.as_str(),
        iat: now_unix,
        exp: now_unix.saturating_add(ttl.as_secs()),
    };
    match jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    ) {
        Ok(token) => token,
        // Serialising strings and integers cannot fail, and HMAC accepts any key length.
        Err(e) => unreachable!("HS256 signing of plain claims failed: {e}"),
    }
}
