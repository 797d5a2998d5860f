//! The loopback push providers (`imgate_push::mock`) and the files the binary's
//! `[app.push]` needs to reach them.

use std::path::Path;
use std::sync::Arc;

use imgate_push::mock::{ApnsTestKey, MockApns, MockApnsConfig, MockFcm, MockFcmConfig, TestPki};

use crate::support::rsa_key;

/// The FCM project of every case.
pub(crate) const PROJECT: &str = "fault-suite";
/// The APNs topic of every case.
pub(crate) const TOPIC: &str = "com.example.faults";

/// Where `[app.push.fcm]` points.
#[derive(Clone, Debug)]
pub(crate) struct FcmEndpoint {
    pub(crate) base_url: String,
    pub(crate) token_uri: String,
}

impl FcmEndpoint {
    /// An FCM that is down: nothing listens on its port.
    pub(crate) fn down() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let base_url = format!("http://127.0.0.1:{port}");
        Self {
            token_uri: format!("{base_url}/token"),
            base_url,
        }
    }

    /// Writes the service account the binary reads; its path.
    pub(crate) fn service_account(&self, dir: &Path) -> std::path::PathBuf {
        let key = rsa_key();
        let json = serde_json::json!({
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "fault-key-1",
            "private_key": key.private_pem,
            "client_email": format!("push@{PROJECT}.iam.gserviceaccount.com"),
            "token_uri": self.token_uri,
        });
        let path = dir.join("fcm-service-account.json");
        std::fs::write(&path, json.to_string()).expect("service account");
        path
    }
}

/// A running mock FCM.
pub(crate) async fn fcm() -> MockFcm {
    MockFcm::start(MockFcmConfig::new(PROJECT, rsa_key()))
        .await
        .expect("mock FCM")
}

/// `fcm`'s endpoint.
pub(crate) fn fcm_endpoint(fcm: &MockFcm) -> FcmEndpoint {
    FcmEndpoint {
        base_url: fcm.url(),
        token_uri: fcm.token_uri(),
    }
}

/// The message ids of every push FCM accepted (200), once per push.
pub(crate) fn fcm_pushed(fcm: &MockFcm) -> Vec<u64> {
    fcm.requests()
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| {
            r.message["data"]["message_id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .unwrap_or_else(|| panic!("a push names its message: {}", r.message))
        })
        .collect()
}

/// A mock APNs with its key and CA, which outlive one mock (a restart brings up a new mock
/// on the same port with the same CA).
pub(crate) struct Apns {
    pub(crate) key: ApnsTestKey,
    pub(crate) pki: Arc<TestPki>,
}

impl Apns {
    pub(crate) fn new() -> Self {
        Self {
            key: ApnsTestKey::generate().expect("APNs key"),
            pki: Arc::new(TestPki::generate().expect("PKI")),
        }
    }

    /// A mock on `port` (`0`: any), checking the provider token and the topic.
    pub(crate) async fn start(&self, port: u16) -> MockApns {
        let config = MockApnsConfig {
            bundle_id: Some(TOPIC.into()),
            ..MockApnsConfig::token(&self.key)
        };
        MockApns::start_on(config, Arc::clone(&self.pki), port)
            .await
            .expect("mock APNs")
    }

    /// Writes the key and the CA the binary reads; the `[app.push.apns]` section for a mock
    /// listening at `url`.
    pub(crate) fn section(&self, dir: &Path, url: &str) -> String {
        std::fs::create_dir_all(dir).expect("case dir");
        let (key, ca) = (dir.join("apns-key.p8"), dir.join("apns-ca.pem"));
        std::fs::write(&key, &self.key.key_pem).expect("key");
        std::fs::write(&ca, self.pki.ca_pem()).expect("ca");
        format!(
            "[app.push.apns]\ntopic = \"{TOPIC}\"\nendpoint = \"{url}\"\nkey = \"{}\"\n\
             key_id = \"{}\"\nteam_id = \"{}\"\nca = \"{}\"\n",
            key.display(),
            self.key.key_id,
            self.key.team_id,
            ca.display()
        )
    }
}

/// The message ids of every push `apns` accepted (200), once per push.
pub(crate) fn apns_pushed(apns: &MockApns) -> Vec<u64> {
    apns_answered(apns, 200)
}

/// The message ids of every push `apns` answered with `status` (0: never answered).
pub(crate) fn apns_answered(apns: &MockApns, status: u16) -> Vec<u64> {
    apns.requests()
        .iter()
        .filter(|r| r.status == status)
        .map(|r| {
            let body: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
            body["message_id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .unwrap_or_else(|| panic!("a push names its message: {body}"))
        })
        .collect()
}

/// The port of a mock's `https://localhost:<port>` URL.
pub(crate) fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}
