//! Per-frame LZ4 compression: stateless, so it costs no per-connection memory.
//!
//! Compressed body layout (after the flags byte):
//! `[dictionary id: u32 BE, only with flags::DICTIONARY] [uncompressed size: u32 LE] [LZ4 block]`.

use crate::{CodecError, Dictionary, flags};

/// When and how the encoder compresses frame bodies.
#[derive(Clone, Debug)]
pub struct Compression {
    /// Bodies shorter than this are sent as they are (LZ4 cannot win on a few bytes).
    pub threshold: usize,
    /// Shared dictionary to compress with, if the peer holds it.
    pub dictionary: Option<Dictionary>,
}

impl Compression {
    /// Default threshold: below ~128 bytes even dictionary compression rarely pays for its header.
    pub const DEFAULT_THRESHOLD: usize = 128;
}

impl Default for Compression {
    fn default() -> Self {
        Self {
            threshold: Self::DEFAULT_THRESHOLD,
            dictionary: None,
        }
    }
}

/// Compresses `raw`; returns the flags and the compressed body, or `None` when compression
/// would not make the frame smaller.
pub(crate) fn compress(config: &Compression, raw: &[u8]) -> Option<(u8, Vec<u8>)> {
    if raw.len() < config.threshold {
        return None;
    }
    let size = u32::try_from(raw.len()).ok()?;
    let (flags, mut out, block) = match &config.dictionary {
        Some(dict) => {
            let mut header = Vec::with_capacity(8);
            header.extend_from_slice(&dict.id().0.to_be_bytes());
            header.extend_from_slice(&size.to_le_bytes());
            let block = lz4_flex::block::compress_with_dict(raw, dict.content());
            (flags::LZ4 | flags::DICTIONARY, header, block)
        }
        None => (
            flags::LZ4,
            size.to_le_bytes().to_vec(),
            lz4_flex::block::compress(raw),
        ),
    };
    if out.len() + block.len() >= raw.len() {
        return None;
    }
    out.extend_from_slice(&block);
    Some((flags, out))
}

/// Decompresses a body whose flags say LZ4, checking the declared size against `max_body`
/// before allocating anything.
pub(crate) fn decompress(
    flag_bits: u8,
    body: &[u8],
    max_body: usize,
    accepted: Option<&Dictionary>,
) -> Result<Vec<u8>, CodecError> {
    let (dictionary, rest) = if flag_bits & flags::DICTIONARY != 0 {
        let (id, rest) = split_u32(body, "dictionary id")?;
        let id = u32::from_be_bytes(id);
        match accepted {
            Some(dict) if dict.id().0 == id => (dict.content(), rest),
            _ => return Err(CodecError::UnknownDictionary(id)),
        }
    } else {
        (&[][..], body)
    };
    let (size, block) = split_u32(rest, "uncompressed size")?;
    let declared = u32::from_le_bytes(size) as usize;
    if declared > max_body {
        return Err(CodecError::DecompressedTooLarge {
            declared,
            limit: max_body,
        });
    }
    let mut out = vec![0; declared];
    let actual = lz4_flex::block::decompress_into_with_dict(block, &mut out, dictionary)?;
    if actual != declared {
        return Err(CodecError::DecompressedSizeMismatch { declared, actual });
    }
    Ok(out)
}

fn split_u32<'a>(body: &'a [u8], what: &'static str) -> Result<([u8; 4], &'a [u8]), CodecError> {
    match body.split_first_chunk::<4>() {
        Some((head, rest)) => Ok((*head, rest)),
        None => Err(CodecError::Truncated(what)),
    }
}
