//! Mock APNs: HTTP/2 over TLS (h2-only ALPN), checking what Apple checks, in Apple's order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Method, Response};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::json;

use super::server::{ConnInfo, Handler, Server, json};
use super::split_jwt;
use super::tls::TestPki;
use crate::apns::{PushType, payload_is_uuid};
use crate::{PushError, UnixClock};

/// How the mock authenticates providers.
#[derive(Debug, Clone)]
pub enum MockApnsAuth {
    /// Verify an ES256 JWT against this key and these ids.
    Token {
        /// SPKI PEM public key matching the provider's `.p8`.
        public_pem: String,
        /// Expected `kid`.
        key_id: String,
        /// Expected `iss`.
        team_id: String,
    },
    /// Require a TLS client certificate signed by the mock's CA.
    Certificate,
}

/// Mock APNs settings.
#[derive(Debug, Clone)]
pub struct MockApnsConfig {
    /// Provider authentication.
    pub auth: MockApnsAuth,
    /// If set, `apns-topic` (minus the push type's suffix) must equal it
    /// (`DeviceTokenNotForTopic` otherwise).
    pub bundle_id: Option<String>,
    /// Answer `429 TooManyProviderTokenUpdates` when a new JWT (`iat`) arrives within 20
    /// minutes of the previous one, as Apple does.
    pub enforce_token_update_rate: bool,
    /// Keep every request (turn off for benches).
    pub record: bool,
}

impl MockApnsConfig {
    /// Token auth with `key`, recording on.
    pub fn token(key: &super::ApnsTestKey) -> Self {
        Self {
            auth: MockApnsAuth::Token {
                public_pem: key.public_pem.clone(),
                key_id: key.key_id.clone(),
                team_id: key.team_id.clone(),
            },
            bundle_id: None,
            enforce_token_update_rate: true,
            record: true,
        }
    }
}

/// A scripted answer for one request to a device token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApnsReply {
    /// 200.
    Ok,
    /// 410 `Unregistered` with `timestamp` (ms).
    Unregistered {
        /// When the token became invalid.
        timestamp_ms: u64,
    },
    /// 400 `BadDeviceToken`.
    BadDeviceToken,
    /// 429 `TooManyRequests`, optionally with `Retry-After` seconds.
    TooManyRequests(Option<u64>),
    /// 503 `ServiceUnavailable`, optionally with `Retry-After` seconds.
    ServiceUnavailable(Option<u64>),
    /// 500 `InternalServerError`.
    InternalServerError,
    /// 403 `ExpiredProviderToken` (whatever the token's age).
    ExpiredProviderToken,
    /// Any status and reason.
    Status(u16, String),
    /// No answer ever: the request is recorded (status 0) and its stream left open, as when
    /// the gateway dies before the provider's answer arrives.
    NoAnswer,
}

/// One request as the mock saw it.
#[derive(Debug, Clone)]
pub struct ApnsRecord {
    /// Connection number (1-based).
    pub connection: u64,
    /// Device token from the path.
    pub device_token: String,
    /// Request headers.
    pub headers: HeaderMap,
    /// Request body.
    pub body: Bytes,
    /// Status answered.
    pub status: u16,
    /// Reason answered, if an error.
    pub reason: Option<String>,
}

#[derive(Default)]
struct State {
    scripts: HashMap<String, VecDeque<ApnsReply>>,
    records: Vec<ApnsRecord>,
    violations: Vec<String>,
    last_iat: Option<u64>,
    allow_new_token: bool,
    requests: u64,
}

struct ApnsHandler {
    config: MockApnsConfig,
    key: Option<DecodingKey>,
    clock: UnixClock,
    state: Mutex<State>,
    /// Requests answered so far, for [`MockApns::answered`].
    answered: tokio::sync::watch::Sender<u64>,
}

/// A running mock APNs server. Dropping it stops it.
#[derive(Debug)]
pub struct MockApns {
    server: Server,
    handler: Arc<ApnsHandler>,
    pki: Arc<TestPki>,
}

impl std::fmt::Debug for ApnsHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApnsHandler")
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MockApns {
    /// Starts a mock with its own fresh CA.
    pub async fn start(config: MockApnsConfig) -> Result<Self, PushError> {
        Self::start_with_pki(config, Arc::new(TestPki::generate()?)).await
    }

    /// Starts a mock serving a certificate from `pki`.
    pub async fn start_with_pki(
        config: MockApnsConfig,
        pki: Arc<TestPki>,
    ) -> Result<Self, PushError> {
        Self::start_on(config, pki, 0).await
    }

    /// Starts a mock on a given loopback port (`0`: any), e.g. to stand in for one that was
    /// shut down.
    pub async fn start_on(
        config: MockApnsConfig,
        pki: Arc<TestPki>,
        port: u16,
    ) -> Result<Self, PushError> {
        let key = match &config.auth {
            MockApnsAuth::Token { public_pem, .. } => Some(
                DecodingKey::from_ec_pem(public_pem.as_bytes())
                    .map_err(|e| PushError::Config(format!("mock APNs key: {e}")))?,
            ),
            MockApnsAuth::Certificate => None,
        };
        let tls = pki.server_config(&[b"h2"], matches!(config.auth, MockApnsAuth::Certificate))?;
        let handler = Arc::new(ApnsHandler {
            config,
            key,
            clock: UnixClock::system(),
            state: Mutex::default(),
            answered: tokio::sync::watch::Sender::new(0),
        });
        let server = Server::spawn(Some(tls), Arc::clone(&handler), port).await?;
        Ok(Self {
            server,
            handler,
            pki,
        })
    }

    /// `https://localhost:<port>`: the client's base URL.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.server.addr.port())
    }

    /// The CA the client must trust.
    pub fn ca_pem(&self) -> String {
        self.pki.ca_pem()
    }

    /// The PKI, for client certificates.
    pub fn pki(&self) -> &Arc<TestPki> {
        &self.pki
    }

    /// Queues answers for `device_token`, used in order; afterwards it gets 200.
    pub fn script(&self, device_token: &str, replies: impl IntoIterator<Item = ApnsReply>) {
        self.handler
            .lock()
            .scripts
            .entry(device_token.to_owned())
            .or_default()
            .extend(replies);
    }

    /// Every request recorded so far.
    pub fn requests(&self) -> Vec<ApnsRecord> {
        self.handler.lock().records.clone()
    }

    /// Number of requests answered (recorded or not).
    pub fn request_count(&self) -> u64 {
        self.handler.lock().requests
    }

    /// Resolves once `n` requests have been answered (recorded or not): a test waits for
    /// the push it expects instead of polling [`MockApns::requests`].
    pub async fn answered(&self, n: u64) {
        let mut answered = self.handler.answered.subscribe();
        // The sender lives as long as `self`: the wait cannot fail.
        let _ = answered.wait_for(|count| *count >= n).await;
    }

    /// Things Apple accepts but a correct provider never sends (e.g. an alert on a
    /// background push).
    pub fn violations(&self) -> Vec<String> {
        self.handler.lock().violations.clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.server.connections()
    }

    /// Stops the server and closes every connection.
    pub fn shutdown(self) {}
}

impl ApnsHandler {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Apple's checks, in Apple's order; `Err` carries (status, reason).
    fn check(
        &self,
        conn: ConnInfo,
        parts: &http::request::Parts,
        body: Option<&Bytes>,
    ) -> Result<String, (u16, &'static str)> {
        if parts.method != Method::POST {
            return Err((405, "MethodNotAllowed"));
        }
        let token = parts
            .uri
            .path()
            .strip_prefix("/3/device/")
            .ok_or((404, "BadPath"))?;
        if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err((400, "BadDeviceToken"));
        }
        let h = &parts.headers;
        for name in [
            "authorization",
            "apns-topic",
            "apns-push-type",
            "apns-priority",
            "apns-expiration",
            "apns-collapse-id",
            "apns-id",
        ] {
            if h.get_all(name).iter().count() > 1 {
                return Err((400, "DuplicateHeaders"));
            }
        }
        match &self.config.auth {
            MockApnsAuth::Token {
                key_id, team_id, ..
            } => self.check_jwt(h, key_id, team_id)?,
            MockApnsAuth::Certificate if !conn.client_cert => {
                return Err((403, "MissingProviderToken"));
            }
            MockApnsAuth::Certificate => {}
        }
        let header = |name| h.get(name).and_then(|v| v.to_str().ok());
        let topic = header("apns-topic").ok_or((400, "MissingTopic"))?;
        let push_type = match header("apns-push-type") {
            Some(v) => PushType::parse(v).ok_or((400, "InvalidPushType"))?,
            None => {
                self.lock().violations.push("apns-push-type missing".into());
                PushType::Alert
            }
        };
        let bundle = topic
            .strip_suffix(push_type.topic_suffix())
            .ok_or((400, "BadTopic"))?;
        if self
            .config
            .bundle_id
            .as_deref()
            .is_some_and(|b| b != bundle)
        {
            return Err((400, "DeviceTokenNotForTopic"));
        }
        let priority = header("apns-priority").unwrap_or("10");
        if !["10", "5", "1"].contains(&priority)
            || (push_type == PushType::Background && priority == "10")
        {
            return Err((400, "BadPriority"));
        }
        if header("apns-expiration").is_some_and(|v| v.parse::<u64>().is_err()) {
            return Err((400, "BadExpirationDate"));
        }
        if h.get("apns-collapse-id")
            .is_some_and(|v| v.len() > crate::apns::COLLAPSE_ID_MAX)
        {
            return Err((400, "BadCollapseId"));
        }
        if header("apns-id").is_some_and(|v| !payload_is_uuid(v))
            || (h.contains_key("apns-id") && header("apns-id").is_none())
        {
            return Err((400, "BadMessageId"));
        }
        let body = body.ok_or((413, "PayloadTooLarge"))?;
        if body.is_empty() {
            return Err((400, "PayloadEmpty"));
        }
        if body.len() > push_type.payload_limit() {
            return Err((413, "PayloadTooLarge"));
        }
        let payload: serde_json::Value =
            serde_json::from_slice(body).map_err(|_| (400, "BadPayload"))?;
        let aps = payload
            .get("aps")
            .and_then(|a| a.as_object())
            .ok_or((400, "BadPayload"))?;
        if push_type == PushType::Background
            && (aps.get("content-available") != Some(&json!(1))
                || ["alert", "sound", "badge"]
                    .iter()
                    .any(|k| aps.contains_key(*k)))
        {
            self.lock().violations.push(format!(
                "background push with aps {}",
                serde_json::Value::Object(aps.clone())
            ));
        }
        Ok(token.to_owned())
    }

    fn check_jwt(
        &self,
        h: &HeaderMap,
        key_id: &str,
        team_id: &str,
    ) -> Result<(), (u16, &'static str)> {
        let auth = h
            .get("authorization")
            .ok_or((403, "MissingProviderToken"))?;
        let auth = auth.to_str().map_err(|_| (403, "InvalidProviderToken"))?;
        let jwt = auth
            .strip_prefix("bearer ")
            .or_else(|| auth.strip_prefix("Bearer "))
            .ok_or((403, "InvalidProviderToken"))?;
        let invalid = (403, "InvalidProviderToken");
        let (input, header, claims, sig) = split_jwt(jwt).ok_or(invalid)?;
        if header["alg"] != "ES256" || header["kid"] != key_id || claims["iss"] != team_id {
            return Err(invalid);
        }
        let key = self.key.as_ref().ok_or(invalid)?;
        // Verify over the exact bytes sent, not a re-encoding.
        if !jsonwebtoken::crypto::verify(&sig, input.as_bytes(), key, Algorithm::ES256)
            .unwrap_or(false)
        {
            return Err(invalid);
        }
        let iat = claims["iat"].as_u64().ok_or(invalid)?;
        let now = self.clock.now_secs();
        if iat > now + 60 {
            return Err(invalid);
        }
        if now.saturating_sub(iat) > 3600 {
            return Err((403, "ExpiredProviderToken"));
        }
        let mut state = self.lock();
        if state.last_iat.is_none_or(|last| iat > last) {
            let too_soon = state.last_iat.is_some_and(|last| iat < last + 20 * 60);
            if too_soon && self.config.enforce_token_update_rate && !state.allow_new_token {
                return Err((429, "TooManyProviderTokenUpdates"));
            }
            state.last_iat = Some(iat);
            state.allow_new_token = false;
        }
        Ok(())
    }
}

impl Handler for ApnsHandler {
    fn handle(
        &self,
        conn: ConnInfo,
        parts: http::request::Parts,
        body: Option<Bytes>,
    ) -> Option<Response<Full<Bytes>>> {
        let checked = self.check(conn, &parts, body.as_ref());
        let mut silent = false;
        let (status, reason, resp) = match checked {
            Err((status, reason)) => (
                status,
                Some(reason.to_owned()),
                json(status, &json!({ "reason": reason })),
            ),
            Ok(token) => {
                let mut state = self.lock();
                let reply = state
                    .scripts
                    .get_mut(&token)
                    .and_then(VecDeque::pop_front)
                    .unwrap_or(ApnsReply::Ok);
                if reply == ApnsReply::ExpiredProviderToken {
                    // The provider will (correctly) mint a new token right away.
                    state.allow_new_token = true;
                }
                drop(state);
                silent = reply == ApnsReply::NoAnswer;
                reply_response(reply)
            }
        };
        let mut resp = resp;
        let id = parts.headers.get("apns-id").cloned().unwrap_or_else(|| {
            http::HeaderValue::from_str(&random_uuid())
                .unwrap_or(http::HeaderValue::from_static("x"))
        });
        resp.headers_mut().insert("apns-id", id);
        let mut state = self.lock();
        state.requests += 1;
        self.answered.send_replace(state.requests);
        if self.config.record {
            let device_token = parts.uri.path().trim_start_matches("/3/device/").to_owned();
            state.records.push(ApnsRecord {
                connection: conn.id,
                device_token,
                headers: parts.headers,
                body: body.unwrap_or_default(),
                status,
                reason,
            });
        }
        (!silent).then_some(resp)
    }
}

fn reply_response(reply: ApnsReply) -> (u16, Option<String>, Response<Full<Bytes>>) {
    let error = |status: u16, reason: &str, retry_after: Option<u64>| {
        let mut resp = json(status, &json!({ "reason": reason }));
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        (status, Some(reason.to_owned()), resp)
    };
    match reply {
        ApnsReply::Ok => {
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = http::StatusCode::OK;
            (200, None, resp)
        }
        ApnsReply::Unregistered { timestamp_ms } => (
            410,
            Some("Unregistered".into()),
            json(
                410,
                &json!({ "reason": "Unregistered", "timestamp": timestamp_ms }),
            ),
        ),
        ApnsReply::BadDeviceToken => error(400, "BadDeviceToken", None),
        ApnsReply::TooManyRequests(after) => error(429, "TooManyRequests", after),
        ApnsReply::ServiceUnavailable(after) => error(503, "ServiceUnavailable", after),
        ApnsReply::InternalServerError => error(500, "InternalServerError", None),
        ApnsReply::ExpiredProviderToken => error(403, "ExpiredProviderToken", None),
        ApnsReply::Status(status, reason) => error(status, &reason, None),
        ApnsReply::NoAnswer => (0, Some("NoAnswer".into()), Response::default()),
    }
}

fn random_uuid() -> String {
    let (a, b) = (fastrand::u64(..), fastrand::u64(..));
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}
