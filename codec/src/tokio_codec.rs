//! `tokio_util::codec` adapters for the stream framing.

use bytes::BytesMut;

use crate::{CodecError, Frame, FrameDecoder, FrameEncoder};

/// Length-prefixed framing as a `tokio_util::codec::{Decoder, Encoder}` pair.
#[derive(Clone, Debug, Default)]
pub struct StreamCodec {
    /// Limits and dictionary for incoming frames.
    pub decoder: FrameDecoder,
    /// Limits and compression for outgoing frames.
    pub encoder: FrameEncoder,
}

impl From<std::io::Error> for CodecError {
    fn from(error: std::io::Error) -> Self {
        Self::Io(error)
    }
}

impl tokio_util::codec::Decoder for StreamCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        self.decoder.decode_stream(src)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        self.decoder.decode_stream_eof(src)
    }
}

impl tokio_util::codec::Encoder<&Frame> for StreamCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encoder.encode_stream(frame, dst)
    }
}

impl tokio_util::codec::Encoder<Frame> for StreamCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encoder.encode_stream(&frame, dst)
    }
}
