//! The gateway over real TCP sockets with a scripted client: handshake, relay, acks, resume.

mod support;

use bytes::Bytes;
use imgate_codec::{Ack, CloseCode, Hello, Kind, ReceiptStatus, Resume};
use support::{connect, hello, recv, start, text};

#[tokio::test]
async fn direct_message_is_relayed_receipted_acked_and_resumed() {
    let gw = start().await;
    let mut alice = connect(&gw).await;
    let mut bob = connect(&gw).await;
    hello(&mut alice, "tok-alice", None).await;
    let bob_welcome = hello(&mut bob, "tok-bob", None).await;
    assert!(!bob_welcome.resumed);

    alice.send(&text(1, "bob", "hi bob")).await.expect("send");
    match recv(&mut alice).await {
        Kind::Receipt(r) => {
            assert_eq!(r.msg_id, 1);
            assert_eq!(r.status(), ReceiptStatus::Delivered);
        }
        other => panic!("expected Receipt, got {other:?}"),
    }
    match recv(&mut bob).await {
        Kind::Deliver(d) => {
            assert_eq!(
                (d.seq, &d.from, &d.payload[..]),
                (1, &"alice".to_owned(), &b"hi bob"[..])
            );
        }
        other => panic!("expected Deliver, got {other:?}"),
    }
    // Bob drops without acking; alice sends another; bob resumes from seq 1.
    drop(bob);
    alice
        .send(&text(2, "bob", "still there?"))
        .await
        .expect("send");
    assert!(matches!(recv(&mut alice).await, Kind::Receipt(_)));
    let mut bob = connect(&gw).await;
    let resumed = hello(
        &mut bob,
        "tok-bob",
        Some(Resume {
            session_id: bob_welcome.session_id,
            resume_secret: bob_welcome.resume_secret.clone(),
            last_seq: 1,
        }),
    )
    .await;
    assert!(
        resumed.resumed,
        "resume refused: {:?}",
        resumed.resume_refused()
    );
    match recv(&mut bob).await {
        Kind::Deliver(d) => assert_eq!((d.seq, &d.payload[..]), (2, &b"still there?"[..])),
        other => panic!("expected replayed Deliver, got {other:?}"),
    }
    bob.send(&Ack { seq: 2 }.into()).await.expect("ack");

    // A wrong secret gets a fresh session, flagged.
    let mut thief = connect(&gw).await;
    let refused = hello(
        &mut thief,
        "tok-bob",
        Some(Resume {
            session_id: bob_welcome.session_id,
            resume_secret: Bytes::from_static(&[0; 16]),
            last_seq: 0,
        }),
    )
    .await;
    assert!(!refused.resumed);
    assert_eq!(
        refused.resume_refused(),
        imgate_codec::ResumeRefused::BadSecret
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn bad_token_and_unknown_app_are_refused_with_codes() {
    let gw = start().await;
    let mut conn = connect(&gw).await;
    let hello = Hello {
        version: 1,
        token: "nope".into(),
        app_id: "chat".into(),
        device_id: "d".into(),
        ..Default::default()
    };
    conn.send(&hello.clone().into()).await.expect("send");
    match recv(&mut conn).await {
        Kind::Error(e) => assert_eq!(e.close_code(), CloseCode::UNAUTHENTICATED),
        other => panic!("expected Error, got {other:?}"),
    }
    let mut conn = connect(&gw).await;
    let other_app = Hello {
        app_id: "other".into(),
        ..hello
    };
    conn.send(&other_app.into()).await.expect("send");
    match recv(&mut conn).await {
        Kind::Error(e) => assert_eq!(e.close_code(), CloseCode::UNKNOWN_APP),
        other => panic!("expected Error, got {other:?}"),
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_room_delivery_skips_the_excluded_sender_instead_of_reporting_it_offline() {
    use imgate::deliver::{Delivery, DeliveryOptions, DeviceOutcome, Target};
    use imgate::ids::{AppId, RoomId, SessionId, UserId};

    let gw = start().await;
    let mut alice = connect(&gw).await;
    let mut bob = connect(&gw).await;
    let alice_welcome = hello(&mut alice, "tok-alice", None).await;
    hello(&mut bob, "tok-bob", None).await;
    let handle = gw.handle();
    let (app, room) = (AppId::new("chat"), RoomId::new("lobby"));
    for user in ["alice", "bob", "carol"] {
        handle.join_room(&app, &room, UserId::new(user));
    }
    let report = handle
        .deliver(
            &app,
            Delivery {
                target: Target::Room(room.clone()),
                payload: Bytes::from_static(b"hello room"),
                options: DeliveryOptions {
                    from: Some(UserId::new("alice")),
                    exclude_session: Some(SessionId(alice_welcome.session_id)),
                    push: None,
                    ..DeliveryOptions::default()
                },
            },
        )
        .await
        .expect("deliver");
    // Bob is reached; alice sent it (her only session is excluded), carol has no session:
    // neither is reported, so neither is pushed or handed to the backend as undelivered.
    let reached: Vec<_> = report
        .devices
        .iter()
        .map(|d| (d.user.as_str(), d.outcome.clone()))
        .collect();
    assert_eq!(reached, [("bob", DeviceOutcome::Sent { seq: 1 })]);
    match recv(&mut bob).await {
        Kind::Deliver(d) => assert_eq!(
            (d.room.as_str(), &d.payload[..]),
            ("lobby", &b"hello room"[..])
        ),
        other => panic!("expected Deliver, got {other:?}"),
    }
    gw.shutdown().await;
}
