//! The one connection type every transport yields.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use imgate_codec::{CloseCode, Frame, FrameDecoder, FrameEncoder};
use tokio::net::TcpStream;

use crate::TransportError;
use crate::limits::ConnGuard;
use crate::read::{FrameReader, ReadIo};
use crate::stats::TransportStats;
use crate::write::{EncodedFrame, FrameWriter, WriteIo};

/// The transports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// Plain TCP (development, or behind a TLS-terminating load balancer).
    Tcp,
    /// TCP + TLS 1.2/1.3, ALPN `imgate/1`.
    Tls,
    /// WebSocket over plain HTTP.
    Ws,
    /// WebSocket over TLS.
    Wss,
    /// QUIC, one bidirectional stream.
    Quic,
    /// The HTTP fallback over plain HTTP/1.1: frames down one long response, up in POSTs.
    Http,
    /// The HTTP fallback over TLS.
    Https,
}

impl TransportKind {
    /// Every transport.
    pub const ALL: [Self; 7] = [
        Self::Tcp,
        Self::Tls,
        Self::Ws,
        Self::Wss,
        Self::Quic,
        Self::Http,
        Self::Https,
    ];

    /// A stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
            Self::Quic => "quic",
            Self::Http => "http",
            Self::Https => "https",
        }
    }

    /// Whether the transport runs over TLS (and needs a certificate).
    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Tls | Self::Wss | Self::Quic | Self::Https)
    }

    /// Whether frames travel as WebSocket messages rather than a byte stream.
    pub fn is_websocket(self) -> bool {
        matches!(self, Self::Ws | Self::Wss)
    }

    /// Whether frames travel over the HTTP fallback (a long response down, POSTs up).
    pub fn is_http(self) -> bool {
        matches!(self, Self::Http | Self::Https)
    }

    /// The cargo feature of `imgate-transports` that compiles this transport in (`None`: TCP,
    /// always there).
    pub fn feature(self) -> Option<&'static str> {
        match self {
            Self::Tcp => None,
            Self::Tls => Some("tls"),
            Self::Ws => Some("ws"),
            Self::Wss => Some("wss"),
            Self::Quic => Some("quic"),
            Self::Http => Some("http"),
            Self::Https => Some("https"),
        }
    }

    /// Whether this build of `imgate-transports` includes the transport.
    pub fn is_available(self) -> bool {
        match self {
            Self::Tcp => true,
            Self::Tls => cfg!(feature = "tls"),
            Self::Ws => cfg!(feature = "ws"),
            Self::Wss => cfg!(all(feature = "ws", feature = "tls")),
            Self::Quic => cfg!(feature = "quic"),
            Self::Http => cfg!(feature = "http"),
            Self::Https => cfg!(all(feature = "http", feature = "tls")),
        }
    }

    /// A configuration error naming the feature if the transport is compiled out.
    pub(crate) fn check_available(self) -> Result<(), TransportError> {
        match self.feature() {
            Some(feature) if !self.is_available() => Err(TransportError::Config(format!(
                "transport {self} is not compiled in: enable the `{feature}` feature of \
                 imgate-transports"
            ))),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TransportKind {
    type Err = TransportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| TransportError::Config(format!("unknown transport {s:?}")))
    }
}

/// Facts about a connection, fixed at handshake time.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The transport.
    pub kind: TransportKind,
    /// The peer's address (for QUIC, the address at handshake time; it may migrate).
    pub peer: SocketAddr,
    /// The negotiated ALPN protocol, if the transport has one.
    pub alpn: Option<&'static str>,
    /// The server name the client asked for (TLS SNI), on the server side.
    pub sni: Option<Box<str>>,
}

/// What both halves of one connection share, in one allocation: the facts about it, its
/// place under the listener's limits, the listener's counters and, for plain TCP, the socket
/// itself. Keeping this cold state out of the halves keeps them a few pointers wide, so a
/// task parked in `recv()` stays small (tokio rounds every task up to 128-byte lines).
pub(crate) struct ConnCore {
    pub(crate) info: ConnInfo,
    /// The listener's counters (server side only).
    pub(crate) stats: Option<Arc<TransportStats>>,
    /// Plain TCP: the socket, read and written by both halves through `&TcpStream`. This
    /// replaces `TcpStream::into_split`, which costs its own `Arc` plus a boxed trait object
    /// per half.
    pub(crate) tcp: Option<TcpStream>,
    /// Bytes the writer may queue before the peer counts as a slow consumer.
    pub(crate) max_queued: usize,
    /// Released when both halves are gone (server side only).
    _guard: Option<ConnGuard>,
}

#[cfg(test)]
impl ConnCore {
    /// A connection with no socket, for unit tests of the halves.
    pub(crate) fn for_test(max_queued: usize) -> Arc<Self> {
        Arc::new(Self {
            info: ConnInfo {
                kind: TransportKind::Tcp,
                peer: SocketAddr::from(([127, 0, 0, 1], 1)),
                alpn: None,
                sni: None,
            },
            stats: None,
            tcp: None,
            max_queued,
            _guard: None,
        })
    }
}

/// A transport-level connection after its handshake, before it is split into halves.
pub(crate) enum Io {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP (client or server side).
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
    /// WebSocket over TCP or TLS.
    #[cfg(feature = "ws")]
    Ws(Box<crate::ws::WsStream>),
    /// The QUIC connection and its one bidirectional stream.
    #[cfg(feature = "quic")]
    Quic {
        conn: quinn::Connection,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    },
    /// An HTTP-fallback connection: its queues, read and written from this `side`.
    #[cfg(feature = "http")]
    Http(std::sync::Arc<crate::http::Channel>, crate::http::Side),
    /// One end of an in-memory pipe, framed as a byte stream.
    #[cfg(feature = "pipe")]
    Pipe(tokio::io::DuplexStream),
}

/// How a connection's halves are configured: shared codec settings, the outbound bound and,
/// on the server side, the listener's counters and the connection's place under its limits.
pub(crate) struct Setup {
    pub(crate) decoder: Arc<FrameDecoder>,
    pub(crate) encoder: Arc<FrameEncoder>,
    pub(crate) max_queued: usize,
    pub(crate) stats: Option<Arc<TransportStats>>,
    pub(crate) guard: Option<ConnGuard>,
}

/// A framed connection: moves codec [`Frame`]s over any transport.
///
/// Use it whole ([`FramedConn::recv`], [`FramedConn::send`]) or [`FramedConn::split`] it into a
/// [`FrameReader`] and a [`FrameWriter`] to read and write from one `select!` loop.
pub struct FramedConn {
    reader: FrameReader,
    writer: FrameWriter,
}

impl fmt::Debug for FramedConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FramedConn")
            .field("info", self.info())
            .finish_non_exhaustive()
    }
}

impl FramedConn {
    /// Splits a handshaken connection into its halves.
    pub(crate) fn new(io: Io, info: ConnInfo, setup: Setup) -> Self {
        let Setup {
            decoder,
            encoder,
            max_queued,
            stats,
            guard,
        } = setup;
        let (read, write, tcp) = match io {
            Io::Tcp(stream) => (ReadIo::Tcp, WriteIo::Tcp, Some(stream)),
            #[cfg(feature = "tls")]
            Io::Tls(stream) => {
                let (read, write) = tokio::io::split(*stream);
                (ReadIo::tls(read), WriteIo::tls(write), None)
            }
            #[cfg(feature = "ws")]
            Io::Ws(stream) => {
                let (sink, stream) = futures_util::StreamExt::split(*stream);
                (ReadIo::ws(stream), WriteIo::ws(sink), None)
            }
            #[cfg(feature = "quic")]
            Io::Quic { conn, send, recv } => (ReadIo::quic(recv), WriteIo::quic(send, conn), None),
            #[cfg(feature = "http")]
            Io::Http(channel, side) => (
                ReadIo::http(Arc::clone(&channel), side),
                WriteIo::http(channel, side),
                None,
            ),
            #[cfg(feature = "pipe")]
            Io::Pipe(stream) => {
                let (read, write) = tokio::io::split(stream);
                (ReadIo::pipe(read), WriteIo::pipe(write), None)
            }
        };
        let core = Arc::new(ConnCore {
            info,
            stats,
            tcp,
            max_queued,
            _guard: guard,
        });
        Self {
            reader: FrameReader::new(Arc::clone(&core), read, decoder),
            writer: FrameWriter::new(core, write, encoder),
        }
    }

    /// Facts about the connection.
    pub fn info(&self) -> &ConnInfo {
        self.reader.info()
    }

    /// The next frame; see [`FrameReader::recv`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: see [`FrameReader::recv`].
    pub fn recv(
        &mut self,
    ) -> impl Future<Output = Result<Option<Frame>, TransportError>> + Send + '_ {
        self.reader.recv()
    }

    /// Queues `frame` and flushes; see [`FrameWriter::send`].
    pub async fn send(&mut self, frame: &Frame) -> Result<(), TransportError> {
        self.writer.send(frame).await
    }

    /// Queues a frame encoded once for many connections; see [`FrameWriter::queue_encoded`].
    pub fn queue_encoded(&mut self, frame: &EncodedFrame) -> Result<(), TransportError> {
        self.writer.queue_encoded(frame)
    }

    /// Writes everything queued; see [`FrameWriter::flush`].
    pub fn flush(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send + '_ {
        self.writer.flush()
    }

    /// Sends `code` (and `reason`) to the peer and closes; see [`FrameWriter::close`].
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), TransportError> {
        self.writer.close(code, reason).await
    }

    /// The reader half.
    pub fn reader(&mut self) -> &mut FrameReader {
        &mut self.reader
    }

    /// The writer half.
    pub fn writer(&mut self) -> &mut FrameWriter {
        &mut self.writer
    }

    /// Splits into halves that can be used concurrently (e.g. in one `select!` loop, or the
    /// writer in another task). The connection's place under the listener's limits is held
    /// until both halves are dropped.
    pub fn split(self) -> (FrameReader, FrameWriter) {
        (self.reader, self.writer)
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use super::*;

    /// An idle connection is mostly its task, and the task stores both halves (an `async fn`
    /// that takes them as arguments even stores them twice): keep them a few words wide,
    /// with everything cold behind the shared `ConnCore`.
    #[test]
    fn idle_halves_stay_a_few_words_wide() {
        let word = size_of::<usize>();
        assert!(size_of::<FrameReader>() <= 4 * word);
        assert!(size_of::<FrameWriter>() <= 5 * word);
        let mut reader = FrameReader::new(ConnCore::for_test(0), ReadIo::Tcp, Arc::default());
        let recv = reader.recv();
        assert_eq!(size_of_val(&recv), word, "recv() future");
        let mut writer = FrameWriter::new(ConnCore::for_test(0), WriteIo::Tcp, Arc::default());
        let flush = writer.flush();
        assert_eq!(size_of_val(&flush), word, "flush() future");
    }
}
