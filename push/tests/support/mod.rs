//! Shared test helpers: keys generated at test time, clients pointed at the mocks.
#![allow(dead_code, unreachable_pub, reason = "each test binary uses a subset")]

use std::sync::OnceLock;

use imgate_push::mock::{
    ApnsTestKey, MockApns, MockApnsConfig, MockFcm, MockFcmConfig, RsaTestKey,
};
use imgate_push::{ApnsClient, ApnsConfig, ConnOptions, FcmClient, FcmConfig};

pub const TOPIC: &str = "com.example.chat";
pub const PROJECT: &str = "demo-proj";

/// A device token: 64 hex digits derived from `n`.
pub fn device(n: u64) -> String {
    format!("{n:064x}")
}

/// One RSA key per test process, cached in Cargo's per-target temp dir: unoptimised RSA key
/// generation takes seconds, and nothing secret is committed.
pub fn rsa_key() -> &'static RsaTestKey {
    static KEY: OnceLock<RsaTestKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        let (private, public) = (
            dir.join("push-test-rsa.pem"),
            dir.join("push-test-rsa.pub.pem"),
        );
        if let (Ok(private_pem), Ok(public_pem)) = (
            std::fs::read_to_string(&private),
            std::fs::read_to_string(&public),
        ) {
            return RsaTestKey {
                private_pem,
                public_pem,
            };
        }
        let key = RsaTestKey::generate().expect("generate RSA test key");
        let _ = std::fs::write(&private, &key.private_pem);
        let _ = std::fs::write(&public, &key.public_pem);
        key
    })
}

/// Options for paused-clock tests: no timers racing loopback I/O.
pub fn no_timers() -> ConnOptions {
    ConnOptions {
        connect_timeout: None,
        request_timeout: None,
        keep_alive: None,
    }
}

pub async fn apns_pair() -> (MockApns, ApnsClient, ApnsTestKey) {
    let key = ApnsTestKey::generate().expect("key");
    let mock = MockApns::start(MockApnsConfig::token(&key))
        .await
        .expect("mock");
    let client = ApnsClient::new(&apns_config(&mock, &key, no_timers())).expect("client");
    (mock, client, key)
}

pub fn apns_config(mock: &MockApns, key: &ApnsTestKey, conn: ConnOptions) -> ApnsConfig {
    let mut config =
        ApnsConfig::token(key.key_pem.clone(), key.key_id.clone(), key.team_id.clone());
    config.base_url(mock.url()).trust_pem(mock.ca_pem());
    config.conn = conn;
    config
}

pub async fn fcm_pair() -> (MockFcm, FcmClient) {
    let key = rsa_key();
    let mock = MockFcm::start(MockFcmConfig::new(PROJECT, key))
        .await
        .expect("mock");
    let client = FcmClient::new(&fcm_config(&mock, no_timers())).expect("client");
    (mock, client)
}

pub fn fcm_config(mock: &MockFcm, conn: ConnOptions) -> FcmConfig {
    let mut config = FcmConfig::new(rsa_key().service_account(PROJECT, &mock.token_uri()));
    config.base_url(mock.url());
    config.conn = conn;
    config
}
