//! [`SessionStore`] in an embedded redb file, group-committed by one writer thread.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use imgate_codec::Platform;
use prost::Message;
use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::record::{OutboxRecord, PushRecord, ReceiptRecord, SessionRecord};
use super::{
    Change, Durable, SessionStore, StoreError, StoredMessage, StoredReceipt, StoredSession, Synced,
};
use crate::ids::{AppId, DeviceId, SessionId, UserId};
use crate::session::{Identity, ResumeSecret};

const SESSIONS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("sessions");
const ACKED: TableDefinition<'_, u64, u64> = TableDefinition::new("acked");
const OUTBOX: TableDefinition<'_, (u64, u64), &[u8]> = TableDefinition::new("outbox");
const RECEIPTS: TableDefinition<'_, (u64, u64), &[u8]> = TableDefinition::new("receipts");

/// Most changes in one commit: bounds a commit's time and memory under a flood.
const MAX_BATCH: usize = 8192;

pub(super) enum Op {
    Change(Change),
    Sync(oneshot::Sender<Result<(), StoreError>>),
    Then(Durable),
}

/// What the writer thread reports per commit (for metrics).
#[derive(Clone, Copy, Debug)]
pub struct CommitStats {
    /// Changes in the commit.
    pub changes: usize,
    /// How long the write and the fsync took.
    pub duration: Duration,
}

/// Called after every commit (metrics).
pub type CommitObserver = Arc<dyn Fn(CommitStats) + Send + Sync>;

/// Session state in one redb file (`sessions.redb` in the data directory).
///
/// Appends go to a channel; one thread takes everything queued, applies it in one write
/// transaction and commits it with an fsync, then answers the syncs that were waiting. While
/// it commits, the next batch accumulates, so the number of fsyncs adapts to the load
/// (no fixed linger: a lone message waits for one commit only).
#[derive(Debug)]
pub struct RedbStore {
    path: PathBuf,
    db: Arc<Database>,
    pub(super) ops: Option<mpsc::UnboundedSender<Op>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl RedbStore {
    /// Opens (or creates) the store at `path` and starts its writer thread.
    pub fn open(path: &Path, observer: Option<CommitObserver>) -> Result<Self, StoreError> {
        let io = |e: &dyn std::fmt::Display| StoreError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| io(&e))?;
        }
        let db = Arc::new(Database::create(path).map_err(|e| io(&e))?);
        {
            // Create the tables once, so readers never meet a missing one.
            let txn = db.begin_write().map_err(|e| io(&e))?;
            txn.open_table(SESSIONS).map_err(|e| io(&e))?;
            txn.open_table(ACKED).map_err(|e| io(&e))?;
            txn.open_table(OUTBOX).map_err(|e| io(&e))?;
            txn.open_table(RECEIPTS).map_err(|e| io(&e))?;
            txn.commit().map_err(|e| io(&e))?;
        }
        let (ops, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            db: Arc::clone(&db),
            path: path.display().to_string(),
            observer,
        };
        let writer = std::thread::Builder::new()
            .name("imgate-store".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| io(&e))?;
        Ok(Self {
            path: path.to_owned(),
            db,
            ops: Some(ops),
            writer: Some(writer),
        })
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, error: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            path: self.path.display().to_string(),
            reason: error.to_string(),
        }
    }
}

impl Drop for RedbStore {
    /// Commits what is queued and closes the file, so the store can be opened again at once
    /// (redb allows one open database per file).
    fn drop(&mut self) {
        self.ops = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl SessionStore for RedbStore {
    fn append(&self, change: Change) {
        // A stopped writer fails the next sync, which is where durability is promised.
        if let Some(ops) = &self.ops {
            let _ = ops.send(Op::Change(change));
        }
    }

    fn sync(&self) -> Synced {
        let (tx, rx) = oneshot::channel();
        let sent = self
            .ops
            .as_ref()
            .is_some_and(|ops| ops.send(Op::Sync(tx)).is_ok());
        Box::pin(async move {
            if !sent {
                return Err(StoreError::Stopped);
            }
            rx.await.unwrap_or(Err(StoreError::Stopped))
        })
    }

    fn on_durable(&self, then: Durable) {
        let refused = match &self.ops {
            Some(ops) => ops.send(Op::Then(then)).err().map(|e| e.0),
            None => Some(Op::Then(then)),
        };
        if let Some(Op::Then(then)) = refused {
            then(Err(StoreError::Stopped));
        }
    }

    fn load(&self) -> Result<Vec<StoredSession>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let sessions = txn.open_table(SESSIONS).map_err(|e| self.io(e))?;
        let acked_table = txn.open_table(ACKED).map_err(|e| self.io(e))?;
        let outbox = txn.open_table(OUTBOX).map_err(|e| self.io(e))?;
        let receipts = txn.open_table(RECEIPTS).map_err(|e| self.io(e))?;
        let mut loaded = Vec::new();
        for row in sessions.iter().map_err(|e| self.io(e))? {
            let (key, value) = row.map_err(|e| self.io(e))?;
            let id = key.value();
            let record = SessionRecord::decode(value.value()).map_err(|e| self.io(e))?;
            let Ok(secret) = <[u8; 16]>::try_from(record.secret.as_slice()) else {
                return Err(self.io(format!("session {id:016x}: bad secret length")));
            };
            let acked = acked_table
                .get(id)
                .map_err(|e| self.io(e))?
                .map_or(0, |v| v.value());
            let mut overflowed = record.overflowed;
            let mut messages = Vec::new();
            for row in outbox
                .range((id, acked.saturating_add(1))..=(id, u64::MAX))
                .map_err(|e| self.io(e))?
            {
                let (key, value) = row.map_err(|e| self.io(e))?;
                let (_, seq) = key.value();
                let record = OutboxRecord::decode(value.value()).map_err(|e| self.io(e))?;
                let expected = acked + 1 + messages.len() as u64;
                match record.deliver {
                    Some(deliver) if seq == expected && deliver.seq == seq => {
                        messages.push(StoredMessage {
                            deliver,
                            push: record.push.map(Into::into),
                        });
                    }
                    // A hole (a commit that failed): what follows cannot be replayed in
                    // order, so the session is not resumable; the rest is reported.
                    _ => {
                        overflowed = true;
                        break;
                    }
                }
            }
            let mut remembered = Vec::new();
            for row in receipts
                .range((id, 0)..=(id, u64::MAX))
                .map_err(|e| self.io(e))?
            {
                let (_, value) = row.map_err(|e| self.io(e))?;
                let record = ReceiptRecord::decode(value.value()).map_err(|e| self.io(e))?;
                if let Some(receipt) = record.receipt {
                    remembered.push(StoredReceipt {
                        ordinal: record.ordinal,
                        forgotten_up_to: record.forgotten_up_to,
                        receipt,
                    });
                }
            }
            remembered.sort_by_key(|r| r.ordinal);
            loaded.push(StoredSession {
                id: SessionId(id),
                secret: ResumeSecret::from_bytes(secret),
                identity: Identity {
                    app: AppId::new(record.app),
                    user: UserId::new(record.user),
                    device: DeviceId::new(record.device),
                    platform: Platform::try_from(record.platform).unwrap_or_default(),
                },
                opened_at_ms: record.opened_at_ms,
                overflowed,
                acked,
                outbox: messages,
                receipts: remembered,
            });
        }
        Ok(loaded)
    }
}

/// Who waits for a commit.
enum Waiter {
    Sync(oneshot::Sender<Result<(), StoreError>>),
    Then(Durable),
}

struct Writer {
    db: Arc<Database>,
    path: String,
    observer: Option<CommitObserver>,
}

impl Writer {
    fn run(self, mut rx: mpsc::UnboundedReceiver<Op>) {
        let mut changes = Vec::new();
        let mut waiters = Vec::new();
        let mut failed: Option<StoreError> = None;
        while let Some(first) = rx.blocking_recv() {
            let mut next = Some(first);
            while let Some(op) = next {
                match op {
                    Op::Change(change) => changes.push(change),
                    Op::Sync(waiter) => waiters.push(Waiter::Sync(waiter)),
                    Op::Then(then) => waiters.push(Waiter::Then(then)),
                }
                next = if changes.len() < MAX_BATCH {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            let result = match &failed {
                // After a failed commit nothing is durable any more: say so to every sync.
                Some(error) => Err(error.clone()),
                None if changes.is_empty() => Ok(()),
                None => {
                    let started = tokio::time::Instant::now();
                    let count = changes.len();
                    let result = self.commit(&mut changes);
                    if let Some(observer) = &self.observer {
                        observer(CommitStats {
                            changes: count,
                            duration: started.elapsed(),
                        });
                    }
                    result
                }
            };
            changes.clear();
            if let Err(error) = &result {
                tracing::error!(%error, "session store commit failed; durability is lost");
                failed = Some(error.clone());
            }
            for waiter in waiters.drain(..) {
                match waiter {
                    Waiter::Sync(waiter) => {
                        let _ = waiter.send(result.clone());
                    }
                    Waiter::Then(then) => then(result.clone()),
                }
            }
        }
    }

    fn commit(&self, changes: &mut [Change]) -> Result<(), StoreError> {
        let io = |e: &dyn std::fmt::Display| StoreError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let txn = self.db.begin_write().map_err(|e| io(&e))?;
        apply(&txn, changes).map_err(|e| io(&e))?;
        txn.commit().map_err(|e| io(&e))
    }
}

// redb's error is large, but it is built only when a commit fails and becomes text at once.
#[allow(clippy::result_large_err)]
fn apply(txn: &WriteTransaction, changes: &[Change]) -> Result<(), redb::Error> {
    let mut sessions = txn.open_table(SESSIONS)?;
    let mut acked = txn.open_table(ACKED)?;
    let mut outbox = txn.open_table(OUTBOX)?;
    let mut receipts = txn.open_table(RECEIPTS)?;
    // Sessions that ended in this batch: later changes for them (a delivery that raced the
    // end) must not leave orphan rows.
    let mut ended = HashSet::new();
    let mut last_ack = HashMap::new();
    for (index, change) in changes.iter().enumerate() {
        if let Change::Acked { session, .. } = change {
            last_ack.insert(session.0, index);
        }
    }
    let mut buffer = Vec::new();
    for (index, change) in changes.iter().enumerate() {
        buffer.clear();
        match change {
            Change::Opened {
                session,
                secret,
                identity,
                opened_at_ms,
            } => {
                // Ended sessions leave no rows (`Ended` deletes them all), so an id is never
                // mixed with an earlier session's; ids are 64 random bits, so a reuse would
                // need a collision.
                SessionRecord {
                    secret: secret.as_bytes().to_vec(),
                    app: identity.app.as_str().to_owned(),
                    user: identity.user.as_str().to_owned(),
                    device: identity.device.as_str().to_owned(),
                    platform: identity.platform.into(),
                    opened_at_ms: *opened_at_ms,
                    overflowed: false,
                }
                .encode(&mut buffer)
                .map_err(encode_error)?;
                sessions.insert(session.0, buffer.as_slice())?;
                ended.remove(&session.0);
            }
            Change::Delivered {
                session,
                deliver,
                push,
            } => {
                if ended.contains(&session.0) {
                    continue;
                }
                OutboxRecord {
                    deliver: Some(deliver.clone()),
                    push: push.as_deref().map(PushRecord::from),
                }
                .encode(&mut buffer)
                .map_err(encode_error)?;
                outbox.insert((session.0, deliver.seq), buffer.as_slice())?;
            }
            Change::Acked { session, seq } => {
                // Cumulative: only a session's last ack of the batch is written (what an
                // earlier one would delete, the last deletes too).
                if last_ack.get(&session.0) != Some(&index) || ended.contains(&session.0) {
                    continue;
                }
                let before = acked.get(session.0)?.map_or(0, |v| v.value());
                if *seq > before {
                    acked.insert(session.0, *seq)?;
                    outbox.retain_in((session.0, before + 1)..=(session.0, *seq), |_, _| false)?;
                }
            }
            Change::Answered {
                session,
                mark,
                receipt,
            } => {
                if ended.contains(&session.0) {
                    continue;
                }
                ReceiptRecord {
                    ordinal: mark.ordinal,
                    forgotten_up_to: mark.forgotten_up_to,
                    receipt: Some(receipt.clone()),
                }
                .encode(&mut buffer)
                .map_err(encode_error)?;
                receipts.insert((session.0, mark.slot), buffer.as_slice())?;
            }
            Change::Overflowed { session } => {
                let record = sessions
                    .get(session.0)?
                    .map(|v| SessionRecord::decode(v.value()));
                if let Some(Ok(mut record)) = record {
                    record.overflowed = true;
                    record.encode(&mut buffer).map_err(encode_error)?;
                    sessions.insert(session.0, buffer.as_slice())?;
                }
            }
            Change::Ended { session } => {
                ended.insert(session.0);
                sessions.remove(session.0)?;
                acked.remove(session.0)?;
                outbox.retain_in((session.0, 0)..=(session.0, u64::MAX), |_, _| false)?;
                receipts.retain_in((session.0, 0)..=(session.0, u64::MAX), |_, _| false)?;
            }
        }
    }
    Ok(())
}

fn encode_error(error: prost::EncodeError) -> redb::Error {
    redb::Error::Corrupted(error.to_string())
}
