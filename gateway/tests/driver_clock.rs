//! The runtime's timers, to the millisecond: the real handshake task and session driver over
//! in-memory pipes, on tokio's paused clock. Time moves only when every task is waiting, and
//! then straight to the next timer, so "nothing at T − 1 ms, exactly this at T" is exact and
//! costs no wall-clock time.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use imgate::backend::RelayBackend;
use imgate::deliver::{Delivery, Target};
use imgate::ids::{AppId, MessageId, UserId};
use imgate::offline::PushTrigger;
use imgate::session::SessionConfig;
use imgate::{RunningGateway, ServerConfig};
use imgate_codec::{Ack, CloseCode, GoAwayReason, Kind, Ping};
use imgate_transports::FramedConn;
use support::pipe::{clocked, next, next_kind, pending, pipe, pipe_holding, start_piped};
use support::{app, hello, resume_of};
use tokio::time::{Instant, sleep_until};

const MS: Duration = Duration::from_millis(1);

fn relay(session: SessionConfig) -> imgate::App {
    app(Arc::new(RelayBackend::default()), session)
}

async fn deliver(gw: &RunningGateway, user: &str, body: &'static str) -> MessageId {
    let delivery = Delivery {
        target: Target::User(UserId::new(user)),
        payload: Bytes::from_static(body.as_bytes()),
        options: Default::default(),
    };
    gw.handle()
        .deliver(&AppId::new("chat"), delivery)
        .await
        .expect("deliver")
        .message_id
}

fn error_code(kind: &Kind) -> CloseCode {
    match kind {
        Kind::Error(error) => error.close_code(),
        other => panic!("expected an Error, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn an_unacknowledged_message_is_pushed_once_exactly_at_the_ack_timeout() {
    let ack_timeout = Duration::from_secs(20);
    let session = SessionConfig {
        ack_timeout,
        // Liveness (2.5 heartbeats) well past the ack time-outs below.
        heartbeat: Duration::from_secs(60),
        ..SessionConfig::default()
    };
    let (app, push) = clocked(relay(session));
    let gw = start_piped(app, ServerConfig::default()).await;
    let mut alice = pipe(&gw);
    hello(&mut alice, "tok-alice", None).await;
    let sent = Instant::now();
    let message = deliver(&gw, "alice", "hi").await;
    let Kind::Deliver(first) = next_kind(&mut alice).await else {
        panic!("expected the Deliver")
    };
    assert_eq!(Instant::now(), sent, "transmitted at once");

    sleep_until(sent + ack_timeout - MS).await;
    assert!(
        push.log().is_empty(),
        "nothing pushed before the ack time-out"
    );
    sleep_until(sent + ack_timeout + MS).await;
    let log = push.log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        log[0].0,
        sent + ack_timeout,
        "pushed exactly at the ack time-out"
    );
    assert_eq!(log[0].1, vec![message]);
    assert_eq!(log[0].2, PushTrigger::AckTimeout);

    // A second message, then the client acknowledges only the first: the first is never
    // pushed again, the second exactly once, at its own time-out.
    let second_sent = Instant::now();
    let second = deliver(&gw, "alice", "again").await;
    assert!(matches!(next_kind(&mut alice).await, Kind::Deliver(_)));
    alice
        .send(&Ack { seq: first.seq }.into())
        .await
        .expect("ack");
    sleep_until(second_sent + 3 * ack_timeout).await;
    let log = push.log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[1].0, second_sent + ack_timeout);
    assert_eq!(log[1].1, vec![second]);
    gw.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_closed_with_heartbeat_timeout_exactly_at_its_liveness_deadline() {
    let heartbeat = Duration::from_secs(10);
    let session = SessionConfig {
        heartbeat,
        liveness_factor: 2.5,
        ..SessionConfig::default()
    };
    let liveness = Duration::from_secs(25);
    let gw = start_piped(relay(session), ServerConfig::default()).await;
    let mut alice = pipe(&gw);
    let welcome = hello(&mut alice, "tok-alice", None).await;
    assert_eq!(welcome.heartbeat_ms, 10_000);
    let attached = Instant::now();

    // A ping late in the window moves the deadline to a full window after it.
    sleep_until(attached + Duration::from_secs(20)).await;
    alice.send(&Ping::default().into()).await.expect("ping");
    assert!(matches!(next_kind(&mut alice).await, Kind::Pong(_)));
    let pinged = Instant::now();
    assert_eq!(pinged, attached + Duration::from_secs(20));

    sleep_until(pinged + liveness - MS).await;
    assert!(!pending(&mut alice), "still open 1 ms before the deadline");
    let error = next_kind(&mut alice).await;
    assert_eq!(
        Instant::now(),
        pinged + liveness,
        "closed exactly at the deadline"
    );
    assert_eq!(error_code(&error), CloseCode::HEARTBEAT_TIMEOUT);
    assert!(
        next(&mut alice).await.is_none(),
        "the Error is the last frame"
    );
    gw.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_says_hello_is_refused_exactly_at_the_handshake_deadline() {
    let handshake_timeout = Duration::from_secs(3);
    let server = ServerConfig {
        handshake_timeout,
        ..ServerConfig::default()
    };
    let gw = start_piped(relay(SessionConfig::default()), server).await;
    let mut silent = pipe(&gw);
    let opened = Instant::now();
    sleep_until(opened + handshake_timeout - MS).await;
    assert!(
        !pending(&mut silent),
        "still waiting 1 ms before the deadline"
    );
    let error = next_kind(&mut silent).await;
    assert_eq!(Instant::now(), opened + handshake_timeout);
    assert_eq!(error_code(&error), CloseCode::HANDSHAKE_TIMEOUT);
    assert!(
        next(&mut silent).await.is_none(),
        "the Error is the last frame"
    );
    gw.shutdown().await;
}

/// A connected client that holds `n` messages it has not acknowledged.
async fn client_holding(
    gw: &RunningGateway,
    token: &str,
    user: &str,
    n: usize,
) -> (FramedConn, u64) {
    let mut conn = pipe(gw);
    hello(&mut conn, token, None).await;
    let mut last = 0;
    for _ in 0..n {
        deliver(gw, user, "held").await;
        let Kind::Deliver(d) = next_kind(&mut conn).await else {
            panic!("expected a Deliver")
        };
        last = d.seq;
    }
    (conn, last)
}

#[tokio::test(start_paused = true)]
async fn a_drain_sends_go_away_at_once_and_closes_a_lingering_client_exactly_at_the_grace() {
    let grace = Duration::from_secs(5);
    let gw = start_piped(relay(SessionConfig::default()), ServerConfig::default()).await;
    // It holds a message it never acknowledges, so only the grace ends its connection.
    let (mut stays, _) = client_holding(&gw, "tok-alice", "alice", 1).await;
    let started = Instant::now();
    let drain = tokio::spawn(gw.drain(grace, Duration::from_secs(1)));

    let Kind::GoAway(go_away) = next_kind(&mut stays).await else {
        panic!("expected GoAway")
    };
    assert_eq!(Instant::now(), started, "GoAway at the drain's start");
    assert_eq!(go_away.reason(), GoAwayReason::Drain);
    assert_eq!(go_away.reconnect_after_ms, 1000);

    sleep_until(started + grace - MS).await;
    assert!(
        !pending(&mut stays),
        "still connected 1 ms before the grace ends"
    );
    assert!(
        next(&mut stays).await.is_none(),
        "GoAway was the last frame"
    );
    assert_eq!(
        Instant::now(),
        started + grace,
        "disconnected exactly at the grace"
    );
    let report = drain.await.expect("drain");
    assert_eq!(report.ended, 1, "{report}");
    assert!(report.clean, "{report}");
}

#[tokio::test(start_paused = true)]
async fn a_drain_closes_a_client_holding_nothing_at_once_and_one_holding_messages_at_its_ack() {
    let grace = Duration::from_secs(30);
    let gw = start_piped(relay(SessionConfig::default()), ServerConfig::default()).await;
    let (mut idle, _) = client_holding(&gw, "tok-alice", "alice", 0).await;
    let (mut reader, last) = client_holding(&gw, "tok-bob", "bob", 2).await;
    let started = Instant::now();
    let drain = tokio::spawn(gw.drain(grace, Duration::ZERO));

    assert!(matches!(next_kind(&mut idle).await, Kind::GoAway(_)));
    assert!(next(&mut idle).await.is_none(), "closed after the GoAway");
    assert_eq!(
        Instant::now(),
        started,
        "nothing held: closed at the drain's start"
    );

    assert!(matches!(next_kind(&mut reader).await, Kind::GoAway(_)));
    sleep_until(started + Duration::from_secs(2)).await;
    reader
        .send(&Ack { seq: last - 1 }.into())
        .await
        .expect("partial ack");
    sleep_until(started + Duration::from_secs(3)).await;
    assert!(!pending(&mut reader), "one message still held: still open");
    reader.send(&Ack { seq: last }.into()).await.expect("ack");
    assert!(
        next(&mut reader).await.is_none(),
        "closed once it holds nothing"
    );
    assert_eq!(Instant::now(), started + Duration::from_secs(3));
    let report = drain.await.expect("drain");
    assert_eq!(
        Instant::now(),
        started + Duration::from_secs(3),
        "the drain ends with the last close, not at the grace"
    );
    assert_eq!(report.messages_handed_offline, 0, "{report}");
    assert!(report.clean, "{report}");
}

#[tokio::test(start_paused = true)]
async fn a_connection_yet_to_say_hello_is_refused_going_away_when_a_drain_starts() {
    let gw = start_piped(relay(SessionConfig::default()), ServerConfig::default()).await;
    let mut late = pipe(&gw);
    sleep_until(Instant::now() + Duration::from_secs(1)).await;
    let started = Instant::now();
    let drain = tokio::spawn(gw.drain(Duration::from_secs(5), Duration::ZERO));
    let error = next_kind(&mut late).await;
    assert_eq!(Instant::now(), started, "refused at the drain's start");
    assert_eq!(error_code(&error), CloseCode::GOING_AWAY);
    assert!(
        next(&mut late).await.is_none(),
        "the Error is the last frame"
    );
    let report = drain.await.expect("drain");
    assert_eq!(Instant::now(), started, "nothing left to wait for");
    assert!(report.clean, "{report}");
}

#[tokio::test(start_paused = true)]
async fn a_drain_ends_as_soon_as_the_last_client_leaves() {
    let grace = Duration::from_secs(30);
    let gw = start_piped(relay(SessionConfig::default()), ServerConfig::default()).await;
    // It holds a message, so the drain waits for it; it leaves without acknowledging.
    let (mut leaves, _) = client_holding(&gw, "tok-bob", "bob", 1).await;
    let started = Instant::now();
    let drain = tokio::spawn(gw.drain(grace, Duration::ZERO));
    assert!(matches!(next_kind(&mut leaves).await, Kind::GoAway(_)));
    sleep_until(started + Duration::from_secs(2)).await;
    assert!(
        !pending(&mut leaves),
        "still open while it holds the message"
    );
    drop(leaves);
    let report = drain.await.expect("drain");
    assert_eq!(
        Instant::now(),
        started + Duration::from_secs(2),
        "done when the client left, not at the grace"
    );
    assert!(report.clean, "{report}");
}

#[tokio::test(start_paused = true)]
async fn a_detached_session_is_pushed_exactly_at_the_push_grace_then_ended_at_the_resume_window() {
    let push_grace = Duration::from_secs(10);
    let resume_window = Duration::from_secs(120);
    let session = SessionConfig {
        push_grace,
        resume_window,
        // The ack time-out must not be what pushes (it only runs while attached).
        ack_timeout: Duration::from_secs(5),
        ..SessionConfig::default()
    };
    let (app, push) = clocked(relay(session));
    let gw = start_piped(app, ServerConfig::default()).await;
    let mut alice = pipe(&gw);
    hello(&mut alice, "tok-alice", None).await;
    let message = deliver(&gw, "alice", "hi").await;
    assert!(matches!(next_kind(&mut alice).await, Kind::Deliver(_)));
    drop(alice);
    let detached = Instant::now();

    sleep_until(detached + push_grace - MS).await;
    assert!(push.log().is_empty(), "{:?}", push.log());
    sleep_until(detached + push_grace + MS).await;
    let log = push.log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].0, detached + push_grace);
    assert_eq!(log[0].1, vec![message]);
    assert_eq!(log[0].2, PushTrigger::DetachedGrace);

    sleep_until(detached + resume_window - MS).await;
    assert_eq!(push.log().len(), 1, "pushed once while the session waits");
    sleep_until(detached + resume_window + MS).await;
    let log = push.log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(
        log[1].0,
        detached + resume_window,
        "ended exactly at the window"
    );
    assert!(
        matches!(log[1].2, PushTrigger::SessionEnded(_)),
        "{:?}",
        log[1].2
    );
    gw.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_take_over_behind_a_large_queued_frame_still_ends_with_go_away() {
    let gw = start_piped(relay(SessionConfig::default()), ServerConfig::default()).await;
    // A 4 KiB pipe: the 40 KB message waits in the server's write queue, past the driver's
    // high-water mark, when the take-over comes.
    let mut old = pipe_holding(&gw, 4096);
    hello(&mut old, "tok-alice", None).await;
    let payload: &'static str = Box::leak("x".repeat(40_000).into_boxed_str());
    deliver(&gw, "alice", payload).await;
    let mut new = pipe(&gw);
    hello(&mut new, "tok-alice", None).await;
    let Kind::Deliver(message) = next_kind(&mut old).await else {
        panic!("expected the Deliver first")
    };
    assert_eq!(message.payload.len(), 40_000);
    let Kind::GoAway(go_away) = next_kind(&mut old).await else {
        panic!("expected GoAway after it")
    };
    assert_eq!(go_away.reason(), GoAwayReason::Takeover);
    assert!(next(&mut old).await.is_none(), "GoAway is the last frame");
    gw.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_driver_whose_session_is_resumed_during_its_close_lets_go_of_it() {
    let gw = start_piped(relay(SessionConfig::default()), ServerConfig::default()).await;
    // A 4 KiB pipe the client does not read: the close after its protocol error waits to
    // flush the 40 KB message ahead of the Error.
    let mut first = pipe_holding(&gw, 4096);
    let welcome = hello(&mut first, "tok-alice", None).await;
    let payload: &'static str = Box::leak("x".repeat(40_000).into_boxed_str());
    deliver(&gw, "alice", payload).await;
    // Every task runs until it waits: the message is in the server's write queue.
    sleep_until(Instant::now() + MS).await;
    first.send(&Ack { seq: 99 }.into()).await.expect("bad ack");
    // Meanwhile the device resumes, and a fresh login of it takes the session over: the
    // resume's wake-up went to the new driver, and nothing wakes the session again.
    let mut resumed = pipe(&gw);
    assert!(
        hello(&mut resumed, "tok-alice", Some(resume_of(&welcome, 0)))
            .await
            .resumed
    );
    let mut fresh = pipe(&gw);
    hello(&mut fresh, "tok-alice", None).await;
    let mut last = None;
    while let Some(frame) = next(&mut first).await {
        last = frame.kind;
    }
    assert_eq!(
        error_code(&last.expect("frames")),
        CloseCode::PROTOCOL_ERROR
    );

    let started = Instant::now();
    let report = gw.drain(Duration::from_secs(5), Duration::ZERO).await;
    assert!(
        report.clean,
        "the first connection's driver still runs: {report}"
    );
    assert_eq!(
        Instant::now(),
        started,
        "nothing held: the drain ends at once"
    );
    drop((resumed, fresh));
}
