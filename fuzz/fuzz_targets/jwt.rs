//! The JWT authenticator's token parsing (see `fuzz/src/gateway.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)] // reason: each target uses one of the harness's functions
#[path = "../src/gateway.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::jwt(data));
