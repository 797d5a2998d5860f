//! The HTTP webhook backend: every upstream request and session notice is POSTed as JSON to
//! one URL, signed with HMAC-SHA256; the answer to an upstream request becomes its receipt.
//!
//! The webhook answers clients (delivers messages, joins rooms, kicks) through the gateway's
//! admin API, not through this connection. Schema and signature: `docs/backends.md`.
//!
//! # Back-pressure
//! At most `queue_capacity` upstream requests are waiting or in flight, `concurrency` of them
//! in flight. A request that finds the queue full is answered `BACKEND_UNAVAILABLE` at once:
//! memory never grows with a slow webhook.
//!
//! Notices have a queue of their own (`notice_capacity`, `notice_concurrency`), see
//! `notices`: `undelivered` and `push_token_invalid` wait for a slot when it is full and are
//! retried until the webhook takes them; `connect`/`disconnect` are dropped (counted) instead.

mod event;
mod http;
mod notices;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use imgate_codec::{CloseCode, ReceiptStatus};
use sha2::Sha256;
use tokio::sync::Semaphore;

use self::event::{Answer, AnswerStatus, Event};
use self::http::{Client, Endpoint, HttpError};
pub use self::notices::WebhookMetrics;
use self::notices::{Notices, Slot};
use super::{Backend, Origin, UpstreamOutcome, UpstreamRequest, async_trait};
use crate::GatewayHandle;
use crate::handle::wall_ms;
use crate::ids::{AppId, DeviceId, MessageId, UserId};
use crate::session::{Undelivered, UndeliveredReason};

/// Header carrying the Unix time (seconds) the request was signed at.
pub const TIMESTAMP_HEADER: &str = "x-imgate-timestamp";
/// Header carrying `v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>`.
pub const SIGNATURE_HEADER: &str = "x-imgate-signature";
/// Header carrying the event id (the same on every retry of one event).
pub const EVENT_ID_HEADER: &str = "x-imgate-event-id";

/// Settings of a [`WebhookBackend`]. Build with [`WebhookConfig::new`]; every other field
/// has a safe default.
#[derive(Clone)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// HMAC-SHA256 key shared with the webhook (at least 16 bytes).
    pub secret: Vec<u8>,
    /// Time-out of one attempt: connect, send, and read the whole answer. Default 5 s.
    pub timeout: Duration,
    /// Retries after the first attempt on 5xx, 408, 429, time-outs and connection errors
    /// (never on other 4xx). Default 3.
    pub max_retries: u32,
    /// First back-off; doubled per retry, capped at `backoff_max`, with jitter (half fixed,
    /// half random). Default 100 ms.
    pub backoff_base: Duration,
    /// Largest back-off. Default 2 s.
    pub backoff_max: Duration,
    /// Requests waiting or in flight at most; beyond it upstream requests are answered
    /// `BACKEND_UNAVAILABLE` at once. Default 1024.
    pub queue_capacity: usize,
    /// Requests in flight at once (and so connections at most). Default 64.
    pub concurrency: usize,
    /// Notices queued or being sent at most; beyond it `undelivered` and
    /// `push_token_invalid` notices wait for room and `connect`/`disconnect` ones are
    /// dropped (counted). Default 65,536.
    pub notice_capacity: usize,
    /// Notices being sent at once (apart from `concurrency`). Default 16.
    pub notice_concurrency: usize,
    /// Idle keep-alive connections kept. Default 16.
    pub max_idle_connections: usize,
    /// POST `connect` and `disconnect` events. Default true.
    pub session_events: bool,
    /// POST `undelivered` events. Default true.
    pub undelivered_events: bool,
    /// Trust anchors for an `https` URL; None uses the bundled webpki roots.
    pub tls_roots: Option<rustls::RootCertStore>,
}

impl WebhookConfig {
    /// A configuration for `url` signed with `secret`, with the defaults documented per field.
    pub fn new(url: impl Into<String>, secret: impl Into<Vec<u8>>) -> Self {
        Self {
            url: url.into(),
            secret: secret.into(),
            timeout: Duration::from_secs(5),
            max_retries: 3,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            queue_capacity: 1024,
            concurrency: 64,
            notice_capacity: 65_536,
            notice_concurrency: 16,
            max_idle_connections: 16,
            session_events: true,
            undelivered_events: true,
            tls_roots: None,
        }
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("backoff_base", &self.backoff_base)
            .field("backoff_max", &self.backoff_max)
            .field("queue_capacity", &self.queue_capacity)
            .field("concurrency", &self.concurrency)
            .field("notice_capacity", &self.notice_capacity)
            .field("notice_concurrency", &self.notice_concurrency)
            .field("max_idle_connections", &self.max_idle_connections)
            .field("session_events", &self.session_events)
            .field("undelivered_events", &self.undelivered_events)
            .finish_non_exhaustive()
    }
}

/// A [`WebhookConfig`] that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookConfigError {
    /// The URL is not an `http`/`https` URL with a host.
    #[error("webhook url: {0}")]
    Url(String),
    /// The secret is shorter than 16 bytes.
    #[error("webhook secret must be at least 16 bytes (got {0})")]
    ShortSecret(usize),
    /// A count that must be positive is zero.
    #[error("webhook {0} must be at least 1")]
    Zero(&'static str),
}

/// Minimum secret length.
const MIN_SECRET_LEN: usize = 16;

/// The webhook backend. Cheap to share; see the [module docs](self).
#[derive(Clone)]
pub struct WebhookBackend {
    inner: Arc<Inner>,
}

struct Inner {
    config: WebhookConfig,
    client: Client,
    /// Permits for requests waiting or in flight.
    queue: Arc<Semaphore>,
    /// Permits for requests in flight.
    in_flight: Semaphore,
    notices: Notices,
    next_event_id: AtomicU64,
}

impl fmt::Debug for WebhookBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookBackend")
            .field("config", &self.inner.config)
            .field("queued", &self.queued())
            .finish_non_exhaustive()
    }
}

/// How one POST ended after its retries.
#[derive(Debug)]
enum PostError {
    /// The webhook answered 4xx (other than 408/429).
    Rejected(StatusCodeNumber, Bytes),
    /// 5xx, time-outs or connection errors until the retries ran out.
    Unavailable,
}

/// How one attempt of a POST ended.
enum Attempt {
    Accepted(StatusCodeNumber, Bytes),
    Rejected(StatusCodeNumber, Bytes),
    /// Worth another try; says why.
    Retry(String),
}

type StatusCodeNumber = u16;

impl WebhookBackend {
    /// A backend for `config`. Opens no connection until the first event. Its notice
    /// metrics are not registered anywhere; see [`WebhookBackend::with_metrics`].
    pub fn new(config: WebhookConfig) -> Result<Self, WebhookConfigError> {
        Self::with_metrics(config, WebhookMetrics::default())
    }

    /// [`WebhookBackend::new`], counting notices into `metrics`.
    pub fn with_metrics(
        config: WebhookConfig,
        metrics: WebhookMetrics,
    ) -> Result<Self, WebhookConfigError> {
        if config.secret.len() < MIN_SECRET_LEN {
            return Err(WebhookConfigError::ShortSecret(config.secret.len()));
        }
        if config.queue_capacity == 0 {
            return Err(WebhookConfigError::Zero("queue_capacity"));
        }
        if config.concurrency == 0 {
            return Err(WebhookConfigError::Zero("concurrency"));
        }
        if config.notice_capacity == 0 {
            return Err(WebhookConfigError::Zero("notice_capacity"));
        }
        if config.notice_concurrency == 0 {
            return Err(WebhookConfigError::Zero("notice_concurrency"));
        }
        let endpoint = Endpoint::parse(&config.url, config.tls_roots.clone())
            .map_err(WebhookConfigError::Url)?;
        Ok(Self {
            inner: Arc::new(Inner {
                client: Client::new(endpoint, config.max_idle_connections),
                queue: Arc::new(Semaphore::new(config.queue_capacity)),
                in_flight: Semaphore::new(config.concurrency),
                notices: Notices::new(config.notice_capacity, config.notice_concurrency, metrics),
                next_event_id: AtomicU64::new(wall_ms().saturating_mul(1000)),
                config,
            }),
        })
    }

    /// Requests waiting or in flight right now.
    pub fn queued(&self) -> usize {
        self.inner.config.queue_capacity - self.inner.queue.available_permits()
    }

    /// The notice metrics.
    pub fn metrics(&self) -> &WebhookMetrics {
        &self.inner.notices.metrics
    }

    /// Queues a best-effort notice (`connect`, `disconnect`); dropped and counted when the
    /// notice queue is full.
    fn notify(&self, event: &Event<'_>) {
        if let Some(slot) = self.inner.notices.try_slot(event.kind) {
            // Best effort: nobody waits for it to be taken.
            drop(self.send_notice(slot, event));
        }
    }

    /// Queues a notice that must not be lost, waiting while the notice queue is full, and
    /// resolves once the webhook took it (or refused it with a 4xx): the offline hand-off
    /// forgets a durable session's messages only then, so a crash before it loses nothing.
    /// The sending itself runs on a task of its own, so a caller that stops waiting (a
    /// cancelled hand-off) does not take the notice with it.
    async fn notify_reliably(&self, event: Event<'_>) {
        let slot = self.inner.notices.wait_slot(event.kind).await;
        // A failed join is a panic in the sender, already reported by tokio.
        let _ = self.send_notice(slot, &event).await;
    }

    fn send_notice(&self, slot: Slot, event: &Event<'_>) -> tokio::task::JoinHandle<()> {
        let (kind, id, body) = (event.kind, event.id.clone(), encode(event));
        let inner = self.inner.clone();
        tokio::spawn(async move { inner.deliver_notice(slot, kind, &id, body).await })
    }

    fn event_id(&self) -> u64 {
        self.inner.next_event_id.fetch_add(1, Ordering::Relaxed)
    }
}

fn encode(event: &Event<'_>) -> Bytes {
    Bytes::from(serde_json::to_vec(event).expect("invariant: events serialize"))
}

impl Inner {
    /// One signed POST of an event.
    async fn attempt(&self, event_id: &str, body: &Bytes) -> Attempt {
        let config = &self.config;
        let timestamp = (wall_ms() / 1000).to_string();
        let signature = sign(&config.secret, &timestamp, body);
        let headers = [
            (TIMESTAMP_HEADER, timestamp),
            (SIGNATURE_HEADER, signature),
            (EVENT_ID_HEADER, event_id.to_owned()),
        ];
        match self
            .client
            .post(&headers, body.clone(), config.timeout)
            .await
        {
            Ok((status, answer)) if status.is_success() => {
                Attempt::Accepted(status.as_u16(), answer)
            }
            Ok((status, answer))
                if status.is_client_error()
                    && status != hyper::StatusCode::REQUEST_TIMEOUT
                    && status != hyper::StatusCode::TOO_MANY_REQUESTS =>
            {
                Attempt::Rejected(status.as_u16(), answer)
            }
            Ok((status, _)) => Attempt::Retry(format!("HTTP {status}")),
            Err(
                error @ (HttpError::Connect(_)
                | HttpError::Request(_)
                | HttpError::Timeout(_)
                | HttpError::Body),
            ) => Attempt::Retry(error.to_string()),
        }
    }

    /// Sends a queued notice until the webhook takes it (2xx) or refuses it (4xx), backing
    /// off between attempts without holding a sender.
    async fn deliver_notice(&self, _slot: Slot, kind: &'static str, event_id: &str, body: Bytes) {
        let metrics = &self.notices.metrics;
        let mut attempt: u32 = 0;
        loop {
            let result = {
                let _sender = self
                    .notices
                    .senders
                    .acquire()
                    .await
                    .expect("invariant: the semaphore is never closed");
                self.attempt(event_id, &body).await
            };
            match result {
                Attempt::Accepted(..) => {
                    metrics.count(kind, "delivered");
                    return;
                }
                Attempt::Rejected(status, _) => {
                    metrics.count(kind, "rejected");
                    tracing::warn!(
                        event.id = event_id,
                        kind,
                        status,
                        "webhook refused a notice"
                    );
                    return;
                }
                Attempt::Retry(why) => {
                    metrics.count(kind, "retried");
                    let delay = backoff(self.config.backoff_base, self.config.backoff_max, attempt);
                    tracing::debug!(event.id = event_id, kind, attempt, ?delay, last = %why, "webhook notice retry");
                    tokio::time::sleep(delay).await;
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    /// POSTs one upstream request, retrying as configured.
    async fn post(&self, event_id: &str, body: Bytes) -> Result<(u16, Bytes), PostError> {
        let _slot = self
            .in_flight
            .acquire()
            .await
            .expect("invariant: the semaphore is never closed");
        let config = &self.config;
        let mut attempt = 0;
        loop {
            let retryable = match self.attempt(event_id, &body).await {
                Attempt::Accepted(status, answer) => return Ok((status, answer)),
                Attempt::Rejected(status, answer) => {
                    return Err(PostError::Rejected(status, answer));
                }
                Attempt::Retry(why) => why,
            };
            if attempt >= config.max_retries {
                tracing::warn!(event.id = event_id, attempts = attempt + 1, last = %retryable, "webhook unavailable");
                return Err(PostError::Unavailable);
            }
            let delay = backoff(config.backoff_base, config.backoff_max, attempt);
            tracing::debug!(event.id = event_id, attempt, ?delay, last = %retryable, "webhook retry");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

/// `v1=` and the hex HMAC-SHA256 of `timestamp + "." + body` under `secret`.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret).expect("invariant: HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(3 + digest.len() * 2);
    out.push_str("v1=");
    for byte in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
    }
    out
}

/// Exponential back-off with equal jitter: half of `base * 2^attempt` (capped) plus a random
/// part up to the other half.
fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let full = base.saturating_mul(1 << attempt.min(16)).min(max);
    let half = full / 2;
    let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    half + Duration::from_millis(fastrand::u64(0..=jitter_ms))
}

/// Turns the webhook's answer to an upstream request into the receipt.
fn outcome(result: Result<(u16, Bytes), PostError>) -> UpstreamOutcome {
    match result {
        Ok((_, body)) => {
            let answer = if body.iter().all(u8::is_ascii_whitespace) {
                Answer::default()
            } else {
                match serde_json::from_slice::<Answer>(&body) {
                    Ok(answer) => answer,
                    Err(error) => {
                        // The webhook took the message (2xx); only its answer is malformed.
                        tracing::warn!(%error, "webhook 2xx answer is not the documented JSON; taken as accepted");
                        Answer::default()
                    }
                }
            };
            let status = answer.status.unwrap_or(AnswerStatus::Accepted);
            if status == AnswerStatus::Rejected {
                return UpstreamOutcome::rejected(
                    CloseCode::BACKEND_REJECTED,
                    answer
                        .reason
                        .unwrap_or_else(|| "rejected by the backend".into()),
                );
            }
            let message_id = answer.message_id.and_then(|id| id.as_u64()).map(MessageId);
            UpstreamOutcome::ok(ReceiptStatus::from(status), message_id)
        }
        Err(PostError::Rejected(code, body)) => {
            let reason = serde_json::from_slice::<Answer>(&body)
                .ok()
                .and_then(|a| a.reason)
                .unwrap_or_else(|| format!("rejected by the backend (HTTP {code})"));
            UpstreamOutcome::rejected(CloseCode::BACKEND_REJECTED, reason)
        }
        Err(PostError::Unavailable) => {
            UpstreamOutcome::rejected(CloseCode::BACKEND_UNAVAILABLE, "backend unavailable")
        }
    }
}

#[async_trait]
impl Backend for WebhookBackend {
    async fn on_connect(&self, _gateway: &GatewayHandle, origin: &Origin) {
        if self.inner.config.session_events {
            self.notify(&Event::session(
                self.event_id(),
                "connect",
                origin,
                wall_ms(),
            ));
        }
    }

    async fn on_upstream(
        &self,
        _gateway: &GatewayHandle,
        origin: &Origin,
        request: UpstreamRequest,
    ) -> UpstreamOutcome {
        let event = Event::upstream(self.event_id(), origin, &request, wall_ms());
        let Ok(_permit) = self.inner.queue.try_acquire() else {
            return UpstreamOutcome::rejected(CloseCode::BACKEND_UNAVAILABLE, "backend busy");
        };
        let body = encode(&event);
        outcome(self.inner.post(&event.id, body).await)
    }

    async fn on_disconnect(&self, _gateway: &GatewayHandle, origin: &Origin) {
        if self.inner.config.session_events {
            self.notify(&Event::session(
                self.event_id(),
                "disconnect",
                origin,
                wall_ms(),
            ));
        }
    }

    async fn on_undelivered(
        &self,
        _gateway: &GatewayHandle,
        app: &AppId,
        user: &UserId,
        messages: &[Undelivered],
        reason: UndeliveredReason,
    ) {
        if self.inner.config.undelivered_events {
            let event = Event::undelivered(self.event_id(), app, user, messages, reason, wall_ms());
            self.notify_reliably(event).await;
        }
    }

    async fn on_push_token_invalid(
        &self,
        app: &AppId,
        user: &UserId,
        device: &DeviceId,
        token: &str,
        reason: &str,
    ) {
        let event =
            Event::push_token_invalid(self.event_id(), app, user, device, token, reason, wall_ms());
        self.notify_reliably(event).await;
    }

    async fn flush_notices(&self) {
        self.inner.notices.idle().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // The MAC input is "1700000000.{}".
        let a = sign(b"0123456789abcdef", "1700000000", b"{}");
        let b = sign(b"0123456789abcdef", "1700000000", b"{} ");
        assert!(a.starts_with("v1=") && a.len() == 3 + 64);
        assert_ne!(a, b);
        let mut mac = Hmac::<Sha256>::new_from_slice(b"0123456789abcdef").expect("key");
        mac.update(b"1700000000.{}");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(a, format!("v1={hex}"));
    }

    #[test]
    fn backoff_doubles_caps_and_jitters_within_half() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for attempt in 0..10 {
            let full = (base * (1 << attempt)).min(max);
            let d = backoff(base, max, attempt);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} vs {full:?}"
            );
        }
    }

    #[test]
    fn answers_map_to_receipts() {
        let ok = |body: &'static str| outcome(Ok((200, Bytes::from_static(body.as_bytes()))));
        assert_eq!(ok("").status, ReceiptStatus::Accepted);
        assert_eq!(
            ok(r#"{"status":"delivered","message_id":"7"}"#).message_id,
            Some(MessageId(7))
        );
        assert_eq!(
            ok(r#"{"status":"stored_offline"}"#).status,
            ReceiptStatus::StoredOffline
        );
        let rejected = ok(r#"{"status":"rejected","reason":"spam"}"#);
        assert_eq!(
            (
                rejected.status,
                rejected.reason_code,
                rejected.reason.as_str()
            ),
            (
                ReceiptStatus::Rejected,
                Some(CloseCode::BACKEND_REJECTED),
                "spam"
            )
        );
        let r = outcome(Err(PostError::Rejected(403, Bytes::new())));
        assert_eq!(r.reason_code, Some(CloseCode::BACKEND_REJECTED));
        let r = outcome(Err(PostError::Unavailable));
        assert_eq!(r.reason_code, Some(CloseCode::BACKEND_UNAVAILABLE));
    }
}
