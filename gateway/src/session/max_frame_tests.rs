//! The client's frame limit (`Hello.max_frame`, protocol §12): a `Deliver` that would not
//! fit is never sequenced, a resume cannot bring a smaller limit past a buffered message,
//! and everything else the session sends fits the smallest limit a client may announce.

use bytes::Bytes;
use imgate_codec::{Frame, Hello, Kind, MIN_MAX_FRAME, Platform, ResumeRefused, deliver_frame_len};
use prost::Message;
use tokio::time::Instant;

use super::*;

const SECRET: [u8; 16] = [9; 16];

fn identity(user: &str) -> Identity {
    Identity {
        app: AppId::new("chat"),
        user: UserId::new(user),
        device: DeviceId::new("phone"),
        platform: Platform::Android,
    }
}

fn limited(max_frame: u32) -> Negotiated {
    Negotiated {
        max_frame,
        ..Negotiated::default()
    }
}

fn session(now: Instant, negotiated: &Negotiated) -> Session {
    let mut s = Session::new(
        now,
        1_000_000,
        SessionId(7),
        ResumeSecret::from_bytes(SECRET),
        identity("alice"),
        SessionConfig::default(),
        negotiated,
    );
    assert!(matches!(
        s.poll_transmit(now).and_then(|f| f.kind),
        Some(Kind::Welcome(_))
    ));
    s
}

fn message(id: u64, payload_len: usize) -> Outgoing {
    Outgoing {
        message_id: MessageId(id),
        payload: Bytes::from(vec![b'x'; payload_len]),
        from: Some(UserId::new("bob")),
        room: None,
        sent_at_ms: 1_700_000_000_000,
    }
}

/// The largest payload whose `Deliver` (as message `id`, seq `seq`) is `limit` bytes long.
fn payload_filling(limit: usize, id: u64, seq: u64) -> usize {
    (0..limit)
        .rev()
        .find(|&len| {
            let mut deliver = frame_of(message(id, len));
            deliver.seq = seq;
            deliver_frame_len(&deliver) == limit
        })
        .expect("a payload that fills the limit")
}

fn frame_of(message: Outgoing) -> imgate_codec::Deliver {
    imgate_codec::Deliver {
        seq: 0,
        payload: message.payload,
        from: message
            .from
            .map(|u| u.as_str().to_owned())
            .unwrap_or_default(),
        room: String::new(),
        message_id: message.message_id.0,
        sent_at_ms: message.sent_at_ms,
    }
}

fn frames(s: &mut Session, now: Instant) -> Vec<Frame> {
    std::iter::from_fn(|| s.poll_transmit(now)).collect()
}

fn frame_len(frame: &Frame) -> usize {
    1 + frame.encoded_len()
}

#[test]
fn hello_max_frame_below_the_minimum_is_refused_protocol_error() {
    let hs = Handshake::new(Instant::now(), std::time::Duration::from_secs(5));
    let hello = |max_frame| -> Frame {
        Hello {
            version: 1,
            app_id: "chat".into(),
            device_id: "d".into(),
            max_frame,
            ..Default::default()
        }
        .into()
    };
    let min = u32::try_from(MIN_MAX_FRAME).expect("small");
    for accepted in [0, min, min + 1, 1 << 20, u32::MAX] {
        assert!(hs.handle_frame(hello(accepted)).is_ok(), "{accepted}");
    }
    for refused in [1, 300, min - 1] {
        let code = hs.handle_frame(hello(refused)).map_err(|r| r.code);
        assert_eq!(code, Err(CloseCode::PROTOCOL_ERROR), "{refused}");
    }
}

#[test]
fn a_deliver_over_the_clients_limit_gets_no_seq_and_is_not_sent() {
    let t0 = Instant::now();
    let mut s = session(t0, &limited(512));
    let fits = payload_filling(512, 1, 1);
    assert_eq!(
        s.handle_deliver(t0, message(1, fits + 1)),
        DeliverOutcome::TooLarge
    );
    assert!(frames(&mut s, t0).is_empty(), "nothing is sent for it");
    assert_eq!(s.last_seq(), 0, "it took no seq");
    // Exactly at the limit: sent, with the next seq (no gap for the refused one).
    assert_eq!(
        s.handle_deliver(t0, message(2, payload_filling(512, 2, 1))),
        DeliverOutcome::Sent { seq: 1 }
    );
    let sent = frames(&mut s, t0);
    assert_eq!(sent.len(), 1);
    assert_eq!(frame_len(&sent[0]), 512);
    assert_eq!(
        s.handle_deliver(t0, message(3, 2000)),
        DeliverOutcome::TooLarge
    );
    assert_eq!(
        s.handle_deliver(t0, message(4, 10)),
        DeliverOutcome::Sent { seq: 2 }
    );
    assert!(
        s.poll_event().is_none(),
        "the session itself reports nothing: deliver does"
    );
    assert!(s.is_attached());
}

#[test]
fn without_a_limit_of_the_clients_the_protocol_default_applies() {
    let t0 = Instant::now();
    let mut s = session(t0, &limited(0));
    assert_eq!(
        s.handle_deliver(t0, message(1, 2000)),
        DeliverOutcome::Sent { seq: 1 }
    );
    let huge = imgate_codec::DEFAULT_MAX_FRAME;
    assert_eq!(
        s.handle_deliver(t0, message(2, huge)),
        DeliverOutcome::TooLarge
    );
    // A limit above the default is held to the default too.
    let mut s = session(t0, &limited(u32::MAX));
    assert_eq!(
        s.handle_deliver(t0, message(2, huge)),
        DeliverOutcome::TooLarge
    );
}

#[test]
fn a_detached_session_keeps_its_last_clients_limit() {
    let t0 = Instant::now();
    let mut s = session(t0, &limited(512));
    s.detach(t0);
    assert_eq!(
        s.handle_deliver(t0, message(1, 2000)),
        DeliverOutcome::TooLarge
    );
    assert_eq!(
        s.handle_deliver(t0, message(2, 10)),
        DeliverOutcome::Buffered {
            seq: 1,
            push: false
        }
    );
}

#[test]
fn a_resume_with_a_limit_below_a_buffered_message_is_refused_buffer_overflow() {
    let t0 = Instant::now();
    let mut s = session(t0, &limited(0));
    assert_eq!(
        s.handle_deliver(t0, message(1, 10)),
        DeliverOutcome::Sent { seq: 1 }
    );
    assert_eq!(
        s.handle_deliver(t0, message(2, 2000)),
        DeliverOutcome::Sent { seq: 2 }
    );
    frames(&mut s, t0);
    s.detach(t0);
    let who = identity("alice");
    assert_eq!(
        s.resume(t0, &who, &SECRET, 0, &limited(512)),
        Err(ResumeRefused::BufferOverflow)
    );
    assert!(s.is_ended());
    let events: Vec<Event> = std::iter::from_fn(|| s.poll_event()).collect();
    assert_eq!(
        events,
        vec![
            Event::Undelivered {
                reason: UndeliveredReason::BufferOverflow,
                messages: vec![
                    Undelivered {
                        message_id: MessageId(1),
                        seq: 1
                    },
                    Undelivered {
                        message_id: MessageId(2),
                        seq: 2
                    },
                ],
            },
            Event::Ended,
        ]
    );
}

#[test]
fn a_refused_resume_that_ends_an_attached_session_takes_its_connection_over() {
    let t0 = Instant::now();
    let mut s = session(t0, &limited(0));
    assert_eq!(
        s.handle_deliver(t0, message(1, 2000)),
        DeliverOutcome::Sent { seq: 1 }
    );
    frames(&mut s, t0);
    // Still attached: the resume comes from a new connection before the old one is gone.
    let who = identity("alice");
    assert_eq!(
        s.resume(t0, &who, &SECRET, 0, &limited(512)),
        Err(ResumeRefused::BufferOverflow)
    );
    let Some(Kind::GoAway(go_away)) = s.poll_transmit(t0).and_then(|f| f.kind) else {
        panic!("the old connection's last frame is a GoAway")
    };
    assert_eq!(go_away.reason(), GoAwayReason::Takeover);
    assert!(s.poll_transmit(t0).is_none());
    let events: Vec<Event> = std::iter::from_fn(|| s.poll_event()).collect();
    assert_eq!(
        events,
        vec![
            Event::CloseConnection {
                code: CloseCode::SESSION_TAKEN_OVER,
                go_away: Some(GoAwayReason::Takeover),
            },
            Event::Undelivered {
                reason: UndeliveredReason::BufferOverflow,
                messages: vec![Undelivered {
                    message_id: MessageId(1),
                    seq: 1
                }],
            },
            Event::Ended,
        ]
    );
}

#[test]
fn a_resume_with_a_smaller_limit_succeeds_once_the_large_message_is_acknowledged() {
    let t0 = Instant::now();
    let mut s = session(t0, &limited(0));
    s.handle_deliver(t0, message(1, 2000));
    s.handle_deliver(t0, message(2, 10));
    frames(&mut s, t0);
    s.detach(t0);
    // `last_seq` 1 acknowledges the large one: only the small one is replayed.
    s.resume(t0, &identity("alice"), &SECRET, 1, &limited(512))
        .expect("resume");
    let replay = frames(&mut s, t0);
    assert!(replay.iter().all(|f| frame_len(f) <= 512), "{replay:?}");
    assert!(matches!(&replay[1].kind, Some(Kind::Deliver(d)) if d.seq == 2));
    // The new limit holds from now on.
    assert_eq!(
        s.handle_deliver(t0, message(3, 2000)),
        DeliverOutcome::TooLarge
    );
}

#[test]
fn the_largest_welcome_fits_the_minimum_limit() {
    let t0 = Instant::now();
    let negotiated = Negotiated {
        features: vec![imgate_codec::FEATURE_LZ4.to_owned()],
        dictionary_id: u32::MAX,
        max_frame: 512,
    };
    let user = "u".repeat(crate::auth::MAX_USER_ID_LEN);
    let mut s = Session::new(
        t0,
        u64::MAX / 2,
        SessionId(u64::MAX),
        ResumeSecret::from_bytes(SECRET),
        identity(&user),
        SessionConfig::default(),
        &negotiated,
    );
    let welcome = s.poll_transmit(t0).expect("Welcome");
    assert!(
        frame_len(&welcome) <= MIN_MAX_FRAME,
        "{}",
        frame_len(&welcome)
    );
}
