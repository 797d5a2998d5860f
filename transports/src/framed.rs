//! The one connection type every transport yields.

use std::fmt;
use std::net::SocketAddr;

use imgate_codec::{CloseCode, Frame};

use crate::TransportError;
use crate::read::FrameReader;
use crate::write::{EncodedFrame, FrameWriter};

/// The five transports.
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
}

impl TransportKind {
    /// Every transport.
    pub const ALL: [Self; 5] = [Self::Tcp, Self::Tls, Self::Ws, Self::Wss, Self::Quic];

    /// A stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
            Self::Quic => "quic",
        }
    }

    /// Whether the transport runs over TLS (and needs a certificate).
    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Tls | Self::Wss | Self::Quic)
    }

    /// Whether frames travel as WebSocket messages rather than a byte stream.
    pub fn is_websocket(self) -> bool {
        matches!(self, Self::Ws | Self::Wss)
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
    pub(crate) fn new(reader: FrameReader, writer: FrameWriter) -> Self {
        Self { reader, writer }
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
    pub async fn recv(&mut self) -> Result<Option<Frame>, TransportError> {
        self.reader.recv().await
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
    pub async fn flush(&mut self) -> Result<(), TransportError> {
        self.writer.flush().await
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
    /// writer in another task). The connection's place under the listener's limits is held by
    /// the reader and released when it is dropped.
    pub fn split(self) -> (FrameReader, FrameWriter) {
        (self.reader, self.writer)
    }
}
