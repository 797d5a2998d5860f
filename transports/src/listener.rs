//! `Listener`: binds a transport, runs its accept loop, and yields handshaken connections.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use imgate_codec::{FrameDecoder, FrameEncoder};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::accept::{AcceptBackoff, is_connection_error};
use crate::framed::{Io, Setup};
use crate::limits::{ConnGuard, ConnLimits};
use crate::stats::{HandshakeFailure, TransportStats};
use crate::{ConnInfo, FramedConn, ListenerConfig, TransportError, TransportKind};

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
    #[cfg(feature = "quic")]
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
    /// What a TCP-based listener does after `accept` (unused by QUIC).
    pub(crate) mode: TcpMode,
    pub(crate) decoder: Arc<FrameDecoder>,
    pub(crate) encoder: Arc<FrameEncoder>,
}

/// The handshake of a TCP-based listener. Only transports compiled in have a variant, so the
/// handshake needs no "impossible transport" case.
pub(crate) enum TcpMode {
    /// Plain TCP (and the unused value of a QUIC listener): no handshake.
    Plain,
    /// TLS, ALPN `imgate/1` required.
    #[cfg(feature = "tls")]
    Tls(tokio_rustls::TlsAcceptor),
    /// WebSocket upgrade.
    #[cfg(feature = "ws")]
    Ws,
    /// TLS, then the WebSocket upgrade.
    #[cfg(all(feature = "ws", feature = "tls"))]
    Wss(tokio_rustls::TlsAcceptor),
    /// The HTTP fallback (HTTP, HTTPS): each socket served by hyper.
    #[cfg(feature = "http")]
    Http(Arc<crate::http::Server>),
}

impl TcpMode {
    #[cfg_attr(not(feature = "http"), allow(unused_variables))]
    fn new(config: &ListenerConfig, limits: &ConnLimits) -> Result<Self, TransportError> {
        config.kind.check_available()?;
        Ok(match config.kind {
            #[cfg(feature = "http")]
            TransportKind::Http | TransportKind::Https => {
                Self::Http(Arc::new(crate::http::Server::new(config, limits.clone())?))
            }
            #[cfg(feature = "tls")]
            TransportKind::Tls => Self::Tls(acceptor(config, crate::ALPN_IMGATE)?),
            #[cfg(feature = "ws")]
            TransportKind::Ws => Self::Ws,
            #[cfg(all(feature = "ws", feature = "tls"))]
            TransportKind::Wss => Self::Wss(acceptor(config, crate::ALPN_HTTP1)?),
            // TCP, QUIC (own accept loop); the rest were refused by `check_available`.
            _ => Self::Plain,
        })
    }
}

#[cfg(feature = "tls")]
pub(crate) fn acceptor(
    config: &ListenerConfig,
    alpn: &'static str,
) -> Result<tokio_rustls::TlsAcceptor, TransportError> {
    let identity = config.identity.as_ref().ok_or_else(|| {
        TransportError::Config(format!("the {} listener needs a certificate", config.kind))
    })?;
    let mut server = identity.server_config(alpn, false)?;
    if config.kind == TransportKind::Tls {
        server.cert_resolver = Arc::new(crate::tls::RequireAlpn(server.cert_resolver));
    }
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
}

impl Shared {
    /// Wraps a handshaken connection and hands it to `accept()`.
    pub(crate) async fn deliver(&self, io: Io, info: ConnInfo, guard: ConnGuard) {
        let conn = FramedConn::new(
            io,
            info,
            Setup {
                decoder: Arc::clone(&self.decoder),
                encoder: Arc::clone(&self.encoder),
                max_queued: self.config.max_outbound_bytes,
                stats: Some(Arc::clone(&self.stats)),
                guard: Some(guard),
            },
        );
        self.stats.incr(&self.stats.established);
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
        let mode = TcpMode::new(&config, &limits)?;
        // The HTTP fallback's connections are logical (`limits`); its sockets have their own.
        #[cfg(feature = "http")]
        let socket_limits = match mode {
            TcpMode::Http(_) => crate::http::Server::socket_limits(&config),
            _ => limits.clone(),
        };
        #[cfg(not(feature = "http"))]
        let socket_limits = limits.clone();
        let shared = Arc::new(Shared {
            // No compression before `Welcome` (protocol §3.3); the server enables it then.
            decoder: Arc::new(FrameDecoder::new(config.max_frame).with_compression(false)),
            encoder: Arc::new(FrameEncoder::new(config.peer_max_frame)),
            config,
            stats: Arc::clone(&stats),
            tx,
            mode,
        });
        #[cfg(feature = "quic")]
        if kind == TransportKind::Quic {
            let endpoint = crate::quic::bind(&shared.config)?;
            let local_addr = endpoint.local_addr()?;
            let accept_task = tokio::spawn(crate::quic::accept_loop(
                endpoint.clone(),
                Arc::clone(&shared),
                limits.clone(),
            ));
            tracing::info!(transport = %kind, addr = %local_addr, "listening");
            return Ok(Self {
                kind,
                local_addr,
                incoming,
                stats,
                limits,
                accept_task,
                quic: Some(endpoint),
            });
        }
        let listener = TcpListener::bind(shared.config.bind).await?;
        let local_addr = listener.local_addr()?;
        let accept_task = tokio::spawn(tcp_accept_loop(listener, shared, socket_limits));
        tracing::info!(transport = %kind, addr = %local_addr, "listening");
        Ok(Self {
            kind,
            local_addr,
            incoming,
            stats,
            limits,
            accept_task,
            #[cfg(feature = "quic")]
            quic: None,
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
        #[cfg(feature = "quic")]
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
        let permit = limits.acquire_counted(stats).await;
        let (stream, peer) = loop {
            match listener.accept().await {
                Ok(accepted) => {
                    backoff.success();
                    break accepted;
                }
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    stats.incr(&stats.accept_errors);
                    let delay = backoff.failure();
                    tracing::warn!(error = %e, ?delay, "accept failed; backing off");
                    tokio::time::sleep(delay).await;
                }
            }
        };
        stats.incr(&stats.accepted);
        let guard = match limits.admit(permit, peer.ip()) {
            Ok(guard) => guard,
            Err(e) => {
                stats.incr(&stats.rejected_per_ip);
                tracing::debug!(client.addr = %peer, error = %e, "connection refused");
                if matches!(shared.mode, TcpMode::Plain) {
                    refuse_tcp(&stream, &shared.encoder, &e);
                }
                continue;
            }
        };
        // Chat frames are small and latency-bound: never wait for Nagle.
        let _ = stream.set_nodelay(true);
        match &shared.mode {
            TcpMode::Plain => {
                let info = ConnInfo {
                    kind: TransportKind::Tcp,
                    peer,
                    alpn: None,
                    sni: None,
                };
                shared.deliver(Io::Tcp(stream), info, guard).await;
            }
            #[cfg(feature = "http")]
            TcpMode::Http(server) => {
                let server = Arc::clone(server);
                tokio::spawn(crate::http::serve_socket(
                    stream,
                    peer,
                    guard,
                    Arc::clone(&shared),
                    server,
                ));
            }
            #[cfg_attr(not(any(feature = "tls", feature = "ws")), allow(unreachable_patterns))]
            _ => {
                tokio::spawn(handshake(stream, peer, guard, Arc::clone(&shared)));
            }
        }
    }
}

/// Tells a plain TCP client over the per-IP limit why, so that it backs off (protocol
/// §13: `3002`): one small write into the fresh socket's empty buffer, which cannot block.
/// The other transports cannot say anything before the handshake the limit exists to spare.
fn refuse_tcp(stream: &TcpStream, encoder: &FrameEncoder, error: &crate::LimitError) {
    let error =
        imgate_codec::Error::new(imgate_codec::CloseCode::CONNECTION_LIMIT, error.to_string());
    if let Ok(frame) = crate::EncodedFrame::encode(encoder, &error.into()) {
        let _ = stream.try_write(frame.as_bytes());
    }
    let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
}

/// TLS, WS and WSS handshakes, under the deadline.
async fn handshake(stream: TcpStream, peer: SocketAddr, guard: ConnGuard, shared: Arc<Shared>) {
    let deadline = shared.config.handshake_timeout;
    let inner = handshake_inner(stream, peer, &shared);
    let result = match tokio::time::timeout(deadline, inner).await {
        Ok(result) => result,
        Err(_) => Err(HandshakeFailure::Timeout),
    };
    match result {
        Ok((io, info, resumed)) => {
            // Counted once the whole handshake (for WSS, the upgrade too) has succeeded, like
            // `established`.
            if resumed {
                shared.stats.incr(&shared.stats.handshake_resumed);
            }
            shared.deliver(io, info, guard).await;
        }
        Err(reason) => shared.failed(peer, reason),
    }
}

async fn handshake_inner(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
) -> Result<(Io, ConnInfo, bool), HandshakeFailure> {
    // TLS records the negotiated ALPN and the SNI.
    #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
    let mut info = ConnInfo {
        kind: shared.config.kind,
        peer,
        alpn: None,
        sni: None,
    };
    match &shared.mode {
        TcpMode::Plain => Ok((Io::Tcp(stream), info, false)),
        #[cfg(feature = "tls")]
        TcpMode::Tls(acceptor) => {
            let (tls, resumed) =
                accept_tls(acceptor, stream, crate::ALPN_IMGATE, true, &mut info).await?;
            Ok((Io::Tls(Box::new(tls)), info, resumed))
        }
        #[cfg(feature = "ws")]
        TcpMode::Ws => {
            let ws = crate::ws::accept(
                crate::ws::WsIo::Plain(stream),
                &shared.config.ws,
                shared.config.max_frame,
            )
            .await?;
            Ok((Io::Ws(Box::new(ws)), info, false))
        }
        #[cfg(all(feature = "ws", feature = "tls"))]
        TcpMode::Wss(acceptor) => {
            // HTTP clients may not send ALPN, so it is optional here.
            let (tls, resumed) =
                accept_tls(acceptor, stream, crate::ALPN_HTTP1, false, &mut info).await?;
            let ws = crate::ws::accept(
                crate::ws::WsIo::Tls(Box::new(tls)),
                &shared.config.ws,
                shared.config.max_frame,
            )
            .await?;
            Ok((Io::Ws(Box::new(ws)), info, resumed))
        }
        // Not reached: HTTP sockets are served by `http::serve_socket`, not handshaken here.
        #[cfg(feature = "http")]
        TcpMode::Http(_) => Err(HandshakeFailure::HttpBadRequest),
    }
}

/// The TLS handshake, recording the negotiated ALPN and the SNI in `info`; whether it resumed.
#[cfg(feature = "tls")]
async fn accept_tls(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    alpn: &'static str,
    require_alpn: bool,
    info: &mut ConnInfo,
) -> Result<(tokio_rustls::TlsStream<TcpStream>, bool), HandshakeFailure> {
    let (tls, negotiated, sni, resumed) =
        crate::tls::accept(acceptor, stream, alpn, require_alpn).await?;
    info.alpn = negotiated;
    info.sni = sni;
    Ok((tokio_rustls::TlsStream::Server(tls), resumed))
}
