//! Which nodes are alive: each node re-puts its key in the `ig_nodes` bucket every
//! `node_timeout / 3`; the bucket's `max_age` is `node_timeout`, so a node that died (or is
//! frozen) has no key once `node_timeout` has passed. nats-server 2.9 has no per-key TTL, so
//! the age limit is the bucket's.

use std::time::Duration;

use async_nats::jetstream::{kv, stream};

use super::ClusterError;

/// The liveness bucket.
pub(super) const NODES_BUCKET: &str = "ig_nodes";

/// The node keys.
#[derive(Debug)]
pub(crate) struct Liveness {
    kv: kv::Store,
    timeout: Duration,
}

impl Liveness {
    /// Opens (or creates, as a stream: see `Directory::open`) the bucket.
    pub(super) async fn open(
        client: &async_nats::Client,
        replicas: usize,
        node_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Self, ClusterError> {
        let jetstream = async_nats::jetstream::new(client.clone());
        if jetstream.get_key_value(NODES_BUCKET).await.is_err() {
            jetstream
                .create_stream(stream::Config {
                    name: format!("KV_{NODES_BUCKET}"),
                    description: Some("imgate: live nodes (re-put while alive)".into()),
                    subjects: vec![format!("$KV.{NODES_BUCKET}.>")],
                    max_messages_per_subject: 1,
                    max_age: node_timeout,
                    discard: stream::DiscardPolicy::New,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    num_replicas: replicas.max(1),
                    storage: stream::StorageType::File,
                    duplicate_window: node_timeout.min(Duration::from_secs(120)),
                    ..Default::default()
                })
                .await
                .map_err(|e| ClusterError::Directory(format!("creating {NODES_BUCKET}: {e}")))?;
        }
        let kv = jetstream
            .get_key_value(NODES_BUCKET)
            .await
            .map_err(|e| ClusterError::Directory(format!("opening {NODES_BUCKET}: {e}")))?;
        Ok(Self {
            kv,
            timeout: request_timeout,
        })
    }

    /// Says this node is alive (its start time, for whoever reads the key by hand).
    pub(super) async fn beat(&self, node: &str, started_ms: u64) -> Result<(), ClusterError> {
        let value = format!("{{\"started_ms\":{started_ms}}}");
        tokio::time::timeout(self.timeout, self.kv.put(node, value.into()))
            .await
            .map_err(|_| ClusterError::Directory("heartbeat: no answer in time".into()))?
            .map(drop)
            .map_err(|e| ClusterError::Directory(format!("heartbeat: {e}")))
    }

    /// Whether `node` has beaten within the node time-out. An error (NATS unreachable)
    /// answers "alive": a node is declared dead only on evidence.
    pub(crate) async fn is_alive(&self, node: &str) -> bool {
        match tokio::time::timeout(self.timeout, self.kv.entry(node)).await {
            Ok(Ok(Some(entry))) => entry.operation == kv::Operation::Put,
            Ok(Ok(None)) => false,
            _ => true,
        }
    }
}

/// Beats every `period` until the task is aborted with the gateway.
pub(crate) async fn beat_forever(cluster: std::sync::Arc<super::Cluster>, period: Duration) {
    let started = crate::handle::wall_ms();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = cluster.liveness.beat(cluster.node(), started).await {
            tracing::warn!(%error, "cluster heartbeat not written");
        }
    }
}
