//! Fuzz target `ws_decoder`: see `imgate_codec_fuzz::ws_decoder`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imgate_codec_fuzz::ws_decoder(data));
