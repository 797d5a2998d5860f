//! Gateway metrics (Prometheus, via `prometheus-client`). The `Registry` is owned by whoever
//! starts the gateway and injected here, never a global.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

mod transports;

pub(crate) use transports::TransportCollector;

/// Label: transport.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    /// tcp, tls, ws, wss, quic.
    pub transport: &'static str,
}

/// Label: an outcome or reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// The outcome (e.g. `ok`, `UNAUTHENTICATED`, `resumed`, `offline`).
    pub outcome: &'static str,
}

/// Labels: a request to another cluster node.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterRequestLabel {
    /// What was asked (`deliver`, `takeover`, `release`, `sessions`).
    pub verb: &'static str,
    /// How it ended (`ok`, `timeout`, `no_node`, `error`).
    pub outcome: &'static str,
}

/// Label: direction of traffic.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `in` (from clients) or `out` (to clients).
    pub direction: &'static str,
}

/// Every gateway metric.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Open client connections by transport.
    pub connections: Family<TransportLabel, Gauge>,
    /// Protocol handshakes by outcome (`ok` or the refusal's error-code name).
    pub handshakes: Family<OutcomeLabel, Counter>,
    /// Resume attempts by outcome (`resumed` or the refusal reason).
    pub resumes: Family<OutcomeLabel, Counter>,
    /// Frames by direction.
    pub frames: Family<DirectionLabel, Counter>,
    /// Per-device delivery outcomes (`sent`, `buffered`, `offline`).
    pub deliveries: Family<OutcomeLabel, Counter>,
    /// Connections closed by the gateway, by error-code name.
    pub closes: Family<OutcomeLabel, Counter>,
    /// Requests refused by a limit, by limit.
    pub limited: Family<OutcomeLabel, Counter>,
    /// Live sessions (attached or detached).
    pub sessions: Gauge,
    /// Time the backend took to answer an upstream request.
    pub upstream_latency: Histogram,
    /// Time from a delivery call to its message being queued on the connection.
    pub deliver_latency: Histogram,
    /// Session-store commits: time to write and fsync one group commit.
    pub store_commit_latency: Histogram,
    /// Session-store commits: changes per group commit.
    pub store_commit_changes: Histogram,
    /// Sessions restored from the session store at start.
    pub sessions_restored: Counter,
    /// Requests between cluster nodes, by verb and outcome (`ok`, `timeout`, `no_node`,
    /// `error`), counted by the node that sent them.
    pub cluster_requests: Family<ClusterRequestLabel, Counter>,
    /// Time a request to another node took to be answered.
    pub cluster_request_latency: Histogram,
    /// 1 while the node's NATS connection is up (0 when down or not clustered).
    pub cluster_connected: Gauge,
    /// Sessions ended here because the device logged in on another node.
    pub cluster_takeovers: Counter,
    /// Sessions moved here from another node by a resume.
    pub cluster_sessions_moved_in: Counter,
    /// Sessions of dead nodes removed from the cluster directory by this node (found by a
    /// delivery the dead node did not answer).
    pub cluster_orphans_released: Counter,
    /// The listeners' transport counters, exported at scrape time.
    pub(crate) transports: TransportCollector,
    /// Series touched by every message, resolved once: a `Family` lookup takes its lock and
    /// clones the counter's `Arc` (two shared atomics bounced between cores per message).
    pub(crate) hot: HotCounters,
}

/// Pre-resolved series of [`Metrics`] on the per-message path.
#[derive(Debug, Clone)]
pub(crate) struct HotCounters {
    pub(crate) frames_in: Counter,
    pub(crate) frames_out: Counter,
    pub(crate) delivered_sent: Counter,
    pub(crate) delivered_buffered: Counter,
}

impl Metrics {
    /// Registers every metric under `imgate_` in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let frames = Family::<DirectionLabel, Counter>::default();
        let deliveries = Family::<OutcomeLabel, Counter>::default();
        // One statement per series: `get_or_create` returns a read guard that lives to the
        // end of its statement, and creating the next series needs the write lock.
        let frames_in = frames
            .get_or_create(&DirectionLabel { direction: "in" })
            .clone();
        let frames_out = frames
            .get_or_create(&DirectionLabel { direction: "out" })
            .clone();
        let delivered_sent = deliveries
            .get_or_create(&OutcomeLabel { outcome: "sent" })
            .clone();
        let delivered_buffered = deliveries
            .get_or_create(&OutcomeLabel {
                outcome: "buffered",
            })
            .clone();
        let hot = HotCounters {
            frames_in,
            frames_out,
            delivered_sent,
            delivered_buffered,
        };
        let metrics = Self {
            connections: Family::default(),
            handshakes: Family::default(),
            resumes: Family::default(),
            frames,
            deliveries,
            closes: Family::default(),
            limited: Family::default(),
            sessions: Gauge::default(),
            upstream_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 18)),
            deliver_latency: Histogram::new(exponential_buckets(0.000_001, 2.0, 20)),
            store_commit_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            store_commit_changes: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            sessions_restored: Counter::default(),
            cluster_requests: Family::default(),
            cluster_request_latency: Histogram::new(exponential_buckets(0.000_02, 2.0, 18)),
            cluster_connected: Gauge::default(),
            cluster_takeovers: Counter::default(),
            cluster_sessions_moved_in: Counter::default(),
            cluster_orphans_released: Counter::default(),
            transports: TransportCollector::default(),
            hot,
        };
        let r = registry.sub_registry_with_prefix("imgate");
        r.register(
            "connections",
            "Open client connections",
            metrics.connections.clone(),
        );
        r.register(
            "handshakes",
            "Protocol handshakes by outcome",
            metrics.handshakes.clone(),
        );
        r.register(
            "resumes",
            "Resume attempts by outcome",
            metrics.resumes.clone(),
        );
        r.register("frames", "Frames by direction", metrics.frames.clone());
        r.register(
            "deliveries",
            "Per-device delivery outcomes",
            metrics.deliveries.clone(),
        );
        r.register(
            "closes",
            "Connections closed by the gateway, by code",
            metrics.closes.clone(),
        );
        r.register(
            "limited",
            "Requests refused by a limit",
            metrics.limited.clone(),
        );
        r.register("sessions", "Live sessions", metrics.sessions.clone());
        r.register(
            "upstream_latency_seconds",
            "Backend time to answer an upstream request",
            metrics.upstream_latency.clone(),
        );
        r.register(
            "deliver_latency_seconds",
            "Time for a deliver call to queue a message on every recipient",
            metrics.deliver_latency.clone(),
        );
        r.register(
            "store_commit_seconds",
            "Session-store group commits: write and fsync time",
            metrics.store_commit_latency.clone(),
        );
        r.register(
            "store_commit_changes",
            "Session-store group commits: changes per commit",
            metrics.store_commit_changes.clone(),
        );
        r.register(
            "sessions_restored",
            "Sessions restored from the session store at start",
            metrics.sessions_restored.clone(),
        );
        r.register(
            "cluster_requests",
            "Requests to other cluster nodes, by verb and outcome",
            metrics.cluster_requests.clone(),
        );
        r.register(
            "cluster_request_seconds",
            "Time a request to another cluster node took to be answered",
            metrics.cluster_request_latency.clone(),
        );
        r.register(
            "cluster_connected",
            "1 while the node's NATS connection is up",
            metrics.cluster_connected.clone(),
        );
        r.register(
            "cluster_takeovers",
            "Sessions ended because their device logged in on another node",
            metrics.cluster_takeovers.clone(),
        );
        r.register(
            "cluster_sessions_moved_in",
            "Sessions moved to this node from another by a resume",
            metrics.cluster_sessions_moved_in.clone(),
        );
        r.register(
            "cluster_orphans_released",
            "Sessions of dead cluster nodes removed from the directory by this node",
            metrics.cluster_orphans_released.clone(),
        );
        r.register_collector(Box::new(metrics.transports.clone()));
        metrics
    }

    /// A commit observer for [`crate::store::RedbStore::open`] feeding the store metrics.
    pub fn store_observer(&self) -> crate::store::CommitObserver {
        let latency = self.store_commit_latency.clone();
        let changes = self.store_commit_changes.clone();
        std::sync::Arc::new(move |stats: crate::store::CommitStats| {
            latency.observe(stats.duration.as_secs_f64());
            changes.observe(stats.changes as f64);
        })
    }

    /// Counts one outcome in `family`.
    pub(crate) fn count(family: &Family<OutcomeLabel, Counter>, outcome: &'static str) {
        family.get_or_create(&OutcomeLabel { outcome }).inc();
    }
}

impl Default for Metrics {
    /// Metrics registered nowhere (for gateways started without a registry).
    fn default() -> Self {
        Self::new(&mut Registry::default())
    }
}
