//! imgate push: APNs and FCM HTTP v1 providers, a durable dispatcher, and loopback mock servers.
//!
//! The gateway hands a provider-neutral [`PushRequest`] to a [`Dispatcher`]; the dispatcher
//! stores it in a durable [`PushQueue`], sends it through the app's [`ApnsClient`] or
//! [`FcmClient`] over one multiplexed HTTP/2 connection per credential, retries what is
//! retryable ([`RetryPolicy`]), and reports every end state as a [`PushOutcome`] (delivered,
//! token pruned, failed …) on a channel the gateway reads.
//!
//! # Layout
//!
//! - `apns/`: APNs provider API (ES256 JWT or client certificate, headers, payload limits).
//! - `fcm/`: FCM HTTP v1 (service-account OAuth2, typed message, `messages:send`).
//! - `classify`: provider response → [`Verdict`]; the only place that reads error bodies.
//! - `retry`: exponential back-off with jitter, `Retry-After`, capped by the message expiry.
//! - `queue`: the [`PushQueue`] trait, [`MemoryQueue`] and the redb-backed [`RedbQueue`].
//! - `dispatcher`: bounded queue, per-provider and per-app concurrency, outcomes.
//! - `metrics`: Prometheus metrics registered into a caller-owned registry.
//! - `mock` (feature `mock`, off by default): loopback APNs and FCM servers for tests and benches.
//!
//! # Features
//!
//! - `mock` (off by default): adds the `mock` module and its key/certificate generators
//!   (`rcgen`, `rsa`), for tests and benches; it changes no behaviour of the providers. This
//!   crate's own tests and examples turn it on through a dev-dependency on itself.
//!
//! # Clock
//!
//! Every timer is a tokio timer, and wall-clock values (JWT `iat`, `Retry-After` dates, durable
//! due times) come from [`UnixClock`], which advances with tokio's clock, so
//! `#[tokio::test(start_paused = true)]` controls all of them.
#![forbid(unsafe_code)]
#![deny(missing_debug_implementations)]

pub mod apns;
pub mod classify;
mod clock;
mod conn;
pub mod dispatcher;
pub mod fcm;
pub mod metrics;
#[cfg(feature = "mock")]
pub mod mock;
pub mod queue;
mod request;

mod error;

pub mod retry;
mod tls;

pub use apns::{ApnsClient, ApnsConfig};
pub use classify::{Classification, Verdict};
pub use clock::UnixClock;
pub use conn::ConnOptions;

pub use error::{AuthError, PayloadError, PushError, QueueError};

pub use dispatcher::{
    Dispatcher, DispatcherConfig, FailureKind, PushOutcome, QueueSnapshot, Routes,
};
pub use fcm::{FcmClient, FcmConfig};
pub use metrics::PushMetrics;
pub use queue::{MemoryQueue, PushQueue, QueuedPush, RedbQueue};
pub use request::{Device, Platform, PushKind, PushRequest};
pub use retry::RetryPolicy;
pub use tls::TrustRoots;
