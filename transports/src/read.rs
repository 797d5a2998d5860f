//! The reader half: bytes or WebSocket messages in, frames out, no buffer held while idle.

use std::cell::RefCell;
use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use imgate_codec::{CodecError, Frame, FrameDecoder};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_tungstenite::tungstenite::Message;

use crate::limits::ConnGuard;
use crate::stats::TransportStats;
use crate::ws::{WsStream, close_from_frame};
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
pub struct FrameReader {
    inner: ReadInner,
    /// Shared by every connection of a listener until one changes it (copy on write).
    decoder: Arc<FrameDecoder>,
    info: ConnInfo,
    stats: Option<Arc<TransportStats>>,
    _guard: Option<ConnGuard>,
}

pub(crate) enum ReadInner {
    /// TCP, TLS, or the QUIC stream: length-prefixed frames.
    Stream {
        io: Pin<Box<dyn AsyncRead + Send>>,
        /// Bytes of a frame not yet complete. Empty (no allocation) while idle; sized for
        /// the pending frame by the decoder, and released once the frame is out.
        pending: BytesMut,
        eof: bool,
    },
    /// WebSocket: one binary message per frame.
    Ws(SplitStream<WsStream>),
}

impl fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameReader")
            .field("info", &self.info)
            .field("max_frame", &self.decoder.max_frame())
            .finish_non_exhaustive()
    }
}

impl FrameReader {
    pub(crate) fn new(
        inner: ReadInner,
        decoder: Arc<FrameDecoder>,
        info: ConnInfo,
        stats: Option<Arc<TransportStats>>,
        guard: Option<ConnGuard>,
    ) -> Self {
        Self {
            inner,
            decoder,
            info,
            stats,
            _guard: guard,
        }
    }

    pub(crate) fn stream(io: Pin<Box<dyn AsyncRead + Send>>) -> ReadInner {
        ReadInner::Stream {
            io,
            pending: BytesMut::new(),
            eof: false,
        }
    }

    /// Facts about the connection.
    pub fn info(&self) -> &ConnInfo {
        &self.info
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
    pub async fn recv(&mut self) -> Result<Option<Frame>, TransportError> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next frame; the building block of [`FrameReader::recv`].
    pub fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Frame>, TransportError>> {
        let result = ready!(match &mut self.inner {
            ReadInner::Stream { io, pending, eof } => {
                poll_stream(io.as_mut(), pending, eof, &self.decoder, cx)
            }
            ReadInner::Ws(stream) => poll_ws(stream, &self.decoder, cx),
        });
        if let (Err(e), Some(stats)) = (&result, &self.stats) {
            match e {
                TransportError::Codec(CodecError::FrameTooLarge { .. })
                | TransportError::MessageTooLarge { .. } => {
                    TransportStats::incr(&stats.frame_too_large);
                }
                TransportError::UnsupportedData => TransportStats::incr(&stats.unsupported_data),
                TransportError::Codec(CodecError::Io(_)) => {}
                TransportError::Codec(_) | TransportError::WebSocket(_) => {
                    TransportStats::incr(&stats.protocol_error);
                }
                _ => {}
            }
        }
        Poll::Ready(result)
    }
}

fn poll_stream(
    mut io: Pin<&mut (dyn AsyncRead + Send)>,
    pending: &mut BytesMut,
    eof: &mut bool,
    decoder: &FrameDecoder,
    cx: &mut Context<'_>,
) -> Poll<Result<Option<Frame>, TransportError>> {
    loop {
        if !pending.is_empty() {
            if let Some(frame) = decoder.decode_stream(pending)? {
                if pending.is_empty() {
                    // Drop our handle on the allocation: the frame's payload may still
                    // share it, but an idle reader must not.
                    *pending = BytesMut::new();
                }
                return Poll::Ready(Ok(Some(frame)));
            }
        }
        if *eof {
            return Poll::Ready(match decoder.decode_stream_eof(pending) {
                Ok(frame) => Ok(frame),
                Err(e) => Err(e.into()),
            });
        }
        let read = SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => read_into(io.as_mut(), &mut scratch, pending, cx),
            // Only reachable if a `poll_read` below us re-entered a reader on this thread;
            // a temporary buffer keeps that correct instead of panicking.
            Err(_) => read_into(io.as_mut(), &mut [0; 4096], pending, cx),
        });
        match ready!(read) {
            Ok(0) => *eof = true,
            Ok(_) => {}
            Err(e) => return Poll::Ready(Err(TransportError::from_io(e))),
        }
    }
}

/// One `poll_read` into `scratch`, appending what arrived to `pending`.
fn read_into(
    io: Pin<&mut (dyn AsyncRead + Send)>,
    scratch: &mut [u8],
    pending: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    let mut buf = ReadBuf::new(scratch);
    ready!(io.poll_read(cx, &mut buf))?;
    // Copy out before the scratch is released: exactly the bytes received.
    pending.extend_from_slice(buf.filled());
    Poll::Ready(Ok(buf.filled().len()))
}

fn poll_ws(
    stream: &mut SplitStream<WsStream>,
    decoder: &FrameDecoder,
    cx: &mut Context<'_>,
) -> Poll<Result<Option<Frame>, TransportError>> {
    loop {
        let message = match ready!(stream.poll_next_unpin(cx)) {
            None => return Poll::Ready(Ok(None)),
            Some(Err(e)) => return Poll::Ready(Err(e.into())),
            Some(Ok(message)) => message,
        };
        return Poll::Ready(match message {
            Message::Binary(bytes) => decoder.decode_message(bytes).map(Some).map_err(Into::into),
            Message::Text(_) => Err(TransportError::UnsupportedData),
            Message::Close(frame) => close_from_frame(frame.as_ref()),
            // tungstenite queues the pong itself and sends it on the next read or write.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        });
    }
}
