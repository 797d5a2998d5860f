//! A restart with durable sessions is invisible to the offline path: a restored session
//! whose device stays away is pushed after the push grace and reported to the backend when
//! the resume window ends — with the messages it held before the restart, in order — exactly
//! as if the process had never stopped.

mod support;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imgate::ServerConfig;
use imgate::ids::{AppId, DeviceId, MessageId, UserId};
use imgate::offline::{PushPolicy, PushTrigger};
use imgate::session::{SessionConfig, UndeliveredReason};
use imgate::store::{Durability, RedbStore, SessionStore};
use imgate_codec::Kind;
use support::{RecordingRelay, builder, connect, hello, recv, text};
use tokio::sync::watch;

/// Records every push trigger; `changed` ticks on each.
#[derive(Debug)]
struct RecordingPush {
    pushes: Mutex<Vec<(String, Vec<MessageId>, PushTrigger)>>,
    changed: watch::Sender<usize>,
}

impl PushPolicy for RecordingPush {
    fn push(
        &self,
        _app: &AppId,
        user: &UserId,
        _device: Option<&DeviceId>,
        messages: &[MessageId],
        trigger: PushTrigger,
    ) {
        let mut pushes = self.pushes.lock().expect("lock");
        pushes.push((user.to_string(), messages.to_vec(), trigger));
        self.changed.send_replace(pushes.len());
    }
}

fn session_config() -> SessionConfig {
    SessionConfig {
        push_grace: Duration::from_secs(1),
        resume_window: Duration::from_secs(2),
        durability: Durability::Disk,
        ..SessionConfig::default()
    }
}

async fn gateway(
    path: &std::path::Path,
    backend: &RecordingRelay,
    push: &Arc<RecordingPush>,
) -> imgate::RunningGateway {
    let mut app = support::app(Arc::new(backend.clone()), session_config());
    app.push = Arc::clone(push) as Arc<dyn PushPolicy>;
    let store = RedbStore::open(path, None).expect("store");
    builder(app, ServerConfig::default())
        .store(Arc::new(store))
        .start()
        .await
        .expect("start")
}

fn store_path() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("imgate-restore-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("sessions.redb")
}

#[tokio::test]
async fn a_restored_session_whose_device_stays_away_is_pushed_then_reported() {
    let path = store_path();
    let backend = RecordingRelay::default();
    let mut reports_seen = backend.reported.subscribe();
    let (changed, mut pushes_seen) = watch::channel(0);
    let push = Arc::new(RecordingPush {
        pushes: Mutex::new(Vec::new()),
        changed,
    });

    let gw = gateway(&path, &backend, &push).await;
    let mut bob = connect(&gw).await;
    hello(&mut bob, "tok-bob", None).await;
    let mut alice = connect(&gw).await;
    hello(&mut alice, "tok-alice", None).await;
    let mut ids = Vec::new();
    for (msg_id, body) in [(1, "one"), (2, "two"), (3, "three")] {
        alice.send(&text(msg_id, "bob", body)).await.expect("send");
        assert!(matches!(recv(&mut alice).await, Kind::Receipt(_)));
        match recv(&mut bob).await {
            Kind::Deliver(d) => ids.push(MessageId(d.message_id)),
            other => panic!("expected Deliver, got {other:?}"),
        }
    }
    // A hard stop: no drain, sessions neither ended nor handed offline; only the store knows.
    gw.shutdown().await;
    drop((alice, bob));
    assert!(
        push.pushes.lock().expect("lock").is_empty(),
        "nothing pushed before the restart"
    );

    let gw = gateway(&path, &backend, &push).await;
    assert_eq!(gw.handle().session_count(), 2, "both sessions restored");
    // Bob never comes back: after the push grace his three messages are pushed, once.
    tokio::time::timeout(Duration::from_secs(10), pushes_seen.wait_for(|n| *n >= 1))
        .await
        .expect("pushed in time")
        .expect("watch");
    {
        let pushes = push.pushes.lock().expect("lock");
        assert_eq!(
            pushes[0],
            ("bob".to_owned(), ids.clone(), PushTrigger::DetachedGrace)
        );
    }
    // After the resume window the backend hears of them, in order, and the sessions are gone.
    tokio::time::timeout(Duration::from_secs(10), reports_seen.wait_for(|n| *n >= 3))
        .await
        .expect("reported in time")
        .expect("watch");
    let reported = backend.undelivered.lock().expect("lock").clone();
    let bob_reported: Vec<(MessageId, u64)> = reported
        .iter()
        .filter(|(user, _, reason)| user == "bob" && *reason == UndeliveredReason::SessionEnded)
        .map(|(_, m, _)| (m.message_id, m.seq))
        .collect();
    assert_eq!(
        bob_reported,
        ids.iter().copied().zip(1..=3).collect::<Vec<_>>()
    );
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}

/// A relay whose `on_undelivered` records the report and then never returns: a backend that
/// has not taken the notice yet when the process dies.
#[derive(Debug, Default, Clone)]
struct UntakenReports {
    relay: imgate::backend::RelayBackend,
    heard: Arc<watch::Sender<usize>>,
}

#[imgate::backend::async_trait]
impl imgate::backend::Backend for UntakenReports {
    async fn on_upstream(
        &self,
        gateway: &imgate::GatewayHandle,
        origin: &imgate::backend::Origin,
        request: imgate::backend::UpstreamRequest,
    ) -> imgate::backend::UpstreamOutcome {
        self.relay.on_upstream(gateway, origin, request).await
    }

    async fn on_undelivered(
        &self,
        _gateway: &imgate::GatewayHandle,
        _app: &AppId,
        _user: &UserId,
        messages: &[imgate::session::Undelivered],
        _reason: UndeliveredReason,
    ) {
        self.heard.send_modify(|n| *n += messages.len());
        std::future::pending::<()>().await
    }
}

#[tokio::test]
async fn a_session_that_ended_before_its_report_was_taken_is_restored_and_reported_again() {
    let dir = std::env::temp_dir().join(format!("imgate-untaken-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("sessions.redb");
    let config = SessionConfig {
        push_grace: Duration::from_millis(50),
        resume_window: Duration::from_millis(300),
        durability: Durability::Disk,
        ..SessionConfig::default()
    };
    let start = |backend: Arc<dyn imgate::backend::Backend>, store: Arc<RedbStore>| {
        let app = support::app(backend, config.clone());
        builder(app, ServerConfig::default()).store(store).start()
    };

    let untaken = UntakenReports::default();
    let store = Arc::new(RedbStore::open(&path, None).expect("store"));
    let gw = start(Arc::new(untaken.clone()), Arc::clone(&store))
        .await
        .expect("start");
    let mut bob = connect(&gw).await;
    hello(&mut bob, "tok-bob", None).await;
    let mut alice = connect(&gw).await;
    hello(&mut alice, "tok-alice", None).await;
    let mut ids = Vec::new();
    for msg_id in 1..=3 {
        alice.send(&text(msg_id, "bob", "m")).await.expect("send");
        assert!(matches!(recv(&mut alice).await, Kind::Receipt(_)));
        match recv(&mut bob).await {
            Kind::Deliver(d) => ids.push((MessageId(d.message_id), d.seq)),
            other => panic!("expected Deliver, got {other:?}"),
        }
    }
    // Bob goes away for good: his session ends after the resume window and its three
    // messages are handed to a backend that never takes them.
    drop(bob);
    let mut heard = untaken.heard.subscribe();
    tokio::time::timeout(Duration::from_secs(10), heard.wait_for(|n| *n >= 3))
        .await
        .expect("reported in time")
        .expect("watch");
    // Whatever the gateway appended so far is on disk; then the process "dies".
    store.sync().await.expect("sync");
    gw.shutdown().await;
    drop((alice, store));

    let backend = RecordingRelay::default();
    let mut reports_seen = backend.reported.subscribe();
    let store = Arc::new(RedbStore::open(&path, None).expect("store again"));
    let gw = start(Arc::new(backend.clone()), store)
        .await
        .expect("restart");
    tokio::time::timeout(Duration::from_secs(10), reports_seen.wait_for(|n| *n >= 3))
        .await
        .expect("bob's messages reported after the restart")
        .expect("watch");
    let bob_reported: Vec<(MessageId, u64)> = backend
        .undelivered
        .lock()
        .expect("lock")
        .iter()
        .filter(|(user, _, reason)| user == "bob" && *reason == UndeliveredReason::SessionEnded)
        .map(|(_, m, _)| (m.message_id, m.seq))
        .collect();
    assert_eq!(
        bob_reported, ids,
        "the untaken report is made again, in order"
    );
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
