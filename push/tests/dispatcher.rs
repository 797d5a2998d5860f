//! Dispatcher: outcomes, pruning rules, retries, shedding, and durability across a restart.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use imgate_push::mock::{ApnsReply, ApnsTestKey, FcmReply, MockApns, MockApnsConfig};
use imgate_push::{
    ApnsClient, Device, Dispatcher, DispatcherConfig, FailureKind, FcmClient, MemoryQueue,
    Platform, PushError, PushKind, PushMetrics, PushOutcome, PushQueue, PushRequest, RedbQueue,
    RetryPolicy, Routes,
};
use support::{TOPIC, apns_config, apns_pair, device, fcm_pair, no_timers};
use tokio::sync::mpsc::Receiver;

fn push(platform: Platform, token: String, registered_at_ms: u64) -> PushRequest {
    PushRequest {
        app: "chat".into(),
        device: Device {
            platform,
            token,
            registered_at_ms,
        },
        kind: PushKind::Alert {
            title: "Ann".into(),
            body: "hi".into(),
        },
        badge: Some(1),
        collapse_id: Some("conv-1".into()),
        ttl_secs: 3600,
        data: BTreeMap::new(),
    }
}

fn fast_retries() -> DispatcherConfig {
    DispatcherConfig {
        retry: RetryPolicy {
            base: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
            max_attempts: 50,
        },
        rng_seed: Some(1),
        ..DispatcherConfig::default()
    }
}

async fn outcomes(rx: &mut Receiver<PushOutcome>, n: usize) -> HashMap<u64, PushOutcome> {
    let mut out = HashMap::new();
    while out.len() < n {
        let o = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("outcome in time")
            .expect("open");
        let id = match &o {
            PushOutcome::Delivered { id, .. }
            | PushOutcome::TokenPruned { id, .. }
            | PushOutcome::TokenRejected { id, .. }
            | PushOutcome::Failed { id, .. } => *id,
        };
        assert!(out.insert(id, o).is_none(), "one outcome per push");
    }
    out
}

#[tokio::test]
async fn apns_outcomes_prune_only_dead_tokens() {
    let (mock, client, _key) = apns_pair().await;
    mock.script(
        &device(1),
        [ApnsReply::Unregistered {
            timestamp_ms: 5_000,
        }],
    );
    mock.script(
        &device(2),
        [ApnsReply::Unregistered {
            timestamp_ms: 5_000,
        }],
    );
    mock.script(&device(3), [ApnsReply::BadDeviceToken]);
    mock.script(
        &device(4),
        [
            ApnsReply::ServiceUnavailable(Some(0)),
            ApnsReply::TooManyRequests(None),
        ],
    );
    let mut routes = Routes::new();
    routes.apns("chat", Arc::new(client), TOPIC);
    let metrics = PushMetrics::unregistered();
    let (d, mut rx) = Dispatcher::start(
        fast_retries(),
        routes,
        Arc::new(MemoryQueue::new()),
        metrics.clone(),
    );
    let dead = d
        .submit(push(Platform::Apns, device(1), 1_000))
        .expect("submit");
    let reregistered = d
        .submit(push(Platform::Apns, device(2), 9_000))
        .expect("submit");
    let bad = d
        .submit(push(Platform::Apns, device(3), 1_000))
        .expect("submit");
    let flaky = d
        .submit(push(Platform::Apns, device(4), 1_000))
        .expect("submit");
    let out = outcomes(&mut rx, 4).await;

    assert!(
        matches!(&out[&dead], PushOutcome::TokenPruned { request, .. } if request.device.token == device(1))
    );
    assert!(matches!(
        &out[&reregistered],
        PushOutcome::Failed {
            kind: FailureKind::StaleUnregistered,
            ..
        }
    ));
    assert!(
        matches!(&out[&bad], PushOutcome::TokenRejected { reason, .. } if reason == "BadDeviceToken")
    );
    assert!(matches!(
        &out[&flaky],
        PushOutcome::Delivered { attempts: 3, .. }
    ));
    let per_token = |t: u64| {
        mock.requests()
            .iter()
            .filter(|r| r.device_token == device(t))
            .count()
    };
    assert_eq!(
        (per_token(1), per_token(2), per_token(3), per_token(4)),
        (1, 1, 1, 3),
        "dead tokens are never retried"
    );

    let label = imgate_push::metrics::ProviderLabels {
        provider: "apns".into(),
        app: "chat".into(),
    };
    assert_eq!(metrics.pruned.get_or_create(&label).get(), 1);
    assert_eq!(metrics.bad_device_token.get_or_create(&label).get(), 1);
    assert_eq!(metrics.retries.get_or_create(&label).get(), 2);
    assert_eq!(d.pending().expect("len"), 0);
    d.shutdown().await;
}

#[tokio::test]
async fn fcm_unregistered_is_pruned_and_quota_retry_is_capped_by_ttl() {
    let (mock, client) = fcm_pair().await;
    mock.script("gone", [FcmReply::Unregistered]);
    mock.script("quota", [FcmReply::QuotaExceeded(Some(120))]);
    let mut routes = Routes::new();
    routes.fcm("chat", Arc::new(client));
    let (d, mut rx) = Dispatcher::start(
        fast_retries(),
        routes,
        Arc::new(MemoryQueue::new()),
        PushMetrics::unregistered(),
    );
    let gone = d
        .submit(push(Platform::Fcm, "gone".into(), 0))
        .expect("submit");
    let mut short = push(Platform::Fcm, "quota".into(), 0);
    short.ttl_secs = 60; // Retry-After 120 s lands after expiry: give up now.
    let quota = d.submit(short).expect("submit");
    let ok = d
        .submit(push(Platform::Fcm, "fine".into(), 0))
        .expect("submit");
    let out = outcomes(&mut rx, 3).await;
    assert!(
        matches!(&out[&gone], PushOutcome::TokenPruned { reason, .. } if reason == "UNREGISTERED")
    );
    assert!(matches!(
        &out[&quota],
        PushOutcome::Failed {
            kind: FailureKind::Expired,
            ..
        }
    ));
    assert!(matches!(
        &out[&ok],
        PushOutcome::Delivered { attempts: 1, .. }
    ));
    assert_eq!(mock.send_count(), 3);
    d.shutdown().await;
}

#[tokio::test]
async fn fcm_pushes_carry_the_badge_for_android_and_an_apns_block_for_ios() {
    let (mock, client) = fcm_pair().await;
    let mut routes = Routes::new();
    routes.fcm("chat", Arc::new(client));
    let (d, mut rx) = Dispatcher::start(
        fast_retries(),
        routes,
        Arc::new(MemoryQueue::new()),
        PushMetrics::unregistered(),
    );
    let mut alert = push(Platform::Fcm, "alert".into(), 0);
    alert.badge = Some(3);
    let mut wake = push(Platform::Fcm, "wake".into(), 0);
    wake.kind = PushKind::WakeUp;
    wake.badge = Some(2);
    d.submit(alert).expect("submit");
    d.submit(wake).expect("submit");
    let out = outcomes(&mut rx, 2).await;
    assert!(
        out.values()
            .all(|o| matches!(o, PushOutcome::Delivered { .. })),
        "the mock's schema checks accept both: {out:?}"
    );
    let messages: HashMap<String, serde_json::Value> = mock
        .requests()
        .into_iter()
        .map(|r| {
            (
                r.message["token"].as_str().expect("token").to_owned(),
                r.message,
            )
        })
        .collect();
    let m = &messages["alert"];
    assert_eq!(m["android"]["notification"]["notification_count"], 3);
    assert_eq!(m["data"]["badge"], "3");
    let apns = &m["apns"];
    assert_eq!(apns["headers"]["apns-push-type"], "alert");
    assert_eq!(apns["headers"]["apns-priority"], "10");
    assert_eq!(apns["headers"]["apns-collapse-id"], "conv-1");
    let expiration: u64 = apns["headers"]["apns-expiration"]
        .as_str()
        .and_then(|e| e.parse().ok())
        .expect("expiration seconds");
    assert!(expiration > 1_700_000_000, "a UNIX time: {expiration}");
    assert_eq!(apns["payload"]["aps"]["badge"], 3);
    // A wake-up stays data-only on Android and silent on iOS: no badge shown anywhere.
    let w = &messages["wake"];
    assert!(w.get("notification").is_none());
    assert!(w["android"].get("notification").is_none(), "{w}");
    assert_eq!(w["apns"]["headers"]["apns-push-type"], "background");
    assert_eq!(w["apns"]["headers"]["apns-priority"], "5");
    assert_eq!(
        w["apns"]["payload"]["aps"],
        serde_json::json!({"content-available": 1})
    );
    d.shutdown().await;
}

#[tokio::test]
async fn a_full_queue_sheds_visibly_and_bad_payloads_are_refused() {
    let key = ApnsTestKey::generate().expect("key");
    let down = MockApns::start(MockApnsConfig::token(&key))
        .await
        .expect("mock");
    let config = apns_config(&down, &key, no_timers());
    down.shutdown(); // nothing listens: every send fails and is rescheduled far out
    let mut routes = Routes::new();
    routes.apns(
        "chat",
        Arc::new(ApnsClient::new(&config).expect("client")),
        TOPIC,
    );
    let metrics = PushMetrics::unregistered();
    let dc = DispatcherConfig {
        capacity: 3,
        retry: RetryPolicy {
            base: Duration::from_secs(600),
            ..RetryPolicy::default()
        },
        ..DispatcherConfig::default()
    };
    let (d, _rx) = Dispatcher::start(dc, routes, Arc::new(MemoryQueue::new()), metrics.clone());
    for n in 0..3 {
        d.submit(push(Platform::Apns, device(n), 0)).expect("room");
    }
    assert!(matches!(
        d.submit(push(Platform::Apns, device(9), 0)),
        Err(PushError::Shed { capacity: 3 })
    ));
    assert_eq!(metrics.shed.get(), 1);
    let mut big = push(Platform::Apns, device(10), 0);
    big.kind = PushKind::Alert {
        title: "t".into(),
        body: "x".repeat(5000),
    };
    assert!(matches!(d.submit(big), Err(PushError::Payload(_))));
    let mut other = push(Platform::Fcm, "t".into(), 0);
    other.app = "unknown".into();
    assert!(matches!(d.submit(other), Err(PushError::NoRoute { .. })));
    d.shutdown().await;
}

#[tokio::test]
async fn a_restart_loses_nothing_and_sends_nothing_twice() {
    let dir = std::env::temp_dir().join(format!(
        "imgate-push-restart-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("queue.redb");
    let key = ApnsTestKey::generate().expect("key");
    const N: u64 = 40;

    // Run 1: the provider is down. Pushes are accepted and wait in the queue (those the
    // worker tried before the shutdown failed and wait for their retry).
    {
        let down = MockApns::start(MockApnsConfig::token(&key))
            .await
            .expect("mock");
        let config = apns_config(&down, &key, no_timers());
        down.shutdown();
        let mut routes = Routes::new();
        routes.apns(
            "chat",
            Arc::new(ApnsClient::new(&config).expect("client")),
            TOPIC,
        );
        let queue = Arc::new(RedbQueue::open(&path).expect("open"));
        let (d, mut rx) =
            Dispatcher::start(fast_retries(), routes, queue, PushMetrics::unregistered());
        for n in 0..N {
            d.submit(push(Platform::Apns, device(n), 0))
                .expect("submit");
        }
        d.shutdown().await;
        // Every outcome of the run is in the channel once the worker has stopped.
        assert!(
            rx.try_recv().is_err(),
            "nothing can finish while the provider is down"
        );
    } // queue, client and dispatcher dropped: the process "restarts"

    // Run 2: reopen the file with the provider up.
    let queue = Arc::new(RedbQueue::open(&path).expect("reopen"));
    assert_eq!(queue.len().expect("len"), N as usize);
    let up = MockApns::start(MockApnsConfig::token(&key))
        .await
        .expect("mock");
    let mut routes = Routes::new();
    routes.apns(
        "chat",
        Arc::new(ApnsClient::new(&apns_config(&up, &key, no_timers())).expect("client")),
        TOPIC,
    );
    let (d, mut rx) = Dispatcher::start(
        fast_retries(),
        routes,
        Arc::clone(&queue) as Arc<dyn PushQueue>,
        PushMetrics::unregistered(),
    );
    let out = outcomes(&mut rx, N as usize).await;
    assert!(
        out.values()
            .all(|o| matches!(o, PushOutcome::Delivered { .. }))
    );
    d.shutdown().await;
    let mut seen: Vec<String> = up.requests().into_iter().map(|r| r.device_token).collect();
    seen.sort();
    let expected: Vec<String> = (0..N).map(device).collect();
    assert_eq!(seen, expected, "every push sent exactly once");
    assert_eq!(queue.len().expect("len"), 0);
    drop(queue);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn metrics_register_into_the_callers_registry() {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = PushMetrics::new(&mut registry);
    metrics.shed.inc();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    assert!(text.contains("push_shed_total 1"), "{text}");
    assert!(text.contains("push_queue_depth"));
    let _ = FcmClient::new; // keep the import list honest across cfgs
}
