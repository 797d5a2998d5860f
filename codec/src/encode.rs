//! Encoding: length-prefixed byte streams and WebSocket messages.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;

use crate::decode::{DEFAULT_MAX_FRAME, LENGTH_PREFIX_LEN};
use crate::{CodecError, Compression, Frame, compress};

/// Turns [`Frame`]s into bytes for a peer, respecting the peer's frame limit.
#[derive(Clone, Debug)]
pub struct FrameEncoder {
    max_frame: usize,
    compression: Option<Compression>,
}

impl Default for FrameEncoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl FrameEncoder {
    /// An encoder for a peer that accepts frames of at most `max_frame` bytes, uncompressed.
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame: max_frame.clamp(1, u32::MAX as usize),
            compression: None,
        }
    }

    /// Compresses bodies per `compression` from now on (`None`: never). Servers switch this on
    /// only after sending `Welcome`, and only with a dictionary the peer announced.
    pub fn with_compression(mut self, compression: Option<Compression>) -> Self {
        self.compression = compression;
        self
    }

    /// Changes the compression policy in place.
    pub fn set_compression(&mut self, compression: Option<Compression>) {
        self.compression = compression;
    }

    /// Lowers or raises the peer's frame limit (a server applies the client's
    /// `Hello.max_frame` this way); clamped as in [`FrameEncoder::new`].
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame.clamp(1, u32::MAX as usize);
    }

    /// The peer's frame limit in bytes.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Appends `frame` to `dst` with its length prefix, for byte streams.
    pub fn encode_stream(&self, frame: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode(frame, dst, true)
    }

    /// Encodes `frame` as one WebSocket binary message.
    pub fn encode_message(&self, frame: &Frame) -> Result<Bytes, CodecError> {
        let mut dst = BytesMut::new();
        self.encode(frame, &mut dst, false)?;
        Ok(dst.freeze())
    }

    fn encode(
        &self,
        frame: &Frame,
        dst: &mut BytesMut,
        length_prefix: bool,
    ) -> Result<(), CodecError> {
        let body_len = frame.encoded_len();
        if body_len + 1 > self.max_frame {
            return Err(CodecError::FrameTooLarge {
                declared: body_len + 1,
                limit: self.max_frame,
            });
        }
        let header_len = if length_prefix { LENGTH_PREFIX_LEN } else { 0 } + 1;
        if let Some(compression) = self
            .compression
            .as_ref()
            .filter(|c| body_len >= c.threshold)
        {
            let raw = frame.encode_to_vec();
            if let Some((flag_bits, compressed)) = compress::compress(compression, &raw) {
                dst.reserve(header_len + compressed.len());
                put_header(dst, length_prefix, compressed.len(), flag_bits);
                dst.put_slice(&compressed);
                return Ok(());
            }
            dst.reserve(header_len + raw.len());
            put_header(dst, length_prefix, raw.len(), 0);
            dst.put_slice(&raw);
            return Ok(());
        }
        dst.reserve(header_len + body_len);
        put_header(dst, length_prefix, body_len, 0);
        // Encoding straight into the output buffer: the payload is copied exactly once.
        frame.encode_raw(dst);
        Ok(())
    }
}

fn put_header(dst: &mut BytesMut, length_prefix: bool, body_len: usize, flag_bits: u8) {
    if length_prefix {
        // body_len + 1 <= max_frame, which fits u32 for any limit a config can express.
        dst.put_u32(u32::try_from(body_len + 1).unwrap_or(u32::MAX));
    }
    dst.put_u8(flag_bits);
}
