//! Exact badges and their durability, through the `PushPolicy` hooks of a `PushService`
//! sending to the loopback mock APNs: partial acknowledgements lower the badge (across a
//! user's devices), and a restart keeps badges, message options and de-duplication marks.

use std::time::Duration;

use imgate::deliver::{PushAlert, PushOptions};
use imgate::ids::{AppId, DeviceId, MessageId, UserId};
use imgate::offline::{PushPolicy, PushRegistration, PushTrigger};
use imgate::push_policy::{ApnsEnvironment, ApnsSettings, PushService, PushServiceMetrics};
use imgate::session::Identity;
use imgate_codec::{Platform, PushProvider};
use imgate_push::ApnsConfig;
use imgate_push::mock::{ApnsTestKey, MockApns, MockApnsConfig};
use prometheus_client::registry::Registry;
use serde_json::Value;

const APP: &str = "chat";
const TOPIC: &str = "com.example.chat";

fn token(n: u64) -> String {
    format!("{n:064x}")
}

fn options(body: &str) -> PushOptions {
    PushOptions {
        alert: Some(PushAlert {
            title: "Bob".into(),
            body: body.into(),
        }),
        ttl_secs: 600,
        ..PushOptions::default()
    }
}

fn identity(device: &str) -> Identity {
    Identity {
        app: AppId::new(APP),
        user: UserId::new("ann"),
        device: DeviceId::new(device),
        platform: Platform::Ios,
    }
}

struct Provider {
    mock: MockApns,
    key: ApnsTestKey,
}

impl Provider {
    async fn start() -> Self {
        let key = ApnsTestKey::generate().expect("key");
        let mock = MockApns::start(MockApnsConfig::token(&key))
            .await
            .expect("mock");
        Self { mock, key }
    }

    fn service(&self, data_dir: Option<&std::path::Path>) -> PushService {
        let mut config = ApnsConfig::token(
            self.key.key_pem.clone(),
            self.key.key_id.clone(),
            self.key.team_id.clone(),
        );
        config
            .base_url(self.mock.url())
            .trust_pem(self.mock.ca_pem());
        let mut builder = PushService::builder(AppId::new(APP)).apns(ApnsSettings {
            config,
            topic: TOPIC.into(),
            environment: ApnsEnvironment::Custom,
        });
        if let Some(dir) = data_dir {
            builder = builder.data_dir(dir).expect("data dir");
        }
        builder
            .start(&PushServiceMetrics::new(&mut Registry::default()))
            .expect("push service")
    }

    /// The badges of the pushes received so far, in order.
    fn badges(&self) -> Vec<u64> {
        self.mock
            .requests()
            .iter()
            .map(|r| {
                let body: Value = serde_json::from_slice(&r.body).expect("json");
                body["aps"]["badge"].as_u64().expect("badge")
            })
            .collect()
    }

    /// Waits (bounded) for the `n`th push.
    async fn until(&self, n: usize) {
        let reached =
            tokio::time::timeout(Duration::from_secs(10), self.mock.answered(n as u64)).await;
        assert!(
            reached.is_ok(),
            "{} of {n} pushes",
            self.mock.requests().len()
        );
    }
}

async fn register(push: &PushService, device: &str, n: u64) {
    push.register_device(
        &AppId::new(APP),
        &UserId::new("ann"),
        &DeviceId::new(device),
        PushRegistration {
            provider: PushProvider::Apns,
            token: token(n),
            topic: TOPIC.into(),
            sandbox: false,
        },
    )
    .await
    .expect("register");
}

/// Message `id` arrives for ann, who has no session: every device of hers is pushed.
fn offline_message(push: &PushService, id: u64) {
    let app = AppId::new(APP);
    push.on_message(&app, MessageId(id), &options(&format!("m{id}")));
    push.push(
        &app,
        &UserId::new("ann"),
        None,
        &[MessageId(id)],
        PushTrigger::NoSession,
    );
}

#[tokio::test]
async fn acking_the_first_two_of_five_leaves_a_badge_of_three() {
    let provider = Provider::start().await;
    let push = provider.service(None);
    register(&push, "phone", 1).await;
    for id in 1..=5 {
        offline_message(&push, id);
    }
    provider.until(5).await;
    assert_eq!(provider.badges(), [1, 2, 3, 4, 5]);
    push.acked(&identity("phone"), &[MessageId(1), MessageId(2)]);
    assert_eq!(push.badge(&UserId::new("ann")).await.expect("badge"), 3);
    offline_message(&push, 6);
    provider.until(6).await;
    assert_eq!(provider.badges()[5], 4, "3, 4, 5 and 6 are unread");
    push.shutdown().await;
}

#[tokio::test]
async fn acks_from_two_devices_lower_one_badge() {
    let provider = Provider::start().await;
    let push = provider.service(None);
    register(&push, "phone", 1).await;
    register(&push, "pad", 2).await;
    for id in 1..=5 {
        offline_message(&push, id);
    }
    provider.until(10).await;
    let ann = UserId::new("ann");
    assert_eq!(
        push.badge(&ann).await.expect("badge"),
        5,
        "one count per message"
    );
    // The phone acknowledges 1 and 2, the pad 2 again and 3.
    push.acked(&identity("phone"), &[MessageId(1), MessageId(2)]);
    push.acked(&identity("pad"), &[MessageId(2), MessageId(3)]);
    assert_eq!(push.badge(&ann).await.expect("badge"), 2);
    offline_message(&push, 6);
    provider.until(12).await;
    assert_eq!(
        &provider.badges()[10..],
        [3, 3],
        "both devices show 4, 5 and 6"
    );
    push.shutdown().await;
}

#[tokio::test]
async fn a_restart_keeps_badges_options_and_push_marks() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "imgate-badges-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let provider = Provider::start().await;
    let ann = UserId::new("ann");
    {
        let push = provider.service(Some(&dir));
        register(&push, "phone", 1).await;
        for id in 1..=3 {
            offline_message(&push, id);
        }
        provider.until(3).await;
        push.acked(&identity("phone"), &[MessageId(1)]);
        assert_eq!(push.badge(&ann).await.expect("badge"), 2);
        push.shutdown().await;
    }
    let push = provider.service(Some(&dir));
    assert_eq!(
        push.badge(&ann).await.expect("badge"),
        2,
        "the badge survived"
    );
    // The session that held message 3 ends after the restart: already pushed, not again.
    push.push(
        &AppId::new(APP),
        &ann,
        Some(&DeviceId::new("phone")),
        &[MessageId(3)],
        PushTrigger::SessionEnded(imgate::session::UndeliveredReason::SessionEnded),
    );
    // A device registered after the restart still gets message 2: its options survived.
    register(&push, "pad", 2).await;
    push.push(
        &AppId::new(APP),
        &ann,
        None,
        &[MessageId(2), MessageId(3)],
        PushTrigger::NoSession,
    );
    provider.until(5).await;
    let requests = provider.mock.requests();
    let to_phone = requests
        .iter()
        .filter(|r| r.device_token == token(1))
        .count();
    assert_eq!(
        to_phone, 3,
        "the phone got each message once, across the restart"
    );
    let to_pad: Vec<Value> = requests[3..]
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("json"))
        .collect();
    assert!(requests[3..].iter().all(|r| r.device_token == token(2)));
    assert_eq!(to_pad[0]["aps"]["alert"]["body"], "m2");
    assert_eq!(to_pad[1]["aps"]["alert"]["body"], "m3");
    assert_eq!(to_pad[1]["aps"]["badge"], 2, "2 and 3 are unread");
    push.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
