//! Every session transition, at exact instants of a fake clock.

use std::time::Duration;

use bytes::Bytes;
use imgate_codec::{
    Ack, CloseCode, Frame, GoAwayReason, Kind, Ping, Platform, Receipt, ReceiptStatus,
    ResumeRefused, Send,
};
use tokio::time::Instant;

use super::*;

const SECRET: [u8; 16] = [7; 16];

fn identity() -> Identity {
    Identity {
        app: AppId::new("chat"),
        user: UserId::new("alice"),
        device: DeviceId::new("phone"),
        platform: Platform::Ios,
    }
}

fn config() -> SessionConfig {
    SessionConfig {
        heartbeat: Duration::from_secs(10),
        max_unacked: 4,
        max_unacked_bytes: 1000,
        resume_window: Duration::from_secs(60),
        push_grace: Duration::from_secs(5),
        ack_timeout: Duration::from_secs(8),
        ..SessionConfig::default()
    }
}

fn session(now: Instant) -> Session {
    let mut s = Session::new(
        now,
        1_000_000,
        SessionId(42),
        ResumeSecret::from_bytes(SECRET),
        identity(),
        config(),
        &Negotiated::default(),
    );
    let welcome = s.poll_transmit(now);
    assert!(matches!(welcome.and_then(|f| f.kind), Some(Kind::Welcome(w)) if !w.resumed));
    s
}

fn msg(id: u64) -> Outgoing {
    Outgoing {
        message_id: MessageId(id),
        payload: Bytes::from(vec![b'x'; 10]),
        from: Some(UserId::new("bob")),
        ..Outgoing::default()
    }
}

fn drain_frames(s: &mut Session, now: Instant) -> Vec<Frame> {
    std::iter::from_fn(|| s.poll_transmit(now)).collect()
}

fn drain_events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn delivered_seqs(frames: &[Frame]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| match &f.kind {
            Some(Kind::Deliver(d)) => Some(d.seq),
            _ => None,
        })
        .collect()
}

fn send(msg_id: u64) -> Frame {
    Send {
        msg_id,
        to: Some(imgate_codec::proto::send::To::User("bob".into())),
        payload: Bytes::from_static(b"hi"),
        ack: 0,
    }
    .into()
}

#[test]
fn handshake_deadline_and_validation() {
    let t0 = Instant::now();
    let hs = Handshake::new(t0, Duration::from_secs(5));
    assert_eq!(hs.poll_timeout(), t0 + Duration::from_secs(5));
    assert_eq!(hs.handle_timeout(t0 + Duration::from_millis(4999)), None);
    let refused = hs.handle_timeout(t0 + Duration::from_secs(5));
    assert_eq!(refused.map(|r| r.code), Some(CloseCode::HANDSHAKE_TIMEOUT));

    let hello = |version, app: &str| -> Frame {
        imgate_codec::Hello {
            version,
            app_id: app.into(),
            device_id: "d".into(),
            ..Default::default()
        }
        .into()
    };
    assert!(hs.handle_frame(hello(1, "chat")).is_ok());
    assert_eq!(
        hs.handle_frame(hello(2, "chat")).map_err(|r| r.code),
        Err(CloseCode::UNSUPPORTED_VERSION)
    );
    assert_eq!(
        hs.handle_frame(hello(1, "")).map_err(|r| r.code),
        Err(CloseCode::PROTOCOL_ERROR)
    );
    assert_eq!(
        hs.handle_frame(Ping::default().into()).map_err(|r| r.code),
        Err(CloseCode::UNEXPECTED_FRAME)
    );
}

#[test]
fn ping_is_answered_with_server_time_and_keeps_the_connection_alive() {
    let t0 = Instant::now();
    let mut s = session(t0);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(25)));
    let t1 = t0 + Duration::from_secs(20);
    s.handle_frame(
        t1,
        Ping {
            client_time_ms: 5,
            ack: 0,
        }
        .into(),
    );
    match drain_frames(&mut s, t1).pop().and_then(|f| f.kind) {
        Some(Kind::Pong(pong)) => {
            assert_eq!(pong.client_time_ms, 5);
            assert_eq!(pong.server_time_ms, 1_000_000 + 20_000);
        }
        other => panic!("expected Pong, got {other:?}"),
    }
    assert_eq!(s.poll_timeout(), Some(t1 + Duration::from_secs(25)));
    s.handle_timeout(t0 + Duration::from_secs(25) + Duration::from_millis(1));
    assert!(s.is_attached(), "a ping must reset the liveness timer");
}

#[test]
fn heartbeat_interval_follows_the_platform() {
    let t0 = Instant::now();
    let config = SessionConfig {
        platform_heartbeats: vec![(Platform::Ios, Duration::from_secs(240))],
        ..config()
    };
    let mut ios = Session::new(
        t0,
        0,
        SessionId(1),
        ResumeSecret::from_bytes(SECRET),
        identity(),
        config.clone(),
        &Negotiated::default(),
    );
    match ios.poll_transmit(t0).and_then(|f| f.kind) {
        Some(Kind::Welcome(w)) => assert_eq!(w.heartbeat_ms, 240_000),
        other => panic!("expected Welcome, got {other:?}"),
    }
    assert_eq!(ios.poll_timeout(), Some(t0 + Duration::from_secs(600)));
    let web = Identity {
        platform: Platform::Web,
        ..identity()
    };
    let mut web = Session::new(
        t0,
        0,
        SessionId(2),
        ResumeSecret::from_bytes(SECRET),
        web,
        config,
        &Negotiated::default(),
    );
    match web.poll_transmit(t0).and_then(|f| f.kind) {
        Some(Kind::Welcome(w)) => assert_eq!(w.heartbeat_ms, 10_000),
        other => panic!("expected Welcome, got {other:?}"),
    }
}

#[test]
fn silent_client_is_closed_after_two_and_a_half_intervals_and_detached() {
    let t0 = Instant::now();
    let mut s = session(t0);
    s.handle_timeout(t0 + Duration::from_millis(24_999));
    assert!(s.is_attached());
    let t1 = t0 + Duration::from_secs(25);
    s.handle_timeout(t1);
    let frames = drain_frames(&mut s, t1);
    assert!(matches!(&frames[..], [f] if matches!(&f.kind,
        Some(Kind::Error(e)) if e.close_code() == CloseCode::HEARTBEAT_TIMEOUT)));
    assert_eq!(
        drain_events(&mut s),
        vec![Event::CloseConnection {
            code: CloseCode::HEARTBEAT_TIMEOUT,
            go_away: None
        }]
    );
    assert!(!s.is_attached() && !s.is_ended(), "detached, resumable");
}

#[test]
fn deliveries_are_sequenced_and_released_by_cumulative_acks() {
    let t0 = Instant::now();
    let mut s = session(t0);
    for id in 1..=3 {
        assert_eq!(
            s.handle_deliver(t0, msg(id)),
            DeliverOutcome::Sent { seq: id }
        );
    }
    assert_eq!(delivered_seqs(&drain_frames(&mut s, t0)), vec![1, 2, 3]);
    s.handle_frame(t0, Ack { seq: 2 }.into());
    assert_eq!(
        drain_events(&mut s),
        vec![Event::Acked {
            seq: 2,
            message_ids: vec![MessageId(1), MessageId(2)]
        }]
    );
    assert_eq!(s.acked_seq(), 2);
    // A stale ack is harmless; an ack beyond what was sent is a protocol violation.
    s.handle_frame(t0, Ack { seq: 1 }.into());
    assert!(drain_events(&mut s).is_empty());
    s.handle_frame(t0, Ack { seq: 9 }.into());
    assert!(matches!(
        drain_events(&mut s)[..],
        [Event::CloseConnection {
            code: CloseCode::PROTOCOL_ERROR,
            ..
        }]
    ));
}

/// Found by the `session` fuzz target: a `Ping` or `Send` whose piggy-backed ack is beyond
/// what was sent closes the connection with `Error` as the last frame (§13): no `Pong`
/// after it, and the request it carried is not forwarded.
#[test]
fn bad_piggy_backed_ack_closes_with_error_last() {
    let t0 = Instant::now();
    for frame in [
        Frame::from(Ping {
            client_time_ms: 1,
            ack: 9,
        }),
        Frame::from(Send {
            msg_id: 1,
            to: None,
            payload: Bytes::from_static(b"hi"),
            ack: 9,
        }),
    ] {
        let mut s = session(t0);
        s.handle_frame(t0, frame);
        let frames = drain_frames(&mut s, t0);
        assert!(
            matches!(&frames[..], [Frame { kind: Some(Kind::Error(e)) }]
                if e.close_code() == CloseCode::PROTOCOL_ERROR),
            "{frames:?}"
        );
        assert_eq!(
            drain_events(&mut s),
            vec![Event::CloseConnection {
                code: CloseCode::PROTOCOL_ERROR,
                go_away: None
            }]
        );
    }
}

#[test]
fn piggy_backed_ack_in_send_counts() {
    let t0 = Instant::now();
    let mut s = session(t0);
    s.handle_deliver(t0, msg(1));
    drain_frames(&mut s, t0);
    let mut frame = send(1);
    if let Some(Kind::Send(send)) = &mut frame.kind {
        send.ack = 1;
    }
    s.handle_frame(t0, frame);
    let events = drain_events(&mut s);
    assert!(matches!(&events[0], Event::Acked { seq: 1, .. }));
    assert!(matches!(&events[1], Event::Upstream { msg_id: 1, .. }));
}

#[test]
fn unacked_message_becomes_overdue_once_after_the_ack_timeout() {
    let t0 = Instant::now();
    let mut s = session(t0);
    s.handle_deliver(t0, msg(1));
    drain_frames(&mut s, t0);
    let t1 = t0 + Duration::from_secs(1);
    s.handle_frame(t1, Ping::default().into());
    s.handle_deliver(t1, msg(2));
    drain_frames(&mut s, t1);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(8)));
    s.handle_timeout(t0 + Duration::from_secs(8));
    assert_eq!(
        drain_events(&mut s),
        vec![Event::AckOverdue {
            message_ids: vec![MessageId(1)]
        }]
    );
    assert_eq!(s.poll_timeout(), Some(t1 + Duration::from_secs(8)));
    s.handle_timeout(t1 + Duration::from_secs(8));
    assert_eq!(
        drain_events(&mut s),
        vec![Event::AckOverdue {
            message_ids: vec![MessageId(2)]
        }]
    );
    s.handle_timeout(t1 + Duration::from_secs(9));
    assert!(drain_events(&mut s).is_empty(), "reported once per message");
}

#[test]
fn messages_waiting_behind_a_socket_that_takes_nothing_become_overdue_too() {
    let t0 = Instant::now();
    let mut s = session(t0);
    for id in 1..=3 {
        s.handle_deliver(t0, msg(id));
    }
    // The socket took the first message, then nothing more: the driver pulls no further.
    assert!(matches!(
        s.poll_transmit(t0).and_then(|f| f.kind),
        Some(Kind::Deliver(d)) if d.seq == 1
    ));
    // Its pings still arrive (it is not dead, only full); the Pong waits unsent too.
    s.handle_frame(t0 + Duration::from_secs(1), Ping::default().into());
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(8)));
    s.handle_timeout(t0 + Duration::from_secs(8));
    assert_eq!(
        drain_events(&mut s),
        vec![Event::AckOverdue {
            message_ids: vec![MessageId(1), MessageId(2), MessageId(3)]
        }],
        "the two never transmitted are as overdue as the one the client never acked"
    );
}

#[test]
fn buffer_overflow_disconnects_a_slow_consumer_and_refuses_its_resume() {
    let t0 = Instant::now();
    let mut s = session(t0);
    for id in 1..=4 {
        assert!(matches!(
            s.handle_deliver(t0, msg(id)),
            DeliverOutcome::Sent { .. }
        ));
    }
    assert_eq!(s.handle_deliver(t0, msg(5)), DeliverOutcome::Overflow);
    let frames = drain_frames(&mut s, t0);
    assert!(matches!(&frames[..], [f] if matches!(&f.kind,
        Some(Kind::GoAway(g)) if g.reason() == GoAwayReason::SlowConsumer)));
    assert!(!s.is_attached());
    drain_events(&mut s);
    let refused = s.resume(t0, &identity(), &SECRET, 0, &Negotiated::default());
    assert_eq!(refused, Err(ResumeRefused::BufferOverflow));
    let events = drain_events(&mut s);
    assert_eq!(
        events[0],
        Event::Undelivered {
            reason: UndeliveredReason::BufferOverflow,
            messages: (1..=4)
                .map(|i| Undelivered {
                    message_id: MessageId(i),
                    seq: i
                })
                .collect()
        }
    );
    assert_eq!(events[1], Event::Ended);
}

#[test]
fn byte_bound_applies_too() {
    let t0 = Instant::now();
    let mut s = session(t0);
    let big = Outgoing {
        payload: Bytes::from(vec![0; 600]),
        ..msg(1)
    };
    assert!(matches!(
        s.handle_deliver(t0, big.clone()),
        DeliverOutcome::Sent { .. }
    ));
    assert_eq!(s.handle_deliver(t0, big), DeliverOutcome::Overflow);
}

#[test]
fn resume_replays_everything_after_last_seq_exactly_once_then_live() {
    let t0 = Instant::now();
    let mut s = session(t0);
    for id in 1..=3 {
        s.handle_deliver(t0, msg(id));
    }
    drain_frames(&mut s, t0);
    let t1 = t0 + Duration::from_secs(3);
    s.detach(t1);
    assert_eq!(
        s.handle_deliver(t1, msg(4)),
        DeliverOutcome::Buffered {
            seq: 4,
            push: false
        }
    );
    assert!(
        drain_frames(&mut s, t1).is_empty(),
        "nothing goes out while detached"
    );
    let generation = s.generation();
    s.resume(t1, &identity(), &SECRET, 1, &Negotiated::default())
        .expect("resume");
    assert!(s.generation() > generation);
    let frames = drain_frames(&mut s, t1);
    assert!(matches!(&frames[0].kind, Some(Kind::Welcome(w)) if w.resumed && w.session_id == 42));
    assert_eq!(delivered_seqs(&frames), vec![2, 3, 4]);
    assert_eq!(
        drain_events(&mut s),
        vec![Event::Acked {
            seq: 1,
            message_ids: vec![MessageId(1)]
        }]
    );
    assert_eq!(
        s.handle_deliver(t1, msg(5)),
        DeliverOutcome::Sent { seq: 5 }
    );
    assert_eq!(delivered_seqs(&drain_frames(&mut s, t1)), vec![5]);
}

#[test]
fn resume_refusals_leave_the_owners_session_alone_unless_the_owner_asked() {
    let t0 = Instant::now();
    let mut s = session(t0);
    s.handle_deliver(t0, msg(1));
    drain_frames(&mut s, t0);
    s.detach(t0);
    let n = Negotiated::default();
    assert_eq!(
        s.resume(t0, &identity(), &[0; 16], 0, &n),
        Err(ResumeRefused::BadSecret)
    );
    assert_eq!(
        s.resume(t0, &identity(), &SECRET[..8], 0, &n),
        Err(ResumeRefused::BadSecret)
    );
    let other = Identity {
        user: UserId::new("mallory"),
        ..identity()
    };
    assert_eq!(
        s.resume(t0, &other, &SECRET, 0, &n),
        Err(ResumeRefused::NotOwner)
    );
    assert!(!s.is_ended(), "a thief cannot end the session");
    assert!(drain_events(&mut s).is_empty());
    // A last_seq beyond what was sent: the owner's state is inconsistent; fresh start.
    assert_eq!(
        s.resume(t0, &identity(), &SECRET, 7, &n),
        Err(ResumeRefused::BadSeq)
    );
    assert!(s.is_ended());
    assert!(matches!(drain_events(&mut s)[0], Event::Undelivered { .. }));
    assert_eq!(
        s.resume(t0, &identity(), &SECRET, 0, &n),
        Err(ResumeRefused::UnknownSession)
    );
}

#[test]
fn detached_session_reports_push_grace_then_expires_handing_messages_to_offline() {
    let t0 = Instant::now();
    let mut s = session(t0);
    s.handle_deliver(t0, msg(1));
    drain_frames(&mut s, t0);
    s.detach(t0);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    s.handle_timeout(t0 + Duration::from_secs(5));
    assert_eq!(
        drain_events(&mut s),
        vec![Event::PushGraceElapsed {
            message_ids: vec![MessageId(1)]
        }]
    );
    assert_eq!(
        s.handle_deliver(t0, msg(2)),
        DeliverOutcome::Buffered { seq: 2, push: true }
    );
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(60)));
    s.handle_timeout(t0 + Duration::from_secs(60));
    assert_eq!(
        drain_events(&mut s),
        vec![
            Event::Undelivered {
                reason: UndeliveredReason::SessionEnded,
                messages: vec![
                    Undelivered {
                        message_id: MessageId(1),
                        seq: 1
                    },
                    Undelivered {
                        message_id: MessageId(2),
                        seq: 2
                    }
                ]
            },
            Event::Ended
        ]
    );
    assert_eq!(s.handle_deliver(t0, msg(3)), DeliverOutcome::Ended);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn duplicate_upstream_msg_id_is_forwarded_once_and_answered_with_the_same_receipt() {
    let t0 = Instant::now();
    let mut s = session(t0);
    s.handle_frame(t0, send(1));
    s.handle_frame(t0, send(1));
    let events = drain_events(&mut s);
    assert_eq!(
        events.len(),
        1,
        "in-flight duplicate not forwarded: {events:?}"
    );
    let receipt = Receipt {
        msg_id: 1,
        status: ReceiptStatus::Delivered.into(),
        message_id: 99,
        ..Default::default()
    };
    s.handle_receipt(receipt.clone());
    assert_eq!(drain_frames(&mut s, t0), vec![Frame::from(receipt.clone())]);
    // After a reconnect the client re-sends: same receipt, not forwarded.
    s.detach(t0);
    s.resume(t0, &identity(), &SECRET, 0, &Negotiated::default())
        .expect("resume");
    let welcome = drain_frames(&mut s, t0);
    assert!(matches!(&welcome[0].kind, Some(Kind::Welcome(w)) if w.last_receipted_msg_id == 1));
    s.handle_frame(t0, send(1));
    assert!(drain_events(&mut s).is_empty());
    assert_eq!(drain_frames(&mut s, t0), vec![Frame::from(receipt)]);
}

#[test]
fn upstream_requests_go_out_one_at_a_time_in_order_even_across_a_resume() {
    let t0 = Instant::now();
    let mut s = session(t0);
    s.handle_frame(t0, send(1));
    s.handle_frame(t0, send(2));
    let events = drain_events(&mut s);
    assert!(
        matches!(events.as_slice(), [Event::Upstream { msg_id: 1, .. }]),
        "only the first request is handed out: {events:?}"
    );
    // The connection drops while request 1 is with the backend; the client resumes and
    // sends request 3 on the new connection.
    s.detach(t0);
    s.resume(t0, &identity(), &SECRET, 0, &Negotiated::default())
        .expect("resume");
    drain_frames(&mut s, t0);
    s.handle_frame(t0, send(3));
    assert!(
        drain_events(&mut s).is_empty(),
        "nothing overtakes the request still being forwarded"
    );
    for msg_id in [1, 2, 3] {
        s.handle_receipt(Receipt {
            msg_id,
            status: ReceiptStatus::Accepted.into(),
            ..Default::default()
        });
        let next = drain_events(&mut s);
        match msg_id {
            3 => assert!(next.is_empty(), "{next:?}"),
            _ => assert!(
                matches!(next.as_slice(), [Event::Upstream { msg_id: m, .. }] if *m == msg_id + 1),
                "after receipt {msg_id}: {next:?}"
            ),
        }
    }
}

#[test]
fn a_session_gives_its_queue_buffers_back_when_it_turns_idle() {
    let t0 = Instant::now();
    let mut s = session(t0);
    s.handle_deliver(t0, msg(1));
    s.handle_frame(t0, send(1));
    drain_frames(&mut s, t0);
    drain_events(&mut s);
    s.handle_receipt(Receipt {
        msg_id: 1,
        status: ReceiptStatus::Accepted.into(),
        ..Default::default()
    });
    drain_frames(&mut s, t0);
    let mut ack = send(2);
    if let Some(Kind::Send(send)) = &mut ack.kind {
        send.ack = 1;
    }
    s.handle_frame(t0, ack);
    drain_events(&mut s);
    assert_eq!(
        s.outbox.capacity(),
        0,
        "a fully acknowledged outbox is given back"
    );
    assert!(
        s.transmit.capacity() > 0 && s.events.capacity() > 0,
        "while messages flow the queues keep their buffers"
    );
    s.handle_frame(
        t0,
        Ping {
            client_time_ms: 0,
            ack: 0,
        }
        .into(),
    );
    drain_events(&mut s);
    let frames = drain_frames(&mut s, t0);
    assert!(matches!(&frames[..], [f] if matches!(f.kind, Some(Kind::Pong(_)))));
    assert_eq!(
        (
            s.transmit.capacity(),
            s.events.capacity(),
            s.outbox.capacity()
        ),
        (0, 0, 0),
        "a heartbeat's Pong gives the emptied queues back"
    );
}

#[test]
fn a_burst_does_not_leave_its_capacity_behind() {
    let t0 = Instant::now();
    let mut s = session(t0);
    for id in 1..=100 {
        s.handle_frame(t0, send(id));
    }
    let events = drain_events(&mut s);
    assert_eq!(events.len(), 1, "one upstream request at a time");
    for id in 1..=100 {
        s.handle_receipt(Receipt {
            msg_id: id,
            status: ReceiptStatus::Accepted.into(),
            ..Default::default()
        });
        drain_events(&mut s);
    }
    let frames = drain_frames(&mut s, t0);
    assert_eq!(frames.len(), 100);
    assert!(
        s.transmit.capacity() <= KEEP_WHILE_BUSY && s.events.capacity() <= KEEP_WHILE_BUSY,
        "transmit {} events {}",
        s.transmit.capacity(),
        s.events.capacity()
    );
}

#[test]
fn a_heartbeat_carrying_an_ack_leaves_no_queue_buffers() {
    let t0 = Instant::now();
    let mut s = session(t0);
    for round in 1..=3 {
        s.handle_deliver(t0, msg(round));
        drain_frames(&mut s, t0);
        // The client acks in its heartbeat: an `Acked` event arises beside the Pong.
        s.handle_frame(
            t0,
            Ping {
                client_time_ms: 0,
                ack: round,
            }
            .into(),
        );
        let frames = drain_frames(&mut s, t0);
        assert!(matches!(&frames[..], [f] if matches!(f.kind, Some(Kind::Pong(_)))));
        let events = drain_events(&mut s);
        assert!(matches!(&events[..], [Event::Acked { seq, .. }] if *seq == round));
        assert_eq!(
            (
                s.transmit.capacity(),
                s.events.capacity(),
                s.outbox.capacity()
            ),
            (0, 0, 0),
            "round {round}"
        );
    }
}

#[test]
fn a_detached_session_holds_no_queue_buffers() {
    let t0 = Instant::now();
    let mut s = session(t0);
    s.handle_frame(t0, send(1));
    drain_events(&mut s);
    s.handle_receipt(Receipt {
        msg_id: 1,
        status: ReceiptStatus::Accepted.into(),
        ..Default::default()
    });
    s.detach(t0);
    drain_events(&mut s);
    assert_eq!((s.transmit.capacity(), s.events.capacity()), (0, 0));
}

#[test]
fn a_new_session_holds_no_queue_buffers_once_welcomed() {
    let t0 = Instant::now();
    // `session` has taken the Welcome, the only frame a new session queues.
    let s = session(t0);
    assert_eq!((s.transmit.capacity(), s.events.capacity()), (0, 0));
}

#[test]
fn takeover_sends_go_away_and_hands_pending_messages_to_offline() {
    let t0 = Instant::now();
    let mut s = session(t0);
    s.handle_deliver(t0, msg(1));
    s.take_over();
    let frames = drain_frames(&mut s, t0);
    assert!(matches!(&frames[..], [f] if matches!(&f.kind,
        Some(Kind::GoAway(g)) if g.reason() == GoAwayReason::Takeover)));
    let events = drain_events(&mut s);
    assert_eq!(
        events[0],
        Event::CloseConnection {
            code: CloseCode::SESSION_TAKEN_OVER,
            go_away: Some(GoAwayReason::Takeover)
        }
    );
    assert!(matches!(&events[1], Event::Undelivered { messages, .. } if messages.len() == 1));
    assert_eq!(events[2], Event::Ended);
}

#[test]
fn drain_sends_go_away_and_keeps_the_session_resumable() {
    let t0 = Instant::now();
    let mut s = session(t0);
    s.handle_deliver(t0, msg(1));
    assert_eq!(delivered_seqs(&drain_frames(&mut s, t0)), vec![1]);
    s.drain(Duration::from_millis(1500), t0);
    let frames = drain_frames(&mut s, t0);
    assert!(matches!(&frames[..], [f] if matches!(&f.kind,
        Some(Kind::GoAway(g)) if g.reconnect_after_ms == 1500)));
    // Still attached: the client may acknowledge what it holds before it leaves.
    assert!(s.is_attached());
    assert!(drain_events(&mut s).is_empty());
    s.end_drain(t0 + Duration::from_secs(5));
    assert!(matches!(
        &drain_events(&mut s)[..],
        [Event::CloseConnection {
            code: CloseCode::GOING_AWAY,
            go_away: Some(GoAwayReason::Drain)
        }]
    ));
    assert!(!s.is_attached() && !s.is_ended());
}

#[test]
fn a_draining_connection_gets_nothing_new_and_closes_once_the_client_acked_what_it_holds() {
    let t0 = Instant::now();
    let mut s = session(t0);
    for id in 1..=2 {
        s.handle_deliver(t0, msg(id));
    }
    assert_eq!(delivered_seqs(&drain_frames(&mut s, t0)), vec![1, 2]);
    s.drain(Duration::ZERO, t0);
    // Queued before or after the GoAway, no new Deliver follows it (§11): message 3 stays in
    // the session for the resume.
    s.handle_deliver(t0, msg(3));
    let frames = drain_frames(&mut s, t0);
    assert!(matches!(&frames[..], [f] if matches!(&f.kind, Some(Kind::GoAway(_)))));
    assert!(!s.wants_transmit());
    s.handle_frame(t0, Ack { seq: 1 }.into());
    assert!(s.is_attached(), "message 2 is still held by the client");
    drain_events(&mut s);
    s.handle_frame(t0, Ack { seq: 2 }.into());
    let events = drain_events(&mut s);
    assert!(
        matches!(
            events.last(),
            Some(Event::CloseConnection {
                code: CloseCode::GOING_AWAY,
                go_away: Some(GoAwayReason::Drain)
            })
        ),
        "{events:?}"
    );
    assert!(!s.is_attached() && !s.is_ended());
    assert_eq!(s.last_seq(), 3, "message 3 waits for the resume");
}

#[test]
fn a_drain_closes_at_once_a_connection_that_holds_nothing_unacknowledged() {
    let t0 = Instant::now();
    let mut s = session(t0);
    s.drain(Duration::from_millis(100), t0);
    let frames = drain_frames(&mut s, t0);
    assert!(matches!(&frames[..], [f] if matches!(&f.kind, Some(Kind::GoAway(_)))));
    assert!(matches!(
        &drain_events(&mut s)[..],
        [Event::CloseConnection {
            go_away: Some(GoAwayReason::Drain),
            ..
        }]
    ));
    assert!(!s.is_attached() && !s.is_ended());
}

#[test]
fn unexpected_frame_kinds_close_the_connection() {
    let t0 = Instant::now();
    let mut s = session(t0);
    s.handle_frame(t0, imgate_codec::Hello::default().into());
    assert!(matches!(
        drain_events(&mut s)[..],
        [Event::CloseConnection {
            code: CloseCode::UNEXPECTED_FRAME,
            ..
        }]
    ));
}

mod stateful {
    //! Random operation sequences: no loss, no duplicate, in order, bounded buffer.
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Deliver,
        Transmit(usize),
        /// The client receives some transmitted frames, then acks what it has.
        Receive(usize),
        /// The connection drops, losing frames in flight.
        Drop,
        Resume,
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Deliver),
            3 => (1usize..5).prop_map(Op::Transmit),
            3 => (1usize..5).prop_map(Op::Receive),
            1 => Just(Op::Drop),
            1 => Just(Op::Resume),
            1 => (1u64..20_000).prop_map(Op::Advance),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn every_message_arrives_once_in_order_or_is_handed_to_offline(
            ops in proptest::collection::vec(op(), 1..200)
        ) {
            let mut now = Instant::now();
            let mut s = session(now);
            let mut next_id = 1u64;
            let mut in_flight: std::collections::VecDeque<Frame> = Default::default();
            let mut received: Vec<u64> = Vec::new();
            let mut last_seq = 0u64;
            let mut offline: Vec<u64> = Vec::new();
            let mut alive = true;
            for op in ops {
                match op {
                    Op::Deliver if alive => {
                        let id = next_id;
                        next_id += 1;
                        match s.handle_deliver(now, msg(id)) {
                            DeliverOutcome::Overflow | DeliverOutcome::Ended => offline.push(id),
                            _ => {}
                        }
                    }
                    Op::Transmit(n) => {
                        for _ in 0..n {
                            match s.poll_transmit(now) {
                                Some(f) => in_flight.push_back(f),
                                None => break,
                            }
                        }
                    }
                    Op::Receive(n) if s.is_attached() => {
                        for _ in 0..n {
                            let Some(frame) = in_flight.pop_front() else { break };
                            if let Some(Kind::Deliver(d)) = frame.kind {
                                prop_assert_eq!(d.seq, last_seq + 1, "gap or duplicate");
                                last_seq = d.seq;
                                received.push(d.message_id);
                            }
                        }
                        s.handle_frame(now, Ack { seq: last_seq }.into());
                    }
                    Op::Drop => {
                        in_flight.clear();
                        s.detach(now);
                    }
                    Op::Resume if alive => {
                        in_flight.clear();
                        s.detach(now);
                        if s.resume(now, &identity(), &SECRET, last_seq, &Negotiated::default()).is_err() {
                            alive = false;
                        }
                    }
                    Op::Advance(ms) => {
                        now += Duration::from_millis(ms);
                        if let Some(deadline) = s.poll_timeout() && deadline <= now {
                            s.handle_timeout(now);
                        }
                        if s.is_attached() && !in_flight.is_empty() {
                            // Keep the connection alive as a real client would.
                            s.handle_frame(now, Ping::default().into());
                        }
                    }
                    _ => {}
                }
                while let Some(event) = s.poll_event() {
                    match event {
                        Event::Undelivered { messages, .. } => {
                            offline.extend(messages.iter().map(|m| m.message_id.0));
                        }
                        Event::Ended => alive = false,
                        _ => {}
                    }
                }
                prop_assert!(s.last_seq() - s.acked_seq() <= 4, "buffer bound");
            }
            // Finish: resume if possible and receive everything still buffered.
            if alive && s.resume(now, &identity(), &SECRET, last_seq, &Negotiated::default()).is_ok() {
                while let Some(frame) = s.poll_transmit(now) {
                    if let Some(Kind::Deliver(d)) = frame.kind {
                        prop_assert_eq!(d.seq, last_seq + 1);
                        last_seq = d.seq;
                        received.push(d.message_id);
                    }
                }
            } else {
                s.end_now();
                while let Some(event) = s.poll_event() {
                    if let Event::Undelivered { messages, .. } = event {
                        offline.extend(messages.iter().map(|m| m.message_id.0));
                    }
                }
            }
            let mut all: Vec<u64> = received.iter().chain(&offline).copied().collect();
            all.sort_unstable();
            let expected: Vec<u64> = (1..next_id).collect();
            prop_assert_eq!(all, expected, "every message exactly once: received or offline");
            let mut sorted = received.clone();
            sorted.sort_unstable();
            prop_assert_eq!(received, sorted, "in order");
        }
    }
}
