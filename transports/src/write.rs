//! The writer half: frames queued, then written together.
//!
//! Flush policy: [`FrameWriter::send`] queues and flushes at once, so a frame on an idle
//! connection leaves in one write with no added latency. Frames queued while a flush is
//! pending (socket full, or the caller is busy in another `select!` branch) pile up in the
//! queue and leave together in the next write: small frames are encoded back to back into
//! one buffer, large shared ones go as their own slices of one vectored write.

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use imgate_codec::{CloseCode, CodecError, Frame, FrameEncoder, LENGTH_PREFIX_LEN};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use crate::TransportError;
use crate::framed::ConnCore;

/// Largest flush after which a held outbound queue is kept (see `FrameWriter::hold_buffers`).
const HOLD_AT_MOST: usize = 4096;

/// How long `close` waits for queued bytes (and the close itself) to reach the peer.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// Pre-encoded frames up to this size are copied into the coalescing buffer; larger ones
/// are written from their shared buffer without a copy.
const COPY_THRESHOLD: usize = 1024;
/// At most this many slices per vectored write.
const MAX_SLICES: usize = 64;

/// A frame encoded once (stream framing: length prefix, flags, body) and shared by every
/// connection it is sent to, whatever their transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedFrame(Bytes);

impl EncodedFrame {
    /// Encodes `frame` with `encoder` (its limit and compression).
    pub fn encode(encoder: &FrameEncoder, frame: &Frame) -> Result<Self, TransportError> {
        let mut buf = BytesMut::new();
        encoder.encode_stream(frame, &mut buf)?;
        Ok(Self(buf.freeze()))
    }

    /// The encoded bytes, length prefix included.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Flags byte + body: the frame's size as the peer's limit counts it.
    pub fn frame_len(&self) -> usize {
        self.0.len().saturating_sub(LENGTH_PREFIX_LEN)
    }
}

/// Sends frames on one connection.
///
/// Five words wide: the connection's shared state (for TCP, the socket), the transport
/// (nothing for TCP), the encoder, the outbound queue (`None` while idle) and a flag.
pub struct FrameWriter {
    core: Arc<ConnCore>,
    io: WriteIo,
    /// Shared by every connection of a listener until one changes it (copy on write).
    encoder: Arc<FrameEncoder>,
    /// Created by the first queued frame and dropped once everything is written (unless
    /// `hold`), so an idle connection pays one pointer for its outbound queue.
    out: Option<Box<Outbound>>,
    closed: bool,
    /// Keep the emptied queue after a flush: see [`FrameWriter::hold_buffers`].
    hold: bool,
}

/// Bytes waiting for the socket.
#[derive(Default)]
struct Outbound {
    /// Wire-ready chunks in order; `tail` comes after all of them.
    queue: VecDeque<Bytes>,
    /// Small frames encoded back to back (byte streams only).
    tail: BytesMut,
    queued: usize,
    /// Most bytes seen queued at the start of a flush since the last completed one: what the
    /// buffers had to hold, even if the flush took several polls.
    peak: usize,
}

/// Where a writer's bytes go.
pub(crate) enum WriteIo {
    /// Plain TCP: the socket in the connection's `ConnCore`.
    Tcp,
    /// Every other transport, boxed so that it does not widen the plain-TCP writer.
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
    Other(Box<OtherWrite>),
}

/// The write side of the transports other than plain TCP.
pub(crate) enum OtherWrite {
    /// TLS.
    #[cfg(feature = "tls")]
    Tls(tokio::io::WriteHalf<tokio_rustls::TlsStream<TcpStream>>),
    /// The QUIC stream, and its connection to close with a code.
    #[cfg(feature = "quic")]
    Quic {
        send: quinn::SendStream,
        conn: quinn::Connection,
    },
    /// WebSocket.
    #[cfg(feature = "ws")]
    Ws(WsSink),
    /// The HTTP fallback: bytes for the long response (server) or for POSTs (client).
    #[cfg(feature = "http")]
    Http(crate::http::HttpWrite),
    /// Any byte stream: the in-memory pipe (feature `pipe`) and unit tests.
    #[cfg(any(feature = "pipe", test))]
    Pipe(Pin<Box<dyn AsyncWrite + Send>>),
}

#[cfg(feature = "ws")]
type WsSink =
    futures_util::stream::SplitSink<crate::ws::WsStream, tokio_tungstenite::tungstenite::Message>;

impl WriteIo {
    #[cfg(feature = "tls")]
    pub(crate) fn tls(write: tokio::io::WriteHalf<tokio_rustls::TlsStream<TcpStream>>) -> Self {
        Self::Other(Box::new(OtherWrite::Tls(write)))
    }

    #[cfg(feature = "quic")]
    pub(crate) fn quic(send: quinn::SendStream, conn: quinn::Connection) -> Self {
        Self::Other(Box::new(OtherWrite::Quic { send, conn }))
    }

    #[cfg(feature = "ws")]
    pub(crate) fn ws(sink: WsSink) -> Self {
        Self::Other(Box::new(OtherWrite::Ws(sink)))
    }

    #[cfg(feature = "pipe")]
    pub(crate) fn pipe(write: tokio::io::WriteHalf<tokio::io::DuplexStream>) -> Self {
        Self::Other(Box::new(OtherWrite::Pipe(Box::pin(write))))
    }

    #[cfg(feature = "http")]
    pub(crate) fn http(channel: Arc<crate::http::Channel>, side: crate::http::Side) -> Self {
        Self::Other(Box::new(OtherWrite::Http(crate::http::HttpWrite {
            channel,
            side,
        })))
    }

    /// Whether frames go out as WebSocket messages (no length prefix).
    fn is_ws(&self) -> bool {
        match self {
            #[cfg(feature = "ws")]
            Self::Other(other) => matches!(**other, OtherWrite::Ws(_)),
            _ => false,
        }
    }
}

impl fmt::Debug for FrameWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameWriter")
            .field("queued", &self.queued_bytes())
            .field("max_queued", &self.core.max_queued)
            .finish_non_exhaustive()
    }
}

impl FrameWriter {
    pub(crate) fn new(core: Arc<ConnCore>, io: WriteIo, encoder: Arc<FrameEncoder>) -> Self {
        Self {
            core,
            io,
            encoder,
            out: None,
            closed: false,
            hold: false,
        }
    }

    /// While `hold` is set, a completed flush keeps the emptied outbound queue (and its
    /// buffer) for the next frames instead of freeing it, unless that flush wrote more than
    /// 4 KiB (a burst's buffer is not worth keeping); clearing it frees an empty queue at
    /// once. Off by default, so an idle connection holds no write buffer. A connection whose
    /// frames are flowing sets it to save an allocation and a free per flush, and clears it
    /// when it expects to go quiet.
    pub fn hold_buffers(&mut self, hold: bool) {
        self.hold = hold;
        if !hold && self.queued_bytes() == 0 {
            self.out = None;
        }
    }

    /// The encoder (the peer's frame limit, compression).
    pub fn encoder(&self) -> &FrameEncoder {
        &self.encoder
    }

    /// The encoder, to change (copied from the listener's shared one on the first change).
    /// Switch compression on here once the protocol handshake allows it, and lower the frame
    /// limit to the one the peer announced.
    pub fn encoder_mut(&mut self) -> &mut FrameEncoder {
        Arc::make_mut(&mut self.encoder)
    }

    /// Bytes queued and not yet handed to the socket.
    pub fn queued_bytes(&self) -> usize {
        self.out.as_ref().map_or(0, |out| out.queued)
    }

    /// Queues `frame` without writing. Fails with [`TransportError::SlowConsumer`] when the
    /// queue would exceed its bound (the frame is then not queued), or with a codec error if
    /// the frame exceeds the peer's limit.
    pub fn queue(&mut self, frame: &Frame) -> Result<(), TransportError> {
        if self.io.is_ws() {
            let message = self.encoder.encode_message(frame)?;
            return self.push(message);
        }
        let max_queued = self.core.max_queued;
        let out = self.out.get_or_insert_with(Box::default);
        let before = out.tail.len();
        self.encoder.encode_stream(frame, &mut out.tail)?;
        let added = out.tail.len() - before;
        if out.queued + added > max_queued {
            out.tail.truncate(before);
            return Err(TransportError::SlowConsumer { limit: max_queued });
        }
        out.queued += added;
        Ok(())
    }

    /// Queues a frame encoded once for many connections, without re-encoding it (and, when
    /// large, without copying it).
    pub fn queue_encoded(&mut self, frame: &EncodedFrame) -> Result<(), TransportError> {
        if frame.frame_len() > self.encoder.max_frame() {
            return Err(CodecError::FrameTooLarge {
                declared: frame.frame_len(),
                limit: self.encoder.max_frame(),
            }
            .into());
        }
        let bytes = frame.as_bytes();
        match self.io {
            _ if self.io.is_ws() => self.push(bytes.slice(LENGTH_PREFIX_LEN..)),
            _ if bytes.len() <= COPY_THRESHOLD => {
                let out = self.room(bytes.len())?;
                out.tail.extend_from_slice(bytes);
                out.queued += bytes.len();
                Ok(())
            }
            _ => {
                let out = self.room(bytes.len())?;
                if !out.tail.is_empty() {
                    // Keep order: what was encoded so far goes before this frame.
                    let encoded = out.tail.split().freeze();
                    out.queue.push_back(encoded);
                }
                out.queued += bytes.len();
                out.queue.push_back(bytes.clone());
                Ok(())
            }
        }
    }

    /// The outbound queue, if `len` more bytes fit under the bound.
    fn room(&mut self, len: usize) -> Result<&mut Outbound, TransportError> {
        if self.queued_bytes() + len > self.core.max_queued {
            return Err(TransportError::SlowConsumer {
                limit: self.core.max_queued,
            });
        }
        Ok(self.out.get_or_insert_with(Box::default))
    }

    fn push(&mut self, chunk: Bytes) -> Result<(), TransportError> {
        let out = self.room(chunk.len())?;
        out.queued += chunk.len();
        out.queue.push_back(chunk);
        Ok(())
    }

    /// Queues `frame` and writes everything queued.
    ///
    /// # Cancel safety
    ///
    /// If cancelled, the frame stays queued and goes out with the next flush.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), TransportError> {
        self.queue(frame)?;
        self.flush().await
    }

    /// Writes everything queued, in as few writes as the transport allows.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: unwritten bytes stay queued, so `flush` can be a `select!` branch
    /// (guarded by `queued_bytes() > 0`) while more frames are queued from other branches.
    pub fn flush(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send + '_ {
        // A bare `poll_fn` (one pointer), as for `recv`: a task's future is as large as its
        // largest await point, so a flush must not widen a parked connection task.
        poll_fn(move |cx| self.poll_flush(cx))
    }

    /// Polls [`FrameWriter::flush`].
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        let Some(out) = self.out.as_deref_mut() else {
            return Poll::Ready(Ok(()));
        };
        out.peak = out.peak.max(out.queued);
        let result = match &mut self.io {
            WriteIo::Tcp => match &self.core.tcp {
                Some(tcp) => ready!(poll_write_stream(&mut TcpSink(tcp), out, cx))
                    .map_err(TransportError::from_io),
                // Not reachable: only plain TCP connections are built with `WriteIo::Tcp`,
                // and they always carry their socket.
                None => Err(TransportError::Io(io::ErrorKind::NotConnected.into())),
            },
            WriteIo::Other(other) => ready!(poll_flush_other(other, out, cx)),
        };
        if result.is_ok() {
            match self.out.as_deref_mut() {
                Some(out) if self.hold && out.peak <= HOLD_AT_MOST => out.peak = 0,
                // Idle connections hold no write buffers, and a burst's large one is not kept.
                _ => self.out = None,
            }
        }
        Poll::Ready(result)
    }

    /// Tells the peer why and closes: byte streams get an `Error{code, reason}` frame (unless
    /// `code` is `NORMAL`) then end of stream; WebSocket also gets a close frame carrying the
    /// code; QUIC closes the connection with the code as application error. Waits at most
    /// about a second for the peer to receive it.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), TransportError> {
        if !self.closed && code != CloseCode::NORMAL {
            // A full queue means the peer is not reading anyway; close without the frame.
            let _ = self.queue(&imgate_codec::Error::new(code, reason).into());
        }
        self.finish(code, reason).await
    }

    /// Closes after the caller queued its own last frame (an `Error` or a `GoAway`): flushes
    /// what is queued, then ends the transport with `code` as [`FrameWriter::close`] does
    /// (QUIC application close code, WebSocket close status mapped from it), adding no frame.
    pub async fn finish(&mut self, code: CloseCode, reason: &str) -> Result<(), TransportError> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let flushed = tokio::time::timeout(CLOSE_LINGER, self.flush()).await;
        match &mut self.io {
            WriteIo::Tcp => self.shutdown_tcp(),
            WriteIo::Other(other) => close_other(other, code, reason).await,
        }
        match flushed {
            Ok(result) => result,
            Err(_) => Err(TransportError::Io(io::ErrorKind::TimedOut.into())),
        }
    }

    /// Sends FIN on a plain TCP connection (the reader half may still be reading).
    fn shutdown_tcp(&self) {
        if let Some(tcp) = &self.core.tcp {
            // Fails only if the socket is already gone, which is what we wanted anyway.
            let _ = socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Write);
        }
    }
}

impl Drop for FrameWriter {
    fn drop(&mut self) {
        // A dropped writer ends the outbound stream even while the reader half lives on, as
        // `TcpStream::into_split`'s write half does (the socket itself is shared).
        if matches!(self.io, WriteIo::Tcp) && !self.closed {
            self.shutdown_tcp();
        }
    }
}

#[cfg_attr(
    not(any(
        feature = "tls",
        feature = "ws",
        feature = "http",
        feature = "pipe",
        test
    )),
    allow(unused_variables)
)]
fn poll_flush_other(
    other: &mut OtherWrite,
    out: &mut Outbound,
    cx: &mut Context<'_>,
) -> Poll<Result<(), TransportError>> {
    // `*other` with `ref mut` bindings: still a valid match when no variant is compiled in.
    match *other {
        #[cfg(feature = "tls")]
        OtherWrite::Tls(ref mut write) => {
            poll_write_stream(&mut Pin::new(write), out, cx).map_err(TransportError::from_io)
        }
        #[cfg(feature = "quic")]
        OtherWrite::Quic { ref mut send, .. } => {
            poll_write_stream(&mut Pin::new(send), out, cx).map_err(TransportError::from_io)
        }
        #[cfg(feature = "ws")]
        OtherWrite::Ws(ref mut sink) => poll_write_ws(sink, out, cx),
        #[cfg(feature = "http")]
        OtherWrite::Http(ref mut write) => {
            poll_write_stream(&mut Pin::new(write), out, cx).map_err(TransportError::from_io)
        }
        #[cfg(any(feature = "pipe", test))]
        OtherWrite::Pipe(ref mut write) => {
            poll_write_stream(&mut write.as_mut(), out, cx).map_err(TransportError::from_io)
        }
    }
}

/// The transport half of [`FrameWriter::close`]: end of stream, a WebSocket close frame, or
/// a QUIC `CONNECTION_CLOSE` carrying `code`.
#[cfg_attr(not(any(feature = "quic", feature = "ws")), allow(unused_variables))]
async fn close_other(other: &mut OtherWrite, code: CloseCode, reason: &str) {
    match *other {
        #[cfg(feature = "tls")]
        OtherWrite::Tls(ref mut write) => {
            // close_notify, then FIN.
            let _ =
                tokio::time::timeout(CLOSE_LINGER, tokio::io::AsyncWriteExt::shutdown(write)).await;
        }
        #[cfg(feature = "quic")]
        OtherWrite::Quic {
            ref mut send,
            ref conn,
        } => {
            let _ = send.finish();
            // Wait until the peer has the Error frame: closing the connection at once
            // would discard it.
            let _ = tokio::time::timeout(CLOSE_LINGER, send.stopped()).await;
            conn.close(quinn::VarInt::from(code.0), reason.as_bytes());
        }
        #[cfg(feature = "ws")]
        OtherWrite::Ws(ref mut sink) => {
            use futures_util::SinkExt;
            let frame = crate::ws::close_frame(code, reason);
            let message = tokio_tungstenite::tungstenite::Message::Close(Some(frame));
            let _ = tokio::time::timeout(CLOSE_LINGER, sink.send(message)).await;
        }
        #[cfg(feature = "http")]
        OtherWrite::Http(ref mut write) => {
            // End of the stream (server: the long response ends once its reader has read
            // it; client: the server is told with a close request).
            let _ = tokio::io::AsyncWriteExt::shutdown(write).await;
        }
        #[cfg(any(feature = "pipe", test))]
        OtherWrite::Pipe(ref mut write) => {
            let _ = tokio::io::AsyncWriteExt::shutdown(write).await;
        }
    }
}

/// A byte stream that takes vectored writes.
trait ByteSink {
    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>>;

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// The shared plain-TCP socket.
struct TcpSink<'a>(&'a TcpStream);

impl ByteSink for TcpSink<'_> {
    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(slices) {
                // Readiness was stale; `try_write_vectored` cleared it, so poll again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // TCP has no user-space buffer to flush.
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + ?Sized> ByteSink for Pin<&mut W> {
    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.as_mut().poll_write_vectored(cx, slices)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.as_mut().poll_flush(cx)
    }
}

fn poll_write_stream(
    io: &mut impl ByteSink,
    out: &mut Outbound,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    let Outbound {
        queue,
        tail,
        queued,
        ..
    } = out;
    while !queue.is_empty() || !tail.is_empty() {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let mut count = 0;
        for chunk in queue.iter().take(MAX_SLICES) {
            slices[count] = IoSlice::new(chunk);
            count += 1;
        }
        if count < MAX_SLICES && !tail.is_empty() {
            slices[count] = IoSlice::new(tail);
            count += 1;
        }
        let mut written = ready!(io.poll_write_vectored(cx, &slices[..count]))?;
        if written == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        *queued = queued.saturating_sub(written);
        while written > 0 {
            match queue.front_mut() {
                Some(front) if front.len() <= written => {
                    written -= front.len();
                    queue.pop_front();
                }
                Some(front) => {
                    front.advance(written);
                    written = 0;
                }
                None => {
                    tail.advance(written.min(tail.len()));
                    written = 0;
                }
            }
        }
    }
    io.poll_flush(cx)
}

#[cfg(feature = "ws")]
fn poll_write_ws(
    sink: &mut WsSink,
    out: &mut Outbound,
    cx: &mut Context<'_>,
) -> Poll<Result<(), TransportError>> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let Outbound { queue, queued, .. } = out;
    while !queue.is_empty() {
        ready!(sink.poll_ready_unpin(cx))?;
        if let Some(message) = queue.pop_front() {
            *queued = queued.saturating_sub(message.len());
            // tungstenite appends to its write buffer; the flush below writes them together.
            sink.start_send_unpin(Message::Binary(message))?;
        }
    }
    ready!(sink.poll_flush_unpin(cx))?;
    Poll::Ready(Ok(()))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Accepts everything, counting write calls.
    struct CountingWriter {
        writes: Arc<AtomicUsize>,
        bytes: Arc<AtomicUsize>,
    }

    impl AsyncWrite for CountingWriter {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(buf.len(), Ordering::Relaxed);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let len = bufs.iter().map(|b| b.len()).sum();
            self.writes.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(len, Ordering::Relaxed);
            Poll::Ready(Ok(len))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn queued_frames_leave_in_one_write_and_buffers_are_released() {
        let writes = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(AtomicUsize::new(0));
        let io = CountingWriter {
            writes: Arc::clone(&writes),
            bytes: Arc::clone(&bytes),
        };
        let encoder = Arc::new(FrameEncoder::default());
        let mut writer = FrameWriter::new(
            ConnCore::for_test(1 << 20),
            WriteIo::Other(Box::new(OtherWrite::Pipe(Box::pin(io)))),
            Arc::clone(&encoder),
        );
        let small: Frame = imgate_codec::Ping::default().into();
        let shared = EncodedFrame::encode(
            &encoder,
            &imgate_codec::Deliver {
                payload: Bytes::from(vec![7; 4096]),
                ..Default::default()
            }
            .into(),
        )
        .expect("encode");
        for _ in 0..50 {
            writer.queue(&small).expect("queue");
        }
        writer.queue_encoded(&shared).expect("queue shared");
        for _ in 0..50 {
            writer.queue(&small).expect("queue");
        }
        let queued = writer.queued_bytes();
        writer.flush().await.expect("flush");
        assert_eq!(
            writes.load(Ordering::Relaxed),
            1,
            "one vectored write for 101 frames"
        );
        assert_eq!(bytes.load(Ordering::Relaxed), queued);
        assert_eq!(writer.queued_bytes(), 0);
        assert!(writer.out.is_none(), "an idle writer holds no queue");
        // Idle connection: the next frame goes out at once, alone.
        writer.send(&small).await.expect("send");
        assert_eq!(writes.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_held_queue_survives_flushes_and_is_freed_when_released() {
        let writes = Arc::new(AtomicUsize::new(0));
        let io = CountingWriter {
            writes: Arc::clone(&writes),
            bytes: Arc::default(),
        };
        let mut writer = FrameWriter::new(
            ConnCore::for_test(1 << 20),
            WriteIo::Other(Box::new(OtherWrite::Pipe(Box::pin(io)))),
            Arc::new(FrameEncoder::default()),
        );
        let frame: Frame = imgate_codec::Ping::default().into();
        let medium: Frame = imgate_codec::Deliver {
            payload: Bytes::from(vec![7; 2048]),
            ..Default::default()
        }
        .into();
        writer.hold_buffers(true);
        writer.send(&medium).await.expect("send");
        assert!(writer.out.is_some(), "held after the flush");
        assert_eq!(writer.queued_bytes(), 0);
        writer.send(&frame).await.expect("send");
        assert_eq!(writes.load(Ordering::Relaxed), 2, "each flush still writes");
        // A buffer made for the small frame would have no room left once it is written; the
        // 2 KiB one reused for it still has most of its room.
        let room = writer.out.as_ref().map_or(0, |out| out.tail.capacity());
        assert!(
            room > 1024,
            "the same buffer is reused (room left {room} B)"
        );
        writer.queue(&frame).expect("queue");
        writer.hold_buffers(false);
        assert!(writer.out.is_some(), "queued bytes are never dropped");
        writer.flush().await.expect("flush");
        assert!(writer.out.is_none(), "released once written");
        writer.hold_buffers(true);
        writer.send(&frame).await.expect("send");
        writer.hold_buffers(false);
        assert!(writer.out.is_none(), "an empty held queue is freed at once");
        writer.hold_buffers(true);
        let large: Frame = imgate_codec::Deliver {
            payload: Bytes::from(vec![7; HOLD_AT_MOST]),
            ..Default::default()
        }
        .into();
        writer.send(&large).await.expect("send");
        assert!(writer.out.is_none(), "a burst's buffer is not held");
    }

    /// Takes at most 1,000 bytes per call and is not ready every other call, like a socket
    /// whose buffer keeps filling up.
    struct ChoppyWriter {
        ready: bool,
    }

    impl AsyncWrite for ChoppyWriter {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.ready = !self.ready;
            if self.ready {
                Poll::Ready(Ok(buf.len().min(1000)))
            } else {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_burst_written_in_many_polls_is_not_held() {
        let mut writer = FrameWriter::new(
            ConnCore::for_test(1 << 20),
            WriteIo::Other(Box::new(OtherWrite::Pipe(Box::pin(ChoppyWriter {
                ready: false,
            })))),
            Arc::new(FrameEncoder::default()),
        );
        writer.hold_buffers(true);
        let small: Frame = imgate_codec::Ping::default().into();
        writer.send(&small).await.expect("send");
        assert!(writer.out.is_some(), "a small flush is held");
        let burst: Frame = imgate_codec::Deliver {
            payload: Bytes::from(vec![7; 32 * 1024]),
            ..Default::default()
        }
        .into();
        writer.send(&burst).await.expect("send");
        assert!(
            writer.out.is_none(),
            "a 32 KiB burst's buffer is released even though its last poll wrote little"
        );
        writer.send(&small).await.expect("send");
        assert!(writer.out.is_some(), "small flushes are held again");
    }

    #[tokio::test]
    async fn the_queue_is_bounded() {
        let io = CountingWriter {
            writes: Arc::default(),
            bytes: Arc::default(),
        };
        let mut writer = FrameWriter::new(
            ConnCore::for_test(100),
            WriteIo::Other(Box::new(OtherWrite::Pipe(Box::pin(io)))),
            Arc::default(),
        );
        let frame: Frame = imgate_codec::Deliver {
            payload: Bytes::from(vec![1; 60]),
            ..Default::default()
        }
        .into();
        writer.queue(&frame).expect("first fits");
        let err = writer.queue(&frame).expect_err("second does not");
        assert_eq!(err.close_code(), Some(CloseCode::SLOW_CONSUMER));
        assert!(writer.queued_bytes() <= 100);
    }
}
