//! The admin HTTP listener: Prometheus metrics, health, readiness, the delivery and
//! inspection API, the web console, and (development only) the demo chat page.
//!
//! Routes: `GET /metrics`, `GET /healthz`, `GET /readyz`, `POST /v1/deliver`,
//! `GET /v1/apps`, `GET /v1/users/{app}/{user}`, `GET /v1/users/{app}/{user}/sessions`,
//! `DELETE /v1/sessions/{id}`, `GET /v1/push/{app}/queue`, `GET /v1/undelivered`; the
//! console's static files under `/console/`; with [`AdminConfig::demo`], the demo page under
//! `/demo/` and its token endpoint. A bearer token is required for every API route whenever
//! one is configured (and the listener refuses to start beyond loopback without one); the
//! static pages load without it, and the console sends it with each request it makes.

mod assets;
mod demo;
mod inspect;
mod routes;

pub use demo::{DemoConfig, MintToken};

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
    /// The demo chat page and its token endpoint (development only: it mints a login token
    /// for any user name, so it is refused beyond loopback).
    pub demo: Option<DemoConfig>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 7180)),
            token: None,
            demo: None,
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
    /// The demo page mints login tokens for anyone who reaches it: loopback only.
    #[error("the admin listener on {0} is not loopback: the demo page is for loopback only")]
    DemoNotLoopback(SocketAddr),
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
    pub(crate) demo: Option<DemoConfig>,
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
        if !config.bind.ip().is_loopback() && config.demo.is_some() {
            return Err(AdminError::DemoNotLoopback(config.bind));
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
            demo: config.demo,
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
