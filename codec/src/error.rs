//! The codec's one error type.

use crate::CloseCode;

/// Everything that can go wrong turning bytes into frames or frames into bytes.
///
/// Every variant is caused by the peer's bytes (or, for [`CodecError::FrameTooLarge`] on
/// encode, by a local frame the peer's limit cannot take); none of them panics or allocates
/// beyond the negotiated frame limit. Map one to the wire with [`CodecError::close_code`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The declared (or, on encode, the actual) frame length exceeds the limit.
    #[error("frame of {declared} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// Length declared by the length prefix, or the encoded length.
        declared: usize,
        /// The negotiated maximum frame size.
        limit: usize,
    },
    /// A compressed frame declares an uncompressed size above the limit (a decompression bomb).
    #[error(
        "compressed frame declares {declared} bytes uncompressed, above the limit of {limit} bytes"
    )]
    DecompressedTooLarge {
        /// Uncompressed size written in the compressed body.
        declared: usize,
        /// The negotiated maximum frame size.
        limit: usize,
    },
    /// A frame without even its flags byte.
    #[error("empty frame: the flags byte is missing")]
    EmptyFrame,
    /// Flag bits this version does not define are set.
    #[error("unknown flag bits {0:#04x} set")]
    UnknownFlags(u8),
    /// The frame names a compression dictionary this side does not hold (or never issued).
    #[error("unknown compression dictionary id {0:#010x}")]
    UnknownDictionary(u32),
    /// The frame ends before a header it announces.
    #[error("truncated frame: {0} missing")]
    Truncated(&'static str),
    /// A compressed frame where compression was not negotiated (or not yet: before `Welcome`).
    #[error("compressed frame, but compression is not enabled on this connection")]
    CompressionNotNegotiated,
    /// The LZ4 block is corrupt.
    #[error("LZ4 decompression failed: {0}")]
    Decompress(#[from] lz4_flex::block::DecompressError),
    /// The LZ4 block decompressed to a size other than the one it declared.
    #[error("LZ4 block declared {declared} bytes but decompressed to {actual}")]
    DecompressedSizeMismatch {
        /// Uncompressed size written in the compressed body.
        declared: usize,
        /// Bytes actually produced.
        actual: usize,
    },
    /// The body is not a valid protobuf `Frame`.
    #[error("invalid protobuf frame: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// The body decoded, but carries no frame kind this version knows.
    #[error("frame carries no known kind")]
    MissingKind,
    /// The byte stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({0} bytes pending)")]
    UnexpectedEof(usize),
    /// An I/O error from the transport under a `tokio_util` codec adapter.
    #[error("I/O error: {0}")]
    Io(std::io::Error),
}

impl CodecError {
    /// The wire error code a server sends (in an `Error` frame) before closing over this error.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::FrameTooLarge { .. } => CloseCode::FRAME_TOO_LARGE,
            Self::DecompressedTooLarge { .. }
            | Self::UnknownDictionary(_)
            | Self::CompressionNotNegotiated
            | Self::Decompress(_)
            | Self::DecompressedSizeMismatch { .. } => CloseCode::COMPRESSION_ERROR,
            Self::EmptyFrame
            | Self::UnknownFlags(_)
            | Self::Truncated(_)
            | Self::Protobuf(_)
            | Self::MissingKind
            | Self::UnexpectedEof(_) => CloseCode::PROTOCOL_ERROR,
            Self::Io(_) => CloseCode::INTERNAL,
        }
    }
}
