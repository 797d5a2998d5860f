//! The two byte queues of one HTTP connection (POST bodies → reader, writer → the long
//! response), with the wakers of both ends. No buffer is held while a queue is empty.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use imgate_codec::CloseCode;
use tokio::sync::Notify;

/// Why the bytes of a direction end with an error: an HTTP request broke the transport's
/// rules (an oversize or slow POST, a body that ends inside a frame). The reader turns it into
/// `TransportError::HttpRequest`, whose code the server sends before closing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub(crate) struct Refusal {
    pub(crate) code: CloseCode,
    pub(crate) reason: &'static str,
}

/// How a direction ended, as its writer said.
#[derive(Clone, Copy, Debug)]
enum End {
    /// No more bytes: the peer closed (end of stream).
    Eof,
    /// No more bytes, and the reader gets this error once the queue is empty.
    Error(Refusal),
}

/// One direction's bytes, in order.
#[derive(Default)]
pub(crate) struct Queue {
    chunks: VecDeque<Bytes>,
    len: usize,
    end: Option<End>,
    /// The reading side went away: writes fail.
    reader_gone: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl Queue {
    /// Whether the reading side went away (or the writer ended the direction).
    pub(crate) fn is_closed(&self) -> bool {
        self.reader_gone || self.end.is_some()
    }

    /// Appends `bytes` and wakes the reader; `false` if the direction is closed.
    pub(crate) fn push(&mut self, bytes: Bytes) -> bool {
        if self.is_closed() {
            return false;
        }
        if !bytes.is_empty() {
            self.len += bytes.len();
            self.chunks.push_back(bytes);
            wake(&mut self.reader);
        }
        true
    }

    /// Ends the direction (first end wins): the reader sees end of stream, or `refusal`, once
    /// it has read what is queued.
    pub(crate) fn finish(&mut self, refusal: Option<Refusal>) {
        if self.end.is_none() {
            self.end = Some(refusal.map_or(End::Eof, End::Error));
        }
        wake(&mut self.reader);
        wake(&mut self.writer);
    }

    /// The reading side is gone: later writes fail, waiting writers wake.
    pub(crate) fn close_reader(&mut self) {
        self.reader_gone = true;
        self.chunks = VecDeque::new();
        self.len = 0;
        wake(&mut self.writer);
    }

    /// Copies queued bytes into `buf`: `Ok(0)` at the end, the refusal as an I/O error.
    pub(crate) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut filled = 0;
        while filled < buf.len() {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let n = front.len().min(buf.len() - filled);
            buf[filled..filled + n].copy_from_slice(&front[..n]);
            front.advance(n);
            if front.is_empty() {
                self.chunks.pop_front();
            }
            filled += n;
        }
        if filled > 0 {
            self.len -= filled;
            self.drained();
            return Poll::Ready(Ok(filled));
        }
        self.poll_end(cx).map(|end| end.map(|()| 0))
    }

    /// The next queued chunk, `None` at the end.
    pub(crate) fn poll_pop(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            self.len -= chunk.len();
            self.drained();
            return Poll::Ready(Ok(Some(chunk)));
        }
        self.poll_end(cx).map(|end| end.map(|()| None))
    }

    /// Ready when the reader has taken everything queued (or went away); `true` if it took it.
    pub(crate) fn poll_taken(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if self.reader_gone {
            return Poll::Ready(false);
        }
        if self.chunks.is_empty() {
            return Poll::Ready(true);
        }
        self.writer = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Ready when fewer than `capacity` bytes wait: a writer may push more.
    pub(crate) fn poll_space(
        &mut self,
        cx: &mut Context<'_>,
        capacity: usize,
    ) -> Poll<io::Result<()>> {
        if self.is_closed() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if self.len < capacity {
            return Poll::Ready(Ok(()));
        }
        self.writer = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.end {
            None => {
                self.reader = Some(cx.waker().clone());
                Poll::Pending
            }
            Some(End::Eof) => Poll::Ready(Ok(())),
            Some(End::Error(refusal)) => Poll::Ready(Err(io::Error::other(refusal))),
        }
    }

    /// After a read: an empty queue gives its buffer back and tells a waiting writer.
    fn drained(&mut self) {
        if self.chunks.is_empty() {
            self.chunks = VecDeque::new();
        }
        wake(&mut self.writer);
    }
}

fn wake(waker: &mut Option<Waker>) {
    if let Some(waker) = waker.take() {
        waker.wake();
    }
}

/// Which side of the connection a half belongs to: the server reads POST bodies and writes
/// the stream, the client the other way round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Server,
    Client,
}

/// What one HTTP connection's halves, its request handlers and its response body share.
#[derive(Default)]
pub(crate) struct Channel {
    state: Mutex<State>,
    /// Told when the server's writer half is gone, so that the stream's socket is closed
    /// even if its response never drains (a client that stopped reading).
    pub(crate) writer_gone: Notify,
}

#[derive(Default)]
pub(crate) struct State {
    /// POST bodies, client → server.
    pub(crate) up: Queue,
    /// The long response, server → client.
    pub(crate) down: Queue,
    /// A POST is being received (at most one at a time: POSTs carry a byte stream in order).
    pub(crate) posting: bool,
}

impl State {
    /// The direction `side` reads.
    pub(crate) fn inbound(&mut self, side: Side) -> &mut Queue {
        match side {
            Side::Server => &mut self.up,
            Side::Client => &mut self.down,
        }
    }

    /// The direction `side` writes.
    pub(crate) fn outbound(&mut self, side: Side) -> &mut Queue {
        match side {
            Side::Server => &mut self.down,
            Side::Client => &mut self.up,
        }
    }
}

impl Channel {
    pub(crate) fn new() -> Arc<Self> {
        Arc::default()
    }

    /// The queues, locked for a moment (never across an `.await`).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The reader half's transport: reads what the peer's requests (or the stream) carried.
pub(crate) struct HttpRead {
    pub(crate) channel: Arc<Channel>,
    pub(crate) side: Side,
}

impl HttpRead {
    pub(crate) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.channel.lock().inbound(self.side).poll_read(cx, buf)
    }
}

impl Drop for HttpRead {
    fn drop(&mut self) {
        self.channel.lock().inbound(self.side).close_reader();
    }
}

/// The writer half's transport: queues bytes for the stream (server) or for POSTs (client),
/// at most `CAPACITY` bytes ahead of the other side.
pub(crate) struct HttpWrite {
    pub(crate) channel: Arc<Channel>,
    pub(crate) side: Side,
}

/// Bytes a writer may queue before its writes wait (what a socket's send buffer is to TCP):
/// beyond it, a peer that does not read stalls the writer, which the gateway detects.
pub(crate) const CAPACITY: usize = 64 * 1024;

impl tokio::io::AsyncWrite for HttpWrite {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut state = self.channel.lock();
        let queue = state.outbound(self.side);
        std::task::ready!(queue.poll_space(cx, CAPACITY))?;
        let len = bufs.iter().map(|b| b.len()).sum();
        let mut bytes = Vec::with_capacity(len);
        for buf in bufs {
            bytes.extend_from_slice(buf);
        }
        queue.push(Bytes::from(bytes));
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Queued bytes are the other side's to take, as bytes in a socket's buffer are.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        self.channel.lock().outbound(self.side).finish(None);
        Poll::Ready(Ok(()))
    }
}

impl Drop for HttpWrite {
    fn drop(&mut self) {
        self.channel.lock().outbound(self.side).finish(None);
        if self.side == Side::Server {
            self.channel.writer_gone.notify_one();
        }
    }
}

/// The length of the longest prefix of `bytes` made of whole length-prefixed frames, and
/// whether a declared length exceeds `max_frame`.
pub(crate) fn whole_frames(bytes: &[u8], max_frame: usize) -> Result<usize, Refusal> {
    let mut at = 0;
    while let Some(prefix) = bytes.get(at..at + imgate_codec::LENGTH_PREFIX_LEN) {
        let mut len = [0; 4];
        len.copy_from_slice(prefix);
        let len = u32::from_be_bytes(len) as usize;
        if len > max_frame {
            return Err(Refusal {
                code: CloseCode::FRAME_TOO_LARGE,
                reason: "frame over the limit",
            });
        }
        let end = at + imgate_codec::LENGTH_PREFIX_LEN + len;
        if end > bytes.len() {
            break;
        }
        at = end;
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    #[tokio::test]
    async fn bytes_cross_in_order_and_an_empty_queue_holds_no_buffer() {
        let mut queue = Queue::default();
        assert!(queue.push(Bytes::from_static(b"abc")));
        assert!(queue.push(Bytes::from_static(b"de")));
        let mut buf = [0; 4];
        let n = poll_fn(|cx| queue.poll_read(cx, &mut buf))
            .await
            .expect("read");
        assert_eq!(&buf[..n], b"abcd");
        let n = poll_fn(|cx| queue.poll_read(cx, &mut buf))
            .await
            .expect("read");
        assert_eq!(&buf[..n], b"e");
        assert_eq!(queue.chunks.capacity(), 0);
        queue.finish(Some(Refusal {
            code: CloseCode::HANDSHAKE_TIMEOUT,
            reason: "slow",
        }));
        assert!(!queue.push(Bytes::from_static(b"late")), "closed");
        let error = poll_fn(|cx| queue.poll_read(cx, &mut buf))
            .await
            .expect_err("refused");
        assert_eq!(error.to_string(), "slow");
    }

    #[test]
    fn whole_frames_stops_at_a_partial_frame_and_refuses_an_oversize_one() {
        let frame = |len: u32| {
            let mut bytes = len.to_be_bytes().to_vec();
            bytes.resize(4 + len as usize, 0);
            bytes
        };
        let mut bytes = [frame(3), frame(0), frame(5)].concat();
        assert_eq!(whole_frames(&bytes, 10), Ok(bytes.len()));
        bytes.truncate(bytes.len() - 1);
        assert_eq!(whole_frames(&bytes, 10), Ok(11));
        assert_eq!(whole_frames(&bytes[..2], 10), Ok(0));
        assert_eq!(
            whole_frames(&frame(11), 10).map_err(|r| r.code),
            Err(CloseCode::FRAME_TOO_LARGE)
        );
    }
}
