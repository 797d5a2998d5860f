//! The TypeScript SDK's own test suite (`sdk/typescript`: type check, formatting, unit tests
//! with the spec and LZ4 vectors, end-to-end tests against this build's `imgate` binary), run
//! from `cargo test` so that the README's one test command covers it.
//!
//! Needs Node.js ≥ 20 and npm on the `PATH` (`npm ci` fetches the locked packages once). A
//! machine without them fails this test with that message; `IMGATE_SKIP_NODE=1` skips it
//! explicitly (CI never sets it).

#[path = "support/npm.rs"]
mod npm;

use std::path::Path;

#[test]
fn the_typescript_sdk_passes_its_own_tests_against_this_binary() {
    if std::env::var_os("IMGATE_SKIP_NODE").is_some() {
        eprintln!("IMGATE_SKIP_NODE is set: the TypeScript SDK's tests are skipped");
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/typescript");
    npm::install(&dir);
    npm::run(&dir, "npm", &["test"], &[]);
}
