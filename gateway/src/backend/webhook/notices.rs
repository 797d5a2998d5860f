//! Notices (`connect`, `disconnect`, `undelivered`, `push_token_invalid`): queued apart from
//! upstream requests, with their own senders, and retried with back-off until the webhook
//! takes them.
//!
//! `undelivered` and `push_token_invalid` are never dropped: a full queue makes the caller
//! wait for a slot (back-pressure on the offline hand-off's task, which a drain waits for).
//! `connect` and `disconnect` are best-effort: a full queue drops them, counted.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NoticeLabels {
    kind: &'static str,
    outcome: &'static str,
}

/// The webhook's notice metrics: `imgate_webhook_notices_total{kind,outcome}` (`outcome`:
/// `queued`, `delivered`, `retried`, `rejected` (a 4xx answer), `dropped` (best-effort
/// kinds, queue full)) and `imgate_webhook_notices_pending`. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct WebhookMetrics {
    notices: Family<NoticeLabels, Counter>,
    pending: Gauge,
}

impl WebhookMetrics {
    /// Registers the metrics into `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        metrics.register(registry);
        metrics
    }

    /// Registers metrics made with `default()` (they count from their creation on).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("imgate_webhook");
        r.register(
            "notices",
            "Webhook notices by kind and outcome: queued, delivered, retried, rejected, dropped",
            self.notices.clone(),
        );
        r.register(
            "notices_pending",
            "Webhook notices queued or being sent",
            self.pending.clone(),
        );
    }

    pub(super) fn count(&self, kind: &'static str, outcome: &'static str) {
        self.notices
            .get_or_create(&NoticeLabels { kind, outcome })
            .inc();
    }

    /// The count of `outcome` for notices of `kind` so far (tests, diagnostics).
    pub fn notice_count(&self, kind: &'static str, outcome: &'static str) -> u64 {
        self.notices
            .get_or_create(&NoticeLabels { kind, outcome })
            .get()
    }

    /// Notices queued or being sent right now.
    pub fn pending(&self) -> i64 {
        self.pending.get()
    }
}

/// The notice queue's slots and senders.
#[derive(Debug)]
pub(super) struct Notices {
    slots: Arc<Semaphore>,
    capacity: u32,
    /// Notices being sent at once (never taken from upstream requests' slots).
    pub(super) senders: Semaphore,
    pub(super) metrics: WebhookMetrics,
}

/// A queued notice's slot: frees it (and the gauge) when the notice is done.
#[derive(Debug)]
pub(super) struct Slot {
    _permit: OwnedSemaphorePermit,
    pending: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pending.dec();
    }
}

impl Notices {
    pub(super) fn new(capacity: usize, senders: usize, metrics: WebhookMetrics) -> Self {
        let capacity = u32::try_from(capacity.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        Self {
            slots: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
            senders: Semaphore::new(senders.max(1)),
            metrics,
        }
    }

    fn slot(&self, permit: OwnedSemaphorePermit, kind: &'static str) -> Slot {
        self.metrics.count(kind, "queued");
        self.metrics.pending.inc();
        Slot {
            _permit: permit,
            pending: self.metrics.pending.clone(),
        }
    }

    /// A slot, waiting while the queue is full.
    pub(super) async fn wait_slot(&self, kind: &'static str) -> Slot {
        let permit = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .expect("invariant: the notice semaphore is never closed");
        self.slot(permit, kind)
    }

    /// A slot if one is free; otherwise the notice is dropped and counted.
    pub(super) fn try_slot(&self, kind: &'static str) -> Option<Slot> {
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => Some(self.slot(permit, kind)),
            Err(_) => {
                self.metrics.count(kind, "dropped");
                tracing::warn!(
                    kind,
                    "webhook notice queue full; best-effort notice dropped"
                );
                None
            }
        }
    }

    /// Waits until no notice is queued or being sent.
    pub(super) async fn idle(&self) {
        if let Ok(all) = self.slots.acquire_many(self.capacity).await {
            drop(all);
        }
    }
}
