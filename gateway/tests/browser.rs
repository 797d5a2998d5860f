//! The web console and the demo chat page in a real headless Chromium, against this build's
//! `imgate` binary (`gateway/tests/browser/`, node's test runner driving Debian's `chromium`
//! through npm `playwright-core`): two pages exchange messages, one goes offline while
//! messages arrive and receives each exactly once after, the console shows a connected user,
//! sends it a message and kicks it; screenshots of both pages on the way.
//!
//! Needs Node.js ≥ 20, npm and Chromium (`IMGATE_CHROMIUM`, default `/usr/bin/chromium`;
//! `apt-get install chromium`). Without Chromium the test is skipped with a message, unless
//! `IMGATE_REQUIRE_CHROMIUM=1` (CI sets it: `.ci/run` installs the package), which makes it a
//! failure. `IMGATE_SKIP_NODE=1` skips it like the SDK's suite. Screenshots go to
//! `target/browser-screenshots/`; `IMGATE_WRITE_SCREENSHOTS=1` writes them to `docs/` instead.

#[path = "support/npm.rs"]
mod npm;

use std::io::Write;
use std::path::{Path, PathBuf};

#[test]
fn the_console_and_the_demo_page_work_in_chromium() {
    if std::env::var_os("IMGATE_SKIP_NODE").is_some() {
        eprintln!("IMGATE_SKIP_NODE is set: the browser tests are skipped");
        return;
    }
    let chromium = std::env::var_os("IMGATE_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if !chromium.is_file() {
        let message = format!(
            "no Chromium at {} (apt-get install chromium, or set IMGATE_CHROMIUM)",
            chromium.display()
        );
        assert!(
            std::env::var_os("IMGATE_REQUIRE_CHROMIUM").is_none(),
            "IMGATE_REQUIRE_CHROMIUM is set and there is {message}"
        );
        // Straight to stderr, past the test harness's capture: a skip should be seen.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: the browser tests (console, demo page): {message}"
        );
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots");
    npm::install(&dir);
    npm::run(
        &dir,
        "npm",
        &["test"],
        &[
            ("IMGATE_CHROMIUM", &chromium.to_string_lossy()),
            ("IMGATE_SCREENSHOT_DIR", &shots.to_string_lossy()),
        ],
    );
}
