//! Fuzz target `decompress`: see `imgate_codec_fuzz::decompress`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imgate_codec_fuzz::decompress(data));
