//! Many gateway nodes on NATS: a device reached wherever it is connected, one session per
//! device cluster-wide, resume on any node.
//!
//! The design (ARCHITECTURE.md, "Decisions", has the reasons):
//! - **Directory** (JetStream KV bucket `ig_dir`, one key per user): which node holds which
//!   device's session, with an epoch bumped by every change of owner. Written only by
//!   compare-and-set on the key's revision, so two nodes never both believe they own a
//!   device (`directory.rs`).
//! - **Routing by lookup**: `deliver` reads the user's key and sends one request per node
//!   that holds a session of the user (`ig.v1.node.<node>.deliver`, core NATS
//!   request/reply), naming the sessions the directory lists there; each node delivers to
//!   exactly those and answers with its device reports, which the origin merges into the one
//!   report the backend gets (`route.rs`). No broadcast: a node hears only of its own users.
//!   A session the directory does not list (a stale owner that was frozen while its device
//!   moved on) gets nothing.
//! - **Take-over and move**: a fresh login claims the device in the directory, then tells
//!   the previous owner to end its session with `GoAway{TAKEOVER}`; a resume of a session
//!   another node holds asks that node to release it and restores it here, outbox,
//!   acknowledged point and receipts included (`serve.rs` answers these requests).
//!
//! Not yet (ARCHITECTURE.md lists them): outboxes in JetStream (so a node that dies takes
//! its in-memory sessions' unacknowledged messages with it, and a durable node's stay on its
//! disk until it restarts), orphan claims after a node's death, rooms and session targets
//! across nodes (both reach the sessions of the node `deliver` is called on).

mod directory;
mod liveness;
mod moved;
mod names;
pub(crate) mod route;
mod serve;
mod wire;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

pub(crate) use directory::Directory;
pub use names::valid_node_name;
pub use route::ClusterSession;

use crate::metrics::{ClusterRequestLabel, Metrics};

/// How a node joins the cluster (`[cluster]` in the binary's configuration).
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// NATS servers to connect to (`nats://host:port` or `tls://host:port`); the client
    /// learns the rest of a NATS cluster from them.
    pub urls: Vec<String>,
    /// This node's name, unique in the cluster: letters, digits, `-` and `_`, at most 64.
    pub node: String,
    /// How to authenticate to NATS.
    pub auth: ClusterAuth,
    /// Extra trust roots (PEM) for NATS servers' TLS certificates.
    pub tls_ca: Option<PathBuf>,
    /// Refuse a NATS connection without TLS.
    pub require_tls: bool,
    /// JetStream replicas of the directory (1 for one NATS server, 3 for a cluster of three
    /// or more).
    pub replicas: usize,
    /// How long a request to another node may take before its devices are reported
    /// unreachable.
    pub request_timeout: Duration,
    /// How long NATS may be unreachable before `/readyz` reports the node not ready.
    pub unready_after: Duration,
    /// How long the first connection to NATS may take at start.
    pub connect_timeout: Duration,
    /// A node that has not said it is alive for this long is dead: the other nodes stop
    /// routing to its sessions (deliveries for its users go to the offline path instead).
    /// It re-says it every third of this.
    pub node_timeout: Duration,
}

impl ClusterConfig {
    /// A node named `node` on `urls`, with defaults for everything else.
    pub fn new(node: impl Into<String>, urls: Vec<String>) -> Self {
        Self {
            urls,
            node: node.into(),
            auth: ClusterAuth::None,
            tls_ca: None,
            require_tls: false,
            replicas: 1,
            request_timeout: Duration::from_secs(2),
            unready_after: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            node_timeout: Duration::from_secs(10),
        }
    }
}

/// NATS credentials.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum ClusterAuth {
    /// None (a server without authorization).
    #[default]
    None,
    /// A token.
    Token(String),
    /// A user name and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// A `.creds` file (a user JWT and its NKey seed), as `nsc` writes them.
    CredentialsFile(PathBuf),
}

impl std::fmt::Debug for ClusterAuth {
    // Secrets stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Token(_) => f.write_str("Token(..)"),
            Self::UserPassword { user, .. } => write!(f, "UserPassword({user}, ..)"),
            Self::CredentialsFile(path) => write!(f, "CredentialsFile({})", path.display()),
        }
    }
}

/// A cluster failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The configuration is unusable.
    #[error("cluster configuration: {0}")]
    Config(String),
    /// NATS could not be reached or refused the connection.
    #[error("NATS connection: {0}")]
    Connect(String),
    /// A JetStream (directory) operation failed.
    #[error("cluster directory: {0}")]
    Directory(String),
    /// A request to another node failed.
    #[error("request to node {node}: {reason}")]
    Request {
        /// The node asked.
        node: String,
        /// Why.
        reason: &'static str,
    },
    /// Another node's answer could not be decoded.
    #[error("malformed answer from node {0}")]
    Malformed(String),
}

/// A joined cluster: the NATS connection, the directory and this node's name.
#[derive(Debug)]
pub(crate) struct Cluster {
    node: Arc<str>,
    client: async_nats::Client,
    directory: Directory,
    liveness: liveness::Liveness,
    /// How often this node says it is alive.
    pub(crate) heartbeat: Duration,
    request_timeout: Duration,
    unready_after: Duration,
    /// Since when NATS has been unreachable (None: connected).
    disconnected_since: Arc<Mutex<Option<Instant>>>,
    metrics: Metrics,
}

impl Cluster {
    /// Connects to NATS and opens (or creates) the directory bucket.
    pub(crate) async fn join(
        config: ClusterConfig,
        metrics: Metrics,
    ) -> Result<Self, ClusterError> {
        if !valid_node_name(&config.node) {
            return Err(ClusterError::Config(format!(
                "node name {:?}: use 1 to 64 letters, digits, '-' or '_'",
                config.node
            )));
        }
        if config.urls.is_empty() {
            return Err(ClusterError::Config("no NATS url".into()));
        }
        let disconnected_since = Arc::new(Mutex::new(None));
        let options = connect_options(&config, &disconnected_since, &metrics).await?;
        let client =
            tokio::time::timeout(config.connect_timeout, options.connect(config.urls.clone()))
                .await
                .map_err(|_| {
                    ClusterError::Connect(format!(
                        "no NATS server answered within {:?} ({})",
                        config.connect_timeout,
                        config.urls.join(", ")
                    ))
                })?
                .map_err(|e| ClusterError::Connect(e.to_string()))?;
        metrics.cluster_connected.set(1);
        let directory = Directory::open(&client, config.replicas, config.request_timeout).await?;
        let liveness = liveness::Liveness::open(
            &client,
            config.replicas,
            config.node_timeout,
            config.request_timeout,
        )
        .await?;
        // Alive before the first client can be routed here.
        liveness
            .beat(&config.node, crate::handle::wall_ms())
            .await?;
        Ok(Self {
            node: config.node.into(),
            client,
            directory,
            liveness,
            heartbeat: (config.node_timeout / 3).max(Duration::from_millis(100)),
            request_timeout: config.request_timeout,
            unready_after: config.unready_after,
            disconnected_since,
            metrics,
        })
    }

    /// This node's name.
    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    pub(crate) fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Whether `node` has said it is alive within the node time-out.
    pub(crate) async fn is_alive(&self, node: &str) -> bool {
        self.liveness.is_alive(node).await
    }

    /// Whether the node can take part in the cluster: NATS has not been unreachable for
    /// longer than `unready_after`.
    pub(crate) fn is_ready(&self) -> bool {
        let since = *self
            .disconnected_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        since.is_none_or(|since| since.elapsed() < self.unready_after)
    }

    /// Sends `request` to `node`'s `verb` subject and decodes its answer.
    pub(crate) async fn request<Q: prost::Message, A: prost::Message + Default>(
        &self,
        node: &str,
        verb: &'static str,
        request: &Q,
    ) -> Result<A, ClusterError> {
        let started = Instant::now();
        let subject = names::node_subject(node, verb);
        let sent = tokio::time::timeout(
            self.request_timeout,
            self.client.request(subject, request.encode_to_vec().into()),
        )
        .await;
        // One classification feeds both the metric and the error.
        let (outcome, reason) = match &sent {
            Ok(Ok(_)) => ("ok", ""),
            Err(_) => ("timeout", "no answer in time"),
            Ok(Err(e)) => match e.kind() {
                async_nats::RequestErrorKind::NoResponders => {
                    ("no_node", "the node is not connected")
                }
                async_nats::RequestErrorKind::TimedOut => ("timeout", "no answer in time"),
                _ => ("error", "NATS refused the request"),
            },
        };
        self.metrics
            .cluster_requests
            .get_or_create(&ClusterRequestLabel { verb, outcome })
            .inc();
        self.metrics
            .cluster_request_latency
            .observe(started.elapsed().as_secs_f64());
        if let Ok(Ok(message)) = sent {
            return A::decode(message.payload).map_err(|_| ClusterError::Malformed(node.into()));
        }
        Err(ClusterError::Request {
            node: node.into(),
            reason,
        })
    }
}

/// The NATS client's options: name, credentials, TLS, and the connection-state bookkeeping
/// behind `/readyz` and `imgate_cluster_connected`.
async fn connect_options(
    config: &ClusterConfig,
    disconnected_since: &Arc<Mutex<Option<Instant>>>,
    metrics: &Metrics,
) -> Result<async_nats::ConnectOptions, ClusterError> {
    let mut options = match &config.auth {
        ClusterAuth::None => async_nats::ConnectOptions::new(),
        ClusterAuth::Token(token) => async_nats::ConnectOptions::with_token(token.clone()),
        ClusterAuth::UserPassword { user, password } => {
            async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
        }
        ClusterAuth::CredentialsFile(path) => {
            async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| {
                    ClusterError::Config(format!("credentials file {}: {e}", path.display()))
                })?
        }
    };
    options = options
        .name(format!("imgate {}", config.node))
        .require_tls(config.require_tls)
        .connection_timeout(config.connect_timeout)
        // Requests carry their own time-out (`request_timeout`).
        .request_timeout(None);
    if let Some(ca) = &config.tls_ca {
        options = options.add_root_certificates(ca.clone());
    }
    let since = Arc::clone(disconnected_since);
    let connected = metrics.cluster_connected.clone();
    let node = config.node.clone();
    Ok(options.event_callback(move |event| {
        let since = Arc::clone(&since);
        let connected = connected.clone();
        let node = node.clone();
        async move {
            let mut since = since
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match event {
                async_nats::Event::Connected => {
                    *since = None;
                    connected.set(1);
                    tracing::info!(node, "NATS connection restored");
                }
                async_nats::Event::Disconnected => {
                    since.get_or_insert_with(Instant::now);
                    connected.set(0);
                    tracing::warn!(node, "NATS connection lost; reconnecting");
                }
                other => tracing::debug!(node, event = %other, "NATS event"),
            }
        }
    }))
}

pub(crate) use liveness::beat_forever;
pub(crate) use serve::serve_node;
