//! The listeners' transport counters (`imgate_transports::TransportStats`: accepts, established
//! and resumed handshakes, handshake failures by reason, limit refusals, bad frames), read at
//! scrape time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use imgate_transports::{TransportKind, TransportStats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

/// Every bound listener's counters, shared between the gateway (which adds listeners as it
/// binds them) and the registry (which reads them on each scrape). Held weakly: once a
/// listener and its connections are gone (a stopped gateway), its series disappear.
#[derive(Debug, Clone, Default)]
pub(crate) struct TransportCollector {
    listeners: Arc<Mutex<Vec<WatchedListener>>>,
}

#[derive(Debug)]
struct WatchedListener {
    listener: String,
    transport: &'static str,
    stats: Weak<TransportStats>,
}

impl TransportCollector {
    /// Exports `stats` under the labels `listener` (its bound address) and `transport`.
    pub(crate) fn watch(
        &self,
        kind: TransportKind,
        bound: SocketAddr,
        stats: &Arc<TransportStats>,
    ) {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(WatchedListener {
                listener: bound.to_string(),
                transport: kind.as_str(),
                stats: Arc::downgrade(stats),
            });
    }
}

impl Collector for TransportCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        listeners.retain(|watched| watched.stats.strong_count() > 0);
        let mut family = encoder.encode_descriptor(
            "transport_events",
            "Transport events by listener: accepts, established and resumed handshakes, handshake failures by reason, limit refusals, bad frames",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for watched in listeners.iter() {
            let Some(stats) = watched.stats.upgrade() else {
                continue;
            };
            for (event, count) in stats.snapshot().counters() {
                let labels = [
                    ("listener", watched.listener.as_str()),
                    ("transport", watched.transport),
                    ("event", event),
                ];
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
