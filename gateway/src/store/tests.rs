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

fn temp_path(name: &str, stop: Stop) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "imgate-store-{name}-{stop:?}-{}",
        std::process::id()
    ));
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

/// How the writer stops after the changes were synced.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// Dropped: the log is checkpointed into redb.
    Clean,
    /// As in a crash: the synced changes are in the log only, replayed on the next open.
    Crash,
}

async fn apply(path: &std::path::Path, changes: Vec<Change>, stop: Stop) {
    let store = RedbStore::open(path, None).expect("open");
    for change in changes {
        store.append(change);
    }
    store.sync().await.expect("sync");
    match stop {
        Stop::Clean => drop(store),
        Stop::Crash => store.crash(),
    }
}

async fn what_was_synced_is_what_a_reopened_store_loads(stop: Stop) {
    let path = temp_path("roundtrip", stop);
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
        stop,
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

async fn an_ended_session_leaves_nothing_behind_even_if_a_delivery_raced_its_end(stop: Stop) {
    let path = temp_path("ended", stop);
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
        stop,
    )
    .await;
    let store = RedbStore::open(&path, None).expect("reopen");
    let loaded = store.load().expect("load");
    assert_eq!(loaded.len(), 1, "{loaded:?}");
    assert_eq!(loaded[0].id, SessionId(2));
    // Nothing of session 1 is left in any table: a new session 1 starts empty.
    drop(store);
    apply(&path, vec![opened(1)], stop).await;
    let store = RedbStore::open(&path, None).expect("reopen");
    let loaded = store.load().expect("load");
    let one = loaded.iter().find(|s| s.id == SessionId(1)).expect("1");
    assert!(one.outbox.is_empty() && one.receipts.is_empty() && one.acked == 0);
}

async fn a_hole_in_a_stored_outbox_makes_the_session_unresumable(stop: Stop) {
    let path = temp_path("hole", stop);
    apply(
        &path,
        vec![opened(1), delivered(1, 1, None), delivered(1, 3, None)],
        stop,
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

async fn remembered_receipts_stay_bounded_by_their_slots(stop: Stop) {
    let path = temp_path("receipts", stop);
    let mut changes = vec![opened(1)];
    changes.extend((0..10).map(|ordinal| answered(1, ordinal, 4, 100 + ordinal)));
    apply(&path, changes, stop).await;
    let store = RedbStore::open(&path, None).expect("reopen");
    let loaded = store.load().expect("load");
    let kept: Vec<u64> = loaded[0]
        .receipts
        .iter()
        .map(|r| r.receipt.msg_id)
        .collect();
    assert_eq!(kept, [106, 107, 108, 109]);
}

async fn overflow_is_remembered(stop: Stop) {
    let path = temp_path("overflow", stop);
    apply(
        &path,
        vec![
            opened(1),
            Change::Overflowed {
                session: SessionId(1),
            },
        ],
        stop,
    )
    .await;
    let store = RedbStore::open(&path, None).expect("reopen");
    assert!(store.load().expect("load")[0].overflowed);
}

#[tokio::test]
async fn a_sync_after_the_writer_stopped_fails() {
    let path = temp_path("stopped", Stop::Clean);
    let mut store = RedbStore::open(&path, None).expect("open");
    store.ops = None;
    assert_eq!(store.sync().await, Err(super::StoreError::Stopped));
}

/// Every case above, once with a clean close and once with a crash (log replay).
macro_rules! both_stops {
    ($($case:ident),* $(,)?) => {
        mod clean {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::Stop::Clean).await
            })*
        }
        mod crash {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::Stop::Crash).await
            })*
        }
    };
}

both_stops!(
    what_was_synced_is_what_a_reopened_store_loads,
    an_ended_session_leaves_nothing_behind_even_if_a_delivery_raced_its_end,
    a_hole_in_a_stored_outbox_makes_the_session_unresumable,
    remembered_receipts_stay_bounded_by_their_slots,
    overflow_is_remembered,
);

mod model {
    //! Random histories against a model of what the store must keep, with restarts (clean or
    //! crashed) at random points and log segments small enough to be checkpointed often.

    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::{Stop, answered, delivered, opened, temp_path};
    use crate::ids::SessionId;
    use crate::store::{Change, RedbStore, SessionStore};

    const SESSIONS: u64 = 3;
    const RECEIPT_SLOTS: u64 = 4;

    #[derive(Clone, Debug)]
    enum Step {
        Open(u64),
        Deliver(u64),
        Ack(u64, u64),
        Answer(u64),
        Overflow(u64),
        End(u64),
        Restart(bool),
    }

    fn step() -> impl Strategy<Value = Step> {
        let session = 1..=SESSIONS;
        prop_oneof![
            1 => session.clone().prop_map(Step::Open),
            6 => session.clone().prop_map(Step::Deliver),
            3 => (session.clone(), 0..4u64).prop_map(|(s, n)| Step::Ack(s, n)),
            2 => session.clone().prop_map(Step::Answer),
            1 => session.clone().prop_map(Step::Overflow),
            1 => session.prop_map(Step::End),
            1 => any::<bool>().prop_map(Step::Restart),
        ]
    }

    /// One session as the store must return it.
    #[derive(Debug, Default, PartialEq)]
    struct Expected {
        acked: u64,
        /// seq → message id.
        outbox: BTreeMap<u64, u64>,
        /// slot → msg id.
        receipts: BTreeMap<u64, u64>,
        overflowed: bool,
        /// Next seq / receipt ordinal to hand out.
        next_seq: u64,
        next_ordinal: u64,
    }

    fn check(store: &RedbStore, model: &BTreeMap<u64, Expected>) -> Result<(), TestCaseError> {
        let loaded = store
            .load()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut found = BTreeMap::new();
        for session in loaded {
            let outbox = session
                .outbox
                .iter()
                .map(|m| (m.deliver.seq, m.deliver.message_id))
                .collect::<BTreeMap<_, _>>();
            let receipts = session
                .receipts
                .iter()
                .map(|r| (r.ordinal % RECEIPT_SLOTS, r.receipt.msg_id))
                .collect::<BTreeMap<_, _>>();
            found.insert(
                session.id.0,
                (session.acked, outbox, receipts, session.overflowed),
            );
        }
        let expected: BTreeMap<_, _> = model
            .iter()
            .map(|(id, e)| {
                (
                    *id,
                    (e.acked, e.outbox.clone(), e.receipts.clone(), e.overflowed),
                )
            })
            .collect();
        prop_assert_eq!(found, expected);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn what_a_store_loads_after_any_history_is_what_was_synced(
            steps in proptest::collection::vec(step(), 1..160),
            segment_bytes in 64u64..4096,
            case in any::<u64>(),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let path = temp_path(&format!("model-{case:x}"), Stop::Crash);
            let mut store = RedbStore::open_with(&path, None, segment_bytes).expect("open");
            let mut model: BTreeMap<u64, Expected> = BTreeMap::new();
            for step in steps {
                match step {
                    Step::Open(id) => {
                        if model.contains_key(&id) {
                            continue;
                        }
                        store.append(opened(id));
                        model.insert(id, Expected { next_seq: 1, ..Expected::default() });
                    }
                    Step::Deliver(id) => {
                        let Some(e) = model.get_mut(&id) else { continue };
                        let seq = e.next_seq;
                        e.next_seq += 1;
                        store.append(delivered(id, seq, None));
                        e.outbox.insert(seq, 100 + seq);
                    }
                    Step::Ack(id, more) => {
                        let Some(e) = model.get_mut(&id) else { continue };
                        let seq = (e.acked + more).min(e.next_seq - 1);
                        store.append(Change::Acked { session: SessionId(id), seq });
                        if seq > e.acked {
                            e.acked = seq;
                            e.outbox = e.outbox.split_off(&(seq + 1));
                        }
                    }
                    Step::Answer(id) => {
                        let Some(e) = model.get_mut(&id) else { continue };
                        let ordinal = e.next_ordinal;
                        e.next_ordinal += 1;
                        store.append(answered(id, ordinal, RECEIPT_SLOTS, 1_000 + ordinal));
                        e.receipts.insert(ordinal % RECEIPT_SLOTS, 1_000 + ordinal);
                    }
                    Step::Overflow(id) => {
                        let Some(e) = model.get_mut(&id) else { continue };
                        store.append(Change::Overflowed { session: SessionId(id) });
                        e.overflowed = true;
                    }
                    Step::End(id) => {
                        if model.remove(&id).is_none() {
                            continue;
                        }
                        store.append(Change::Ended { session: SessionId(id) });
                    }
                    Step::Restart(crash) => {
                        runtime.block_on(store.sync()).expect("sync");
                        if crash { store.crash() } else { drop(store) }
                        store = RedbStore::open_with(&path, None, segment_bytes).expect("reopen");
                        check(&store, &model)?;
                    }
                }
            }
            runtime.block_on(store.sync()).expect("sync");
            store.crash();
            let store = RedbStore::open_with(&path, None, segment_bytes).expect("reopen");
            check(&store, &model)?;
            drop(store);
            let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
        }
    }
}
