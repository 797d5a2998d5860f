//! Fuzz target `roundtrip`: see `imgate_codec_fuzz::roundtrip`.
#![no_main]

libfuzzer_sys::fuzz_target!(
    |input: imgate_codec_fuzz::RoundTrip| imgate_codec_fuzz::roundtrip(input)
);
