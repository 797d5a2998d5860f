//! Decoding: length-prefixed byte streams and WebSocket messages.

use bytes::{Buf, Bytes, BytesMut};
use prost::Message;

use crate::{CodecError, Dictionary, Frame, compress, flags};

/// Bytes of the big-endian length prefix on byte streams.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// Server default for the largest frame (flags byte + uncompressed body): 1 MiB.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;

/// Turns bytes received from a peer into [`Frame`]s, enforcing this side's limits.
///
/// Holds no buffers of its own: the caller owns the read buffer, so an idle connection costs
/// nothing here. Payload fields of decoded frames are slices of the received bytes (no copy)
/// unless the frame was compressed.
#[derive(Clone, Debug)]
pub struct FrameDecoder {
    max_frame: usize,
    dictionary: Option<Dictionary>,
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
        }
    }

    /// Accepts frames compressed with `dictionary`, the only one this side issued. Frames
    /// naming any other dictionary id are rejected.
    pub fn with_dictionary(mut self, dictionary: Option<Dictionary>) -> Self {
        self.dictionary = dictionary;
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
    pub fn decode_stream(&self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        let Some(prefix) = src.first_chunk::<LENGTH_PREFIX_LEN>() else {
            return Ok(None);
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
        let total = LENGTH_PREFIX_LEN + declared;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(LENGTH_PREFIX_LEN);
        let frame = src.split_to(declared).freeze();
        self.decode_body(frame).map(Some)
    }

    /// Call at end of stream: an error if `src` still holds part of a frame.
    pub fn decode_stream_eof(&self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self.decode_stream(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(CodecError::UnexpectedEof(src.len())),
        }
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
