//! The admin HTTP listener: Prometheus metrics, health, readiness, and the delivery API.
//!
//! Routes: `GET /metrics`, `GET /healthz`, `GET /readyz`, `POST /v1/deliver`,
//! `GET /v1/users/{app}/{user}/sessions`, `DELETE /v1/sessions/{id}`. A bearer token is
//! required for every route but `/healthz` and `/readyz` whenever the listener is not on
//! loopback (and whenever a token is configured).

mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::GatewayHandle;

/// Admin listener settings.
#[derive(Clone, Debug)]
pub struct AdminConfig {
    /// Bind address (default 127.0.0.1:7180).
    pub bind: SocketAddr,
    /// Bearer token; required when `bind` is not a loopback address.
    pub token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 7180)),
            token: None,
        }
    }
}

/// Errors starting the admin listener.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// Listening beyond loopback without a token would expose the delivery API.
    #[error("the admin listener on {0} is not loopback: set a bearer token")]
    TokenRequired(SocketAddr),
    /// Binding failed.
    #[error("cannot bind the admin listener on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

pub(crate) struct AdminState {
    pub(crate) gateway: GatewayHandle,
    pub(crate) registry: Registry,
    pub(crate) token: Option<String>,
}

/// A running admin listener; dropping it stops accepting.
#[derive(Debug)]
pub struct AdminServer {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Binds and serves. `registry` is the one the gateway's metrics were registered in.
    pub async fn start(
        config: AdminConfig,
        gateway: GatewayHandle,
        registry: Registry,
    ) -> Result<Self, AdminError> {
        if !config.bind.ip().is_loopback() && config.token.is_none() {
            return Err(AdminError::TokenRequired(config.bind));
        }
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|source| AdminError::Bind {
                addr: config.bind,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| AdminError::Bind {
            addr: config.bind,
            source,
        })?;
        let state = Arc::new(AdminState {
            gateway,
            registry,
            token: config.token,
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _peer)) = listener.accept().await else {
                    // Out of descriptors or similar: back off briefly instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move {
                            Ok::<_, std::convert::Infallible>(routes::route(&state, request).await)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        tracing::info!(addr = %local_addr, "admin listening");
        Ok(Self { local_addr, task })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
