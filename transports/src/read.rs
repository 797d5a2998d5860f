//! The reader half: bytes or WebSocket messages in, frames out, no buffer held while idle.

use std::cell::RefCell;
use std::fmt;
use std::future::poll_fn;
use std::io::{self, Read};
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use imgate_codec::{CodecError, Frame, FrameDecoder};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::framed::ConnCore;
use crate::stats::TransportStats;
use crate::{ConnInfo, TransportError};

/// Bytes read per `read` call into the per-thread scratch buffer. 16 KiB holds a whole TLS
/// record, so TLS reads do not split records.
const SCRATCH_LEN: usize = 16 * 1024;

thread_local! {
    // One read buffer per worker thread instead of one per connection: an idle connection
    // holds no read buffer at all. Borrowed only inside a synchronous `poll_read`, never
    // across an `.await`, so tasks sharing the thread never see each other's bytes.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_LEN].into_boxed_slice());
}

/// Receives frames from one connection.
///
/// Four pointers wide: the connection's shared state, the transport (nothing for TCP, whose
/// socket lives in the shared state), the decoder, and the bytes of a frame still arriving
/// (`None` while idle).
pub struct FrameReader {
    core: Arc<ConnCore>,
    io: ReadIo,
    /// Shared by every connection of a listener until one changes it (copy on write).
    decoder: Arc<FrameDecoder>,
    /// Bytes of a frame not yet complete: `None` (no allocation) between frames, sized for
    /// the pending frame by the decoder, and released once the frame is out.
    pending: Option<Box<BytesMut>>,
}

/// Where a reader's bytes come from.
pub(crate) enum ReadIo {
    /// Plain TCP: the socket in the connection's `ConnCore`.
    Tcp,
    /// Every other transport, boxed so that it does not widen the plain-TCP reader.
    #[cfg_attr(
        not(any(
            feature = "tls",
            feature = "ws",
            feature = "http",
            feature = "pipe",
            test
        )),
        allow(dead_code)
    )]
    Other(Box<OtherRead>),
}

/// The read side of the transports other than plain TCP.
pub(crate) enum OtherRead {
    /// TLS: length-prefixed frames.
    #[cfg(feature = "tls")]
    Tls(tokio::io::ReadHalf<tokio_rustls::TlsStream<TcpStream>>),
    /// The QUIC stream: length-prefixed frames.
    #[cfg(feature = "quic")]
    Quic(quinn::RecvStream),
    /// WebSocket: one binary message per frame.
    #[cfg(feature = "ws")]
    Ws(futures_util::stream::SplitStream<crate::ws::WsStream>),
    /// The HTTP fallback: length-prefixed frames from POST bodies (server) or the long
    /// response (client).
    #[cfg(feature = "http")]
    Http(crate::http::HttpRead),
    /// Any byte stream: the in-memory pipe (feature `pipe`) and unit tests.
    #[cfg(any(feature = "pipe", test))]
    Pipe(std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>),
}

impl ReadIo {
    #[cfg(feature = "tls")]
    pub(crate) fn tls(read: tokio::io::ReadHalf<tokio_rustls::TlsStream<TcpStream>>) -> Self {
        Self::Other(Box::new(OtherRead::Tls(read)))
    }

    #[cfg(feature = "quic")]
    pub(crate) fn quic(recv: quinn::RecvStream) -> Self {
        Self::Other(Box::new(OtherRead::Quic(recv)))
    }

    #[cfg(feature = "ws")]
    pub(crate) fn ws(stream: futures_util::stream::SplitStream<crate::ws::WsStream>) -> Self {
        Self::Other(Box::new(OtherRead::Ws(stream)))
    }

    #[cfg(feature = "pipe")]
    pub(crate) fn pipe(read: tokio::io::ReadHalf<tokio::io::DuplexStream>) -> Self {
        Self::Other(Box::new(OtherRead::Pipe(Box::pin(read))))
    }

    #[cfg(feature = "http")]
    pub(crate) fn http(channel: Arc<crate::http::Channel>, side: crate::http::Side) -> Self {
        Self::Other(Box::new(OtherRead::Http(crate::http::HttpRead {
            channel,
            side,
        })))
    }
}

impl fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameReader")
            .field("info", self.info())
            .field("max_frame", &self.decoder.max_frame())
            .finish_non_exhaustive()
    }
}

impl FrameReader {
    pub(crate) fn new(core: Arc<ConnCore>, io: ReadIo, decoder: Arc<FrameDecoder>) -> Self {
        Self {
            core,
            io,
            decoder,
            pending: None,
        }
    }

    /// Facts about the connection.
    pub fn info(&self) -> &ConnInfo {
        &self.core.info
    }

    /// The decoder (frame limit, dictionary, whether compressed frames are taken).
    pub fn decoder(&self) -> &FrameDecoder {
        &self.decoder
    }

    /// The decoder (frame limit, dictionary). Replace it after the protocol handshake to
    /// accept frames compressed with the dictionary this side issued.
    pub fn decoder_mut(&mut self) -> &mut FrameDecoder {
        Arc::make_mut(&mut self.decoder)
    }

    /// The next frame: `Ok(None)` when the peer closed cleanly (end of stream on a frame
    /// boundary, a normal WebSocket close, a finished QUIC stream).
    ///
    /// Errors are terminal: close the connection with [`TransportError::close_code`] (see
    /// `FrameWriter::close`) and drop it. WebSocket pings are answered inside this call.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: bytes already read stay in the reader, so using `recv` as a
    /// `tokio::select!` branch loses nothing when another branch wins.
    pub fn recv(
        &mut self,
    ) -> impl Future<Output = Result<Option<Frame>, TransportError>> + Send + '_ {
        // A bare `poll_fn` over `&mut self` (not an `async fn` wrapping it): the future a
        // parked connection task holds is one pointer, whatever the transport.
        poll_fn(move |cx| self.poll_recv(cx))
    }

    /// Polls for the next frame; the building block of [`FrameReader::recv`].
    pub fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Frame>, TransportError>> {
        let Self {
            core,
            io,
            decoder,
            pending,
        } = self;
        let result = ready!(match io {
            ReadIo::Tcp => match &core.tcp {
                Some(tcp) => poll_stream(pending, decoder, cx, |cx, buf| read_tcp(tcp, cx, buf)),
                // Not reachable: only plain TCP connections are built with `ReadIo::Tcp`,
                // and they always carry their socket.
                None => Poll::Ready(Err(TransportError::Io(io::ErrorKind::NotConnected.into()))),
            },
            ReadIo::Other(other) => poll_other(other, pending, decoder, cx),
        });
        if let (Err(e), Some(stats)) = (&result, &self.core.stats) {
            count_error(stats, e);
        }
        Poll::Ready(result)
    }
}

fn count_error(stats: &TransportStats, e: &TransportError) {
    match e {
        TransportError::Codec(CodecError::FrameTooLarge { .. })
        | TransportError::MessageTooLarge { .. } => {
            stats.incr(&stats.frame_too_large);
        }
        TransportError::UnsupportedData => stats.incr(&stats.unsupported_data),
        TransportError::Codec(CodecError::Io(_)) => {}
        TransportError::Codec(_) => stats.incr(&stats.protocol_error),
        #[cfg(feature = "ws")]
        TransportError::WebSocket(_) => stats.incr(&stats.protocol_error),
        _ => {}
    }
}

#[cfg_attr(
    not(any(feature = "tls", feature = "http", feature = "pipe", test)),
    allow(unused_variables)
)]
fn poll_other(
    other: &mut OtherRead,
    pending: &mut Option<Box<BytesMut>>,
    decoder: &FrameDecoder,
    cx: &mut Context<'_>,
) -> Poll<Result<Option<Frame>, TransportError>> {
    // `*other` with `ref mut` bindings: still a valid match when no variant is compiled in.
    match *other {
        #[cfg(feature = "tls")]
        OtherRead::Tls(ref mut read) => {
            poll_stream(pending, decoder, cx, |cx, buf| read_async(read, cx, buf))
        }
        #[cfg(feature = "quic")]
        OtherRead::Quic(ref mut recv) => {
            poll_stream(pending, decoder, cx, |cx, buf| read_async(recv, cx, buf))
        }
        #[cfg(feature = "ws")]
        OtherRead::Ws(ref mut stream) => poll_ws(stream, decoder, cx),
        #[cfg(feature = "http")]
        OtherRead::Http(ref mut read) => {
            poll_stream(pending, decoder, cx, |cx, buf| read.poll_read(cx, buf))
        }
        #[cfg(any(feature = "pipe", test))]
        OtherRead::Pipe(ref mut read) => {
            poll_stream(pending, decoder, cx, |cx, buf| read_async(read, cx, buf))
        }
    }
}

/// One read from the shared TCP socket.
///
/// Like tokio's own `TcpStream::poll_read`, a read that leaves room in the buffer proves the
/// socket drained (epoll is edge-triggered), so readiness is cleared at once: the next poll
/// waits for new data instead of spending a `recvfrom` to learn `EAGAIN`. On a connection
/// that sends one small frame at a time that is every other read syscall.
fn read_tcp(tcp: &TcpStream, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
    loop {
        ready!(tcp.poll_read_ready(cx))?;
        let mut read = None;
        // `try_io` clears readiness when its closure reports `WouldBlock`; a short read
        // reports it after keeping the count (tokio only clears if no newer event came in).
        let result = tcp.try_io(Interest::READABLE, || {
            let n = (&*socket2::SockRef::from(tcp)).read(buf)?;
            read = Some(n);
            if n > 0 && n < buf.len() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match (read, result) {
            (Some(n), _) => return Poll::Ready(Ok(n)),
            // Readiness was stale; `try_io` cleared it, so the next poll registers us.
            (None, Err(e)) if e.kind() == io::ErrorKind::WouldBlock => continue,
            (None, result) => return Poll::Ready(result),
        }
    }
}

/// One read from an `AsyncRead`.
#[cfg(any(feature = "tls", feature = "quic", feature = "pipe", test))]
fn read_async<R: tokio::io::AsyncRead + Unpin + ?Sized>(
    read: &mut R,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    let mut buf = tokio::io::ReadBuf::new(buf);
    ready!(std::pin::Pin::new(read).poll_read(cx, &mut buf))?;
    Poll::Ready(Ok(buf.filled().len()))
}

/// Length-prefixed frames from a byte stream; `read` fills a buffer from the transport.
fn poll_stream(
    pending: &mut Option<Box<BytesMut>>,
    decoder: &FrameDecoder,
    cx: &mut Context<'_>,
    mut read: impl FnMut(&mut Context<'_>, &mut [u8]) -> Poll<io::Result<usize>>,
) -> Poll<Result<Option<Frame>, TransportError>> {
    loop {
        if let Some(buf) = pending.as_deref_mut()
            && let Some(frame) = decoder.decode_stream(buf)?
        {
            if buf.is_empty() {
                // Drop our handle on the allocation: the frame's payload may still
                // share it, but an idle reader must not.
                *pending = None;
            }
            return Poll::Ready(Ok(Some(frame)));
        }
        let read = SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => read_into(&mut read, &mut scratch, pending, cx),
            // Only reachable if a `poll_read` below us re-entered a reader on this thread;
            // a temporary buffer keeps that correct instead of panicking.
            Err(_) => read_into(&mut read, &mut [0; 4096], pending, cx),
        });
        match ready!(read) {
            // End of stream: clean on a frame boundary, an error inside a frame.
            Ok(0) => {
                return Poll::Ready(match pending.as_deref_mut() {
                    Some(buf) => decoder.decode_stream_eof(buf).map_err(Into::into),
                    None => Ok(None),
                });
            }
            Ok(_) => {}
            Err(e) => return Poll::Ready(Err(TransportError::from_io(e))),
        }
    }
}

/// One read into `scratch`, appending what arrived to `pending`.
fn read_into(
    read: &mut impl FnMut(&mut Context<'_>, &mut [u8]) -> Poll<io::Result<usize>>,
    scratch: &mut [u8],
    pending: &mut Option<Box<BytesMut>>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let len = ready!(read(cx, scratch))?;
    if len > 0 {
        // Copy out before the scratch is released: exactly the bytes received.
        pending
            .get_or_insert_with(Box::default)
            .extend_from_slice(&scratch[..len]);
    }
    Poll::Ready(Ok(len))
}

#[cfg(feature = "ws")]
fn poll_ws(
    stream: &mut futures_util::stream::SplitStream<crate::ws::WsStream>,
    decoder: &FrameDecoder,
    cx: &mut Context<'_>,
) -> Poll<Result<Option<Frame>, TransportError>> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let message = match ready!(stream.poll_next_unpin(cx)) {
            None => return Poll::Ready(Ok(None)),
            Some(Err(e)) => return Poll::Ready(Err(e.into())),
            Some(Ok(message)) => message,
        };
        return Poll::Ready(match message {
            Message::Binary(bytes) => decoder.decode_message(bytes).map(Some).map_err(Into::into),
            Message::Text(_) => Err(TransportError::UnsupportedData),
            Message::Close(frame) => crate::ws::close_from_frame(frame.as_ref()),
            // tungstenite queues the pong itself and sends it on the next read or write.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        });
    }
}

#[cfg(test)]
mod tests {
    use imgate_codec::FrameEncoder;
    use tokio::io::AsyncWriteExt;

    use super::*;

    fn reader(io: tokio::io::DuplexStream) -> FrameReader {
        FrameReader::new(
            ConnCore::for_test(0),
            ReadIo::Other(Box::new(OtherRead::Pipe(Box::pin(io)))),
            Arc::default(),
        )
    }

    fn frame(seq: u64, len: usize) -> Frame {
        imgate_codec::Deliver {
            seq,
            payload: bytes::Bytes::from(vec![7; len]),
            ..Default::default()
        }
        .into()
    }

    #[tokio::test]
    async fn frames_split_anywhere_arrive_whole_and_idle_holds_no_buffer() {
        let (mut peer, io) = tokio::io::duplex(1 << 20);
        let mut reader = reader(io);
        let encoder = FrameEncoder::default();
        let mut wire = BytesMut::new();
        for seq in 0..3 {
            encoder
                .encode_stream(&frame(seq, 100 * seq as usize), &mut wire)
                .expect("encode");
        }
        // Two frames and a bit, then the rest: the reader keeps the partial frame only.
        let cut = wire.len() - 50;
        peer.write_all(&wire[..cut]).await.expect("write");
        assert_eq!(reader.recv().await.expect("recv"), Some(frame(0, 0)));
        assert_eq!(reader.recv().await.expect("recv"), Some(frame(1, 100)));
        assert!(reader.pending.is_some(), "the third frame is partly here");
        peer.write_all(&wire[cut..]).await.expect("write");
        assert_eq!(reader.recv().await.expect("recv"), Some(frame(2, 200)));
        assert!(reader.pending.is_none(), "an idle reader holds no buffer");
        drop(peer);
        assert_eq!(reader.recv().await.expect("clean end"), None);
    }

    #[tokio::test]
    async fn end_of_stream_inside_a_frame_is_an_error() {
        let (mut peer, io) = tokio::io::duplex(1024);
        let mut reader = reader(io);
        let mut wire = BytesMut::new();
        FrameEncoder::default()
            .encode_stream(&frame(1, 64), &mut wire)
            .expect("encode");
        peer.write_all(&wire[..10]).await.expect("write");
        drop(peer);
        let err = reader.recv().await.expect_err("truncated frame");
        assert!(
            matches!(err, TransportError::Codec(CodecError::UnexpectedEof(10))),
            "{err:?}"
        );
    }
}
