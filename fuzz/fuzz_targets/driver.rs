//! The gateway's runtime (handshake, session driver, timers, drain) over in-memory pipes on a
//! paused clock, under arbitrary operations (see `fuzz/src/driver.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../src/driver.rs"]
mod harness;

fuzz_target!(|input: harness::DriverInput| {
    harness::driver(input);
});
