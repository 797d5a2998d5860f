//! The runtime: listeners, per-connection tasks, and the gateway's lifecycle.

mod connection;
mod driver;
mod limits;
mod restore;

#[cfg(feature = "cluster")]
pub(crate) use restore::adopt_session;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use imgate_transports::{FramedConn, Listener, ListenerConfig, TransportError, TransportKind};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::app::App;
use crate::handle::GatewayHandle;
use crate::metrics::Metrics;
use crate::offline::PushPolicy;
use crate::rate_limit::RateLimit;
use crate::store::{Durability, SessionStore};

/// Errors starting a gateway.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// A listener could not be bound or configured.
    #[error("listener {kind} on {bind}: {source}")]
    Listener {
        /// The transport.
        kind: TransportKind,
        /// The configured address.
        bind: SocketAddr,
        /// Why.
        source: TransportError,
    },
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Server-wide runtime settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// How long a client has to send `Hello` after its transport handshake.
    pub handshake_timeout: Duration,
    /// How long a closing connection may take to flush its last frames.
    pub close_timeout: Duration,
    /// Registry shards (rounded up to a power of two).
    pub shards: usize,
    /// Protocol handshakes accepted per second, gateway-wide (a reconnect storm is smoothed
    /// instead of melting the authenticator).
    pub handshake_rate: RateLimit,
    /// Frames accepted per second from one connection.
    pub message_rate: RateLimit,
    /// A connection whose socket accepts nothing for this long is closed as a slow consumer
    /// (its session stays resumable, its messages buffered within the session's bounds).
    pub write_stall_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(1),
            shards: 64,
            handshake_rate: RateLimit::new(2_000.0, 4_000.0),
            message_rate: RateLimit::new(200.0, 400.0),
            write_stall_timeout: Duration::from_secs(30),
        }
    }
}

/// Builds and starts a gateway.
#[derive(Debug, Default)]
pub struct GatewayBuilder {
    apps: Vec<App>,
    listeners: Vec<ListenerConfig>,
    config: ServerConfig,
    metrics: Option<Metrics>,
    store: Option<Arc<dyn SessionStore>>,
    #[cfg(feature = "cluster")]
    cluster: Option<crate::cluster::ClusterConfig>,
}

/// Entry point: `Gateway::builder().app(…).listener(…).start().await`.
#[derive(Debug)]
pub struct Gateway;

impl Gateway {
    /// A builder with no apps and no listeners.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }
}

impl GatewayBuilder {
    /// Serves `app`.
    pub fn app(mut self, app: App) -> Self {
        self.apps.push(app);
        self
    }

    /// Listens with `listener`.
    pub fn listener(mut self, listener: ListenerConfig) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Server-wide settings.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Metrics registered in the caller's registry (default: registered nowhere).
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Where the sessions of apps with `Durability::Disk` live. At start every stored
    /// session is restored (detached, resumable).
    pub fn store(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Joins a cluster of gateway nodes on NATS ([`crate::cluster`]): deliveries reach the
    /// users' devices on every node, a device has one session cluster-wide, and a session
    /// resumes on any node. `start` fails if NATS cannot be reached within the config's
    /// `connect_timeout`; after that the node reconnects by itself.
    #[cfg(feature = "cluster")]
    pub fn cluster(mut self, config: crate::cluster::ClusterConfig) -> Self {
        self.cluster = Some(config);
        self
    }

    /// Binds every listener and starts serving. Must be called inside a tokio runtime.
    ///
    /// Sessions in the store are restored before the first connection is accepted.
    pub async fn start(self) -> Result<RunningGateway, GatewayError> {
        let mut apps = HashMap::new();
        for app in self.apps {
            if apps.insert(app.id.clone(), Arc::new(app)).is_some() {
                return Err(GatewayError::Config("an app id appears twice".into()));
            }
        }
        if apps.is_empty() {
            return Err(GatewayError::Config("no app configured".into()));
        }
        if self.store.is_none()
            && let Some(app) = apps
                .values()
                .find(|app| app.session.durability == Durability::Disk)
        {
            return Err(GatewayError::Config(format!(
                "app {} has durability disk but the gateway has no session store",
                app.id
            )));
        }
        let presence: Vec<Arc<dyn PushPolicy>> = apps.values().map(|a| a.push.clone()).collect();
        let metrics = self.metrics.unwrap_or_default();
        #[cfg(feature = "cluster")]
        let cluster = match self.cluster {
            Some(config) => Some(Arc::new(
                crate::cluster::Cluster::join(config, metrics.clone())
                    .await
                    .map_err(|e| GatewayError::Config(e.to_string()))?,
            )),
            None => None,
        };
        let handle = GatewayHandle::new(
            apps,
            self.config.clone(),
            metrics,
            self.store,
            #[cfg(feature = "cluster")]
            cluster.clone(),
        );
        // Requests from other nodes are answered from here on, restored sessions included.
        #[cfg(feature = "cluster")]
        let cluster_task = cluster.map(|cluster| {
            let heartbeat = cluster.heartbeat;
            let beating = tokio::spawn(crate::cluster::beat_forever(
                Arc::clone(&cluster),
                heartbeat,
            ));
            let serving = tokio::spawn(crate::cluster::serve_node(handle.clone(), cluster));
            (AbortOnDrop(serving), AbortOnDrop(beating))
        });
        // The push thread holds the handle until the push service shuts down.
        for push in presence {
            push.attach_presence(Arc::new(handle.clone()));
        }
        if let Some(store) = handle.shared.store.clone() {
            let stored = store
                .load()
                .map_err(|e| GatewayError::Config(e.to_string()))?;
            let report = restore::restore_sessions(&handle, &*store, stored);
            if report.sessions > 0 || report.ended > 0 {
                tracing::info!(
                    restored = report.sessions,
                    messages = report.messages,
                    ended = report.ended,
                    "sessions restored from the session store"
                );
            }
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut addrs = Vec::new();
        for config in self.listeners {
            let (kind, bind) = (config.kind, config.bind);
            let listener = Listener::bind(config)
                .await
                .map_err(|source| GatewayError::Listener { kind, bind, source })?;
            addrs.push((kind, listener.local_addr()));
            handle
                .metrics()
                .transports
                .watch(kind, listener.local_addr(), listener.stats());
            tasks.spawn(accept_loop(listener, handle.clone(), stop_rx.clone()));
        }
        Ok(RunningGateway {
            handle,
            addrs,
            stop: stop_tx,
            tasks,
            #[cfg(feature = "cluster")]
            cluster_task,
        })
    }
}

/// A started gateway. Dropping it stops the listeners (connections end with their tasks).
#[derive(Debug)]
pub struct RunningGateway {
    handle: GatewayHandle,
    addrs: Vec<(TransportKind, SocketAddr)>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// Answers the other nodes' requests, and says this node is alive; stopped with the
    /// gateway.
    #[cfg(feature = "cluster")]
    cluster_task: Option<(AbortOnDrop, AbortOnDrop)>,
}

/// A task aborted when its owner is dropped.
#[cfg(feature = "cluster")]
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

#[cfg(feature = "cluster")]
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl RunningGateway {
    /// The delivery handle.
    pub fn handle(&self) -> &GatewayHandle {
        &self.handle
    }

    /// Where each listener is bound.
    pub fn local_addrs(&self) -> &[(TransportKind, SocketAddr)] {
        &self.addrs
    }

    /// The bound address of the first listener of `kind`.
    pub fn local_addr(&self, kind: TransportKind) -> Option<SocketAddr> {
        self.addrs.iter().find(|(k, _)| *k == kind).map(|(_, a)| *a)
    }

    /// Serves a connection accepted outside the gateway's listeners exactly as a listener's
    /// own (the same handshake, session driver, limits and drain), e.g. the server side of
    /// an in-memory `FramedConn::pipe` (`imgate-transports` feature `pipe`), which lets a
    /// test or a fuzz target run the runtime on tokio's paused clock. Its frame limits are
    /// those it was built with, as a listener's connections get the listener's.
    pub fn serve(&self, conn: FramedConn) {
        serve_connection(&self.handle, conn);
    }

    /// Stops accepting and ends every connection and session at once (no drain).
    pub async fn shutdown(mut self) {
        self.stop_accepting().await;
        let shared = &self.handle.shared;
        shared.cancel.cancel();
        shared.tasks.close();
        shared.tasks.wait().await;
    }

    /// Graceful drain: `/readyz` fails, listeners stop, every attached client gets
    /// `GoAway{Drain, reconnect_after}` and may still acknowledge what it holds; once every
    /// client has gone (or `grace` has passed) the rest are disconnected. Then sessions of
    /// apps with `Durability::Memory` end and their unacknowledged messages go to the
    /// offline path (pushed, reported to the backend), while durable sessions stay in the
    /// store, to be restored by the next start (pushed after the push grace, reported when
    /// the resume window ends, as if the process had never stopped). The apps' push
    /// policies are stopped ([`crate::offline::PushPolicy::stop`]: sends in flight finish,
    /// nothing more is sent). Returns once the
    /// hand-offs are done and the store has every change, or shortly after `grace` at the
    /// latest.
    pub async fn drain(mut self, grace: Duration, reconnect_after: Duration) -> DrainReport {
        let deadline = tokio::time::Instant::now() + grace;
        let shared = std::sync::Arc::clone(&self.handle.shared);
        shared.draining.store(true, Ordering::Relaxed);
        shared.drain_started.cancel();
        self.stop_accepting().await;
        let sessions = shared.registry.all_sessions();
        let now = tokio::time::Instant::now();
        for cell in &sessions {
            cell.lock().drain(reconnect_after, now);
            cell.wake();
        }
        // Event-driven: each detaching connection notifies; the deadline bounds the wait.
        loop {
            let detached = shared.detached.notified();
            let attached = shared
                .registry
                .all_sessions()
                .iter()
                .filter(|c| c.lock().is_attached())
                .count();
            if attached == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, detached).await.is_err() {
                break;
            }
        }
        let mut report = DrainReport {
            sessions: sessions.len(),
            ..DrainReport::default()
        };
        // The clients have moved on (resuming elsewhere asked this node for their sessions
        // meanwhile): no more requests from other nodes.
        #[cfg(feature = "cluster")]
        drop(self.cluster_task.take());
        // Durable sessions' drivers let go once they see this (their sessions stay stored).
        shared.releasing.store(true, Ordering::Relaxed);
        let now = tokio::time::Instant::now();
        for cell in shared.registry.all_sessions() {
            let durable = self
                .handle
                .app(&cell.identity().app)
                .is_some_and(|app| shared.store_for(app).is_some());
            {
                let mut session = cell.lock();
                session.end_drain(now);
                let unacked = session.last_seq() - session.acked_seq();
                if durable {
                    report.kept += 1;
                    report.messages_kept += unacked;
                } else {
                    report.ended += 1;
                    report.messages_handed_offline += unacked;
                    session.end_now();
                }
            }
            cell.wake();
        }
        shared.tasks.close();
        let finished = tokio::time::timeout_at(
            deadline.max(tokio::time::Instant::now()) + shared.config.close_timeout,
            shared.tasks.wait(),
        )
        .await
        .is_ok();
        if !finished {
            shared.cancel.cancel();
            shared.tasks.wait().await;
        }
        report.clean = finished;
        // The offline hand-off is complete only once the pushes are in the push queue's file
        // (and the sends in flight answered: an answer lost to the exit is a second push
        // after the restart) and the backends hold their notices (bounded: a dead webhook
        // must not hold the exit forever; what is left is logged).
        let handed_over = async {
            for app in shared.apps.values() {
                app.push.stop().await;
                app.backend.flush_notices().await;
            }
        };
        if tokio::time::timeout(HAND_OVER_TIMEOUT, handed_over)
            .await
            .is_err()
        {
            tracing::warn!(
                "drain: pushes or backend notices still pending after {HAND_OVER_TIMEOUT:?}"
            );
            report.clean = false;
        }
        if let Some(store) = &shared.store {
            // The acknowledgements and ends of the last moments are durable before exit.
            report.clean &= store.sync().await.is_ok();
        }
        report
    }

    async fn stop_accepting(&mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// How long a drain waits for the push queues and the backends' notice queues to take what
/// the drain handed to the offline path.
const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a drain did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DrainReport {
    /// Sessions alive when the drain started.
    pub sessions: usize,
    /// In-memory sessions still alive after the clients left: ended, their messages handed
    /// to the offline path.
    pub ended: usize,
    /// Unacknowledged messages of the ended sessions (pushed and reported).
    pub messages_handed_offline: u64,
    /// Durable sessions kept in the store for the next start.
    pub kept: usize,
    /// Unacknowledged messages of the kept sessions.
    pub messages_kept: u64,
    /// Whether every task finished before the deadline (false: the rest were cancelled)
    /// and the store confirmed every change.
    pub clean: bool,
}

impl std::fmt::Display for DrainReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sessions={} ended={} messages_handed_offline={} kept={} messages_kept={} clean={}",
            self.sessions,
            self.ended,
            self.messages_handed_offline,
            self.kept,
            self.messages_kept,
            self.clean
        )
    }
}

async fn accept_loop(
    mut listener: Listener,
    handle: GatewayHandle,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            conn = listener.accept() => match conn {
                Some(conn) => serve_connection(&handle, conn),
                None => break,
            },
            _ = stop.changed() => break,
        }
    }
}

/// Spawns the task serving one handshaken connection: `Hello`, then its session's driver.
fn serve_connection(handle: &GatewayHandle, conn: FramedConn) {
    // Every event of the connection carries its peer and transport.
    let span = tracing::info_span!(
        "conn",
        client.addr = %conn.info().peer,
        transport = %conn.info().kind,
        session.id = tracing::field::Empty,
    );
    let (reader, writer) = conn.split();
    handle.spawn(connection::serve(handle.clone(), reader, writer).instrument(span));
}

#[cfg(test)]
mod footprint;
