//! The web console and the demo chat page in a real headless Chromium, against this build's
//! `imgate` binary (`gateway/tests/browser/`, node's test runner driving Debian's `chromium`
//! through npm `playwright-core`): two pages exchange messages, one goes offline while
//! messages arrive and receives each exactly once after, the console shows a connected user,
//! sends it a message and kicks it, and shows a push waiting in the push queue (to a loopback
//! mock APNs started here, which never answers it) with the user's device and badge;
//! screenshots of both pages on the way.
//!
//! Needs Node.js ≥ 20, npm and Chromium (`IMGATE_CHROMIUM`, default `/usr/bin/chromium`;
//! `apt-get install chromium`). Without Chromium the test is skipped with a message, unless
//! `IMGATE_REQUIRE_CHROMIUM=1` (CI sets it: `.ci/run` installs the package), which makes it a
//! failure. `IMGATE_SKIP_NODE=1` skips it like the SDK's suite. Screenshots go to the target
//! directory's `tmp/browser-screenshots/`; `IMGATE_WRITE_SCREENSHOTS=1` writes them to
//! `docs/` instead.

#[path = "support/npm.rs"]
mod npm;

use std::io::Write;
use std::path::{Path, PathBuf};

use imgate_push::mock::{ApnsReply, ApnsTestKey, MockApns, MockApnsConfig};

/// The APNs topic of the test app, and the push token its device registers.
const TOPIC: &str = "com.example.imgate-demo";
const DEVICE_TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_and_the_demo_page_work_in_chromium() {
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

    // The app's APNs: a loopback mock that leaves the device's first push unanswered, so the
    // console finds it in the push queue, in flight.
    let key = ApnsTestKey::generate().expect("APNs key");
    let apns = MockApns::start(MockApnsConfig {
        bundle_id: Some(TOPIC.into()),
        ..MockApnsConfig::token(&key)
    })
    .await
    .expect("mock APNs");
    apns.script(DEVICE_TOKEN, [ApnsReply::NoAnswer]);
    let files =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("browser-{}", std::process::id()));
    std::fs::create_dir_all(&files).expect("temp dir");
    let (key_file, ca_file) = (files.join("apns.p8"), files.join("ca.pem"));
    std::fs::write(&key_file, &key.key_pem).expect("key");
    std::fs::write(&ca_file, apns.ca_pem()).expect("ca");
    let push = format!(
        "[app.push]\ndata_dir = {data:?}\n[app.push.apns]\ntopic = \"{TOPIC}\"\n\
         endpoint = \"{url}\"\nkey = {key:?}\nkey_id = \"{key_id}\"\nteam_id = \"{team_id}\"\n\
         ca = {ca:?}\n",
        data = files.join("push").display().to_string(),
        url = apns.url(),
        key = key_file.display().to_string(),
        key_id = key.key_id,
        team_id = key.team_id,
        ca = ca_file.display().to_string(),
    );

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots");
    // npm blocks; the mock APNs goes on serving on the runtime's other thread meanwhile.
    tokio::task::spawn_blocking(move || {
        npm::install(&dir);
        npm::run(
            &dir,
            "npm",
            &["test"],
            &[
                ("IMGATE_CHROMIUM", &chromium.to_string_lossy()),
                ("IMGATE_SCREENSHOT_DIR", &shots.to_string_lossy()),
                ("IMGATE_PUSH_CONFIG", &push),
                ("IMGATE_PUSH_TOPIC", TOPIC),
                ("IMGATE_PUSH_TOKEN", DEVICE_TOKEN),
            ],
        );
    })
    .await
    .expect("the browser tests ran");
    assert_eq!(apns.request_count(), 1, "one push reached the mock APNs");
    std::fs::remove_dir_all(&files).ok();
}
