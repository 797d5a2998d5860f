//! The runtime: listeners, per-connection tasks, and the gateway's lifecycle.

mod connection;
mod driver;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use imgate_transports::{Listener, ListenerConfig, TransportError, TransportKind};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::app::App;
use crate::handle::GatewayHandle;

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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(1),
            shards: 64,
        }
    }
}

/// Builds and starts a gateway.
#[derive(Debug, Default)]
pub struct GatewayBuilder {
    apps: Vec<App>,
    listeners: Vec<ListenerConfig>,
    config: ServerConfig,
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

    /// Binds every listener and starts serving. Must be called inside a tokio runtime.
    pub async fn start(self) -> Result<RunningGateway, GatewayError> {
        let mut apps = HashMap::new();
        for app in self.apps {
            if apps.insert(app.id.clone(), app).is_some() {
                return Err(GatewayError::Config("an app id appears twice".into()));
            }
        }
        if apps.is_empty() {
            return Err(GatewayError::Config("no app configured".into()));
        }
        let handle = GatewayHandle::new(apps, self.config.shards);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut addrs = Vec::new();
        for config in self.listeners {
            let (kind, bind) = (config.kind, config.bind);
            let listener = Listener::bind(config)
                .await
                .map_err(|source| GatewayError::Listener { kind, bind, source })?;
            addrs.push((kind, listener.local_addr()));
            tasks.spawn(accept_loop(
                listener,
                handle.clone(),
                self.config.clone(),
                stop_rx.clone(),
            ));
        }
        Ok(RunningGateway {
            handle,
            addrs,
            stop: stop_tx,
            tasks,
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

    /// Stops accepting and aborts every connection task.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn accept_loop(
    mut listener: Listener,
    handle: GatewayHandle,
    config: ServerConfig,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            conn = listener.accept() => match conn {
                Some(conn) => {
                    connections.spawn(connection::serve(handle.clone(), conn, config.clone()));
                }
                None => break,
            },
            // Reap finished connection tasks so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}
