//! Durable sessions: the durable point gates transmission, and a session restored from a
//! store resumes exactly where the stored state says.

use std::time::Duration;

use bytes::Bytes;
use imgate_codec::{Deliver, Kind, Platform, Receipt};
use tokio::time::Instant;

use super::*;
use crate::store::{StoredMessage, StoredReceipt, StoredSession};

const SECRET: [u8; 16] = [9; 16];

fn identity() -> Identity {
    Identity {
        app: AppId::new("chat"),
        user: UserId::new("bob"),
        device: DeviceId::new("phone"),
        platform: Platform::Android,
    }
}

fn durable_config() -> SessionConfig {
    SessionConfig {
        max_unacked: 8,
        resume_window: Duration::from_secs(60),
        push_grace: Duration::from_secs(5),
        durability: Durability::Disk,
        ..SessionConfig::default()
    }
}

fn stored(acked: u64, seqs: impl IntoIterator<Item = u64>) -> StoredSession {
    StoredSession {
        id: SessionId(7),
        secret: ResumeSecret::from_bytes(SECRET),
        identity: identity(),
        opened_at_ms: 1,
        overflowed: false,
        acked,
        outbox: seqs
            .into_iter()
            .map(|seq| StoredMessage {
                deliver: Deliver {
                    seq,
                    message_id: 100 + seq,
                    payload: Bytes::from(format!("m{seq}")),
                    ..Deliver::default()
                },
                push: None,
            })
            .collect(),
        receipts: vec![StoredReceipt {
            ordinal: 0,
            forgotten_up_to: 0,
            receipt: Receipt {
                msg_id: 55,
                message_id: 9,
                ..Receipt::default()
            },
        }],
    }
}

fn delivered_seqs(s: &mut Session, now: Instant) -> Vec<u64> {
    std::iter::from_fn(|| s.poll_transmit(now))
        .filter_map(|f| match f.kind {
            Some(Kind::Deliver(d)) => Some(d.seq),
            _ => None,
        })
        .collect()
}

fn message(id: u64) -> Outgoing {
    Outgoing {
        message_id: MessageId(id),
        payload: Bytes::from_static(b"hi"),
        ..Outgoing::default()
    }
}

#[test]
fn a_durable_session_transmits_only_what_the_store_confirmed() {
    let t0 = Instant::now();
    let mut s = Session::new(
        t0,
        0,
        SessionId(1),
        ResumeSecret::from_bytes(SECRET),
        identity(),
        durable_config(),
        &Negotiated::default(),
    );
    assert!(matches!(
        s.poll_transmit(t0).and_then(|f| f.kind),
        Some(Kind::Welcome(_))
    ));
    for id in 1..=3 {
        assert!(matches!(
            s.handle_deliver(t0, message(id)),
            DeliverOutcome::Sent { .. }
        ));
    }
    assert!(!s.wants_transmit(), "nothing is durable yet");
    assert!(delivered_seqs(&mut s, t0).is_empty());
    s.mark_durable(2);
    assert_eq!(delivered_seqs(&mut s, t0), [1, 2]);
    s.mark_durable(3);
    assert_eq!(delivered_seqs(&mut s, t0), [3]);
}

#[test]
fn a_memory_session_transmits_at_once() {
    let t0 = Instant::now();
    let config = SessionConfig {
        durability: Durability::Memory,
        ..durable_config()
    };
    let mut s = Session::new(
        t0,
        0,
        SessionId(1),
        ResumeSecret::from_bytes(SECRET),
        identity(),
        config,
        &Negotiated::default(),
    );
    s.handle_deliver(t0, message(1));
    assert_eq!(delivered_seqs(&mut s, t0), [1]);
}

#[test]
fn a_restored_session_resumes_with_exactly_the_stored_messages_in_order() {
    let t0 = Instant::now();
    let mut s = Session::restore(t0, 5_000, stored(3, 4..=7), durable_config());
    assert!(!s.is_attached() && !s.is_ended());
    assert_eq!((s.acked_seq(), s.last_seq()), (3, 7));
    assert!(s.poll_event().is_none());
    // The client saw up to 5 before the restart.
    s.resume(t0, &identity(), &SECRET, 5, &Negotiated::default())
        .expect("resume");
    let frames: Vec<Frame> = std::iter::from_fn(|| s.poll_transmit(t0)).collect();
    let Some(Kind::Welcome(welcome)) = &frames[0].kind else {
        panic!("expected Welcome first, got {frames:?}");
    };
    assert!(welcome.resumed);
    assert_eq!(welcome.last_receipted_msg_id, 55);
    let seqs: Vec<u64> = frames[1..]
        .iter()
        .filter_map(|f| match &f.kind {
            Some(Kind::Deliver(d)) => Some(d.seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, [6, 7]);
    // New messages continue the sequence and are durable only once confirmed.
    assert_eq!(
        s.handle_deliver(t0, message(99)),
        DeliverOutcome::Sent { seq: 8 }
    );
    assert!(delivered_seqs(&mut s, t0).is_empty());
}

#[test]
fn a_restored_session_answers_a_resent_request_from_its_stored_receipt() {
    let t0 = Instant::now();
    let mut s = Session::restore(t0, 0, stored(0, []), durable_config());
    s.resume(t0, &identity(), &SECRET, 0, &Negotiated::default())
        .expect("resume");
    let _welcome = s.poll_transmit(t0);
    s.handle_frame(
        t0,
        imgate_codec::Send {
            msg_id: 55,
            ..Default::default()
        }
        .into(),
    );
    assert!(s.poll_event().is_none(), "not forwarded a second time");
    assert!(matches!(
        s.poll_transmit(t0).and_then(|f| f.kind),
        Some(Kind::Receipt(r)) if r.msg_id == 55 && r.message_id == 9
    ));
}

#[test]
fn a_restored_session_is_pushed_after_the_grace_and_ends_after_the_window() {
    let t0 = Instant::now();
    let mut s = Session::restore(t0, 0, stored(0, 1..=2), durable_config());
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    s.handle_timeout(t0 + Duration::from_secs(5));
    assert_eq!(
        s.poll_event(),
        Some(Event::PushGraceElapsed {
            message_ids: vec![MessageId(101), MessageId(102)]
        })
    );
    s.handle_timeout(t0 + Duration::from_secs(60));
    assert!(matches!(
        s.poll_event(),
        Some(Event::Undelivered { reason: UndeliveredReason::SessionEnded, messages })
            if messages.len() == 2
    ));
    assert_eq!(s.poll_event(), Some(Event::Ended));
}

#[test]
fn messages_beyond_lowered_limits_go_offline_and_the_session_is_not_resumable() {
    let t0 = Instant::now();
    let config = SessionConfig {
        max_unacked: 2,
        ..durable_config()
    };
    let mut s = Session::restore(t0, 0, stored(0, 1..=3), config);
    assert!(matches!(
        s.poll_event(),
        Some(Event::Undelivered { reason: UndeliveredReason::BufferOverflow, messages })
            if messages.iter().map(|m| m.seq).collect::<Vec<_>>() == [3]
    ));
    assert_eq!(
        s.resume(t0, &identity(), &SECRET, 0, &Negotiated::default()),
        Err(ResumeRefused::BufferOverflow)
    );
}
