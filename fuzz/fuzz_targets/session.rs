//! The sans-IO session under arbitrary operations (see `fuzz/src/gateway.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)] // reason: each target uses one of the harness's functions
#[path = "../src/gateway.rs"]
mod harness;

fuzz_target!(|input: harness::SessionInput| harness::session(input));
