//! Mock FCM: the OAuth2 token endpoint and `messages:send`, over h2c on loopback.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Response};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Value, json};

use super::server::{ConnInfo, Handler, Server, json};
use super::split_jwt;
use crate::fcm::{JWT_BEARER_GRANT, MESSAGE_MAX};
use crate::{PushError, UnixClock};

/// Mock FCM settings.
#[derive(Debug, Clone)]
pub struct MockFcmConfig {
    /// Project served at `/v1/projects/{project}/messages:send`.
    pub project_id: String,
    /// Expected assertion `iss`.
    pub client_email: String,
    /// SPKI PEM of the service account's RSA key.
    pub public_pem: String,
    /// `expires_in` of issued access tokens (Google: 3599).
    pub expires_in: u64,
    /// Keep every `messages:send` request (turn off for benches).
    pub record: bool,
}

impl MockFcmConfig {
    /// A mock for `project` whose service account uses `key`.
    pub fn new(project: &str, key: &super::RsaTestKey) -> Self {
        Self {
            project_id: project.to_owned(),
            client_email: format!("push@{project}.iam.gserviceaccount.com"),
            public_pem: key.public_pem.clone(),
            expires_in: 3599,
            record: true,
        }
    }
}

/// A scripted answer to one message for a registration token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FcmReply {
    /// 200 with a message name.
    Ok,
    /// 404 `NOT_FOUND` / `UNREGISTERED`.
    Unregistered,
    /// 400 `INVALID_ARGUMENT`: not a valid FCM registration token.
    InvalidToken,
    /// 403 `PERMISSION_DENIED` / `SENDER_ID_MISMATCH`.
    SenderIdMismatch,
    /// 429 `RESOURCE_EXHAUSTED` / `QUOTA_EXCEEDED`, optionally with `Retry-After` seconds.
    QuotaExceeded(Option<u64>),
    /// 503 `UNAVAILABLE`, optionally with `Retry-After` seconds.
    Unavailable(Option<u64>),
    /// 500 `INTERNAL`.
    Internal,
    /// 401 `UNAUTHENTICATED` (as if the access token had expired).
    Unauthenticated,
}

/// One `messages:send` request as the mock saw it.
#[derive(Debug, Clone)]
pub struct FcmRecord {
    /// Connection number (1-based).
    pub connection: u64,
    /// The `message` object.
    pub message: Value,
    /// Bearer token used.
    pub access_token: String,
    /// Status answered.
    pub status: u16,
}

#[derive(Default)]
struct State {
    scripts: HashMap<String, VecDeque<FcmReply>>,
    records: Vec<FcmRecord>,
    /// Issued access token → expiry (ms).
    tokens: HashMap<String, u64>,
    token_requests: u64,
    sends: u64,
    expires_in: u64,
}

struct FcmHandler {
    config: MockFcmConfig,
    key: DecodingKey,
    clock: UnixClock,
    token_uri: Mutex<String>,
    state: Mutex<State>,
    /// `messages:send` requests answered so far, for [`MockFcm::answered`].
    answered: tokio::sync::watch::Sender<u64>,
}

/// A running mock FCM (token endpoint + `messages:send`). Dropping it stops it.
pub struct MockFcm {
    server: Server,
    handler: Arc<FcmHandler>,
}

impl std::fmt::Debug for MockFcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockFcm").field("url", &self.url()).finish()
    }
}

type Reject = (u16, Value);

impl MockFcm {
    /// Starts the mock (plain h2c: `http://127.0.0.1:<port>`).
    pub async fn start(config: MockFcmConfig) -> Result<Self, PushError> {
        let key = DecodingKey::from_rsa_pem(config.public_pem.as_bytes())
            .map_err(|e| PushError::Config(format!("mock FCM key: {e}")))?;
        let state = State {
            expires_in: config.expires_in,
            ..State::default()
        };
        let handler = Arc::new(FcmHandler {
            config,
            key,
            clock: UnixClock::system(),
            token_uri: Mutex::new(String::new()),
            state: Mutex::new(state),
            answered: tokio::sync::watch::Sender::new(0),
        });
        let server = Server::spawn(None, Arc::clone(&handler), 0).await?;
        let mock = Self { server, handler };
        *mock
            .handler
            .token_uri
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = mock.token_uri();
        Ok(mock)
    }

    /// The FCM base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.addr.port())
    }

    /// The OAuth2 token URI (the assertion's `aud` must equal it).
    pub fn token_uri(&self) -> String {
        format!("{}/token", self.url())
    }

    /// Queues answers for registration `token`, used in order; afterwards it gets 200.
    pub fn script(&self, token: &str, replies: impl IntoIterator<Item = FcmReply>) {
        self.handler
            .lock()
            .scripts
            .entry(token.to_owned())
            .or_default()
            .extend(replies);
    }

    /// Changes `expires_in` for tokens issued from now on.
    pub fn set_expires_in(&self, secs: u64) {
        self.handler.lock().expires_in = secs;
    }

    /// Every `messages:send` recorded so far.
    pub fn requests(&self) -> Vec<FcmRecord> {
        self.handler.lock().records.clone()
    }

    /// Number of `messages:send` requests answered.
    pub fn send_count(&self) -> u64 {
        self.handler.lock().sends
    }

    /// Resolves once `n` `messages:send` requests have been answered: a test waits for the
    /// push it expects instead of polling [`MockFcm::send_count`].
    pub async fn answered(&self, n: u64) {
        let mut answered = self.handler.answered.subscribe();
        // The sender lives as long as `self`: the wait cannot fail.
        let _ = answered.wait_for(|count| *count >= n).await;
    }

    /// Number of token requests answered with a token.
    pub fn token_requests(&self) -> u64 {
        self.handler.lock().token_requests
    }

    /// TCP connections accepted (token endpoint and FCM share the listener).
    pub fn connections(&self) -> u64 {
        self.server.connections()
    }

    /// Stops the server and closes every connection.
    pub fn shutdown(self) {}
}

fn rpc_error(status: u16, rpc: &str, message: &str, code: Option<&str>) -> Reject {
    let mut details = vec![];
    if let Some(code) = code {
        details.push(json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}));
    }
    (
        status,
        json!({"error": {"code": status, "message": message, "status": rpc, "details": details}}),
    )
}

/// The `apns` override block: string headers, an `aps` dictionary, and what APNs itself
/// refuses (a background push at priority 10, or with an alert, sound or badge).
fn check_apns(apns: &Value) -> Result<(), Reject> {
    let headers = apns.get("headers").and_then(Value::as_object);
    if let Some(headers) = headers
        && !headers.values().all(Value::is_string)
    {
        return Err(invalid_field(
            "message.apns.headers",
            "Invalid value: strings expected",
        ));
    }
    let header = |name: &str| headers.and_then(|h| h.get(name)).and_then(Value::as_str);
    let aps = apns.pointer("/payload/aps");
    if apns.get("payload").is_some() && !aps.is_some_and(Value::is_object) {
        return Err(invalid_field(
            "message.apns.payload",
            "aps dictionary required",
        ));
    }
    if header("apns-push-type") == Some("background") {
        let shows = ["alert", "sound", "badge"]
            .iter()
            .any(|k| aps.and_then(|a| a.get(*k)).is_some());
        if header("apns-priority") != Some("5") || shows {
            return Err(invalid_field(
                "message.apns",
                "a background push needs apns-priority 5 and no alert, sound or badge",
            ));
        }
    }
    Ok(())
}

fn invalid_field(field: &str, description: &str) -> Reject {
    let (status, mut body) = rpc_error(
        400,
        "INVALID_ARGUMENT",
        "Request contains an invalid argument.",
        Some("INVALID_ARGUMENT"),
    );
    if let Some(details) = body["error"]["details"].as_array_mut() {
        details.push(json!({"@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": field, "description": description}]}));
    }
    (status, body)
}

fn oauth_error(error: &str, description: &str) -> Reject {
    (
        400,
        json!({"error": error, "error_description": description}),
    )
}

impl FcmHandler {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn token(&self, body: &[u8]) -> Result<Value, Reject> {
        let form = parse_form(body);
        if form.get("grant_type").map(String::as_str) != Some(JWT_BEARER_GRANT) {
            return Err(oauth_error("unsupported_grant_type", "Invalid grant_type"));
        }
        let assertion = form
            .get("assertion")
            .ok_or_else(|| oauth_error("invalid_request", "Missing assertion"))?;
        let bad = |why: &str| oauth_error("invalid_grant", why);
        let (input, header, claims, sig) =
            split_jwt(assertion).ok_or_else(|| bad("Invalid JWT"))?;
        if header["alg"] != "RS256" {
            return Err(bad("Invalid JWT algorithm"));
        }
        if !jsonwebtoken::crypto::verify(&sig, input.as_bytes(), &self.key, Algorithm::RS256)
            .unwrap_or(false)
        {
            return Err(bad("Invalid JWT Signature."));
        }
        let token_uri = self
            .token_uri
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if claims["iss"] != self.config.client_email.as_str() || claims["aud"] != token_uri.as_str()
        {
            return Err(bad("Invalid iss or aud"));
        }
        let scope = claims["scope"].as_str().unwrap_or_default();
        if !scope
            .split(' ')
            .any(|s| s.ends_with("/auth/firebase.messaging") || s.ends_with("/auth/cloud-platform"))
        {
            return Err(bad("Invalid scope"));
        }
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap_or(0),
            claims["exp"].as_u64().unwrap_or(0),
        );
        let now = self.clock.now_secs();
        if exp <= iat || exp - iat > 3600 || exp <= now || iat > now + 60 {
            return Err(bad(
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.",
            ));
        }
        let mut state = self.lock();
        state.token_requests += 1;
        let token = format!(
            "ya29.mock-{}-{:016x}",
            state.token_requests,
            fastrand::u64(..)
        );
        let expires_in = state.expires_in;
        state
            .tokens
            .insert(token.clone(), self.clock.now_ms() + expires_in * 1000);
        Ok(json!({"access_token": token, "expires_in": expires_in, "token_type": "Bearer"}))
    }

    fn send(&self, parts: &http::request::Parts, body: &[u8]) -> Result<(Value, String), Reject> {
        let unauthenticated = || {
            rpc_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token.",
                None,
            )
        };
        let bearer = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(unauthenticated)?;
        let expiry = self.lock().tokens.get(bearer).copied();
        if expiry.is_none_or(|exp| self.clock.now_ms() >= exp) {
            return Err(unauthenticated());
        }
        if body.len() > MESSAGE_MAX + 64 {
            return Err(invalid_field("message", "Message is too big"));
        }
        let request: Value = serde_json::from_slice(body)
            .map_err(|_| invalid_field("", "Invalid JSON payload received."))?;
        let message = request
            .get("message")
            .and_then(Value::as_object)
            .ok_or_else(|| invalid_field("message", "required"))?;
        const KNOWN: [&str; 9] = [
            "token",
            "topic",
            "condition",
            "notification",
            "data",
            "android",
            "apns",
            "webpush",
            "fcm_options",
        ];
        if let Some(unknown) = message.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(invalid_field(&format!("message.{unknown}"), "Unknown name"));
        }
        let targets = ["token", "topic", "condition"]
            .iter()
            .filter(|t| message.contains_key(**t))
            .count();
        if targets != 1 {
            return Err(invalid_field(
                "message",
                "Exactly one of token, topic or condition must be set",
            ));
        }
        if let Some(data) = message.get("data") {
            let ok = data
                .as_object()
                .is_some_and(|d| d.values().all(Value::is_string));
            if !ok {
                return Err(invalid_field(
                    "message.data",
                    "Invalid value: data values must be strings",
                ));
            }
        }
        if let Some(android) = message.get("android") {
            if let Some(p) = android.get("priority")
                && !(p == "NORMAL" || p == "HIGH")
            {
                return Err(invalid_field("message.android.priority", "Invalid value"));
            }
            if let Some(ttl) = android.get("ttl")
                && !ttl.as_str().is_some_and(is_duration)
            {
                return Err(invalid_field("message.android.ttl", "Invalid duration"));
            }
            if let Some(count) = android.pointer("/notification/notification_count")
                && count.as_u64().is_none_or(|c| c > i32::MAX as u64)
            {
                return Err(invalid_field(
                    "message.android.notification.notification_count",
                    "Invalid value: an int32 is expected",
                ));
            }
        }
        if let Some(apns) = message.get("apns") {
            check_apns(apns)?;
        }
        let token = message
            .get("token")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Ok((Value::Object(message.clone()), token))
    }
}

impl Handler for FcmHandler {
    fn handle(
        &self,
        conn: ConnInfo,
        parts: http::request::Parts,
        body: Option<Bytes>,
    ) -> Option<Response<Full<Bytes>>> {
        Some(self.answer(conn, parts, body))
    }
}

impl FcmHandler {
    fn answer(
        &self,
        conn: ConnInfo,
        parts: http::request::Parts,
        body: Option<Bytes>,
    ) -> Response<Full<Bytes>> {
        let body = body.unwrap_or_default();
        let path = parts.uri.path();
        if parts.method != Method::POST {
            let (s, v) = rpc_error(405, "METHOD_NOT_ALLOWED", "Method not allowed", None);
            return json(s, &v);
        }
        if path == "/token" {
            return match self.token(&body) {
                Ok(v) => json(200, &v),
                Err((s, v)) => json(s, &v),
            };
        }
        let send_path = format!("/v1/projects/{}/messages:send", self.config.project_id);
        if path != send_path {
            let (s, v) = rpc_error(404, "NOT_FOUND", "Requested entity was not found.", None);
            return json(s, &v);
        }
        let access_token = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .trim_start_matches("Bearer ")
            .to_owned();
        let (status, resp, message) = match self.send(&parts, &body) {
            Err((s, v)) => (s, json(s, &v), Value::Null),
            Ok((message, token)) => {
                let mut state = self.lock();
                let reply = state
                    .scripts
                    .get_mut(&token)
                    .and_then(VecDeque::pop_front)
                    .unwrap_or(FcmReply::Ok);
                let n = state.sends;
                drop(state);
                let (s, resp) = reply_response(reply, &self.config.project_id, n);
                (s, resp, message)
            }
        };
        let mut state = self.lock();
        state.sends += 1;
        self.answered.send_replace(state.sends);
        if self.config.record {
            state.records.push(FcmRecord {
                connection: conn.id,
                message,
                access_token,
                status,
            });
        }
        resp
    }
}

fn reply_response(reply: FcmReply, project: &str, n: u64) -> (u16, Response<Full<Bytes>>) {
    let with_retry = |(s, v): Reject, after: Option<u64>| {
        let mut resp = json(s, &v);
        if let Some(secs) = after {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        (s, resp)
    };
    match reply {
        FcmReply::Ok => (
            200,
            json(
                200,
                &json!({"name": format!("projects/{project}/messages/0:{n}")}),
            ),
        ),
        FcmReply::Unregistered => with_retry(
            rpc_error(
                404,
                "NOT_FOUND",
                "Requested entity was not found.",
                Some("UNREGISTERED"),
            ),
            None,
        ),
        FcmReply::InvalidToken => with_retry(
            rpc_error(
                400,
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                Some("INVALID_ARGUMENT"),
            ),
            None,
        ),
        FcmReply::SenderIdMismatch => with_retry(
            rpc_error(
                403,
                "PERMISSION_DENIED",
                "SenderId mismatch",
                Some("SENDER_ID_MISMATCH"),
            ),
            None,
        ),
        FcmReply::QuotaExceeded(after) => with_retry(
            rpc_error(
                429,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for quota metric 'Send requests'",
                Some("QUOTA_EXCEEDED"),
            ),
            after,
        ),
        FcmReply::Unavailable(after) => with_retry(
            rpc_error(
                503,
                "UNAVAILABLE",
                "The service is currently unavailable.",
                Some("UNAVAILABLE"),
            ),
            after,
        ),
        FcmReply::Internal => with_retry(
            rpc_error(
                500,
                "INTERNAL",
                "Internal error encountered.",
                Some("INTERNAL"),
            ),
            None,
        ),
        FcmReply::Unauthenticated => with_retry(
            rpc_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials.",
                None,
            ),
            None,
        ),
    }
}

/// `^\d+(\.\d{1,9})?s$`, protobuf's JSON Duration.
fn is_duration(s: &str) -> bool {
    let Some(num) = s.strip_suffix('s') else {
        return false;
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, "0"));
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && (1..=9).contains(&frac.len())
        && frac.bytes().all(|b| b.is_ascii_digit())
}

/// `application/x-www-form-urlencoded` → map (enough for the token grant).
fn parse_form(body: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                    _ => out.extend_from_slice(&bytes[i..i + 3]),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
