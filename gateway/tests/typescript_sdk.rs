//! The TypeScript SDK's own test suite (`sdk/typescript`: type check, formatting, unit tests
//! with the spec and LZ4 vectors, end-to-end tests against this build's `imgate` binary), run
//! from `cargo test` so that the README's one test command covers it.
//!
//! Needs Node.js ≥ 20 and npm on the `PATH` (`npm ci` fetches the locked packages once). A
//! machine without them fails this test with that message; `IMGATE_SKIP_NODE=1` skips it
//! explicitly (CI never sets it).

use std::path::{Path, PathBuf};
use std::process::Command;

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/typescript")
}

fn run(dir: &Path, program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("IMGATE_BIN", env!("CARGO_BIN_EXE_imgate"))
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{program}` ({e}): the TypeScript SDK's tests need Node.js >= 20 and \
                 npm on the PATH (or set IMGATE_SKIP_NODE=1 to skip them)"
            )
        });
    assert!(
        status.success(),
        "`{program} {}` failed: {status}",
        args.join(" ")
    );
}

#[test]
fn the_typescript_sdk_passes_its_own_tests_against_this_binary() {
    if std::env::var_os("IMGATE_SKIP_NODE").is_some() {
        eprintln!("IMGATE_SKIP_NODE is set: the TypeScript SDK's tests are skipped");
        return;
    }
    let dir = sdk_dir();
    // `npm ci` is exact and repeatable (package-lock.json), but it deletes and re-installs
    // node_modules: only when the lock changed since the last install.
    let installed = dir.join("node_modules/.package-lock.json");
    let stale = match (
        std::fs::metadata(dir.join("package-lock.json")).and_then(|m| m.modified()),
        std::fs::metadata(&installed).and_then(|m| m.modified()),
    ) {
        (Ok(lock), Ok(install)) => lock > install,
        _ => true,
    };
    if stale {
        run(&dir, "npm", &["ci", "--no-audit", "--no-fund"]);
    }
    run(&dir, "npm", &["test"]);
}
