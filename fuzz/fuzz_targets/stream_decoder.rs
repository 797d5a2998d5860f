//! Fuzz target `stream_decoder`: see `imgate_codec_fuzz::stream_decoder`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imgate_codec_fuzz::stream_decoder(data));
