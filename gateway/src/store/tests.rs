//! The redb store over a real file: what is appended and synced is what a reopened store
//! loads.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use imgate_codec::{Deliver, Platform, Receipt};

use super::{Change, RedbStore, SessionStore};
use crate::deliver::{PushAlert, PushOptions};
use crate::ids::{AppId, DeviceId, SessionId, UserId};
use crate::session::{AnswerMark, Identity, ResumeSecret};

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("imgate-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("sessions.redb")
}

fn identity() -> Identity {
    Identity {
        app: AppId::new("chat"),
        user: UserId::new("bob"),
        device: DeviceId::new("phone"),
        platform: Platform::Ios,
    }
}

fn opened(id: u64) -> Change {
    Change::Opened {
        session: SessionId(id),
        secret: ResumeSecret::from_bytes([id as u8; 16]),
        identity: identity(),
        opened_at_ms: 1_000 + id,
    }
}

fn delivered(id: u64, seq: u64, push: Option<Arc<PushOptions>>) -> Change {
    Change::Delivered {
        session: SessionId(id),
        deliver: Deliver {
            seq,
            payload: Bytes::from(format!("m{seq}")),
            from: "alice".into(),
            message_id: 100 + seq,
            ..Deliver::default()
        },
        push,
    }
}

fn answered(id: u64, ordinal: u64, capacity: u64, msg_id: u64) -> Change {
    Change::Answered {
        session: SessionId(id),
        mark: AnswerMark {
            slot: ordinal % capacity,
            ordinal,
            forgotten_up_to: 0,
        },
        receipt: Receipt {
            msg_id,
            message_id: 7,
            ..Receipt::default()
        },
    }
}

async fn apply(path: &std::path::Path, changes: Vec<Change>) {
    let store = RedbStore::open(path, None).expect("open");
    for change in changes {
        store.append(change);
    }
    store.sync().await.expect("sync");
}

#[tokio::test]
async fn what_was_synced_is_what_a_reopened_store_loads() {
    let path = temp_path("roundtrip");
    let push = Arc::new(PushOptions {
        alert: Some(PushAlert {
            title: "alice".into(),
            body: "New message".into(),
        }),
        collapse_id: Some("c1".into()),
        ttl_secs: 60,
        data: vec![("k".into(), "v".into())],
    });
    apply(
        &path,
        vec![
            opened(1),
            delivered(1, 1, None),
            delivered(1, 2, Some(Arc::clone(&push))),
            delivered(1, 3, None),
            Change::Acked {
                session: SessionId(1),
                seq: 1,
            },
            answered(1, 0, 8, 41),
            answered(1, 1, 8, 42),
        ],
    )
    .await;
    let store = RedbStore::open(&path, None).expect("reopen");
    let loaded = store.load().expect("load");
    assert_eq!(loaded.len(), 1);
    let session = &loaded[0];
    assert_eq!(session.id, SessionId(1));
    assert!(session.secret.matches(&[1; 16]));
    assert_eq!(session.identity, identity());
    assert_eq!(session.opened_at_ms, 1_001);
    assert_eq!(session.acked, 1);
    assert!(!session.overflowed);
    let seqs: Vec<u64> = session.outbox.iter().map(|m| m.deliver.seq).collect();
    assert_eq!(seqs, [2, 3]);
    assert_eq!(session.outbox[0].deliver.payload, Bytes::from("m2"));
    assert_eq!(session.outbox[0].push.as_ref(), Some(&*push));
    assert_eq!(session.outbox[1].push, None);
    let receipts: Vec<u64> = session.receipts.iter().map(|r| r.receipt.msg_id).collect();
    assert_eq!(receipts, [41, 42]);
}

#[tokio::test]
async fn an_ended_session_leaves_nothing_behind_even_if_a_delivery_raced_its_end() {
    let path = temp_path("ended");
    apply(
        &path,
        vec![
            opened(1),
            delivered(1, 1, None),
            answered(1, 0, 8, 5),
            opened(2),
            delivered(2, 1, None),
            Change::Ended {
                session: SessionId(1),
            },
            delivered(1, 2, None),
        ],
    )
    .await;
    let store = RedbStore::open(&path, None).expect("reopen");
    let loaded = store.load().expect("load");
    assert_eq!(loaded.len(), 1, "{loaded:?}");
    assert_eq!(loaded[0].id, SessionId(2));
    // Nothing of session 1 is left in any table: a new session 1 starts empty.
    drop(store);
    apply(&path, vec![opened(1)]).await;
    let store = RedbStore::open(&path, None).expect("reopen");
    let loaded = store.load().expect("load");
    let one = loaded.iter().find(|s| s.id == SessionId(1)).expect("1");
    assert!(one.outbox.is_empty() && one.receipts.is_empty() && one.acked == 0);
}

#[tokio::test]
async fn a_hole_in_a_stored_outbox_makes_the_session_unresumable() {
    let path = temp_path("hole");
    apply(
        &path,
        vec![opened(1), delivered(1, 1, None), delivered(1, 3, None)],
    )
    .await;
    let store = RedbStore::open(&path, None).expect("reopen");
    let loaded = store.load().expect("load");
    assert!(loaded[0].overflowed);
    assert_eq!(
        loaded[0].outbox.len(),
        1,
        "only the gap-free prefix is replayable"
    );
}

#[tokio::test]
async fn remembered_receipts_stay_bounded_by_their_slots() {
    let path = temp_path("receipts");
    let mut changes = vec![opened(1)];
    changes.extend((0..10).map(|ordinal| answered(1, ordinal, 4, 100 + ordinal)));
    apply(&path, changes).await;
    let store = RedbStore::open(&path, None).expect("reopen");
    let loaded = store.load().expect("load");
    let kept: Vec<u64> = loaded[0]
        .receipts
        .iter()
        .map(|r| r.receipt.msg_id)
        .collect();
    assert_eq!(kept, [106, 107, 108, 109]);
}

#[tokio::test]
async fn overflow_is_remembered() {
    let path = temp_path("overflow");
    apply(
        &path,
        vec![
            opened(1),
            Change::Overflowed {
                session: SessionId(1),
            },
        ],
    )
    .await;
    let store = RedbStore::open(&path, None).expect("reopen");
    assert!(store.load().expect("load")[0].overflowed);
}

#[tokio::test]
async fn a_sync_after_the_writer_stopped_fails() {
    let path = temp_path("stopped");
    let mut store = RedbStore::open(&path, None).expect("open");
    store.ops = None;
    assert_eq!(store.sync().await, Err(super::StoreError::Stopped));
}
