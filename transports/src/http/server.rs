//! The listener side: sockets served by hyper (HTTP/1.1), the open, send and close requests,
//! CORS, and the limits (docs/protocol.md §1.1).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper::body::Incoming;
use imgate_codec::{CloseCode, LENGTH_PREFIX_LEN};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::body::StreamBody;
use super::queue::whole_frames;
use super::{CONNECTION_HEADER, CONTENT_TYPE, Channel, Refusal, Side};
use crate::framed::Io;
use crate::limits::{ConnGuard, ConnLimits, LimitError};
use crate::listener::Shared;
use crate::maybe_tls::MaybeTls;
use crate::stats::HandshakeFailure;
use crate::{ConnInfo, ListenerConfig, TransportError};

/// How long a stream's socket may still drain after the server's writer is gone before it
/// is closed (a client that stopped reading would otherwise hold it for ever).
const STREAM_LINGER: Duration = Duration::from_secs(1);

/// What every socket of one HTTP listener shares.
pub(crate) struct Server {
    /// Logical connections (one per stream), as every transport counts them.
    limits: ConnLimits,
    #[cfg(feature = "tls")]
    tls: Option<tokio_rustls::TlsAcceptor>,
    table: Arc<Table>,
    http1: hyper::server::conn::http1::Builder,
}

/// Open connections by id.
#[derive(Default)]
pub(crate) struct Table(Mutex<HashMap<u128, Arc<Channel>>>);

impl Table {
    fn get(&self, id: u128) -> Option<Arc<Channel>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    fn insert(&self, id: u128, channel: Arc<Channel>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, channel);
    }

    pub(super) fn remove(&self, id: u128) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }
}

impl Server {
    /// `limits` count logical connections; the sockets' own limits are the accept loop's.
    pub(crate) fn new(config: &ListenerConfig, limits: ConnLimits) -> Result<Self, TransportError> {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(hyper_util::rt::TokioTimer::new())
            // Each request's head must arrive within the transport's handshake deadline; an
            // idle kept-alive socket is closed after it too (clients reconnect for POSTs).
            .header_read_timeout(config.handshake_timeout)
            // hyper's smallest: bounds both header size and what it buffers for a stream
            // whose reader is slow.
            .max_buf_size(16 * 1024)
            .writev(true);
        Ok(Self {
            limits,
            #[cfg(feature = "tls")]
            tls: match config.kind {
                crate::TransportKind::Https => {
                    Some(crate::listener::acceptor(config, crate::ALPN_HTTP1)?)
                }
                _ => None,
            },
            table: Arc::default(),
            http1,
        })
    }

    /// Socket limits for a listener with `config`: a connection takes at most two sockets
    /// (the stream's and one for POSTs), plus one to spare per address for a reconnect.
    pub(crate) fn socket_limits(config: &ListenerConfig) -> ConnLimits {
        ConnLimits::new(
            config.max_connections.saturating_mul(2),
            config
                .max_per_ip
                .map(|n| n.saturating_mul(2).saturating_add(1)),
        )
    }
}

/// One socket: its facts, and the stream it carries once one is opened on it.
struct Socket {
    info: ConnInfo,
    stream: Mutex<Option<Arc<Channel>>>,
    opened: Notify,
}

impl Socket {
    fn attach(&self, channel: Arc<Channel>) {
        *self.stream.lock().unwrap_or_else(PoisonError::into_inner) = Some(channel);
        self.opened.notify_one();
    }

    /// Completes [`STREAM_LINGER`] after the server's writer of this socket's stream is gone.
    async fn stream_over(&self) {
        loop {
            let stream = self
                .stream
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(channel) = stream {
                channel.writer_gone.notified().await;
                tokio::time::sleep(STREAM_LINGER).await;
                return;
            }
            self.opened.notified().await;
        }
    }
}

/// Serves one accepted socket (TLS first for HTTPS, under the handshake deadline); `guard`
/// is its place under the socket limits.
pub(crate) async fn serve_socket(
    stream: TcpStream,
    peer: SocketAddr,
    guard: ConnGuard,
    shared: Arc<Shared>,
    server: Arc<Server>,
) {
    let _guard = guard;
    let info = ConnInfo {
        kind: shared.config.kind,
        peer,
        alpn: None,
        sni: None,
    };
    #[cfg(feature = "tls")]
    let (io, info) = match &server.tls {
        Some(acceptor) => match tls(acceptor, stream, info, &shared).await {
            Some(accepted) => accepted,
            None => return,
        },
        None => (MaybeTls::Plain(stream), info),
    };
    #[cfg(not(feature = "tls"))]
    let io = MaybeTls::Plain(stream);
    let socket = Arc::new(Socket {
        info,
        stream: Mutex::new(None),
        opened: Notify::new(),
    });
    let service = hyper::service::service_fn({
        let (shared, server, socket) = (
            Arc::clone(&shared),
            Arc::clone(&server),
            Arc::clone(&socket),
        );
        move |request| {
            let (shared, server, socket) = (
                Arc::clone(&shared),
                Arc::clone(&server),
                Arc::clone(&socket),
            );
            async move { Ok::<_, Infallible>(handle(&shared, &server, &socket, request).await) }
        }
    });
    let conn = server
        .http1
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::select! {
        result = conn => {
            if let Err(e) = result {
                tracing::debug!(client.addr = %peer, error = %e, "HTTP connection failed");
            }
        }
        // Dropping the connection closes the socket.
        () = socket.stream_over() => {}
    }
}

#[cfg(feature = "tls")]
async fn tls(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    mut info: ConnInfo,
    shared: &Shared,
) -> Option<(MaybeTls, ConnInfo)> {
    let handshake = crate::tls::accept(acceptor, stream, crate::ALPN_HTTP1, false);
    let result = match tokio::time::timeout(shared.config.handshake_timeout, handshake).await {
        Ok(result) => result,
        Err(_) => Err(HandshakeFailure::Timeout),
    };
    match result {
        Ok((tls, alpn, sni, resumed)) => {
            if resumed {
                shared.stats.incr(&shared.stats.handshake_resumed);
            }
            info.alpn = alpn;
            info.sni = sni;
            let tls = tokio_rustls::TlsStream::Server(tls);
            Some((MaybeTls::Tls(Box::new(tls)), info))
        }
        Err(reason) => {
            shared.failed(info.peer, reason);
            None
        }
    }
}

type Body = Either<StreamBody, Either<Full<Bytes>, Empty<Bytes>>>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Open,
    Send,
    Close,
}

async fn handle(
    shared: &Arc<Shared>,
    server: &Server,
    socket: &Socket,
    request: Request<Incoming>,
) -> Response<Body> {
    let config = &shared.config;
    let origin = request.headers().get(header::ORIGIN).cloned();
    let allowed = match (&config.http.allowed_origins, &origin) {
        (Some(list), Some(origin)) => list.iter().any(|a| a.as_bytes() == origin.as_bytes()),
        _ => true,
    };
    let mut response = if !allowed {
        shared.failed(socket.info.peer, HandshakeFailure::HttpOrigin);
        status(StatusCode::FORBIDDEN)
    } else {
        match route(&config.http.path, request.uri().path()) {
            None => {
                shared.failed(socket.info.peer, HandshakeFailure::HttpBadRequest);
                status(StatusCode::NOT_FOUND)
            }
            Some(_) if request.method() == Method::OPTIONS => preflight(),
            Some(_) if request.method() != Method::POST => {
                shared.failed(socket.info.peer, HandshakeFailure::HttpBadRequest);
                let mut response = status(StatusCode::METHOD_NOT_ALLOWED);
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
                response
            }
            Some(Route::Open) => open(shared, server, socket, request).await,
            Some(route) => post(shared, server, route, request).await,
        }
    };
    if let (true, Some(origin)) = (allowed, origin) {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(CONNECTION_HEADER),
        );
        headers.insert(header::VARY, HeaderValue::from_static("origin"));
    }
    response
}

fn route(base: &str, path: &str) -> Option<Route> {
    match path.strip_prefix(base)? {
        "" => Some(Route::Open),
        "/send" => Some(Route::Send),
        "/close" => Some(Route::Close),
        _ => None,
    }
}

/// The answer to a CORS preflight: POSTs with a connection id may follow, for a day.
fn preflight() -> Response<Body> {
    let mut response = status(StatusCode::NO_CONTENT);
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type, imgate-connection"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    response
}

/// `POST {path}`: a new connection whose response is its stream; the body may carry its
/// first frames (the `Hello`).
async fn open(
    shared: &Arc<Shared>,
    server: &Server,
    socket: &Socket,
    request: Request<Incoming>,
) -> Response<Body> {
    let stats = &shared.stats;
    let peer = socket.info.peer;
    if request.headers().contains_key(CONNECTION_HEADER) {
        // A connection has exactly one stream; a client that lost it opens a new connection
        // and resumes its session there.
        shared.failed(peer, HandshakeFailure::HttpBadRequest);
        return refused(
            shared,
            StatusCode::CONFLICT,
            CloseCode::PROTOCOL_ERROR,
            "a connection has one stream: open a new connection and resume",
        );
    }
    let guard = match server.limits.try_admit(peer.ip()) {
        Ok(guard) => guard,
        Err(e) => {
            let status = match e {
                LimitError::PerIp { .. } => {
                    stats.incr(&stats.rejected_per_ip);
                    StatusCode::TOO_MANY_REQUESTS
                }
                LimitError::Global { .. } => {
                    stats.incr(&stats.rejected_global);
                    StatusCode::SERVICE_UNAVAILABLE
                }
            };
            tracing::debug!(client.addr = %peer, error = %e, "HTTP connection refused");
            let mut response = refused(shared, status, CloseCode::CONNECTION_LIMIT, &e.to_string());
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
    };
    let first = match read_frames(shared, request).await {
        Ok(first) => first,
        Err((status, refusal)) => return refused(shared, status, refusal.code, refusal.reason),
    };
    let channel = Channel::new();
    channel.lock().up.push(first);
    let id = new_id();
    server.table.insert(id, Arc::clone(&channel));
    // Made before the wait below: should the client go away meanwhile (hyper drops this
    // future), its drop forgets the id and ends the connection.
    let body = StreamBody {
        channel: Arc::clone(&channel),
        table: Arc::clone(&server.table),
        id,
    };
    socket.attach(Arc::clone(&channel));
    shared
        .deliver(Io::Http(channel, Side::Server), socket.info.clone(), guard)
        .await;
    let mut response = Response::new(Either::Left(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-transform"),
    );
    // nginx and its kin buffer responses unless told not to.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    // The socket belongs to this stream: when it ends, so does the socket.
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if let Ok(value) = HeaderValue::from_str(&format!("{id:032x}")) {
        headers.insert(CONNECTION_HEADER, value);
    }
    response
}

/// `POST {path}/send` (frames) and `POST {path}/close` (end of the client's frames).
async fn post(
    shared: &Arc<Shared>,
    server: &Server,
    route: Route,
    request: Request<Incoming>,
) -> Response<Body> {
    let stats = &shared.stats;
    let Some(id) = request
        .headers()
        .get(CONNECTION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| u128::from_str_radix(v, 16).ok())
    else {
        stats.incr(&stats.handshake_http_bad_request);
        return status(StatusCode::BAD_REQUEST);
    };
    let Some(channel) = server.table.get(id) else {
        stats.incr(&stats.http_post_unknown);
        return status(StatusCode::NOT_FOUND);
    };
    {
        let mut state = channel.lock();
        if state.up.is_closed() {
            stats.incr(&stats.http_post_unknown);
            return status(StatusCode::NOT_FOUND);
        }
        if route == Route::Close {
            state.up.finish(None);
            return status(StatusCode::NO_CONTENT);
        }
        if state.posting {
            stats.incr(&stats.http_post_conflict);
            return status(StatusCode::CONFLICT);
        }
        state.posting = true;
    }
    // Cleared even if hyper drops the request half-way (its client gone).
    let mut posting = Posting(Some(&channel));
    let result = read_frames(shared, request).await;
    let refused = {
        let mut state = channel.lock();
        // Cleared under the same lock as the push, so that the next POST's frames follow.
        state.posting = false;
        posting.0 = None;
        match result {
            Ok(frames) => (!state.up.push(frames)).then_some(StatusCode::NOT_FOUND),
            Err((code, refusal)) => {
                // The connection closes: the server's reader gets the refusal, and the
                // stream carries its `Error` frame.
                state.up.finish(Some(refusal));
                Some(code)
            }
        }
    };
    if let Some(code) = refused {
        return status(code);
    }
    // Answered once the connection has read the frames: a client sends its next POST after
    // this one's answer, so a connection that reads slowly slows its client's POSTs.
    let taken = std::future::poll_fn(|cx| channel.lock().up.poll_taken(cx)).await;
    status(if taken {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    })
}

/// A connection's POST being received; dropped before its body was taken, it lets the next
/// one in.
struct Posting<'a>(Option<&'a Channel>);

impl Drop for Posting<'_> {
    fn drop(&mut self) {
        if let Some(channel) = self.0 {
            channel.lock().posting = false;
        }
    }
}

/// A request body of whole frames, within the size limit and the deadline.
async fn read_frames(
    shared: &Shared,
    request: Request<Incoming>,
) -> Result<Bytes, (StatusCode, Refusal)> {
    let stats = &shared.stats;
    let config = &shared.config;
    let limit = config.max_frame.saturating_add(LENGTH_PREFIX_LEN);
    let too_large = || {
        // Over the body limit is over the frame limit: a body holds at most one whole frame
        // of the largest size.
        stats.incr(&stats.http_post_too_large);
        stats.incr(&stats.frame_too_large);
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            Refusal {
                code: CloseCode::FRAME_TOO_LARGE,
                reason: "POST body over the size limit",
            },
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    let mut body = request.into_body();
    let read = async {
        let mut bytes = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map(http_body::Frame::into_data) else {
                return Err(false);
            };
            if let Ok(data) = data {
                if bytes.len() + data.len() > limit {
                    return Err(true);
                }
                bytes.extend_from_slice(&data);
            }
        }
        Ok(bytes.freeze())
    };
    let bytes = match tokio::time::timeout(config.handshake_timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(true)) => return Err(too_large()),
        // The client broke off the body: what it carried cannot be used.
        Ok(Err(false)) => return Err(malformed(stats)),
        Err(_) => {
            stats.incr(&stats.http_post_timeout);
            return Err((
                StatusCode::REQUEST_TIMEOUT,
                Refusal {
                    code: CloseCode::HANDSHAKE_TIMEOUT,
                    reason: "POST body not received in time",
                },
            ));
        }
    };
    match whole_frames(&bytes, config.max_frame) {
        Ok(len) if len == bytes.len() => Ok(bytes),
        Ok(_) => Err(malformed(stats)),
        Err(refusal) => {
            stats.incr(&stats.frame_too_large);
            Err((StatusCode::PAYLOAD_TOO_LARGE, refusal))
        }
    }
}

fn malformed(stats: &crate::TransportStats) -> (StatusCode, Refusal) {
    stats.incr(&stats.http_post_malformed);
    (
        StatusCode::BAD_REQUEST,
        Refusal {
            code: CloseCode::PROTOCOL_ERROR,
            reason: "POST body does not end on a frame boundary",
        },
    )
}

/// A random 128-bit connection id: the only thing that ties a POST to its stream.
fn new_id() -> u128 {
    let mut bytes = [0; 16];
    // The OS's generator does not fail on the platforms we run on; if it ever did, a
    // time-based id would be guessable, so refuse to go on rather than fall back.
    if let Err(e) = getrandom::fill(&mut bytes) {
        panic!("the operating system's random number generator failed: {e}");
    }
    u128::from_be_bytes(bytes)
}

fn status(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Either::Right(Either::Right(Empty::new())));
    *response.status_mut() = status;
    response
}

/// An error status whose body is one `Error` frame, so that a client reads the code as on
/// any other transport.
fn refused(shared: &Shared, status: StatusCode, code: CloseCode, reason: &str) -> Response<Body> {
    let error = imgate_codec::Error::new(code, reason);
    let body = crate::EncodedFrame::encode(&shared.encoder, &error.into())
        .map(|frame| frame.as_bytes().clone())
        .unwrap_or_default();
    let mut response = Response::new(Either::Right(Either::Left(Full::new(body))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_the_base_path_and_its_two_children() {
        assert!(matches!(route("/imgate", "/imgate"), Some(Route::Open)));
        assert!(matches!(
            route("/imgate", "/imgate/send"),
            Some(Route::Send)
        ));
        assert!(matches!(
            route("/imgate", "/imgate/close"),
            Some(Route::Close)
        ));
        assert!(route("/imgate", "/imgate/other").is_none());
        assert!(route("/imgate", "/imgatex").is_none());
        assert!(route("/imgate", "/").is_none());
    }

    #[test]
    fn ids_are_random() {
        assert_ne!(new_id(), new_id());
    }
}
