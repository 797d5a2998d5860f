//! The flags byte in front of every frame body.

/// Bit 0: the body is an LZ4 block (with its uncompressed size prepended).
pub const LZ4: u8 = 0b0000_0001;
/// Bit 1: the LZ4 block was compressed with a shared dictionary whose id follows the flags.
/// Only valid together with [`LZ4`].
pub const DICTIONARY: u8 = 0b0000_0010;
/// Every bit this version defines; a frame with any other bit set is rejected.
pub const KNOWN: u8 = LZ4 | DICTIONARY;
