//! Service-account OAuth2: an RS256 JWT assertion exchanged for a cached access token.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{FcmConfig, JWT_BEARER_GRANT};
use crate::conn::{Endpoint, H2Channel};
use crate::tls::client_config;
use crate::{AuthError, PushError, UnixClock};

/// Google caps an assertion's lifetime at one hour.
const ASSERTION_LIFETIME: u64 = 3600;

#[derive(Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    expires_in: u64,
}

struct Cached {
    token: Arc<str>,
    refresh_at: Instant,
}

pub(crate) struct TokenSource {
    key: EncodingKey,
    header: Header,
    email: String,
    scope: String,
    token_uri: String,
    channel: H2Channel,
    clock: UnixClock,
    margin: Duration,
    // An async mutex: while one request refreshes, the others wait for its token rather than
    // each POSTing an assertion.
    cache: tokio::sync::Mutex<Option<Cached>>,
    pub(crate) refreshes: Counter,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    pub(crate) fn new(config: &FcmConfig, clock: UnixClock) -> Result<Self, PushError> {
        let account = &config.account;
        let key = EncodingKey::from_rsa_pem(account.private_key.as_bytes())
            .map_err(|e| AuthError::Key(format!("service account key: {e}")))?;
        let mut header = Header::new(Algorithm::RS256);
        header.kid = account.private_key_id.clone();
        let endpoint = Endpoint::parse(&account.token_uri)?;
        let tls = client_config(&config.trust, None, &[b"h2"])?;
        Ok(Self {
            key,
            header,
            email: account.client_email.clone(),
            scope: config.scope.clone(),
            token_uri: account.token_uri.clone(),
            channel: H2Channel::new(endpoint, Some(tls), config.conn.clone())?,
            clock,
            margin: config.refresh_margin,
            cache: tokio::sync::Mutex::new(None),
            refreshes: Counter::default(),
        })
    }

    /// A valid access token, fetched if missing or within `margin` of expiry.
    pub(crate) async fn token(&self) -> Result<Arc<str>, PushError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = &*cache
            && Instant::now() < c.refresh_at
        {
            return Ok(Arc::clone(&c.token));
        }
        self.fetch(&mut cache).await
    }

    /// Drops `rejected` after a 401 so the next call fetches a new token (once, however many
    /// requests saw the 401).
    pub(crate) async fn invalidate(&self, rejected: &Arc<str>) {
        let mut cache = self.cache.lock().await;
        if cache
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(&c.token, rejected))
        {
            *cache = None;
        }
    }

    async fn fetch(&self, cache: &mut Option<Cached>) -> Result<Arc<str>, PushError> {
        let iat = self.clock.now_secs();
        let claims = Assertion {
            iss: &self.email,
            scope: &self.scope,
            aud: &self.token_uri,
            iat,
            exp: iat + ASSERTION_LIFETIME,
        };
        let assertion = jsonwebtoken::encode(&self.header, &claims, &self.key)
            .map_err(|e| AuthError::Key(format!("sign assertion: {e}")))?;
        // The grant is a constant and a JWT is base64url plus dots: only ':' needs escaping.
        let form = format!(
            "grant_type={}&assertion={assertion}",
            JWT_BEARER_GRANT.replace(':', "%3A")
        );
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.channel.endpoint().uri(""))
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| PushError::Config(format!("token request: {e}")))?;
        let started = Instant::now();
        let raw = self.channel.send(request).await?;
        let reply: Option<TokenReply> = if raw.status.is_success() {
            serde_json::from_slice(&raw.body).ok()
        } else {
            None
        };
        let Some(reply) = reply else {
            let body = String::from_utf8_lossy(&raw.body[..raw.body.len().min(512)]).into_owned();
            return Err(AuthError::TokenEndpoint {
                status: raw.status.as_u16(),
                body,
            }
            .into());
        };
        let lifetime = Duration::from_secs(reply.expires_in);
        // Count the lifetime from when we asked, and refresh `margin` early (or halfway for a
        // token too short-lived for the margin) so no request carries an expired token.
        let lead = self.margin.min(lifetime / 2);
        let token: Arc<str> = reply.access_token.into();
        *cache = Some(Cached {
            token: Arc::clone(&token),
            refresh_at: started + lifetime - lead,
        });
        self.refreshes.inc();
        Ok(token)
    }
}
