//! The client against a real gateway: receipts, ordered delivery, resume after a drop,
//! de-duplicated re-sends, rooms, close.

mod support;

use std::time::Duration;

use imgate::session::SessionConfig;
use imgate_client::{
    Client, ClientError, ConnectCause, ConnectFailure, ConnectionState, Event, ReceiptStatus,
    StopReason, Target, TransportKind,
};
use imgate_codec::{CloseCode, Hello, Kind};
use imgate_transports::{Connector, ConnectorConfig};
use support::{payload, payload_id};

const STEP: Duration = Duration::from_secs(10);

async fn wait_connected(client: &Client, resumed: bool) -> u64 {
    let mut state = client.state();
    let state = tokio::time::timeout(
        STEP,
        state.wait_for(
            |s| matches!(s, ConnectionState::Connected { resumed: r, .. } if *r == resumed),
        ),
    )
    .await
    .expect("timely connection")
    .expect("driver alive")
    .clone();
    match state {
        ConnectionState::Connected { session_id, .. } => session_id,
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn send_gets_a_receipt_and_messages_arrive_in_order() {
    let t = support::start(SessionConfig::default()).await;
    for kind in TransportKind::ALL {
        let (alice, _alice_in) = Client::connect(t.config("alice", &[kind]))
            .await
            .expect("alice");
        let (bob, mut bob_in) = Client::connect(t.config("bob", &[kind]))
            .await
            .expect("bob");
        let receipts: Vec<_> = (1..=50)
            .map(|n| alice.send(Target::user("bob"), payload("a", n)))
            .collect();
        for receipt in receipts {
            let receipt = receipt.await.expect("receipt");
            assert_eq!(receipt.status(), ReceiptStatus::Delivered, "{kind}");
            assert_ne!(receipt.message_id, 0);
        }
        for n in 1..=50 {
            let m = tokio::time::timeout(STEP, bob_in.recv())
                .await
                .expect("timely")
                .expect("message");
            assert_eq!(payload_id(&m.payload), ("a".to_owned(), n), "{kind}");
            assert_eq!(m.from, "alice");
        }
        let rejected = alice.send(Target::Backend, "to nobody").await;
        assert!(
            matches!(rejected, Err(ClientError::Rejected { code, .. }) if code.0 == 4101),
            "{rejected:?}"
        );
        alice.close().await;
        bob.close().await;
    }
    t.gw.shutdown().await;
}

#[tokio::test]
async fn resumes_after_a_drop_and_replays_what_was_missed() {
    let t = support::start(SessionConfig::default()).await;
    let (alice, _alice_in) = Client::connect(t.config("alice", &[TransportKind::Tcp]))
        .await
        .expect("alice");
    let (bob, mut bob_in) =
        Client::connect(t.config("bob", &[TransportKind::Quic, TransportKind::Wss]))
            .await
            .expect("bob");
    let first = wait_connected(&bob, false).await;
    let mut next = 1;
    let mut resumed = 0;
    for round in 0..20 {
        for _ in 0..10 {
            alice
                .send(Target::user("bob"), payload("a", next))
                .await
                .expect("receipt");
            next += 1;
        }
        let mut events = bob.events();
        bob.debug_drop_connection();
        if round % 2 == 0 {
            // Some sends while bob is away.
            alice
                .send(Target::user("bob"), payload("a", next))
                .await
                .expect("receipt");
            next += 1;
        }
        loop {
            match tokio::time::timeout(STEP, events.recv()).await {
                Ok(Ok(Event::Connected {
                    resumed: true,
                    session_id,
                    ..
                })) => {
                    assert_eq!(session_id, first);
                    resumed += 1;
                    break;
                }
                Ok(Ok(Event::ResumeRefused { reason, .. })) => panic!("resume refused: {reason:?}"),
                Ok(Ok(_)) => {}
                other => panic!("no resume: {other:?}"),
            }
        }
    }
    assert_eq!(resumed, 20, "one resume per drop");
    for n in 1..next {
        let m = tokio::time::timeout(STEP, bob_in.recv())
            .await
            .expect("timely")
            .expect("message");
        assert_eq!(payload_id(&m.payload).1, n);
        assert_eq!(m.session_id, first, "resumed, never a fresh session");
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), bob_in.recv())
            .await
            .is_err()
    );
    alice.close().await;
    bob.close().await;
    t.gw.shutdown().await;
}

#[tokio::test]
async fn unreceipted_sends_are_resent_after_reconnect_and_deduplicated() {
    let t = support::start(SessionConfig::default()).await;
    let (alice, _alice_in) = Client::connect(t.config("alice", &[TransportKind::Tcp]))
        .await
        .expect("alice");
    let (_bob, mut bob_in) = Client::connect(t.config("bob", &[TransportKind::Tcp]))
        .await
        .expect("bob");
    // Queue sends and cut the connection right away, over and over: many are on the wire
    // (some forwarded) without their receipt when the connection dies, and get re-sent.
    let mut receipts = Vec::new();
    for n in 1..=400 {
        receipts.push(alice.send(Target::user("bob"), payload("a", n)));
        if n % 20 == 0 {
            alice.debug_drop_connection();
        }
    }
    let mut message_ids = Vec::new();
    for receipt in receipts {
        let receipt = tokio::time::timeout(STEP, receipt)
            .await
            .expect("timely receipt")
            .expect("receipt");
        message_ids.push(receipt.message_id);
    }
    for n in 1..=400 {
        let m = tokio::time::timeout(STEP, bob_in.recv())
            .await
            .expect("timely")
            .expect("message");
        assert_eq!(payload_id(&m.payload).1, n, "each exactly once, in order");
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), bob_in.recv())
            .await
            .is_err(),
        "no duplicate after the last message"
    );
    message_ids.sort_unstable();
    message_ids.dedup();
    assert_eq!(message_ids.len(), 400, "one server message per request");
    t.gw.shutdown().await;
}

#[tokio::test]
async fn rooms_and_close() {
    let t = support::start(SessionConfig::default()).await;
    let (alice, _alice_in) = Client::connect(t.config("alice", &[TransportKind::Ws]))
        .await
        .expect("alice");
    let (bob, mut bob_in) = Client::connect(t.config("bob", &[TransportKind::Tls]))
        .await
        .expect("bob");
    bob.join_room("lobby").await.expect("join");
    alice
        .send(Target::room("lobby"), "hello room")
        .await
        .expect("send");
    let m = tokio::time::timeout(STEP, bob_in.recv())
        .await
        .expect("timely")
        .expect("message");
    assert_eq!(
        (m.room.as_str(), &m.payload[..]),
        ("lobby", &b"hello room"[..])
    );
    bob.leave_room("lobby").await.expect("leave");
    let receipt = alice
        .send(Target::room("lobby"), "anyone?")
        .await
        .expect("send");
    // Nobody is in the room and the relay keeps no room history: accepted, stored nowhere.
    assert_eq!(receipt.status(), ReceiptStatus::Accepted);
    bob.close().await;
    assert!(matches!(
        bob.send(Target::user("alice"), "late").await,
        Err(ClientError::Stopped(StopReason::Closed))
    ));
    assert!(matches!(
        &*bob.state().borrow(),
        ConnectionState::Stopped {
            reason: StopReason::Closed
        }
    ));
    t.gw.shutdown().await;
}

#[tokio::test]
async fn a_bad_token_stops_the_client() {
    let t = support::start(SessionConfig::default()).await;
    let mut config = t.config("alice", &[TransportKind::Tcp]);
    config.token = "wrong".into();
    let result = Client::connect(config.clone()).await;
    assert!(
        matches!(&result, Err(ClientError::Connect(ConnectFailure {
            cause: ConnectCause::Rejected { code, .. }, ..
        })) if code.0 == 2001),
        "{result:?}"
    );
    // The retrying start stops for good on it too.
    let (client, _incoming) = Client::start(config).expect("start");
    let stopped = support::stopped(&client).await;
    assert!(
        matches!(&stopped, StopReason::Refused { code, .. } if code.0 == 2001),
        "{stopped:?}"
    );
    t.gw.shutdown().await;
}

/// Says `Hello` as carol on `device`, then nothing; returns once the server has closed the
/// connection for its silence (so a whole liveness window has passed since it connected).
async fn silent_connection_is_closed(t: &support::TestGateway, device: &str) {
    let connector = Connector::new(ConnectorConfig::new(TransportKind::Tcp, t.roots.clone()))
        .expect("connector");
    let addr = t.gw.local_addr(TransportKind::Tcp).expect("tcp");
    let mut conn = connector.connect(addr).await.expect("connect");
    let hello = Hello {
        version: 1,
        token: "tok-carol".into(),
        app_id: "chat".into(),
        device_id: device.into(),
        ..Hello::default()
    };
    conn.send(&hello.into()).await.expect("hello");
    let mut code = None;
    while let Ok(Ok(Some(frame))) = tokio::time::timeout(STEP, conn.recv()).await {
        if let Some(Kind::Error(error)) = frame.kind {
            code = Some(error.close_code());
        }
    }
    assert_eq!(
        code,
        Some(CloseCode::HEARTBEAT_TIMEOUT),
        "closed for silence"
    );
}

#[tokio::test]
async fn heartbeats_keep_an_idle_connection_alive() {
    let session = SessionConfig {
        heartbeat: Duration::from_millis(100),
        ..SessionConfig::default()
    };
    let t = support::start(session).await;
    let (alice, _alice_in) = Client::connect(t.config("alice", &[TransportKind::Tcp]))
        .await
        .expect("alice");
    let mut events = alice.events();
    // Four liveness windows (250 ms each) pass, each shown by a connection opened after alice
    // that stays silent and is closed for it: alice, idle as long, is not.
    for device in ["silent-1", "silent-2", "silent-3", "silent-4"] {
        silent_connection_is_closed(&t, device).await;
    }
    assert!(events.try_recv().is_err(), "no reconnect while idle");
    let sessions = t.gw.handle().user_sessions(&"chat".into(), &"alice".into());
    assert!(
        matches!(&sessions[..], [s] if s.attached),
        "alice stays attached: {sessions:?}"
    );
    alice
        .send(Target::user("alice"), "self")
        .await
        .expect("send");
    t.gw.shutdown().await;
}
