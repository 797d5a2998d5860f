//! Push metrics, registered into the caller's `Registry` (never a global).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Provider and app.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    /// `apns` or `fcm`.
    pub provider: String,
    /// App id.
    pub app: String,
}

/// Provider, app, HTTP status and provider reason.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `apns` or `fcm`.
    pub provider: String,
    /// App id.
    pub app: String,
    /// HTTP status, or `transport` when no response arrived.
    pub status: String,
    /// Provider reason (`BadDeviceToken`, `UNREGISTERED`…), `Success`, or the transport error kind.
    pub reason: String,
}

type HistogramFamily = Family<ProviderLabels, Histogram, fn() -> Histogram>;

/// Every push metric. Cheap to clone: clones share the same series.
#[derive(Debug, Clone)]
pub struct PushMetrics {
    /// Provider requests by outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// Provider request latency, seconds.
    pub latency: HistogramFamily,
    /// Requests currently in flight.
    pub in_flight: Family<ProviderLabels, Gauge>,
    /// Pushes rescheduled for another attempt.
    pub retries: Family<ProviderLabels, Counter>,
    /// Tokens reported dead (pruned).
    pub pruned: Family<ProviderLabels, Counter>,
    /// `BadDeviceToken`-like answers: alert on a rise, tokens are kept.
    pub bad_device_token: Family<ProviderLabels, Counter>,
    /// Provider tokens minted or fetched (APNs JWT, FCM OAuth2).
    pub token_refreshes: Family<ProviderLabels, Counter>,
    /// Pushes waiting in the queue (including in flight).
    pub queue_depth: Gauge,
    /// Pushes refused because the queue was full.
    pub shed: Counter,
    /// Pushes sent again after a restart because the answer to their last send was lost
    /// (the process stopped with the request in flight): the only possible duplicates.
    pub resent_after_restart: Counter,
}

fn latency_histogram() -> Histogram {
    // 1 ms … ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl PushMetrics {
    /// Creates the metrics and registers them under `push_` in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::unregistered();
        let r = registry.sub_registry_with_prefix("push");
        r.register(
            "requests",
            "Provider requests by status and reason",
            metrics.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Provider request latency",
            metrics.latency.clone(),
        );
        r.register(
            "in_flight",
            "Provider requests in flight",
            metrics.in_flight.clone(),
        );
        r.register(
            "retries",
            "Pushes rescheduled for another attempt",
            metrics.retries.clone(),
        );
        r.register(
            "pruned_tokens",
            "Device tokens reported dead",
            metrics.pruned.clone(),
        );
        r.register(
            "bad_device_token",
            "Answers meaning a wrong token for this app/environment (kept, alert)",
            metrics.bad_device_token.clone(),
        );
        r.register(
            "token_refreshes",
            "Provider auth tokens minted or fetched",
            metrics.token_refreshes.clone(),
        );
        r.register(
            "queue_depth",
            "Pushes in the durable queue",
            metrics.queue_depth.clone(),
        );
        r.register(
            "shed",
            "Pushes refused because the queue was full",
            metrics.shed.clone(),
        );
        r.register(
            "resent_after_restart",
            "Pushes sent again after a restart because the answer to their last send was lost",
            metrics.resent_after_restart.clone(),
        );
        metrics
    }

    /// Metrics not registered anywhere (tests, or a caller without Prometheus).
    pub fn unregistered() -> Self {
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            in_flight: Family::default(),
            retries: Family::default(),
            pruned: Family::default(),
            bad_device_token: Family::default(),
            token_refreshes: Family::default(),
            queue_depth: Gauge::default(),
            shed: Counter::default(),
            resent_after_restart: Counter::default(),
        }
    }

    /// The token-refresh counter for a client: pass it to `with_refresh_counter`.
    pub fn token_refresh_counter(&self, provider: crate::Platform, app: &str) -> Counter {
        self.token_refreshes
            .get_or_create(&labels(provider, app))
            .clone()
    }
}

pub(crate) fn labels(provider: crate::Platform, app: &str) -> ProviderLabels {
    ProviderLabels {
        provider: provider.as_str().to_owned(),
        app: app.to_owned(),
    }
}
