//! Decoding: length-prefixed byte streams and WebSocket messages.

use bytes::{Buf, Bytes, BytesMut};
use prost::Message;

use crate::{CodecError, Dictionary, Frame, compress, flags};

/// Bytes of the big-endian length prefix on byte streams.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// Server default for the largest frame (flags byte + uncompressed body): 1 MiB.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;

/// The most a stream read buffer grows by at a time for a frame still arriving (unless what is
/// already buffered is larger). A peer gets memory for the bytes it sends, not for the length
/// it declares; frames up to this size are reserved whole on their first bytes.
const GROW_STEP: usize = 64 * 1024;

/// Turns bytes received from a peer into [`Frame`]s, enforcing this side's limits.
///
/// Holds no buffers of its own: the caller owns the read buffer, so an idle connection costs
/// nothing here. [`FrameDecoder::decode_stream`] sizes that buffer: it grows with the bytes
/// that arrive and lets go of a large frame's allocation once the frame is out. Payload fields
/// of decoded frames are slices of the received bytes (no copy) unless the frame was
/// compressed.
#[derive(Clone, Debug)]
pub struct FrameDecoder {
    max_frame: usize,
    dictionary: Option<Dictionary>,
    /// Whether LZ4 frames are taken (§3.3: only once compression was negotiated).
    compressed: bool,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl FrameDecoder {
    /// A decoder accepting frames of at most `max_frame` bytes (flags byte + uncompressed body).
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame: max_frame.clamp(1, u32::MAX as usize),
            dictionary: None,
            compressed: true,
        }
    }

    /// Accepts frames compressed with `dictionary`, the only one this side issued. Frames
    /// naming any other dictionary id are rejected.
    pub fn with_dictionary(mut self, dictionary: Option<Dictionary>) -> Self {
        self.dictionary = dictionary;
        self
    }

    /// Whether compressed frames are accepted (the default); without, an LZ4 frame is
    /// [`CodecError::CompressionNotNegotiated`]. A server refuses them until its `Welcome`
    /// enabled compression (protocol §3.3).
    pub fn with_compression(mut self, accept: bool) -> Self {
        self.compressed = accept;
        self
    }

    /// Sets the frame limit (e.g. to the one announced in `Welcome`).
    pub fn with_max_frame(mut self, max_frame: usize) -> Self {
        self.max_frame = max_frame.clamp(1, u32::MAX as usize);
        self
    }

    /// The frame limit in bytes.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Decodes the next frame from a length-prefixed byte stream.
    ///
    /// Returns `Ok(None)` when `src` does not yet hold a whole frame; the consumed frame is
    /// split off `src`, and anything after it stays for the next call. A declared length over
    /// the limit is rejected before any memory is reserved for it.
    ///
    /// `src` is sized here. A partial frame of up to 64 KiB gets room for all of itself; a
    /// larger one gets room for 64 KiB more at a time (or for as much as is already buffered,
    /// if that is more), never past its end. After a frame larger than 64 KiB, `src` is moved
    /// off that frame's allocation (what follows the frame is copied if it is no longer than
    /// the frame) or emptied, so it does not keep the allocation once the frame is dropped.
    pub fn decode_stream(&self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self.split_frame(src)? {
            Next::Frame(frame) => self.decode_body(frame).map(Some),
            Next::Partial { missing } => {
                make_room(src, missing);
                Ok(None)
            }
            Next::NoPrefix => Ok(None),
        }
    }

    /// Call at end of stream: an error if `src` still holds part of a frame.
    pub fn decode_stream_eof(&self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self.split_frame(src)? {
            Next::Frame(frame) => self.decode_body(frame).map(Some),
            Next::NoPrefix if src.is_empty() => Ok(None),
            // No room is made for the rest: it will not come.
            Next::Partial { .. } | Next::NoPrefix => Err(CodecError::UnexpectedEof(src.len())),
        }
    }

    /// Splits the next whole frame (`flags || body`) off `src`, checking its declared length.
    fn split_frame(&self, src: &mut BytesMut) -> Result<Next, CodecError> {
        let Some(prefix) = src.first_chunk::<LENGTH_PREFIX_LEN>() else {
            return Ok(Next::NoPrefix);
        };
        let declared = u32::from_be_bytes(*prefix) as usize;
        if declared == 0 {
            return Err(CodecError::EmptyFrame);
        }
        if declared > self.max_frame {
            return Err(CodecError::FrameTooLarge {
                declared,
                limit: self.max_frame,
            });
        }
        let buffered = src.len() - LENGTH_PREFIX_LEN;
        if buffered < declared {
            return Ok(Next::Partial {
                missing: declared - buffered,
            });
        }
        src.advance(LENGTH_PREFIX_LEN);
        let frame = src.split_to(declared).freeze();
        if LENGTH_PREFIX_LEN + declared > GROW_STEP {
            release(src, declared);
        }
        Ok(Next::Frame(frame))
    }

    /// Decodes one WebSocket binary message (flags byte + body, no length prefix).
    pub fn decode_message(&self, message: Bytes) -> Result<Frame, CodecError> {
        if message.len() > self.max_frame {
            return Err(CodecError::FrameTooLarge {
                declared: message.len(),
                limit: self.max_frame,
            });
        }
        self.decode_body(message)
    }

    /// Decodes `flags || body` (the part after the length prefix).
    fn decode_body(&self, mut frame: Bytes) -> Result<Frame, CodecError> {
        if frame.is_empty() {
            return Err(CodecError::EmptyFrame);
        }
        let flag_bits = frame.get_u8();
        if flag_bits & !flags::KNOWN != 0
            || (flag_bits & flags::DICTIONARY != 0 && flag_bits & flags::LZ4 == 0)
        {
            return Err(CodecError::UnknownFlags(flag_bits));
        }
        if flag_bits & flags::LZ4 != 0 && !self.compressed {
            return Err(CodecError::CompressionNotNegotiated);
        }
        let body = if flag_bits & flags::LZ4 != 0 {
            let max_body = self.max_frame - 1;
            Bytes::from(compress::decompress(
                flag_bits,
                &frame,
                max_body,
                self.dictionary.as_ref(),
            )?)
        } else {
            frame
        };
        let decoded = Frame::decode(body)?;
        if decoded.kind.is_none() {
            return Err(CodecError::MissingKind);
        }
        Ok(decoded)
    }
}

/// What the front of a stream buffer holds.
enum Next {
    /// A whole frame (`flags || body`), split off the buffer.
    Frame(Bytes),
    /// A length prefix and part of its frame: `missing` more bytes complete it.
    Partial { missing: usize },
    /// Not even the whole length prefix.
    NoPrefix,
}

/// Makes room in `src`, which holds a partial frame lacking `missing` bytes, for the next
/// bytes to arrive without reserving for bytes the peer has not sent.
fn make_room(src: &mut BytesMut, missing: usize) {
    let len = src.len();
    if len + missing <= GROW_STEP {
        // A small frame is reserved whole, as `BytesMut` sees fit (it may keep the capacity
        // class of the buffer it came from, so the next read fits too).
        src.reserve(missing);
        return;
    }
    if src.capacity() - len >= missing.min(GROW_STEP) {
        return;
    }
    // Not `reserve`: it may double the capacity, past the end of the frame and the frame
    // limit. Growing by what is buffered (once past the first step) keeps the copies linear
    // in the frame's size.
    let mut grown = BytesMut::with_capacity(len + missing.min(GROW_STEP.max(len)));
    grown.extend_from_slice(src);
    *src = grown;
}

/// After a frame of `frame_len` bytes (over one growth step) was split off `src`: moves
/// what follows it to a buffer of its own, so the large allocation, shared with the frame's
/// payload, is freed with the frame rather than kept by an idle connection.
fn release(src: &mut BytesMut, frame_len: usize) {
    if src.is_empty() {
        *src = BytesMut::new();
    } else if src.len() <= frame_len {
        // Bounded by the frame just decoded, so the copying stays linear in what arrived. A
        // longer rest is more frames still to decode, which go on using the allocation.
        *src = BytesMut::from(&src[..]);
    }
}
