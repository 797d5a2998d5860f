//! The APNs client: one HTTP/2 connection per credential, every request multiplexed on it.

use bytes::Bytes;
use http::{HeaderValue, Method, Request};
use http_body_util::Full;
use prometheus_client::metrics::counter::Counter;

use super::jwt::JwtCache;
use super::{ApnsAuth, ApnsConfig, ApnsNotification};
use crate::classify::{Classification, Verdict, classify_apns};
use crate::conn::{Endpoint, H2Channel};
use crate::tls::{ClientIdentity, client_config};
use crate::{PayloadError, PushError, UnixClock};

/// What APNs said about one notification.
#[derive(Debug, Clone)]
pub struct ApnsResponse {
    /// Status, reason and verdict.
    pub classification: Classification,
    /// The `apns-id` APNs echoed or generated.
    pub apns_id: Option<String>,
}

/// An APNs provider connection (token or certificate auth).
#[derive(Debug)]
pub struct ApnsClient {
    channel: H2Channel,
    jwt: Option<JwtCache>,
    clock: UnixClock,
}

impl std::fmt::Debug for JwtCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtCache")
    }
}

impl ApnsClient {
    /// Builds the client; the connection is dialled on the first send.
    pub fn new(config: &ApnsConfig) -> Result<Self, PushError> {
        Self::with_clock(config, UnixClock::system())
    }

    /// Builds the client with an explicit wall clock (tests).
    pub fn with_clock(config: &ApnsConfig, clock: UnixClock) -> Result<Self, PushError> {
        let endpoint = Endpoint::parse(&config.base_url)?;
        let (jwt, identity) = match &config.auth {
            ApnsAuth::Token {
                key_pem,
                key_id,
                team_id,
            } => (
                Some(JwtCache::new(
                    key_pem,
                    key_id,
                    team_id,
                    config.token_refresh,
                    clock,
                )?),
                None,
            ),
            ApnsAuth::Certificate { chain_pem, key_pem } => (
                None,
                Some(ClientIdentity {
                    chain_pem: chain_pem.clone(),
                    key_pem: key_pem.clone(),
                }),
            ),
        };
        // APNs is HTTP/2-only: offer nothing else in ALPN.
        let tls = client_config(&config.trust, identity.as_ref(), &[b"h2"])?;
        let channel = H2Channel::new(endpoint, Some(tls), config.conn.clone())?;
        Ok(Self {
            channel,
            jwt,
            clock,
        })
    }

    /// Counts JWT mints into `counter` (for [`crate::PushMetrics::token_refreshes`]).
    pub fn with_refresh_counter(mut self, counter: Counter) -> Self {
        if let Some(jwt) = &mut self.jwt {
            jwt.mints = counter;
        }
        self
    }

    /// How many provider tokens this client has minted.
    pub fn token_refreshes(&self) -> u64 {
        self.jwt.as_ref().map_or(0, |j| j.mints.get())
    }

    /// How many connections this client has opened.
    pub fn connections_opened(&self) -> u64 {
        self.channel.connects()
    }

    /// Sends one notification.
    ///
    /// Validation failures (size, collapse id…) return [`PushError::Payload`] without sending.
    /// `ExpiredProviderToken` re-mints the JWT and resends once; every other answer is returned
    /// classified, for the caller to retry or not.
    pub async fn send(&self, n: &ApnsNotification) -> Result<ApnsResponse, PushError> {
        let body = n.encode()?;
        let mut token = self.jwt.as_ref().map(JwtCache::current).transpose()?;
        let mut refreshed = false;
        loop {
            let request = self.request(n, body.clone(), token.as_deref())?;
            let raw = self.channel.send(request).await?;
            let retry_after = raw
                .headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok());
            let classification = classify_apns(
                raw.status.as_u16(),
                &raw.body,
                retry_after,
                self.clock.now_ms(),
            );
            if classification.verdict == Verdict::RefreshAuth
                && !refreshed
                && let (Some(jwt), Some(rejected)) = (&self.jwt, &token)
            {
                refreshed = true;
                token = Some(jwt.replace(rejected)?);
                continue;
            }
            let apns_id = raw
                .headers
                .get("apns-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            return Ok(ApnsResponse {
                classification,
                apns_id,
            });
        }
    }

    fn request(
        &self,
        n: &ApnsNotification,
        body: Bytes,
        token: Option<&str>,
    ) -> Result<Request<Full<Bytes>>, PushError> {
        let uri = self
            .channel
            .endpoint()
            .uri(&format!("/3/device/{}", n.device_token));
        let mut req = Request::builder().method(Method::POST).uri(uri);
        let headers = req
            .headers_mut()
            .ok_or_else(|| PushError::Config("APNs request URI rejected".into()))?;
        let value = |field: &'static str, v: &str| {
            HeaderValue::from_str(v).map_err(|_| PayloadError::Invalid {
                field,
                why: "not a valid header value".into(),
            })
        };
        if let Some(token) = token {
            headers.insert(
                http::header::AUTHORIZATION,
                value("authorization", &format!("bearer {token}"))?,
            );
        }
        headers.insert("apns-topic", value("apns-topic", &n.topic)?);
        headers.insert(
            "apns-push-type",
            HeaderValue::from_static(n.push_type.as_str()),
        );
        headers.insert(
            "apns-priority",
            HeaderValue::from_static(n.effective_priority().as_str()),
        );
        if let Some(exp) = n.expiration {
            headers.insert("apns-expiration", HeaderValue::from(exp));
        }
        if let Some(id) = &n.collapse_id {
            headers.insert("apns-collapse-id", value("apns-collapse-id", id)?);
        }
        if let Some(id) = &n.apns_id {
            headers.insert("apns-id", value("apns-id", id)?);
        }
        req.body(Full::new(body))
            .map_err(|e| PushError::Config(format!("APNs request: {e}")))
    }
}
