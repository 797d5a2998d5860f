//! [`SessionStore`] in an embedded redb file, group-committed by one writer thread.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use imgate_codec::Platform;
use prost::Message;
use redb::{Database, ReadableTable};
use tokio::sync::{mpsc, oneshot};

use super::record::SessionRecord;
use super::{Change, Durable, SessionStore, StoreError, StoredSession, Synced};
use crate::ids::{AppId, DeviceId, SessionId, UserId};
use crate::session::{Identity, ResumeSecret};

use super::layout::{ACKED, ANSWERED, LOG, SESSIONS, Tables, read_log};

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
        let next_op = {
            // Create the tables once, so readers never meet a missing one.
            let txn = db.begin_write().map_err(|e| io(&e))?;
            let next_op = Tables::open(&txn)
                .and_then(|tables| tables.next_op())
                .map_err(|e| io(&e))?;
            txn.commit().map_err(|e| io(&e))?;
            next_op
        };
        let (ops, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            db: Arc::clone(&db),
            path: path.display().to_string(),
            observer,
            next_op,
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

    /// Entries in the log (tests: the log stays bounded).
    #[cfg(test)]
    pub(super) fn log_len(&self) -> u64 {
        use redb::ReadableTableMetadata as _;
        let Ok(txn) = self.db.begin_read() else {
            return u64::MAX;
        };
        txn.open_table(LOG)
            .ok()
            .and_then(|log| log.len().ok())
            .unwrap_or(u64::MAX)
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
        let acked = txn.open_table(ACKED).map_err(|e| self.io(e))?;
        let answered = txn.open_table(ANSWERED).map_err(|e| self.io(e))?;
        let log = txn.open_table(LOG).map_err(|e| self.io(e))?;
        let mut records = Vec::new();
        let mut points = HashMap::new();
        for row in sessions.iter().map_err(|e| self.io(e))? {
            let (key, value) = row.map_err(|e| self.io(e))?;
            let id = key.value();
            let record = SessionRecord::decode(value.value()).map_err(|e| self.io(e))?;
            let point = acked
                .get(id)
                .map_err(|e| self.io(e))?
                .map_or(0, |v| v.value());
            let latest = answered.get(id).map_err(|e| self.io(e))?.map(|v| v.value());
            points.insert(id, (point, latest));
            records.push((id, record));
        }
        let mut pending = read_log(&log, &points).map_err(|e| self.io(e))?;
        let mut loaded = Vec::with_capacity(records.len());
        for (id, record) in records {
            let Ok(secret) = <[u8; 16]>::try_from(record.secret.as_slice()) else {
                return Err(self.io(format!("session {id:016x}: bad secret length")));
            };
            let acked = points.get(&id).map_or(0, |p| p.0);
            let found = pending.remove(&id).unwrap_or_default();
            // Only a gap-free run after the acknowledged point can be replayed in order; a
            // hole (a failed commit) makes the session unresumable, the rest is reported.
            let mut overflowed = record.overflowed;
            let mut outbox = Vec::with_capacity(found.messages.len());
            for message in found.messages {
                if message.deliver.seq != acked + 1 + outbox.len() as u64 {
                    overflowed = true;
                    break;
                }
                outbox.push(message);
            }
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
                outbox,
                receipts: found.receipts,
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
    /// The op number of the next log entry.
    next_op: u64,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Op>) {
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

    fn commit(&mut self, changes: &mut [Change]) -> Result<(), StoreError> {
        let io = |e: &dyn std::fmt::Display| StoreError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let txn = self.db.begin_write().map_err(|e| io(&e))?;
        let mut next_op = self.next_op;
        {
            let mut tables = Tables::open(&txn).map_err(|e| io(&e))?;
            let appended = tables.apply(changes, &mut next_op).map_err(|e| io(&e))?;
            // Twice what was appended (plus a little, so an idle store still cleans up): the
            // log's head moves faster than its tail, so it shrinks to what is pending.
            tables
                .compact(2 * appended + 64, &mut next_op)
                .map_err(|e| io(&e))?;
        }
        txn.commit().map_err(|e| io(&e))?;
        self.next_op = next_op;
        Ok(())
    }
}
