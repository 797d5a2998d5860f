//! A minimal HTTP/1.1 POST client for one endpoint: keep-alive pool, rustls for `https`.
//!
//! One webhook URL means one host, so the pool is a stack of idle connections to it; a
//! connection goes back only after its response body has been read in full.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Largest response body read back (the answer is a small JSON object).
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Why a request got no HTTP response.
#[derive(Debug, thiserror::Error)]
pub(super) enum HttpError {
    /// Connecting (TCP or TLS) failed.
    #[error("connecting to the webhook failed: {0}")]
    Connect(#[source] std::io::Error),
    /// The request or its response failed mid-way.
    #[error("webhook request failed: {0}")]
    Request(#[source] hyper::Error),
    /// The response body was larger than allowed or unreadable.
    #[error("webhook response body unreadable or over {MAX_RESPONSE_BODY} bytes")]
    Body,
    /// No full response within the per-request time-out.
    #[error("webhook request timed out after {0:?}")]
    Timeout(Duration),
}

/// Where the webhook lives.
#[derive(Clone)]
pub(super) struct Endpoint {
    host: String,
    port: u16,
    /// `Host` header value.
    authority: String,
    path_and_query: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("authority", &self.authority)
            .field("path_and_query", &self.path_and_query)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Parses an `http://` or `https://` URL; `https` uses `roots` (webpki roots if None).
    pub(super) fn parse(url: &str, roots: Option<rustls::RootCertStore>) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("invalid url {url:?}: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("url {url:?}: scheme must be http or https")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("url {url:?} has no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let roots = roots.unwrap_or_else(|| rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            });
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS configuration: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = ServerName::try_from(host.clone())
                .map_err(|e| format!("url {url:?}: bad TLS server name: {e}"))?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Self {
            host,
            port,
            authority: authority.as_str().to_owned(),
            path_and_query: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
            tls,
        })
    }
}

/// A pooled HTTP/1.1 client for one endpoint.
#[derive(Debug)]
pub(super) struct Client {
    endpoint: Endpoint,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    max_idle: usize,
}

impl Client {
    pub(super) fn new(endpoint: Endpoint, max_idle: usize) -> Self {
        Self {
            endpoint,
            idle: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    /// POSTs `body` with `headers`; the whole exchange (connect, send, read the body) must
    /// finish within `timeout`. A stale pooled connection is replaced once, within the
    /// same time budget.
    pub(super) async fn post(
        &self,
        headers: &[(&'static str, String)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), HttpError> {
        let exchange = async {
            if let Some(sender) = self.pooled() {
                match self.exchange(sender, headers, body.clone()).await {
                    Err(HttpError::Request(e)) if !e.is_timeout() => {
                        tracing::debug!(error = %e, "pooled webhook connection failed; reconnecting");
                    }
                    other => return other,
                }
            }
            let sender = self.connect().await?;
            self.exchange(sender, headers, body).await
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_elapsed| HttpError::Timeout(timeout))?
    }

    fn pooled(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().expect("invariant: pool lock not poisoned");
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn release(&self, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().expect("invariant: pool lock not poisoned");
        if idle.len() < self.max_idle {
            idle.push(sender);
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, HttpError> {
        let endpoint = &self.endpoint;
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(HttpError::Connect)?;
        let _ = tcp.set_nodelay(true);
        match &endpoint.tls {
            None => handshake(tcp).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(HttpError::Connect)?;
                handshake(tls).await
            }
        }
    }

    async fn exchange(
        &self,
        mut sender: SendRequest<Full<Bytes>>,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), HttpError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(&self.endpoint.path_and_query)
            .header(header::HOST, &self.endpoint.authority)
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("imgate/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request
            .body(Full::new(body))
            .expect("invariant: request parts are valid");
        sender.ready().await.map_err(HttpError::Request)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(HttpError::Request)?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BODY)
            .collect()
            .await
            .map_err(|_| HttpError::Body)?
            .to_bytes();
        self.release(sender);
        Ok((status, body))
    }
}

async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, HttpError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(HttpError::Request)?;
    // The connection task ends when the sender is dropped or the peer closes.
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "webhook connection closed");
        }
    });
    Ok(sender)
}
