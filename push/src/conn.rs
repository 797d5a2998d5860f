//! One lazily dialled, multiplexed HTTP/2 connection per provider credential.
//!
//! Apple treats rapid connect/disconnect as abuse and both providers multiplex freely, so every
//! request of a client shares one `SendRequest`; a dead connection is replaced on the next
//! request. Requests are absolute-form so hyper sends the right `:scheme` and `:authority`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::PushError;

/// Largest response body read from a provider: error bodies are tiny JSON objects, and a
/// misbehaving peer must not make us buffer without bound.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Connection tuning shared by the providers.
#[derive(Debug, Clone)]
pub struct ConnOptions {
    /// Limit on TCP connect plus TLS and HTTP/2 handshakes.
    pub connect_timeout: Option<Duration>,
    /// Limit on one request/response exchange. `None` disables it (paused-clock tests, where
    /// tokio would otherwise auto-advance onto the time-out while loopback I/O is pending).
    pub request_timeout: Option<Duration>,
    /// HTTP/2 PING interval that keeps an idle connection open and detects a dead one.
    pub keep_alive: Option<Duration>,
}

impl Default for ConnOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Some(Duration::from_secs(10)),
            request_timeout: Some(Duration::from_secs(20)),
            keep_alive: Some(Duration::from_secs(60)),
        }
    }
}

/// A response with its body fully read.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// Where a channel connects: parsed once from the configured base URL.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    scheme: &'static str,
    host: String,
    port: u16,
    /// Base path without a trailing slash (may be empty).
    path: String,
}

impl Endpoint {
    pub(crate) fn parse(url: &str) -> Result<Self, PushError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| PushError::Config(format!("url {url:?}: {e}")))?;
        let scheme = match uri.scheme_str() {
            Some("https") => "https",
            Some("http") => "http",
            _ => return Err(PushError::Config(format!("url {url:?}: need http(s)://"))),
        };
        let host = uri
            .host()
            .ok_or_else(|| PushError::Config(format!("url {url:?}: no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let path = uri.path().trim_end_matches('/').to_owned();
        Ok(Self {
            scheme,
            host,
            port,
            path,
        })
    }

    /// Absolute URI of `path` (which starts with '/') under this endpoint.
    pub(crate) fn uri(&self, path: &str) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!(
            "{}://{}:{}{}{}",
            self.scheme, host, self.port, self.path, path
        )
    }

    pub(crate) fn is_tls(&self) -> bool {
        self.scheme == "https"
    }
}

pub(crate) struct H2Channel {
    endpoint: Endpoint,
    tls: Option<Arc<ClientConfig>>,
    options: ConnOptions,
    current: std::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
    // Serialises dialling so a burst of requests on a dead connection opens one replacement,
    // not one each.
    dialing: tokio::sync::Mutex<()>,
    connects: AtomicU64,
}

impl std::fmt::Debug for H2Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Channel")
            .field("endpoint", &self.endpoint)
            .field("connects", &self.connects.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl H2Channel {
    /// `tls` must be set for an `https` endpoint; `http` endpoints speak h2c with prior
    /// knowledge (loopback mocks only).
    pub(crate) fn new(
        endpoint: Endpoint,
        tls: Option<Arc<ClientConfig>>,
        options: ConnOptions,
    ) -> Result<Self, PushError> {
        if endpoint.is_tls() && tls.is_none() {
            return Err(PushError::Config(
                "https endpoint without a TLS config".into(),
            ));
        }
        // An h2c endpoint ignores any TLS config it was given.
        let tls = if endpoint.is_tls() { tls } else { None };
        Ok(Self {
            endpoint,
            tls,
            options,
            current: std::sync::Mutex::new(None),
            dialing: tokio::sync::Mutex::new(()),
            connects: AtomicU64::new(0),
        })
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// How many connections this channel has opened (tests prove reuse with it).
    pub(crate) fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// Sends one request and reads the whole (bounded) response.
    pub(crate) async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<RawResponse, PushError> {
        let exchange = async {
            let mut sender = self.sender().await?;
            let response = match sender.send_request(request).await {
                Ok(r) => r,
                Err(e) => {
                    // A refused stream on a connection that is going away: forget it so the
                    // next request dials afresh.
                    if sender.is_closed() {
                        self.forget(&sender);
                    }
                    return Err(PushError::Http(e));
                }
            };
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BODY)
                .collect()
                .await
                .map_err(|e| match e.downcast::<hyper::Error>() {
                    Ok(e) => PushError::Http(*e),
                    Err(e) => PushError::Config(format!("provider response body: {e}")),
                })?
                .to_bytes();
            Ok(RawResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match self.options.request_timeout {
            Some(limit) => tokio::time::timeout(limit, exchange)
                .await
                .map_err(|_| PushError::Timeout(limit))?,
            None => exchange.await,
        }
    }

    fn forget(&self, dead: &SendRequest<Full<Bytes>>) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current
            .as_ref()
            .is_some_and(|c| c.is_closed() || dead.is_closed())
        {
            *current = None;
        }
    }

    fn live(&self) -> Option<SendRequest<Full<Bytes>>> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    async fn sender(&self) -> Result<SendRequest<Full<Bytes>>, PushError> {
        if let Some(s) = self.live() {
            return Ok(s);
        }
        let _dialing = self.dialing.lock().await;
        if let Some(s) = self.live() {
            return Ok(s);
        }
        let dial = self.dial();
        let sender = match self.options.connect_timeout {
            Some(limit) => tokio::time::timeout(limit, dial)
                .await
                .map_err(|_| PushError::Timeout(limit))??,
            None => dial.await?,
        };
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender.clone());
        Ok(sender)
    }

    async fn dial(&self) -> Result<SendRequest<Full<Bytes>>, PushError> {
        let ep = &self.endpoint;
        let addr = format!("{}:{}", ep.host, ep.port);
        let connect_err = |source| PushError::Connect {
            host: addr.clone(),
            source,
        };
        let tcp = TcpStream::connect((ep.host.as_str(), ep.port))
            .await
            .map_err(connect_err)?;
        // Push requests are small and latency-bound; don't let Nagle hold them back.
        tcp.set_nodelay(true).map_err(connect_err)?;
        let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        builder.timer(TokioTimer::new());
        if let Some(interval) = self.options.keep_alive {
            builder
                .keep_alive_interval(interval)
                .keep_alive_timeout(Duration::from_secs(20))
                .keep_alive_while_idle(true);
        }
        let sender = match &self.tls {
            Some(tls) => {
                let name = ServerName::try_from(ep.host.clone())
                    .map_err(|e| PushError::Config(format!("server name {:?}: {e}", ep.host)))?;
                let stream = TlsConnector::from(Arc::clone(tls))
                    .connect(name, tcp)
                    .await
                    .map_err(connect_err)?;
                if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err(connect_err(std::io::Error::other(
                        "server did not negotiate h2",
                    )));
                }
                let (sender, conn) = builder.handshake(TokioIo::new(stream)).await?;
                tokio::spawn(drive(conn, addr.clone()));
                sender
            }
            None => {
                let (sender, conn) = builder.handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(drive(conn, addr.clone()));
                sender
            }
        };
        self.connects.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%addr, "push: new HTTP/2 connection");
        Ok(sender)
    }
}

async fn drive<F>(conn: F, addr: String)
where
    F: std::future::Future<Output = hyper::Result<()>>,
{
    if let Err(e) = conn.await {
        tracing::debug!(%addr, error = %e, "push: HTTP/2 connection ended");
    }
}
