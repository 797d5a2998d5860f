//! The accept loop shared by both mocks: HTTP/2 (over TLS or h2c), full-body handler,
//! connection counting, and shutdown on drop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::PushError;

/// Requests bigger than this are cut off: both services' limits are a few KiB.
const MAX_REQUEST_BODY: usize = 1 << 20;

/// What the handler knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnInfo {
    /// 1-based connection number.
    pub(crate) id: u64,
    /// Whether the client presented a (verified) certificate.
    pub(crate) client_cert: bool,
}

pub(crate) trait Handler: Send + Sync + 'static {
    /// Answers one request whose body was read in full (`None`: over the size cap). `None`
    /// leaves the request unanswered for good.
    fn handle(
        &self,
        conn: ConnInfo,
        parts: http::request::Parts,
        body: Option<Bytes>,
    ) -> Option<Response<Full<Bytes>>>;
}

pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    connections: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves on `127.0.0.1:port` (`0`: any free port).
    pub(crate) async fn spawn<H: Handler>(
        tls: Option<Arc<ServerConfig>>,
        handler: Arc<H>,
        port: u16,
    ) -> Result<Self, PushError> {
        // Loopback only: tests must never listen on a routable address. A fixed port may still
        // be held for a moment by a just-aborted mock, so retry briefly.
        let mut attempts = 0;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => break l,
                Err(e) if port != 0 && attempts < 50 => {
                    attempts += 1;
                    tracing::debug!(error = %e, "mock bind retry");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(e) => return Err(PushError::Config(format!("mock bind: {e}"))),
            }
        };
        let addr = listener
            .local_addr()
            .map_err(|e| PushError::Config(format!("mock addr: {e}")))?;
        let connections = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            // Owning the connection tasks here means aborting this task (drop/shutdown) also
            // aborts every connection: nothing outlives the mock.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        let _ = tcp.set_nodelay(true);
                        let id = counter.fetch_add(1, Ordering::Relaxed) + 1;
                        conns.spawn(serve(tcp, tls.clone(), Arc::clone(&handler), id));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(Self {
            addr,
            connections,
            task,
        })
    }

    pub(crate) fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve<H: Handler>(
    tcp: tokio::net::TcpStream,
    tls: Option<Arc<ServerConfig>>,
    handler: Arc<H>,
    id: u64,
) {
    let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    match tls {
        Some(tls) => {
            let Ok(stream) = TlsAcceptor::from(tls).accept(tcp).await else {
                return;
            };
            let conn = ConnInfo {
                id,
                client_cert: stream.get_ref().1.peer_certificates().is_some(),
            };
            let service =
                hyper::service::service_fn(move |req| respond(Arc::clone(&handler), conn, req));
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
        None => {
            let conn = ConnInfo {
                id,
                client_cert: false,
            };
            let service =
                hyper::service::service_fn(move |req| respond(Arc::clone(&handler), conn, req));
            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
        }
    }
}

async fn respond<H: Handler>(
    handler: Arc<H>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body = Limited::new(body, MAX_REQUEST_BODY)
        .collect()
        .await
        .ok()
        .map(|b| b.to_bytes());
    match handler.handle(conn, parts, body) {
        Some(resp) => Ok(resp),
        None => std::future::pending().await,
    }
}

/// A JSON response.
pub(crate) fn json(status: u16, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}
