//! `POST /v1/projects/{project}/messages:send` over one multiplexed HTTP/2 connection.

use bytes::Bytes;
use http::{HeaderValue, Method, Request};
use http_body_util::Full;
use prometheus_client::metrics::counter::Counter;

use super::auth::TokenSource;
use super::{FcmConfig, FcmMessage};
use crate::classify::{Classification, Verdict, classify_fcm};
use crate::conn::{Endpoint, H2Channel};
use crate::tls::client_config;
use crate::{PushError, UnixClock};

/// What FCM said about one message.
#[derive(Debug, Clone)]
pub struct FcmResponse {
    /// Status, error code and verdict.
    pub classification: Classification,
    /// `projects/{p}/messages/{id}` on success.
    pub name: Option<String>,
}

/// An FCM HTTP v1 client for one project.
#[derive(Debug)]
pub struct FcmClient {
    channel: H2Channel,
    auth: TokenSource,
    send_path: String,
    clock: UnixClock,
}

impl FcmClient {
    /// Builds the client; connections are dialled on first use.
    pub fn new(config: &FcmConfig) -> Result<Self, PushError> {
        Self::with_clock(config, UnixClock::system())
    }

    /// Builds the client with an explicit wall clock (tests).
    pub fn with_clock(config: &FcmConfig, clock: UnixClock) -> Result<Self, PushError> {
        let project = &config.account.project_id;
        if project.is_empty()
            || !project
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(PushError::Config(format!("FCM project id {project:?}")));
        }
        let endpoint = Endpoint::parse(&config.base_url)?;
        let tls = client_config(&config.trust, None, &[b"h2"])?;
        Ok(Self {
            channel: H2Channel::new(endpoint, Some(tls), config.conn.clone())?,
            auth: TokenSource::new(config, clock)?,
            send_path: format!("/v1/projects/{project}/messages:send"),
            clock,
        })
    }

    /// Counts access-token fetches into `counter`.
    pub fn with_refresh_counter(mut self, counter: Counter) -> Self {
        self.auth.refreshes = counter;
        self
    }

    /// How many access tokens this client has fetched.
    pub fn token_refreshes(&self) -> u64 {
        self.auth.refreshes.get()
    }

    /// How many connections to FCM (not the token endpoint) this client has opened.
    pub fn connections_opened(&self) -> u64 {
        self.channel.connects()
    }

    /// Sends one message. A 401 drops the access token, fetches a new one and resends once.
    pub async fn send(&self, message: &FcmMessage) -> Result<FcmResponse, PushError> {
        let body = message.encode()?;
        let mut refreshed = false;
        loop {
            let token = self.auth.token().await?;
            let request = Request::builder()
                .method(Method::POST)
                .uri(self.channel.endpoint().uri(&self.send_path))
                .header(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )
                .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Full::new(body.clone()))
                .map_err(|e| PushError::Config(format!("FCM request: {e}")))?;
            let raw = self.channel.send(request).await?;
            let retry_after = raw
                .headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok());
            let classification = classify_fcm(
                raw.status.as_u16(),
                &raw.body,
                retry_after,
                self.clock.now_ms(),
            );
            if classification.verdict == Verdict::RefreshAuth && !refreshed {
                refreshed = true;
                self.auth.invalidate(&token).await;
                continue;
            }
            let name = if classification.verdict == Verdict::Delivered {
                success_name(&raw.body)
            } else {
                None
            };
            return Ok(FcmResponse {
                classification,
                name,
            });
        }
    }
}

fn success_name(body: &Bytes) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Sent {
        name: String,
    }
    serde_json::from_slice::<Sent>(body).ok().map(|s| s.name)
}
