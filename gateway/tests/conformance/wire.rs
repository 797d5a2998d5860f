//! A third-party client of the wire protocol, written from docs/protocol.md alone: raw bytes
//! over each transport (§1, §2), protobuf from frame.proto, and what the transport itself
//! says when the server closes (QUIC application close code, WebSocket close status).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::{SinkExt, StreamExt};
use imgate_codec::{Frame, Kind};
use imgate_transports::TransportKind;
use prost::Message as _;
use rustls::RootCertStore;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// How long any single wait of the suite may take before the test fails.
pub(crate) const PATIENCE: Duration = Duration::from_secs(5);

/// A byte stream of either kind (TCP or TLS over TCP).
pub(crate) trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}

type Stream = Pin<Box<dyn ByteStream>>;

enum Io {
    /// TCP and TLS: length-prefixed frames (§2.1).
    Stream(Stream),
    /// QUIC: the one bidirectional stream (§1), length-prefixed.
    Quic {
        conn: quinn::Connection,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        _endpoint: quinn::Endpoint,
    },
    /// WS and WSS: one binary message per frame (§2.2).
    Ws(Box<WebSocketStream<Stream>>),
}

/// How the server ended the connection, as the transport shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// End of stream (TCP, TLS, a finished QUIC stream before the close arrived).
    Eof,
    /// The connection was reset or failed without a close.
    Broken(String),
    /// A WebSocket close frame.
    Ws { status: u16, reason: String },
    /// A QUIC `CONNECTION_CLOSE` with an application error code.
    Quic { code: u64 },
}

/// What the next read produced.
#[derive(Debug)]
pub(crate) enum Got {
    Frame(Frame),
    End(End),
}

/// One client connection.
pub(crate) struct Wire {
    pub(crate) kind: TransportKind,
    io: Io,
    buf: BytesMut,
    /// The longest frame received so far (flags byte + body), as a frame limit counts it.
    pub(crate) largest_frame: usize,
}

/// ALPN the TLS client offers.
#[derive(Clone, Copy)]
pub(crate) enum Alpn {
    /// What the transport calls for: `imgate/1` for TLS and QUIC, `http/1.1` for WSS.
    Proper,
    /// None at all.
    Omitted,
}

pub(crate) fn tls_client(
    roots: &RootCertStore,
    alpn: Option<&str>,
    tls13_only: bool,
) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider);
    let builder = if tls13_only {
        builder.with_protocol_versions(&[&rustls::version::TLS13])
    } else {
        builder.with_safe_default_protocol_versions()
    }
    .expect("versions");
    let mut config = builder
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    config.alpn_protocols = alpn
        .map(|p| vec![p.as_bytes().to_vec()])
        .unwrap_or_default();
    config
}

async fn tls(
    addr: SocketAddr,
    roots: &RootCertStore,
    alpn: Option<&str>,
) -> std::io::Result<Stream> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_client(roots, alpn, false)));
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    Ok(Box::pin(connector.connect(name, tcp).await?))
}

async fn websocket(stream: Stream, scheme: &str, addr: SocketAddr) -> WebSocketStream<Stream> {
    let mut request = format!("{scheme}://localhost:{}/ws", addr.port())
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "imgate.v1".parse().expect("header"),
    );
    let (ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("WebSocket upgrade");
    ws
}

impl Wire {
    /// Connects over `kind` and completes the transport handshake (QUIC: opens the stream).
    pub(crate) async fn connect(
        kind: TransportKind,
        addr: SocketAddr,
        roots: &RootCertStore,
    ) -> Self {
        Self::connect_with(kind, addr, roots, Alpn::Proper)
            .await
            .expect("transport handshake")
    }

    pub(crate) async fn connect_with(
        kind: TransportKind,
        addr: SocketAddr,
        roots: &RootCertStore,
        alpn: Alpn,
    ) -> Result<Self, String> {
        let proper = |p: &'static str| match alpn {
            Alpn::Proper => Some(p),
            Alpn::Omitted => None,
        };
        let io = match kind {
            TransportKind::Tcp => Io::Stream(Box::pin(
                TcpStream::connect(addr).await.map_err(|e| e.to_string())?,
            )),
            TransportKind::Tls => Io::Stream(
                tls(addr, roots, proper("imgate/1"))
                    .await
                    .map_err(|e| e.to_string())?,
            ),
            TransportKind::Ws => {
                let tcp: Stream =
                    Box::pin(TcpStream::connect(addr).await.map_err(|e| e.to_string())?);
                Io::Ws(Box::new(websocket(tcp, "ws", addr).await))
            }
            TransportKind::Wss => {
                let stream = tls(addr, roots, proper("http/1.1"))
                    .await
                    .map_err(|e| e.to_string())?;
                Io::Ws(Box::new(websocket(stream, "wss", addr).await))
            }
            TransportKind::Quic => {
                let tls = tls_client(roots, proper("imgate/1"), true);
                let crypto =
                    quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
                let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))
                    .expect("endpoint");
                endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
                let conn = endpoint
                    .connect(addr, "localhost")
                    .expect("connect")
                    .await
                    .map_err(|e| e.to_string())?;
                let (send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
                Io::Quic {
                    conn,
                    send,
                    recv,
                    _endpoint: endpoint,
                }
            }
            // The HTTP fallback has its own tests (tests/http_fallback.rs).
            TransportKind::Http | TransportKind::Https => {
                return Err(format!("{kind}: not a transport of this wire client"));
            }
        };
        Ok(Self {
            kind,
            io,
            buf: BytesMut::new(),
            largest_frame: 0,
        })
    }

    /// Sends `frame` with flags `0x00`.
    pub(crate) async fn send(&mut self, frame: &Frame) {
        let mut bytes = vec![0u8];
        frame.encode(&mut bytes).expect("encode");
        self.send_frame_bytes(&bytes).await;
    }

    /// Sends one frame given as flags byte + body: length-prefixed on a stream, one binary
    /// message on WebSocket.
    pub(crate) async fn send_frame_bytes(&mut self, frame: &[u8]) {
        match &mut self.io {
            Io::Ws(ws) => {
                let _ = ws.send(Message::Binary(frame.to_vec().into())).await;
            }
            _ => {
                let len = u32::try_from(frame.len()).expect("length");
                let mut bytes = len.to_be_bytes().to_vec();
                bytes.extend_from_slice(frame);
                self.send_raw(&bytes).await;
            }
        }
    }

    /// Raw bytes on a byte stream (TCP, TLS, the QUIC stream), e.g. a bare length prefix.
    pub(crate) async fn send_raw(&mut self, bytes: &[u8]) {
        // Write errors are ignored: the server may close first, and what it said is read next.
        match &mut self.io {
            Io::Stream(stream) => {
                let _ = stream.write_all(bytes).await;
                let _ = stream.flush().await;
            }
            Io::Quic { send, .. } => {
                let _ = send.write_all(bytes).await;
            }
            Io::Ws(_) => panic!("raw bytes need a byte stream"),
        }
    }

    /// A WebSocket message other than one binary frame.
    pub(crate) async fn send_ws(&mut self, message: Message) {
        match &mut self.io {
            Io::Ws(ws) => {
                let _ = ws.send(message).await;
            }
            _ => panic!("not a WebSocket"),
        }
    }

    /// The next frame, or how the connection ended.
    pub(crate) async fn next(&mut self) -> Got {
        tokio::time::timeout(PATIENCE, self.next_inner())
            .await
            .expect("the server answers or closes in time")
    }

    async fn next_inner(&mut self) -> Got {
        match &mut self.io {
            Io::Ws(ws) => match ws.next().await {
                None => Got::End(End::Eof),
                Some(Err(e)) => Got::End(End::Broken(e.to_string())),
                Some(Ok(Message::Binary(bytes))) => {
                    self.largest_frame = self.largest_frame.max(bytes.len());
                    Got::Frame(decode(&bytes))
                }
                Some(Ok(Message::Close(close))) => Got::End(match close {
                    Some(close) => End::Ws {
                        status: u16::from(close.code),
                        reason: close.reason.to_string(),
                    },
                    None => End::Ws {
                        status: 1005,
                        reason: String::new(),
                    },
                }),
                Some(Ok(other)) => panic!("unexpected WebSocket message {other:?}"),
            },
            _ => loop {
                if self.buf.len() >= 4 {
                    let len = u32::from_be_bytes(self.buf[..4].try_into().expect("4")) as usize;
                    if self.buf.len() >= 4 + len {
                        self.buf.advance(4);
                        let frame = self.buf.split_to(len);
                        self.largest_frame = self.largest_frame.max(len);
                        return Got::Frame(decode(&frame));
                    }
                }
                let mut chunk = [0u8; 16 * 1024];
                let read = match &mut self.io {
                    Io::Stream(stream) => stream.read(&mut chunk).await.map_err(|e| e.to_string()),
                    Io::Quic { recv, conn, .. } => match recv.read(&mut chunk).await {
                        Ok(Some(n)) => Ok(n),
                        Ok(None) => Ok(0),
                        Err(_) => return Got::End(quic_end(conn).await),
                    },
                    Io::Ws(_) => unreachable!("handled above"),
                };
                match read {
                    Ok(0) => {
                        if let Io::Quic { conn, .. } = &self.io {
                            return Got::End(quic_end(conn).await);
                        }
                        return Got::End(End::Eof);
                    }
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                    Err(e) => return Got::End(End::Broken(e)),
                }
            },
        }
    }

    /// The next frame, which must be there.
    pub(crate) async fn frame(&mut self) -> Kind {
        match self.next().await {
            Got::Frame(frame) => frame.kind.expect("kind"),
            Got::End(end) => panic!("expected a frame, the connection ended: {end:?}"),
        }
    }

    /// Reads until the connection ends; returns the frames seen and how it ended.
    pub(crate) async fn until_end(&mut self) -> (Vec<Kind>, End) {
        let mut frames = Vec::new();
        loop {
            match self.next().await {
                Got::Frame(frame) => frames.push(frame.kind.expect("kind")),
                Got::End(end) => return (frames, end),
            }
        }
    }
}

/// After the stream ends, the QUIC connection's close (it follows the stream's end).
async fn quic_end(conn: &quinn::Connection) -> End {
    match tokio::time::timeout(PATIENCE, conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(close)) => End::Quic {
            code: close.error_code.into_inner(),
        },
        Ok(other) => End::Broken(other.to_string()),
        Err(_) => End::Eof,
    }
}

/// A frame the server sent: flags must be 0 (this client never enables compression), the
/// body a `Frame` (§2.4).
fn decode(frame: &[u8]) -> Frame {
    assert_eq!(frame.first(), Some(&0), "uncompressed frame expected");
    Frame::decode(&frame[1..]).expect("valid protobuf from the server")
}
