//! The durable queue across a crash: only sends whose answer was lost are made again (and
//! counted), and a burst is group-committed.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use imgate_push::mock::{ApnsReply, ApnsTestKey, MockApns, MockApnsConfig};
use imgate_push::{
    ApnsClient, Device, Dispatcher, DispatcherConfig, Platform, PushKind, PushMetrics, PushOutcome,
    PushQueue, PushRequest, RedbQueue, Routes, UnixClock,
};
use support::{TOPIC, apns_config, device, no_timers};
use tokio::sync::mpsc::Receiver;

fn push(token: String) -> PushRequest {
    PushRequest {
        app: "chat".into(),
        device: Device {
            platform: Platform::Apns,
            token,
            registered_at_ms: 0,
        },
        kind: PushKind::Alert {
            title: "Ann".into(),
            body: "hi".into(),
        },
        badge: Some(1),
        collapse_id: None,
        ttl_secs: 24 * 3600,
        data: BTreeMap::new(),
    }
}

/// A fresh directory under the target dir: on disk, not tmpfs.
fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

fn routes(mock: &MockApns, key: &ApnsTestKey) -> Routes {
    let mut routes = Routes::new();
    routes.apns(
        "chat",
        Arc::new(ApnsClient::new(&apns_config(mock, key, no_timers())).expect("client")),
        TOPIC,
    );
    routes
}

async fn delivered(rx: &mut Receiver<PushOutcome>, n: usize) {
    for _ in 0..n {
        let outcome = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("outcome in time")
            .expect("open");
        assert!(
            matches!(outcome, PushOutcome::Delivered { .. }),
            "{outcome:?}"
        );
    }
}

/// Waits (bounded) until `done` holds, checking after each scheduler turn. Only for the
/// dispatcher's retry counter, which has no event to wait for (a poll, not a fixed sleep).
async fn until(what: &str, done: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while !done() {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_crash_resends_only_the_sends_whose_answer_was_lost() {
    let dir = temp_dir("imgate-push-crash");
    let path = dir.join("queue.redb");
    let key = ApnsTestKey::generate().expect("key");
    // Tokens 0..10 are accepted, 10..15 never answered (in flight at the crash), 15..30
    // answered 503 with an hour's Retry-After (waiting in the queue at the crash).
    let (ok, lost, busy) = (0..10u64, 10..15u64, 15..30u64);

    // Run 1, in a runtime of its own that is dropped mid-queue: the dispatcher never shuts
    // down, the unanswered requests die with it.
    let run1 = runtime();
    let mock1 = run1.block_on(async {
        let mock = MockApns::start(MockApnsConfig::token(&key))
            .await
            .expect("mock");
        for n in lost.clone() {
            mock.script(&device(n), [ApnsReply::NoAnswer]);
        }
        for n in busy.clone() {
            mock.script(&device(n), [ApnsReply::ServiceUnavailable(Some(3600))]);
        }
        let metrics = PushMetrics::unregistered();
        let queue = Arc::new(RedbQueue::open(&path).expect("open"));
        let (d, mut rx) = Dispatcher::start(
            DispatcherConfig::default(),
            routes(&mock, &key),
            queue,
            metrics.clone(),
        );
        for n in 0..30 {
            d.submit(push(device(n))).expect("submit");
        }
        delivered(&mut rx, ok.clone().count()).await;
        let retries = || {
            metrics
                .retries
                .get_or_create(&imgate_push::metrics::ProviderLabels {
                    provider: "apns".into(),
                    app: "chat".into(),
                })
                .get()
        };
        until("the 503s to be rescheduled", || {
            retries() == busy.clone().count() as u64
        })
        .await;
        tokio::time::timeout(Duration::from_secs(20), mock.answered(30))
            .await
            .expect("every push sent");
        assert_eq!(mock.request_count(), 30, "every push sent once");
        d.flush().await.expect("flush");
        // No shutdown: the dispatcher's tasks run on until the runtime is dropped.
        drop(d);
        // Kept until then: closing it first would answer the open requests with an error.
        mock
    });
    drop(run1);
    drop(mock1);

    // Run 2: the provider answers everything; the clock is two hours on, so the 503s are due.
    let run2 = runtime();
    run2.block_on(async {
        let queue = Arc::new(RedbQueue::open(&path).expect("reopen"));
        assert_eq!(queue.len().expect("len"), 20, "delivered pushes are gone");
        let mock = MockApns::start(MockApnsConfig::token(&key))
            .await
            .expect("mock");
        let metrics = PushMetrics::unregistered();
        let now_ms = u64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_millis(),
        )
        .expect("ms");
        let (d, mut rx) = Dispatcher::start_with_clock(
            DispatcherConfig::default(),
            routes(&mock, &key),
            Arc::clone(&queue) as Arc<dyn PushQueue>,
            metrics.clone(),
            UnixClock::starting_at(now_ms + 2 * 3600 * 1000),
        );
        delivered(&mut rx, 20).await;
        d.shutdown().await;
        let mut sent: Vec<String> = mock
            .requests()
            .into_iter()
            .map(|r| r.device_token)
            .collect();
        sent.sort();
        let expected: Vec<String> = lost.clone().chain(busy.clone()).map(device).collect();
        assert_eq!(
            sent, expected,
            "none accepted before the crash is sent again"
        );
        assert_eq!(
            metrics.resent_after_restart.get(),
            lost.clone().count() as u64,
            "exactly the sends whose answer was lost are counted"
        );
        assert_eq!(queue.len().expect("len"), 0);
    });
    drop(run2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_burst_of_a_thousand_is_group_committed() {
    let dir = temp_dir("imgate-push-burst");
    let key = ApnsTestKey::generate().expect("key");
    let mock = MockApns::start(MockApnsConfig::token(&key))
        .await
        .expect("mock");
    let queue = Arc::new(RedbQueue::open(dir.join("queue.redb")).expect("open"));
    let (d, mut rx) = Dispatcher::start(
        DispatcherConfig::default(),
        routes(&mock, &key),
        Arc::clone(&queue) as Arc<dyn PushQueue>,
        PushMetrics::unregistered(),
    );
    let started = tokio::time::Instant::now();
    for n in 0..1000 {
        d.submit(push(device(n))).expect("submit");
    }
    delivered(&mut rx, 1000).await;
    d.flush().await.expect("flush");
    let took = started.elapsed();
    // 1,000 inserts, send marks and removals: 3,000 fsyncs one by one.
    assert!(queue.commits() < 300, "{} commits", queue.commits());
    eprintln!(
        "1,000 pushes delivered in {took:?}, {} commits",
        queue.commits()
    );
    d.shutdown().await;
    drop(queue);
    let _ = std::fs::remove_dir_all(&dir);
}
