//! The deploy files agree with the gateway: the systemd unit waits longer than a drain, sends
//! the drain signal and raises the descriptor limit; the image runs as a non-root user with
//! a health check on the admin's /healthz.

const UNIT: &str = include_str!("../../deploy/imgate.service");
const DOCKERFILE: &str = include_str!("../../deploy/Dockerfile");

/// The value of `key=` in the unit (the last one wins, as in systemd).
fn unit(key: &str) -> &'static str {
    UNIT.lines()
        .rev()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("{key}= missing"))
}

#[test]
fn the_unit_outlasts_the_drain_and_raises_limits() {
    let config = imgate::config::Config::parse(imgate::config::DEFAULT_CONFIG).expect("default");
    let stop: u64 = unit("TimeoutStopSec").parse().expect("seconds");
    assert!(
        stop > config.drain_grace.as_secs() + 5,
        "TimeoutStopSec={stop} must exceed drain_grace ({:?}) plus the close linger",
        config.drain_grace
    );
    assert_eq!(unit("KillSignal"), "SIGTERM");
    let nofile: u64 = unit("LimitNOFILE").parse().expect("number");
    assert!(
        nofile >= 100_000 + 1024,
        "room for a listener's max_connections"
    );
    assert_eq!(
        unit("RestartPreventExitStatus"),
        "64",
        "config errors are not retried"
    );
}

#[test]
fn the_image_is_multi_stage_non_root_and_healthchecked() {
    assert_eq!(
        DOCKERFILE
            .lines()
            .filter(|l| l.starts_with("FROM "))
            .count(),
        2
    );
    let user = DOCKERFILE
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER");
    assert_ne!(user.trim(), "root");
    assert!(DOCKERFILE.contains("HEALTHCHECK") && DOCKERFILE.contains("/healthz"));
    assert!(DOCKERFILE.contains("STOPSIGNAL SIGTERM"));
}
