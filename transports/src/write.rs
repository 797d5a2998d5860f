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
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use imgate_codec::{CloseCode, CodecError, Frame, FrameEncoder, LENGTH_PREFIX_LEN};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::TransportError;
use crate::ws::{WsStream, close_frame};

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
pub struct FrameWriter {
    inner: WriteInner,
    /// Shared by every connection of a listener until one changes it (copy on write).
    encoder: Arc<FrameEncoder>,
    /// Created by the first queued frame and dropped once everything is written, so an idle
    /// connection pays one pointer for its outbound queue.
    out: Option<Box<Outbound>>,
    max_queued: usize,
    closed: bool,
}

/// Bytes waiting for the socket.
#[derive(Default)]
struct Outbound {
    /// Wire-ready chunks in order; `tail` comes after all of them.
    queue: VecDeque<Bytes>,
    /// Small frames encoded back to back (byte streams only).
    tail: BytesMut,
    queued: usize,
}

pub(crate) enum WriteInner {
    /// TCP or TLS.
    Stream(Pin<Box<dyn AsyncWrite + Send>>),
    /// The QUIC stream, and its connection to close with a code.
    Quic {
        send: quinn::SendStream,
        conn: quinn::Connection,
    },
    /// WebSocket.
    Ws(SplitSink<WsStream, Message>),
}

impl fmt::Debug for FrameWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameWriter")
            .field("queued", &self.queued_bytes())
            .field("max_queued", &self.max_queued)
            .finish_non_exhaustive()
    }
}

impl FrameWriter {
    pub(crate) fn new(inner: WriteInner, encoder: Arc<FrameEncoder>, max_queued: usize) -> Self {
        Self {
            inner,
            encoder,
            out: None,
            max_queued,
            closed: false,
        }
    }

    /// The encoder (the peer's frame limit, compression). Switch compression on here once the
    /// protocol handshake allows it.
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
        if let WriteInner::Ws(_) = self.inner {
            let message = self.encoder.encode_message(frame)?;
            return self.push(message);
        }
        let max_queued = self.max_queued;
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
        match self.inner {
            WriteInner::Ws(_) => self.push(bytes.slice(LENGTH_PREFIX_LEN..)),
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
        if self.queued_bytes() + len > self.max_queued {
            return Err(TransportError::SlowConsumer {
                limit: self.max_queued,
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
    pub async fn flush(&mut self) -> Result<(), TransportError> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// Polls [`FrameWriter::flush`].
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        let Some(out) = self.out.as_deref_mut() else {
            return Poll::Ready(Ok(()));
        };
        let result = match &mut self.inner {
            WriteInner::Stream(io) => {
                ready!(poll_write_stream(io.as_mut(), out, cx)).map_err(TransportError::from_io)
            }
            WriteInner::Quic { send, .. } => {
                ready!(poll_write_stream(Pin::new(send), out, cx)).map_err(TransportError::from_io)
            }
            WriteInner::Ws(sink) => ready!(poll_write_ws(sink, out, cx)),
        };
        if result.is_ok() {
            // Idle connections hold no write buffers.
            self.out = None;
        }
        Poll::Ready(result)
    }

    /// Tells the peer why and closes: byte streams get an `Error{code, reason}` frame (unless
    /// `code` is `NORMAL`) then end of stream; WebSocket also gets a close frame carrying the
    /// code; QUIC closes the connection with the code as application error. Waits at most
    /// about a second for the peer to receive it.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), TransportError> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        if code != CloseCode::NORMAL {
            // A full queue means the peer is not reading anyway; close without the frame.
            let _ = self.queue(&imgate_codec::Error::new(code, reason).into());
        }
        let flushed = tokio::time::timeout(CLOSE_LINGER, self.flush()).await;
        match &mut self.inner {
            WriteInner::Stream(io) => {
                let _ = tokio::time::timeout(CLOSE_LINGER, io.shutdown()).await;
            }
            WriteInner::Quic { send, conn } => {
                let _ = send.finish();
                // Wait until the peer has the Error frame: closing the connection at once
                // would discard it.
                let _ = tokio::time::timeout(CLOSE_LINGER, send.stopped()).await;
                conn.close(quinn::VarInt::from(code.0), reason.as_bytes());
            }
            WriteInner::Ws(sink) => {
                let frame = close_frame(code, reason);
                let _ = tokio::time::timeout(CLOSE_LINGER, sink.send(Message::Close(Some(frame))))
                    .await;
            }
        }
        match flushed {
            Ok(result) => result,
            Err(_) => Err(TransportError::Io(io::ErrorKind::TimedOut.into())),
        }
    }
}

fn poll_write_stream<W: AsyncWrite + ?Sized>(
    mut io: Pin<&mut W>,
    out: &mut Outbound,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    let Outbound {
        queue,
        tail,
        queued,
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
        let mut written = ready!(io.as_mut().poll_write_vectored(cx, &slices[..count]))?;
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

fn poll_write_ws(
    sink: &mut SplitSink<WsStream, Message>,
    out: &mut Outbound,
    cx: &mut Context<'_>,
) -> Poll<Result<(), TransportError>> {
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
            WriteInner::Stream(Box::pin(io)),
            Arc::clone(&encoder),
            1 << 20,
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
    async fn the_queue_is_bounded() {
        let io = CountingWriter {
            writes: Arc::default(),
            bytes: Arc::default(),
        };
        let mut writer = FrameWriter::new(WriteInner::Stream(Box::pin(io)), Arc::default(), 100);
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
