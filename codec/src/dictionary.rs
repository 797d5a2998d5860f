//! Shared LZ4 dictionaries, addressed by the hash of their content.

use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::fmt;

/// Identifier of a [`Dictionary`]: the first four bytes of the SHA-256 of its content, read as
/// a big-endian `u32`. Zero means "no dictionary" on the wire, so a content hash of zero maps
/// to `0xFFFF_FFFF`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DictionaryId(pub u32);

impl DictionaryId {
    /// The id of `content`.
    pub fn of(content: &[u8]) -> Self {
        let digest = Sha256::digest(content);
        let prefix = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
        Self(if prefix == 0 { u32::MAX } else { prefix })
    }
}

impl fmt::Debug for DictionaryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DictionaryId({:#010x})", self.0)
    }
}

/// A shared LZ4 dictionary: preset bytes that make small frames compress well.
///
/// Cloning is cheap (the content is reference-counted), so one dictionary serves every
/// connection without per-connection memory.
#[derive(Clone, PartialEq, Eq)]
pub struct Dictionary {
    id: DictionaryId,
    content: Bytes,
}

impl Dictionary {
    /// LZ4 only looks back 64 KiB, so a longer dictionary only wastes memory.
    pub const MAX_LEN: usize = 64 * 1024;

    /// Wraps `content` (truncated to its last [`Self::MAX_LEN`] bytes, the part LZ4 can use).
    pub fn new(content: impl Into<Bytes>) -> Self {
        let mut content: Bytes = content.into();
        if content.len() > Self::MAX_LEN {
            content = content.slice(content.len() - Self::MAX_LEN..);
        }
        Self {
            id: DictionaryId::of(&content),
            content,
        }
    }

    /// The dictionary trained on synthetic IM traffic that ships with imgate
    /// (`codec/dict/`; see the README there for how it is made).
    pub fn builtin() -> Self {
        Self::new(Bytes::from_static(include_bytes!("../dict/im-v1.dict")))
    }

    /// Content-addressed id.
    pub fn id(&self) -> DictionaryId {
        self.id
    }

    /// The preset bytes.
    pub fn content(&self) -> &[u8] {
        &self.content
    }
}

impl fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dictionary")
            .field("id", &self.id)
            .field("len", &self.content.len())
            .finish()
    }
}
