//! The `Backend` trait: where upstream traffic goes and who hears about lifecycle events.
//!
//! Lifecycle of one session, as a backend sees it:
//! `on_connect` → (`on_upstream`)* → `on_disconnect`; `on_undelivered` whenever messages for
//! one of the app's users could not reach a device over its connection.

#[cfg(feature = "grpc")]
pub mod grpc;
mod relay;
mod request;
pub mod webhook;

use std::future::Future;
use std::pin::Pin;

use imgate_codec::{CloseCode, ReceiptStatus};

use crate::GatewayHandle;
use crate::ids::{AppId, MessageId, UserId};
/// Where a message goes ([`UpstreamRequest::Message`]).
pub use crate::session::UpstreamTarget;
use crate::session::{Identity, Undelivered, UndeliveredReason};
/// The attribute that makes `Backend`'s `async fn`s dyn-compatible: `#[async_trait]` on
/// every `impl Backend`.
pub use async_trait::async_trait;
#[cfg(feature = "grpc")]
pub use grpc::{GrpcBackend, GrpcBackendConfig};
pub use relay::{
    Enqueued, NewMessage, OfflineLimits, OfflineQueue, OfflineQueueMetrics, QueueError,
    QueuedMessage, RelayBackend, WallClock,
};
pub use request::UpstreamRequest;
pub use webhook::{WebhookBackend, WebhookConfig, WebhookMetrics};

/// A boxed future, for hooks that live behind an `Arc<dyn …>` (`PushPolicy::flush`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The backend's answer to an upstream request, sent to the client as a `Receipt`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamOutcome {
    /// Receipt status.
    pub status: ReceiptStatus,
    /// Server-assigned id of the accepted message, if any.
    pub message_id: Option<MessageId>,
    /// Error code when rejected.
    pub reason_code: Option<CloseCode>,
    /// Reason when rejected (shown to the client: no internal details).
    pub reason: String,
}

impl UpstreamOutcome {
    /// Accepted with the given status.
    pub fn ok(status: ReceiptStatus, message_id: Option<MessageId>) -> Self {
        Self {
            status,
            message_id,
            reason_code: None,
            reason: String::new(),
        }
    }

    /// Rejected with `code` and a reason for the client.
    pub fn rejected(code: CloseCode, reason: impl Into<String>) -> Self {
        Self {
            status: ReceiptStatus::Rejected,
            message_id: None,
            reason_code: Some(code),
            reason: reason.into(),
        }
    }
}

/// Where an upstream request came from.
#[derive(Clone, Debug)]
pub struct Origin {
    /// The sending session.
    pub session: crate::ids::SessionId,
    /// Who sent it.
    pub identity: Identity,
}

/// An IM backend. Implementations must be cheap to call concurrently: one call per upstream
/// request, from the session's task. A session's requests arrive in order and one at a time
/// (the next only once the previous call has returned, even across a resume), so a slow
/// answer delays that session's later requests, not other sessions'.
///
/// The methods are plain `async fn`s: put [`#[async_trait]`](macro@async_trait) (re-exported
/// here) on the `impl`, as on the trait, so the gateway can hold any backend as
/// `Arc<dyn Backend>`. Only `on_upstream` has no default.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// A session was established (not called on resume).
    async fn on_connect(&self, _gateway: &GatewayHandle, _origin: &Origin) {}

    /// An upstream request; the outcome becomes the client's `Receipt`.
    async fn on_upstream(
        &self,
        gateway: &GatewayHandle,
        origin: &Origin,
        request: UpstreamRequest,
    ) -> UpstreamOutcome;

    /// A session ended (expired, taken over, kicked); not called for a mere disconnect that
    /// may still be resumed.
    async fn on_disconnect(&self, _gateway: &GatewayHandle, _origin: &Origin) {}

    /// Messages for `user` that did not reach a device over its connection: the offline path
    /// (history sync, push) owns them now.
    async fn on_undelivered(
        &self,
        _gateway: &GatewayHandle,
        _app: &AppId,
        _user: &UserId,
        _messages: &[Undelivered],
        _reason: UndeliveredReason,
    ) {
    }

    /// Resolves once every notice queued so far has been handed to the backend (a drain
    /// awaits it). Backends without a notice queue resolve at once.
    async fn flush_notices(&self) {}

    /// A device's push token is dead (APNs 410 `Unregistered`, FCM `UNREGISTERED`) and was
    /// deleted from the push registry; `reason` is the provider's.
    async fn on_push_token_invalid(
        &self,
        _app: &AppId,
        _user: &UserId,
        _device: &crate::ids::DeviceId,
        _token: &str,
        _reason: &str,
    ) {
    }
}
