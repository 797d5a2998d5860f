//! The connector side: opens the stream, then carries the writer's frames in POSTs, one at a
//! time, each with whatever queued while the last one was out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::queue::{CAPACITY, whole_frames};
use super::{CONNECTION_HEADER, CONTENT_TYPE, Channel, Side};
use crate::framed::Io;
use crate::maybe_tls::MaybeTls;
use crate::{ConnectorConfig, TransportError};

/// Where and how to open sockets to the server.
pub(crate) struct Dial {
    pub(crate) addr: SocketAddr,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<tokio_rustls::TlsConnector>,
    pub(crate) server_name: String,
    pub(crate) path: String,
    pub(crate) origin: Option<HeaderValue>,
    /// A POST socket idle longer than this is replaced rather than reused: the server closes
    /// idle sockets after its handshake deadline, and a POST racing that close is lost.
    pub(crate) max_idle: Duration,
}

type Sender = SendRequest<Full<Bytes>>;

impl Dial {
    pub(crate) fn new(config: &ConnectorConfig, addr: SocketAddr) -> Result<Self, TransportError> {
        let origin = config
            .ws_origin
            .as_deref()
            .map(|origin| {
                HeaderValue::from_str(origin)
                    .map_err(|e| TransportError::Config(format!("Origin {origin:?}: {e}")))
            })
            .transpose()?;
        Ok(Self {
            addr,
            #[cfg(feature = "tls")]
            tls: None,
            server_name: config.server_name.clone(),
            path: config.http_path.clone(),
            origin,
            max_idle: config.handshake_timeout / 2,
        })
    }

    async fn socket(&self) -> Result<Sender, TransportError> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        #[cfg(feature = "tls")]
        let io = match &self.tls {
            Some(connector) => {
                let tls =
                    crate::tls::connect(connector, stream, &self.server_name, crate::ALPN_HTTP1)
                        .await?;
                MaybeTls::Tls(Box::new(tokio_rustls::TlsStream::Client(tls)))
            }
            None => MaybeTls::Plain(stream),
        };
        #[cfg(not(feature = "tls"))]
        let io = MaybeTls::Plain(stream);
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
                .await
                .map_err(hyper_error)?;
        // Ends when the socket closes or the sender is dropped.
        tokio::spawn(conn);
        Ok(sender)
    }

    fn request(
        &self,
        suffix: &str,
        id: Option<u128>,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, TransportError> {
        let authority = format!("{}:{}", self.server_name, self.addr.port());
        let mut request = Request::post(format!("{}{suffix}", self.path))
            .header(header::HOST, authority)
            .header(header::CONTENT_TYPE, CONTENT_TYPE);
        if let Some(id) = id {
            request = request.header(CONNECTION_HEADER, format!("{id:032x}"));
        }
        if let Some(origin) = &self.origin {
            request = request.header(header::ORIGIN, origin.clone());
        }
        request
            .body(Full::new(body))
            .map_err(|e| TransportError::Config(format!("HTTP request: {e}")))
    }
}

fn hyper_error(e: hyper::Error) -> TransportError {
    TransportError::Io(std::io::Error::other(e))
}

/// Opens a connection. The socket (TCP, TLS, HTTP/1.1) is set up here; the open request,
/// `POST {path}`, goes with the first frames the writer flushes (normally the `Hello`: one
/// round trip less), and its response is the stream. Later frames go out in POSTs from the
/// same task; the stream is read by another.
pub(crate) async fn connect(dial: Dial, max_frame: usize) -> Result<Io, TransportError> {
    let stream_socket = dial.socket().await?;
    let channel = Channel::new();
    tokio::spawn(run(dial, Arc::clone(&channel), stream_socket, max_frame));
    Ok(Io::Http(channel, Side::Client))
}

/// Ends a connection that never opened: the reader sees end of stream, the writer fails.
fn never_opened(channel: &Channel) {
    let mut state = channel.lock();
    state.down.finish(None);
    state.up.close_reader();
}

/// The connection's life on the client: open, then POSTs until the writer ends.
async fn run(dial: Dial, channel: Arc<Channel>, mut stream_socket: Sender, max_frame: usize) {
    let mut pending = BytesMut::new();
    if !take_queued(&channel, &mut pending).await {
        // The writer ended before sending anything: there is nothing to open.
        return;
    }
    let whole = whole_frames(&pending, usize::MAX).unwrap_or(0);
    let first = pending.split_to(whole).freeze();
    let opened = match dial.request("", None, first) {
        Ok(request) => stream_socket
            .send_request(request)
            .await
            .map_err(hyper_error),
        Err(e) => Err(e),
    };
    let response = match opened {
        Ok(response) if response.status() == StatusCode::OK => response,
        Ok(response) => {
            // Refused: its body is an `Error` frame saying why (e.g. `3002` at a limit),
            // which the reader gets as the connection's last frame, as on TCP.
            tracing::debug!(status = %response.status(), "HTTP open refused");
            let body = http_body_util::Limited::new(response.into_body(), max_frame.min(64 * 1024));
            if let Ok(body) = body.collect().await.map(|b| b.to_bytes()) {
                channel.lock().down.push(body);
            }
            return never_opened(&channel);
        }
        Err(e) => {
            tracing::debug!(error = %e, "HTTP open failed");
            return never_opened(&channel);
        }
    };
    let id = response
        .headers()
        .get(CONNECTION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| u128::from_str_radix(v, 16).ok());
    let Some(id) = id else {
        tracing::debug!("the HTTP response names no connection");
        return never_opened(&channel);
    };
    tokio::spawn(read_stream(
        response.into_body(),
        Arc::clone(&channel),
        stream_socket,
    ));
    send_posts(dial, channel, id, pending).await;
}

/// Waits for the writer's bytes and appends everything queued to `pending`; `false` once the
/// writer has ended.
async fn take_queued(channel: &Channel, pending: &mut BytesMut) -> bool {
    let next = std::future::poll_fn(|cx| channel.lock().up.poll_pop(cx)).await;
    let Ok(Some(chunk)) = next else {
        return false;
    };
    pending.extend_from_slice(&chunk);
    // Everything else queued meanwhile goes in the same request.
    let mut state = channel.lock();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    while let std::task::Poll::Ready(Ok(Some(chunk))) = state.up.poll_pop(&mut cx) {
        pending.extend_from_slice(&chunk);
    }
    true
}

/// The stream's body into the channel, at most [`CAPACITY`] bytes ahead of the reader.
async fn read_stream(mut body: hyper::body::Incoming, channel: Arc<Channel>, _socket: Sender) {
    loop {
        let room = std::future::poll_fn(|cx| channel.lock().down.poll_space(cx, CAPACITY)).await;
        if room.is_err() {
            // The reader is gone: dropping the body and the socket ends the stream.
            return;
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data()
                    && !channel.lock().down.push(data)
                {
                    return;
                }
            }
            // The end of the stream, or the socket died: the reader sees end of stream
            // (inside a frame: a truncated frame).
            Some(Err(_)) | None => break,
        }
    }
    channel.lock().down.finish(None);
}

/// The writer's bytes in POSTs, whole frames each, one POST at a time; the end of the
/// writer is a close request.
async fn send_posts(dial: Dial, channel: Arc<Channel>, id: u128, mut pending: BytesMut) {
    let mut socket: Option<(Sender, Instant)> = None;
    loop {
        let whole = whole_frames(&pending, usize::MAX).unwrap_or(0);
        if whole > 0 {
            let body = pending.split_to(whole).freeze();
            let sent = match dial.request("/send", Some(id), body) {
                Ok(request) => post(&dial, &mut socket, request).await,
                Err(e) => Err(e),
            };
            if !matches!(sent, Ok(StatusCode::NO_CONTENT)) {
                // The connection is over (the stream says why); later writes fail.
                tracing::debug!(?sent, "HTTP POST failed");
                channel.lock().up.close_reader();
                return;
            }
        }
        if !take_queued(&channel, &mut pending).await {
            // The writer ended: tell the server (it may be gone already; nothing to do then).
            if let Ok(request) = dial.request("/close", Some(id), Bytes::new()) {
                let _ = post(&dial, &mut socket, request).await;
            }
            return;
        }
    }
}

/// One POST on the kept-alive socket (replaced when idle too long or closed), retried once on
/// a fresh socket if it never left.
async fn post(
    dial: &Dial,
    socket: &mut Option<(Sender, Instant)>,
    mut request: Request<Full<Bytes>>,
) -> Result<StatusCode, TransportError> {
    for _ in 0..2 {
        let stale = socket
            .as_ref()
            .is_none_or(|(sender, used)| sender.is_closed() || used.elapsed() > dial.max_idle);
        if stale {
            *socket = Some((dial.socket().await?, Instant::now()));
        }
        let Some((sender, used)) = socket.as_mut() else {
            continue;
        };
        if sender.ready().await.is_err() {
            *socket = None;
            continue;
        }
        match sender.try_send_request(request).await {
            Ok(response) => {
                *used = Instant::now();
                let status = response.status();
                // Read the (empty) body so the socket can carry the next request.
                let _ = response.into_body().collect().await;
                return Ok(status);
            }
            Err(mut e) => {
                *socket = None;
                match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(hyper_error(e.into_error())),
                }
            }
        }
    }
    Err(TransportError::Io(std::io::ErrorKind::NotConnected.into()))
}
