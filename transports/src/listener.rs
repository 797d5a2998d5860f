//! `Listener`: binds a transport, runs its accept loop, and yields handshaken connections.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use imgate_codec::{FrameDecoder, FrameEncoder};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::accept::{AcceptBackoff, is_connection_error};
use crate::cert::{ALPN_HTTP1, ALPN_IMGATE};
use crate::limits::{ConnGuard, ConnLimits};
use crate::read::{FrameReader, ReadInner};
use crate::stats::{HandshakeFailure, TransportStats};
use crate::write::{FrameWriter, WriteInner};
use crate::{ConnInfo, FramedConn, ListenerConfig, TransportError, TransportKind, quic, tls, ws};

/// A bound transport listener. Connections arrive through [`Listener::accept`] once their
/// transport handshake (TLS, WebSocket upgrade, QUIC + stream) is done.
///
/// Dropping the listener stops accepting; established connections keep working, and
/// handshakes in progress end by their deadline.
pub struct Listener {
    kind: TransportKind,
    local_addr: SocketAddr,
    incoming: mpsc::Receiver<FramedConn>,
    stats: Arc<TransportStats>,
    limits: ConnLimits,
    accept_task: JoinHandle<()>,
    quic: Option<quinn::Endpoint>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("kind", &self.kind)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// What the accept loop and handshake tasks share.
pub(crate) struct Shared {
    pub(crate) config: ListenerConfig,
    pub(crate) stats: Arc<TransportStats>,
    pub(crate) tx: mpsc::Sender<FramedConn>,
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    pub(crate) decoder: Arc<FrameDecoder>,
    pub(crate) encoder: Arc<FrameEncoder>,
}

impl Shared {
    /// Wraps a handshaken connection and hands it to `accept()`.
    pub(crate) async fn deliver(
        &self,
        reader: ReadInner,
        writer: WriteInner,
        info: ConnInfo,
        guard: ConnGuard,
    ) {
        let conn = FramedConn::new(
            FrameReader::new(
                reader,
                Arc::clone(&self.decoder),
                info,
                Some(Arc::clone(&self.stats)),
                Some(guard),
            ),
            FrameWriter::new(
                writer,
                Arc::clone(&self.encoder),
                self.config.max_outbound_bytes,
            ),
        );
        TransportStats::incr(&self.stats.established);
        // If the listener is gone, the connection is simply dropped (closed).
        let _ = self.tx.send(conn).await;
    }

    pub(crate) fn failed(&self, peer: SocketAddr, reason: HandshakeFailure) {
        self.stats.handshake_failed(reason);
        tracing::debug!(
            client.addr = %peer,
            transport = %self.config.kind,
            reason = reason.as_str(),
            "transport handshake failed"
        );
    }
}

impl Listener {
    /// Binds and starts accepting. Must be called inside a tokio runtime.
    pub async fn bind(config: ListenerConfig) -> Result<Self, TransportError> {
        let kind = config.kind;
        let stats = Arc::new(TransportStats::default());
        let limits = ConnLimits::new(config.max_connections, config.max_per_ip);
        let (tx, incoming) = mpsc::channel(config.accept_queue.max(1));
        let tls = match kind {
            TransportKind::Tls | TransportKind::Wss => {
                let identity = config.identity.as_ref().ok_or_else(|| {
                    TransportError::Config(format!("the {kind} listener needs a certificate"))
                })?;
                let alpn = if kind == TransportKind::Tls {
                    ALPN_IMGATE
                } else {
                    ALPN_HTTP1
                };
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(
                    identity.server_config(alpn, false)?,
                )))
            }
            _ => None,
        };
        let shared = Arc::new(Shared {
            decoder: Arc::new(FrameDecoder::new(config.max_frame)),
            encoder: Arc::new(FrameEncoder::new(config.peer_max_frame)),
            config,
            stats: Arc::clone(&stats),
            tx,
            tls,
        });
        let (local_addr, accept_task, quic) = if kind == TransportKind::Quic {
            let endpoint = quic::bind(&shared.config)?;
            let local_addr = endpoint.local_addr()?;
            let task = tokio::spawn(quic::accept_loop(
                endpoint.clone(),
                Arc::clone(&shared),
                limits.clone(),
            ));
            (local_addr, task, Some(endpoint))
        } else {
            let listener = TcpListener::bind(shared.config.bind).await?;
            let local_addr = listener.local_addr()?;
            let task = tokio::spawn(tcp_accept_loop(listener, shared, limits.clone()));
            (local_addr, task, None)
        };
        tracing::info!(transport = %kind, addr = %local_addr, "listening");
        Ok(Self {
            kind,
            local_addr,
            incoming,
            stats,
            limits,
            accept_task,
            quic,
        })
    }

    /// The next established connection; `None` once the accept loop has stopped.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a connection not yet returned stays queued.
    pub async fn accept(&mut self) -> Option<FramedConn> {
        self.incoming.recv().await
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The transport.
    pub fn kind(&self) -> TransportKind {
        self.kind
    }

    /// Accept and refusal counters.
    pub fn stats(&self) -> &Arc<TransportStats> {
        &self.stats
    }

    /// The connection limits (e.g. to read how many connections are active).
    pub fn limits(&self) -> &ConnLimits {
        &self.limits
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.accept_task.abort();
        if let Some(endpoint) = &self.quic {
            // Refuse new QUIC connections; existing ones keep the endpoint driver alive.
            endpoint.set_server_config(None);
        }
    }
}

async fn tcp_accept_loop(listener: TcpListener, shared: Arc<Shared>, limits: ConnLimits) {
    let stats = &shared.stats;
    let mut backoff = AcceptBackoff::default();
    loop {
        let (permit, waited) = limits.acquire().await;
        if waited {
            TransportStats::incr(&stats.global_limit_waits);
        }
        let (stream, peer) = loop {
            match listener.accept().await {
                Ok(accepted) => {
                    backoff.success();
                    break accepted;
                }
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    TransportStats::incr(&stats.accept_errors);
                    let delay = backoff.failure();
                    tracing::warn!(error = %e, ?delay, "accept failed; backing off");
                    tokio::time::sleep(delay).await;
                }
            }
        };
        TransportStats::incr(&stats.accepted);
        let guard = match limits.admit(permit, peer.ip()) {
            Ok(guard) => guard,
            Err(e) => {
                TransportStats::incr(&stats.rejected_per_ip);
                tracing::debug!(client.addr = %peer, error = %e, "connection refused");
                continue;
            }
        };
        // Chat frames are small and latency-bound: never wait for Nagle.
        let _ = stream.set_nodelay(true);
        if shared.config.kind == TransportKind::Tcp {
            let (read, write) = stream.into_split();
            let info = ConnInfo {
                kind: TransportKind::Tcp,
                peer,
                alpn: None,
                sni: None,
            };
            shared
                .deliver(
                    FrameReader::stream(Box::pin(read)),
                    WriteInner::Stream(Box::pin(write)),
                    info,
                    guard,
                )
                .await;
        } else {
            tokio::spawn(handshake(stream, peer, guard, Arc::clone(&shared)));
        }
    }
}

/// TLS, WS and WSS handshakes, under the deadline.
async fn handshake(stream: TcpStream, peer: SocketAddr, guard: ConnGuard, shared: Arc<Shared>) {
    let deadline = shared.config.handshake_timeout;
    let result = match tokio::time::timeout(deadline, handshake_inner(stream, peer, &shared)).await
    {
        Ok(result) => result,
        Err(_) => Err(HandshakeFailure::Timeout),
    };
    match result {
        Ok((reader, writer, info)) => shared.deliver(reader, writer, info, guard).await,
        Err(reason) => shared.failed(peer, reason),
    }
}

async fn handshake_inner(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
) -> Result<(ReadInner, WriteInner, ConnInfo), HandshakeFailure> {
    let kind = shared.config.kind;
    let mut info = ConnInfo {
        kind,
        peer,
        alpn: None,
        sni: None,
    };
    let io = match (kind, &shared.tls) {
        (TransportKind::Tls | TransportKind::Wss, Some(acceptor)) => {
            let alpn = if kind == TransportKind::Tls {
                ALPN_IMGATE
            } else {
                ALPN_HTTP1
            };
            let (tls, negotiated, sni) =
                tls::accept(acceptor, stream, alpn, kind == TransportKind::Tls).await?;
            info.alpn = negotiated;
            info.sni = sni;
            if kind == TransportKind::Tls {
                let (read, write) = tokio::io::split(tls);
                return Ok((
                    FrameReader::stream(Box::pin(read)),
                    WriteInner::Stream(Box::pin(write)),
                    info,
                ));
            }
            ws::WsIo::Right(Box::new(tokio_rustls::TlsStream::Server(tls)))
        }
        _ => ws::WsIo::Left(stream),
    };
    let ws = ws::accept(io, &shared.config.ws, shared.config.max_frame).await?;
    let (sink, stream) = futures_util::StreamExt::split(ws);
    Ok((ReadInner::Ws(stream), WriteInner::Ws(sink), info))
}
