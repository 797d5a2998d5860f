//! The relay's offline queue: messages for a user with no session wait in `offline.redb` and
//! reach the user at the next login, in order and once; the sender's receipt says what
//! happened (stored, or only pushed because the queue is full).

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use imgate::backend::{OfflineLimits, OfflineQueue, OfflineQueueMetrics, RelayBackend};
use imgate::session::SessionConfig;
use imgate::{RunningGateway, ServerConfig};
use imgate_codec::{Ack, CloseCode, Deliver, Kind, ReceiptStatus};
use imgate_transports::FramedConn;
use support::*;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("imgate-offline-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        Self(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("offline.redb")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start(queue: &Arc<OfflineQueue>, limits: OfflineLimits) -> RunningGateway {
    let relay = RelayBackend::with_offline_queue(Arc::clone(queue), limits);
    builder(
        app(Arc::new(relay), SessionConfig::default()),
        ServerConfig::default(),
    )
    .start()
    .await
    .expect("start")
}

fn open(path: &Path) -> Arc<OfflineQueue> {
    Arc::new(OfflineQueue::open(path, OfflineQueueMetrics::default()).expect("open queue"))
}

/// Bob logs in on `device` (a fresh session).
async fn bob_on(gw: &RunningGateway, device: &str) -> FramedConn {
    let mut bob = connect(gw).await;
    bob.send(&hello_frame("tok-bob", device, None))
        .await
        .expect("hello");
    assert!(matches!(recv(&mut bob).await, Kind::Welcome(_)));
    bob
}

async fn deliver(conn: &mut FramedConn) -> Deliver {
    match recv(conn).await {
        Kind::Deliver(d) => d,
        other => panic!("expected Deliver, got {other:?}"),
    }
}

/// Alice's receipts for `n` sends, by msg_id (receipts may come in any order, §7).
async fn receipts(alice: &mut FramedConn, n: usize) -> Vec<imgate_codec::Receipt> {
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(receipt(alice).await);
    }
    all.sort_by_key(|r| r.msg_id);
    all
}

/// Waits (bounded) until `done` holds; the queue counts after its commit, a moment after
/// the delivery the test observed.
async fn until(done: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !done() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("condition within 5 s");
}

const BODIES: [&str; 5] = ["m1", "m2", "m3", "m4", "m5"];

#[tokio::test]
async fn messages_wait_for_the_first_login_and_arrive_in_order_once() {
    let dir = TempDir::new("order");
    let queue = open(&dir.file());
    let gw = start(&queue, OfflineLimits::default()).await;
    let mut alice = login(&gw, "tok-alice").await;
    for (i, body) in BODIES.iter().enumerate() {
        alice
            .send(&text(i as u64 + 1, "bob", body))
            .await
            .expect("send");
    }
    let sent = receipts(&mut alice, BODIES.len()).await;
    assert!(
        sent.iter()
            .all(|r| r.status() == ReceiptStatus::StoredOffline),
        "{sent:?}"
    );
    let mut bob = bob_on(&gw, "phone").await;
    for (r, body) in sent.iter().zip(BODIES) {
        let d = deliver(&mut bob).await;
        assert_eq!(
            (&d.payload[..], d.from.as_str()),
            (body.as_bytes(), "alice")
        );
        // The id the sender's receipt named.
        assert_eq!(d.message_id, r.message_id);
        bob.send(&Ack { seq: d.seq }.into()).await.expect("ack");
    }
    until(|| queue.metrics().get("delivered") == 5).await;
    assert_eq!(queue.metrics().get("queued"), 5);
    // A second login (another device) gets none of them again: the next Deliver is live.
    let mut tablet = bob_on(&gw, "tablet").await;
    alice.send(&text(6, "bob", "live")).await.expect("send");
    assert_eq!(receipt(&mut alice).await.status(), ReceiptStatus::Delivered);
    assert_eq!(&deliver(&mut tablet).await.payload[..], b"live");
    assert_eq!(&deliver(&mut bob).await.payload[..], b"live");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_full_queue_is_reported_in_the_receipt() {
    let dir = TempDir::new("full");
    let queue = open(&dir.file());
    let limits = OfflineLimits {
        max_messages: 2,
        ..OfflineLimits::default()
    };
    let gw = start(&queue, limits).await;
    let mut alice = login(&gw, "tok-alice").await;
    for (i, body) in BODIES[..3].iter().enumerate() {
        alice
            .send(&text(i as u64 + 1, "bob", body))
            .await
            .expect("send");
    }
    let sent = receipts(&mut alice, 3).await;
    let statuses: Vec<_> = sent.iter().map(|r| r.status()).collect();
    let stored = statuses
        .iter()
        .filter(|s| **s == ReceiptStatus::StoredOffline)
        .count();
    assert_eq!(stored, 2, "{sent:?}");
    let refused: Vec<_> = sent
        .iter()
        .filter(|r| r.status() == ReceiptStatus::Accepted)
        .collect();
    assert_eq!(refused.len(), 1, "{sent:?}");
    assert_eq!(
        refused[0].reason_code,
        u32::from(CloseCode::OFFLINE_QUEUE_FULL)
    );
    assert_eq!(refused[0].reason, "offline queue full");
    assert_ne!(
        refused[0].message_id, 0,
        "accepted: it was still handed to push"
    );
    assert_eq!(queue.metrics().get("refused_full"), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn without_a_queue_an_unstored_message_is_only_accepted() {
    let gw = start_app(app(
        Arc::new(RelayBackend::default()),
        SessionConfig::default(),
    ))
    .await;
    let mut alice = login(&gw, "tok-alice").await;
    alice
        .send(&text(1, "bob", "nobody keeps this"))
        .await
        .expect("send");
    let r = receipt(&mut alice).await;
    assert_eq!((r.status(), r.reason_code), (ReceiptStatus::Accepted, 0));
    gw.shutdown().await;
}

#[tokio::test]
async fn expired_messages_are_dropped_and_counted() {
    let dir = TempDir::new("ttl");
    let now = Arc::new(AtomicU64::new(1_000_000));
    let clock = Arc::clone(&now);
    let queue = Arc::new(
        OfflineQueue::open_with_clock(
            &dir.file(),
            OfflineQueueMetrics::default(),
            Arc::new(move || clock.load(Ordering::Relaxed)),
        )
        .expect("open"),
    );
    let limits = OfflineLimits {
        ttl: Duration::from_secs(60),
        ..OfflineLimits::default()
    };
    let gw = start(&queue, limits).await;
    let mut alice = login(&gw, "tok-alice").await;
    alice.send(&text(1, "bob", "old-1")).await.expect("send");
    alice.send(&text(2, "bob", "old-2")).await.expect("send");
    receipts(&mut alice, 2).await;
    now.fetch_add(60_001, Ordering::Relaxed);
    alice.send(&text(3, "bob", "fresh")).await.expect("send");
    assert_eq!(
        receipt(&mut alice).await.status(),
        ReceiptStatus::StoredOffline
    );
    let mut bob = bob_on(&gw, "phone").await;
    let fresh = deliver(&mut bob).await;
    // The time it was queued (by the queue's clock), not the time of the login.
    assert_eq!(
        (&fresh.payload[..], fresh.sent_at_ms),
        (&b"fresh"[..], 1_060_001)
    );
    until(|| queue.metrics().get("expired") == 2).await;
    assert_eq!(queue.metrics().get("delivered"), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn the_queue_survives_a_restart() {
    let dir = TempDir::new("restart");
    let queue = open(&dir.file());
    let gw = start(&queue, OfflineLimits::default()).await;
    let mut alice = login(&gw, "tok-alice").await;
    for (i, body) in BODIES[..3].iter().enumerate() {
        alice
            .send(&text(i as u64 + 1, "bob", body))
            .await
            .expect("send");
    }
    receipts(&mut alice, 3).await;
    drop(alice);
    gw.shutdown().await;
    // Every holder let go: the file closes (redb opens a file once) and opens again.
    let queue = Arc::try_unwrap(queue).expect("the gateway released the queue");
    drop(queue);
    let queue = open(&dir.file());
    let gw = start(&queue, OfflineLimits::default()).await;
    let mut bob = bob_on(&gw, "phone").await;
    for body in &BODIES[..3] {
        let d = deliver(&mut bob).await;
        assert_eq!(
            (&d.payload[..], d.from.as_str()),
            (body.as_bytes(), "alice")
        );
    }
    gw.shutdown().await;
}

/// Figures for docs: `cargo test -p imgate --test offline_queue -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn measure_enqueue_group_commit() {
    let dir = TempDir::new("measure");
    let queue = open(&dir.file());
    let (app, limits) = (imgate::ids::AppId::new("chat"), OfflineLimits::default());
    let message = |i: u64| imgate::backend::NewMessage {
        from: None,
        message_id: imgate::ids::MessageId(i),
        payload: bytes::Bytes::from_static(&[7; 100]),
    };
    let started = tokio::time::Instant::now();
    for i in 0..200 {
        let user = imgate::ids::UserId::new("seq");
        queue
            .enqueue(&app, &user, message(i), limits)
            .await
            .expect("enqueue");
    }
    let sequential = started.elapsed();
    let started = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let (queue, app) = (Arc::clone(&queue), app.clone());
        let user = imgate::ids::UserId::new(format!("u{}", i % 100).as_str());
        tasks.spawn(async move { queue.enqueue(&app, &user, message(i), limits).await });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task").expect("enqueue");
    }
    println!(
        "200 sequential enqueues: {sequential:?} ({:?} each); 1000 concurrent: {:?}",
        sequential / 200,
        started.elapsed()
    );
}
