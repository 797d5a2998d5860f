//! [`SessionStore`] in an embedded redb file behind a write-ahead log, group-committed by one
//! writer thread.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc as std_mpsc};
use std::time::Duration;

use prost::Message;
use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::log::{self, Appender};
use super::net::Net;
use super::record::{
    LogRecord, OutboxRecord, PushRecord, ReceiptRecord, SessionRecord, encode_change,
};
use super::{
    Change, Durable, SessionStore, StoreError, StoredMessage, StoredReceipt, StoredSession, Synced,
};
use crate::ids::SessionId;

const SESSIONS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("sessions");
const ACKED: TableDefinition<'_, u64, u64> = TableDefinition::new("acked");
const OUTBOX: TableDefinition<'_, (u64, u64), &[u8]> = TableDefinition::new("outbox");
const RECEIPTS: TableDefinition<'_, (u64, u64), &[u8]> = TableDefinition::new("receipts");

/// Most changes in one commit: bounds a commit's time and memory under a flood.
const MAX_BATCH: usize = 8192;
/// A log segment this large is checkpointed into redb and a new one begun: bounds what a
/// restart replays and what the writer holds folded in memory.
const SEGMENT_BYTES: u64 = 32 << 20;

pub(super) enum Op {
    Change(Change),
    Sync(oneshot::Sender<Result<(), StoreError>>),
    Then(Durable),
    /// Checkpoint everything logged so far; answered once redb holds it.
    Checkpoint(std_mpsc::Sender<Result<(), StoreError>>),
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

/// The first failure of the writer or the checkpointer: from then on nothing is durable.
type Failure = Arc<Mutex<Option<StoreError>>>;

/// Session state in one redb file (`sessions.redb` in the data directory) and its
/// write-ahead log (`sessions.log.<n>` beside it).
///
/// Appends go to a channel; one thread takes everything queued, appends it to the log in one
/// write with one fsync, then answers the syncs that were waiting. While it writes, the next
/// batch accumulates, so the number of fsyncs adapts to the load (no fixed linger: a lone
/// message waits for one fsync only). The writer also folds each change into the net effect
/// of the current log segment; when the segment is full, a second thread writes that net
/// effect to redb in one transaction and deletes the segment. A message acknowledged before
/// its segment is checkpointed (the usual case) never reaches redb at all. On open, segments
/// left by a crash are replayed into redb; a clean close leaves none.
#[derive(Debug)]
pub struct RedbStore {
    path: PathBuf,
    db: Arc<Database>,
    pub(super) ops: Option<mpsc::UnboundedSender<Op>>,
    writer: Option<std::thread::JoinHandle<()>>,
    checkpointer: Option<std::thread::JoinHandle<()>>,
    /// Set to stop without the final checkpoint, as a crash would (tests).
    #[cfg(test)]
    skip_final_checkpoint: Arc<AtomicBool>,
}

impl RedbStore {
    /// Opens (or creates) the store at `path`, replays the log a crash left behind, and
    /// starts its writer and checkpointer threads.
    pub fn open(path: &Path, observer: Option<CommitObserver>) -> Result<Self, StoreError> {
        Self::open_with(path, observer, SEGMENT_BYTES)
    }

    /// [`RedbStore::open`] with segments checkpointed at `segment_bytes`.
    pub(super) fn open_with(
        path: &Path,
        observer: Option<CommitObserver>,
        segment_bytes: u64,
    ) -> Result<Self, StoreError> {
        let io = |e: &dyn std::fmt::Display| io_error(path, e);
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
        let next_segment = replay(&db, path)?;
        let appender = Appender::create(path, next_segment).map_err(|e| io(&e))?;
        let failure = Failure::default();
        let skip_final_checkpoint = Arc::new(AtomicBool::new(false));
        let (checkpoints, checkpoint_rx) = std_mpsc::sync_channel(1);
        let checkpointer = Checkpointer {
            db: Arc::clone(&db),
            path: path.to_owned(),
            failure: Arc::clone(&failure),
        };
        let checkpointer = std::thread::Builder::new()
            .name("imgate-checkpoint".into())
            .spawn(move || checkpointer.run(checkpoint_rx))
            .map_err(|e| io(&e))?;
        let (ops, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            path: path.to_owned(),
            observer,
            appender,
            net: Net::default(),
            segment_bytes,
            checkpoints,
            failure,
            skip_final_checkpoint: Arc::clone(&skip_final_checkpoint),
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
            checkpointer: Some(checkpointer),
            #[cfg(test)]
            skip_final_checkpoint,
        })
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops as a crash would: what was synced stays in the log only, to be replayed by the
    /// next open.
    #[cfg(test)]
    pub(super) fn crash(self) {
        self.skip_final_checkpoint.store(true, Ordering::SeqCst);
    }

    fn io(&self, error: impl std::fmt::Display) -> StoreError {
        io_error(&self.path, error)
    }

    /// Waits until redb holds everything appended so far.
    fn checkpoint(&self) -> Result<(), StoreError> {
        let (tx, rx) = std_mpsc::channel();
        let ops = self.ops.as_ref().ok_or(StoreError::Stopped)?;
        ops.send(Op::Checkpoint(tx))
            .map_err(|_| StoreError::Stopped)?;
        rx.recv().unwrap_or(Err(StoreError::Stopped))
    }
}

impl Drop for RedbStore {
    /// Commits what is queued, checkpoints it and closes the files, so the store can be
    /// opened again at once (redb allows one open database per file).
    fn drop(&mut self) {
        self.ops = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        if let Some(checkpointer) = self.checkpointer.take() {
            let _ = checkpointer.join();
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
        self.checkpoint()?;
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
            let (secret, identity) = record
                .credentials()
                .map_err(|e| self.io(format!("session {id:016x}: {e}")))?;
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
                secret,
                identity,
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

/// A full log segment's net effect, on its way into redb.
struct Checkpoint {
    net: Net,
    /// The segment to delete once redb holds `net` (none: nothing was logged).
    segment: Option<PathBuf>,
    /// Who waits for it (`load`).
    replies: Vec<std_mpsc::Sender<Result<(), StoreError>>>,
}

struct Writer {
    path: PathBuf,
    observer: Option<CommitObserver>,
    appender: Appender,
    net: Net,
    segment_bytes: u64,
    checkpoints: std_mpsc::SyncSender<Checkpoint>,
    failure: Failure,
    skip_final_checkpoint: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Op>) {
        let mut changes = Vec::new();
        let mut waiters = Vec::new();
        let mut checkpoint_requests = Vec::new();
        let mut buffer = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut next = Some(first);
            while let Some(op) = next {
                match op {
                    Op::Change(change) => changes.push(change),
                    Op::Sync(waiter) => waiters.push(Waiter::Sync(waiter)),
                    Op::Then(then) => waiters.push(Waiter::Then(then)),
                    Op::Checkpoint(reply) => checkpoint_requests.push(reply),
                }
                next = if changes.len() < MAX_BATCH {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            let result = match failed(&self.failure) {
                // After a failure nothing is durable any more: say so to every sync.
                Some(error) => Err(error),
                None if changes.is_empty() => Ok(()),
                None => {
                    let started = tokio::time::Instant::now();
                    let count = changes.len();
                    let result = self.commit(&mut changes, &mut buffer);
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
                fail(&self.failure, error);
            }
            for waiter in waiters.drain(..) {
                match waiter {
                    Waiter::Sync(waiter) => {
                        let _ = waiter.send(result.clone());
                    }
                    Waiter::Then(then) => then(result.clone()),
                }
            }
            if !checkpoint_requests.is_empty() || self.appender.written() >= self.segment_bytes {
                self.rotate(std::mem::take(&mut checkpoint_requests));
            }
        }
        if !self.skip_final_checkpoint.load(Ordering::SeqCst) {
            self.rotate(Vec::new());
        }
    }

    /// Logs `changes` in one write and one fsync, and folds them into the segment's net.
    fn commit(
        &mut self,
        changes: &mut Vec<Change>,
        buffer: &mut Vec<u8>,
    ) -> Result<(), StoreError> {
        buffer.clear();
        for change in changes.iter() {
            log::frame_with(buffer, |payload| encode_change(change, payload));
        }
        self.appender.append(buffer).map_err(|e| self.io(e))?;
        for change in changes.drain(..) {
            self.net.fold(change);
        }
        Ok(())
    }

    /// Hands the segment's net to the checkpointer and begins the next segment.
    fn rotate(&mut self, replies: Vec<std_mpsc::Sender<Result<(), StoreError>>>) {
        let segment = if self.net.is_empty() && self.appender.written() == 0 {
            None
        } else {
            let next = self.appender.number() + 1;
            match Appender::create(&self.path, next) {
                Ok(appender) => {
                    let full = std::mem::replace(&mut self.appender, appender);
                    Some(log::segment_path(&self.path, full.number()))
                }
                Err(error) => {
                    let error = self.io(error);
                    fail(&self.failure, &error);
                    for reply in replies {
                        let _ = reply.send(Err(error.clone()));
                    }
                    return;
                }
            }
        };
        let checkpoint = Checkpoint {
            net: std::mem::take(&mut self.net),
            segment,
            replies,
        };
        // Blocks while the previous checkpoint is still being written: back-pressure that
        // keeps the folded state in memory bounded by two segments.
        if let Err(std_mpsc::SendError(checkpoint)) = self.checkpoints.send(checkpoint) {
            for reply in checkpoint.replies {
                let _ = reply.send(Err(StoreError::Stopped));
            }
        }
    }

    fn io(&self, error: impl std::fmt::Display) -> StoreError {
        io_error(&self.path, error)
    }
}

/// Writes full segments' net effects into redb, oldest first, and deletes each segment once
/// its transaction is committed.
struct Checkpointer {
    db: Arc<Database>,
    path: PathBuf,
    failure: Failure,
}

impl Checkpointer {
    fn run(self, rx: std_mpsc::Receiver<Checkpoint>) {
        while let Ok(checkpoint) = rx.recv() {
            let result = match failed(&self.failure) {
                // A segment after a failed one must not be applied: it stays for replay.
                Some(error) => Err(error),
                None => self.write(checkpoint.net, checkpoint.segment.as_deref()),
            };
            if let Err(error) = &result {
                fail(&self.failure, error);
            }
            for reply in checkpoint.replies {
                let _ = reply.send(result.clone());
            }
        }
    }

    fn write(&self, net: Net, segment: Option<&Path>) -> Result<(), StoreError> {
        write_net(&self.db, &self.path, net)?;
        if let Some(segment) = segment {
            let io = |e: std::io::Error| io_error(segment, e);
            std::fs::remove_file(segment).map_err(io)?;
            log::sync_dir(segment).map_err(io)?;
        }
        Ok(())
    }
}

/// Applies a net effect to redb in one transaction.
fn write_net(db: &Database, path: &Path, net: Net) -> Result<(), StoreError> {
    if net.is_empty() {
        return Ok(());
    }
    let io = |e: &dyn std::fmt::Display| io_error(path, e);
    let txn = db.begin_write().map_err(|e| io(&e))?;
    apply(&txn, &net.into_changes()).map_err(|e| io(&e))?;
    txn.commit().map_err(|e| io(&e))
}

/// Replays the segments a crash left (oldest first) into redb, deletes them, and returns the
/// number for the next segment.
fn replay(db: &Database, path: &Path) -> Result<u64, StoreError> {
    let io = |e: &dyn std::fmt::Display| io_error(path, e);
    let segments = log::segments(path).map_err(|e| io(&e))?;
    let Some(newest) = segments.last().map(|segment| segment.number) else {
        return Ok(1);
    };
    for segment in &segments {
        let at = |e: &dyn std::fmt::Display| io_error(&segment.path, e);
        let bytes = std::fs::read(&segment.path).map_err(|e| at(&e))?;
        let mut net = Net::default();
        for record in log::records(&bytes, segment.number == newest).map_err(|e| at(&e))? {
            let record = LogRecord::decode(record).map_err(|e| at(&e))?;
            net.fold(Change::try_from(record).map_err(|e| at(&e))?);
        }
        let folded = net.folded();
        write_net(db, path, net)?;
        std::fs::remove_file(&segment.path).map_err(|e| at(&e))?;
        log::sync_dir(&segment.path).map_err(|e| at(&e))?;
        tracing::info!(segment = %segment.path.display(), changes = folded, "session store: log replayed");
    }
    Ok(newest + 1)
}

fn io_error(path: &Path, error: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        reason: error.to_string(),
    }
}

fn failed(failure: &Failure) -> Option<StoreError> {
    failure
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

fn fail(failure: &Failure, error: &StoreError) {
    let mut failure = failure.lock().unwrap_or_else(PoisonError::into_inner);
    if failure.is_none() {
        tracing::error!(%error, "session store write failed; durability is lost");
        *failure = Some(error.clone());
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
                SessionRecord::opened(secret, identity, *opened_at_ms)
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
