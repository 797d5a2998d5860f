//! imgate wire protocol v1: frame layout, protobuf messages, LZ4 compression. No I/O.
//!
//! # Layout
//! - [`proto`]: the protobuf types generated from `proto/imgate/v1/frame.proto` (prost, with
//!   payloads as [`bytes::Bytes`]); the most used ones are re-exported at the root.
//! - [`FrameDecoder`]: length-prefixed stream decoding (partial input, many frames per read,
//!   frames split across reads) and WebSocket message decoding, with every limit checked
//!   before allocating.
//! - [`FrameEncoder`]: the reverse, with optional [`Compression`] (LZ4 block format, optional
//!   shared [`Dictionary`]).
//! - [`deliver_frame_len`], [`MIN_MAX_FRAME`]: a `Deliver`'s size as the peer's limit counts
//!   it, and the smallest limit a client may announce.
//! - [`CloseCode`]: the stable numeric error codes; [`CodecError`]: this crate's one error.
//!
//! The wire format is specified in `docs/protocol.md` at the repository root.
//!
//! # Features
//! - `tokio-codec`: `StreamCodec`, a `tokio_util::codec` adapter (documented with the feature on).
#![forbid(unsafe_code)]
#![deny(missing_debug_implementations)]

mod close_code;
mod compress;
mod decode;
mod dictionary;
mod encode;
mod error;
pub mod flags;
mod frame_len;
#[cfg(feature = "tokio-codec")]
pub mod tokio_codec;

/// Protobuf types generated from `proto/imgate/v1/frame.proto`.
#[allow(missing_docs, unreachable_pub, clippy::use_self)] // reason: generated code
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/imgate.v1.rs"));
}

pub use close_code::CloseCode;
pub use compress::Compression;
pub use decode::{DEFAULT_MAX_FRAME, FrameDecoder, LENGTH_PREFIX_LEN};
pub use dictionary::{Dictionary, DictionaryId};
pub use encode::FrameEncoder;
pub use error::CodecError;
pub use frame_len::{MIN_MAX_FRAME, deliver_frame_len};
pub use proto::frame::Kind;
pub use proto::{
    Ack, Deliver, Error, Frame, GoAway, GoAwayReason, Hello, JoinRoom, LeaveRoom, Ping, Platform,
    Pong, PushProvider, Receipt, ReceiptStatus, RegisterPush, Resume, ResumeRefused, Send, Welcome,
};

/// Protocol version described by this crate and `docs/protocol.md`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Feature string a client lists in `Hello.features` to receive compressed frames.
pub const FEATURE_LZ4: &str = "lz4";

impl From<Kind> for Frame {
    fn from(kind: Kind) -> Self {
        Self { kind: Some(kind) }
    }
}

macro_rules! frame_from {
    ($($ty:ident => $variant:ident),* $(,)?) => {
        $(impl From<$ty> for Frame {
            fn from(value: $ty) -> Self {
                Kind::$variant(value).into()
            }
        })*
    };
}

frame_from! {
    Hello => Hello, Welcome => Welcome, Error => Error, Ping => Ping, Pong => Pong,
    Deliver => Deliver, Send => Send, Ack => Ack, Receipt => Receipt, GoAway => GoAway,
    RegisterPush => RegisterPush, JoinRoom => JoinRoom, LeaveRoom => LeaveRoom,
}

impl Error {
    /// An `Error` frame body for `code`.
    pub fn new(code: CloseCode, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }

    /// The code as a [`CloseCode`] (unknown values are kept; see [`CloseCode::name`]).
    pub fn close_code(&self) -> CloseCode {
        CloseCode(u16::try_from(self.code).unwrap_or(u16::MAX))
    }
}
