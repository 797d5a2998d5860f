//! The redb queue: an in-memory index answers every read at once, and a writer thread
//! group-commits the writes, many per fsync.
//!
//! A write changes the index and appends to a journal under one lock, so the journal holds
//! the writes in the order the index saw them. The writer takes the journal when its first
//! write is `linger` old (or it holds [`MAX_BATCH`] writes), applies it in one transaction and
//! publishes how far it is durable. One fsync then covers a whole burst: a thousand submits
//! cost a few commits instead of a thousand.

// The linger is measured on the writer's OS thread against its condvar time-out: real time,
// whatever a test does with tokio's clock.
#![allow(
    clippy::disallowed_types,
    reason = "the writer thread's linger is real time, outside any runtime"
)]

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ::redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::watch;

use super::{Flush, Index, PushQueue, QueuedPush, Record};
use crate::{PushRequest, QueueError};

/// id → JSON-encoded [`QueuedPush`].
const ITEMS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("push_items");
/// Callers' records ([`PushQueue::put_record`]).
const RECORDS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("push_records");
/// The schedule of an older layout; the schedule now lives in memory, rebuilt on open.
const OLD_DUE: TableDefinition<'_, (u64, u64), ()> = TableDefinition::new("push_due");

/// Writes in one transaction at most, so a huge burst still commits (and frees) in steps.
const MAX_BATCH: usize = 8192;
/// How long the writer waits before retrying a failed commit.
const RETRY: Duration = Duration::from_millis(100);

/// The default linger: how long a write may wait for company before it is committed.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(2);

enum Op {
    Put(u64, Vec<u8>),
    Remove(u64),
    PutRecord(Vec<u8>, Vec<u8>),
    RemoveRecord(Vec<u8>),
}

struct State {
    index: Index,
    next_id: u64,
    journal: Vec<Op>,
    // When the oldest write in `journal` was made.
    first_at: Option<Instant>,
    // Sequence number of the last write made; the writer publishes the last one committed.
    written: u64,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    linger: Duration,
    commits: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A queue in an embedded redb file. Writes are group-committed (fsynced) by a writer thread
/// within a bounded linger ([`DEFAULT_LINGER`]); [`PushQueue::flush`] waits for them. Reads
/// come from memory, so the whole queue is also held in memory (a few hundred bytes a push).
///
/// The dispatcher sends nothing before its send mark is durable, so after a crash a push is
/// sent again only if its provider's answer was lost (see the module docs of `queue`).
pub struct RedbQueue {
    shared: Arc<Shared>,
    durable: watch::Receiver<u64>,
    writer: Option<JoinHandle<()>>,
    // Read-only handle for `records`; the writer thread owns the database.
    db: Arc<Database>,
}

impl std::fmt::Debug for RedbQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbQueue")
            .field("len", &self.shared.lock().index.len())
            .field("linger", &self.shared.linger)
            .finish_non_exhaustive()
    }
}

fn decode(id: u64, bytes: &[u8]) -> Result<QueuedPush, QueueError> {
    serde_json::from_slice(bytes).map_err(|e| QueueError::Corrupt {
        id,
        why: e.to_string(),
    })
}

fn encode(item: &QueuedPush) -> Result<Vec<u8>, QueueError> {
    serde_json::to_vec(item).map_err(|e| QueueError::Corrupt {
        id: item.id,
        why: e.to_string(),
    })
}

impl RedbQueue {
    /// Opens (or creates) the queue file at `path`, with the default linger.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, QueueError> {
        Self::open_with_linger(path, DEFAULT_LINGER)
    }

    /// Opens (or creates) the queue file at `path`; a write waits at most `linger` (plus one
    /// commit) to become durable.
    pub fn open_with_linger(path: impl AsRef<Path>, linger: Duration) -> Result<Self, QueueError> {
        let db = Database::create(path)?;
        let mut index = Index::default();
        let txn = db.begin_write()?;
        {
            let items = txn.open_table(ITEMS)?;
            for entry in items.iter()? {
                let (key, value) = entry?;
                index.put(decode(key.value(), value.value())?);
            }
        }
        txn.open_table(RECORDS)?;
        txn.delete_table(OLD_DUE)?;
        txn.commit()?;
        let next_id = index.last_id().map_or(1, |id| id + 1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                index,
                next_id,
                journal: Vec::new(),
                first_at: None,
                written: 0,
                closed: false,
            }),
            wake: Condvar::new(),
            linger,
            commits: AtomicU64::new(0),
        });
        let (tx, durable) = watch::channel(0);
        let db = Arc::new(db);
        let writer = {
            let shared = Arc::clone(&shared);
            let db = Arc::clone(&db);
            std::thread::Builder::new()
                .name("imgate-push-queue".into())
                .spawn(move || write_loop(&db, &shared, &tx))
                .map_err(|e| QueueError::Db(format!("queue writer thread: {e}")))?
        };
        Ok(Self {
            shared,
            durable,
            writer: Some(writer),
            db,
        })
    }

    /// Transactions committed since the file was opened (each one fsync).
    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    /// Applies `change` to the index and journals the push it leaves (or its removal).
    fn write<T>(
        &self,
        change: impl FnOnce(&mut State) -> Result<(T, Option<Op>), QueueError>,
    ) -> Result<T, QueueError> {
        let mut state = self.shared.lock();
        if state.closed {
            return Err(QueueError::Stopped);
        }
        let (out, op) = change(&mut state)?;
        if let Some(op) = op {
            state.journal.push(op);
            state.written += 1;
            let pending = state.journal.len();
            if pending == 1 {
                state.first_at = Some(Instant::now());
            }
            if pending == 1 || pending == MAX_BATCH {
                self.shared.wake.notify_one();
            }
        }
        Ok(out)
    }

    fn put(&self, item: &QueuedPush) -> Result<Op, QueueError> {
        Ok(Op::Put(item.id, encode(item)?))
    }
}

impl Drop for RedbQueue {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(writer) = self.writer.take() {
            // The writer commits what is journaled before it ends.
            let _ = writer.join();
        }
    }
}

impl PushQueue for RedbQueue {
    fn insert(
        &self,
        request: PushRequest,
        not_before_ms: u64,
        expires_at_ms: u64,
    ) -> Result<u64, QueueError> {
        self.write(|state| {
            let id = state.next_id;
            let item = QueuedPush::new(id, request, not_before_ms, expires_at_ms);
            let op = self.put(&item)?;
            state.next_id += 1;
            state.index.put(item);
            Ok((id, Some(op)))
        })
    }

    fn len(&self) -> Result<usize, QueueError> {
        Ok(self.shared.lock().index.len())
    }

    fn due(
        &self,
        now_ms: u64,
        limit: usize,
        skip: &dyn Fn(u64) -> bool,
    ) -> Result<(Vec<QueuedPush>, Option<u64>), QueueError> {
        Ok(self.shared.lock().index.due(now_ms, limit, skip))
    }

    fn start_send(&self, id: u64) -> Result<Option<QueuedPush>, QueueError> {
        self.write(
            |state| match state.index.update(id, QueuedPush::start_send) {
                Some(item) => Ok((Some(item.clone()), Some(self.put(item)?))),
                None => Ok((None, None)),
            },
        )
    }

    fn reschedule(&self, id: u64, attempts: u32, not_before_ms: u64) -> Result<(), QueueError> {
        self.write(|state| {
            let updated = state
                .index
                .update(id, |item| item.reschedule(attempts, not_before_ms));
            Ok(((), updated.map(|item| self.put(item)).transpose()?))
        })
    }

    fn remove(&self, id: u64) -> Result<(), QueueError> {
        self.write(|state| Ok(((), state.index.remove(id).map(|_| Op::Remove(id)))))
    }

    fn put_record(&self, key: &[u8], value: Option<&[u8]>) -> Result<(), QueueError> {
        let op = match value {
            Some(value) => Op::PutRecord(key.to_vec(), value.to_vec()),
            None => Op::RemoveRecord(key.to_vec()),
        };
        self.write(|_| Ok(((), Some(op))))
    }

    fn records(&self) -> Result<Vec<Record>, QueueError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RECORDS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            out.push((key.value().to_vec(), value.value().to_vec()));
        }
        Ok(out)
    }

    fn flush(&self) -> Flush<'_> {
        let target = self.shared.lock().written;
        let mut durable = self.durable.clone();
        Box::pin(async move {
            durable
                .wait_for(|&done| done >= target)
                .await
                .map(|_| ())
                .map_err(|_| QueueError::Stopped)
        })
    }
}

/// The writer thread: takes the journal when it is `linger` old or full, commits it in one
/// transaction, publishes the sequence number reached. Ends once closed and empty.
fn write_loop(db: &Database, shared: &Shared, durable: &watch::Sender<u64>) {
    loop {
        let (ops, reached, closed) = {
            let mut state = shared.lock();
            loop {
                if state.journal.is_empty() {
                    if state.closed {
                        return;
                    }
                    state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                    continue;
                }
                let age = state.first_at.map_or(shared.linger, |at| at.elapsed());
                if state.closed || state.journal.len() >= MAX_BATCH || age >= shared.linger {
                    break;
                }
                state = shared
                    .wake
                    .wait_timeout(state, shared.linger - age)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            let take = state.journal.len().min(MAX_BATCH);
            let ops: Vec<Op> = state.journal.drain(..take).collect();
            // The sequence number of the last write taken.
            let reached = state.written - state.journal.len() as u64;
            state.first_at = (!state.journal.is_empty()).then(Instant::now);
            (ops, reached, state.closed)
        };
        match commit(db, &ops) {
            Ok(()) => {
                shared.commits.fetch_add(1, Ordering::Relaxed);
                durable.send_replace(reached);
            }
            Err(error) if closed => {
                tracing::error!(%error, writes = ops.len(), "push queue: final commit failed, writes lost");
                return;
            }
            Err(error) => {
                tracing::error!(%error, writes = ops.len(), "push queue commit failed; retrying");
                let mut state = shared.lock();
                let newer = std::mem::replace(&mut state.journal, ops);
                state.journal.extend(newer);
                state.first_at = Some(Instant::now());
                drop(state);
                std::thread::sleep(RETRY);
            }
        }
    }
}

fn commit(db: &Database, ops: &[Op]) -> Result<(), QueueError> {
    let txn = db.begin_write()?;
    {
        let mut items = txn.open_table(ITEMS)?;
        let mut records = txn.open_table(RECORDS)?;
        for op in ops {
            match op {
                Op::Put(id, bytes) => {
                    items.insert(*id, bytes.as_slice())?;
                }
                Op::Remove(id) => {
                    items.remove(*id)?;
                }
                Op::PutRecord(key, value) => {
                    records.insert(key.as_slice(), value.as_slice())?;
                }
                Op::RemoveRecord(key) => {
                    records.remove(key.as_slice())?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Device, Platform, PushKind};

    fn request(n: u64) -> PushRequest {
        PushRequest {
            app: "chat".into(),
            device: Device {
                platform: Platform::Fcm,
                token: format!("t{n}"),
                registered_at_ms: 0,
            },
            kind: PushKind::WakeUp,
            badge: None,
            collapse_id: None,
            ttl_secs: 60,
            data: Default::default(),
        }
    }

    fn temp_path() -> (std::path::PathBuf, std::path::PathBuf) {
        // Under the target dir, on disk: a tmpfs would hide the fsync cost these tests bound.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/tmp")
            .join(format!(
                "queue-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            ));
        std::fs::create_dir_all(&dir).expect("dir");
        (dir.join("q.redb"), dir)
    }

    #[tokio::test]
    async fn a_burst_is_group_committed_and_survives_reopen() {
        let (path, dir) = temp_path();
        let queue = RedbQueue::open(&path).expect("open");
        let ids: Vec<u64> = (0..1000)
            .map(|n| queue.insert(request(n), n, u64::MAX).expect("insert"))
            .collect();
        for &id in &ids[..300] {
            queue.start_send(id).expect("mark");
        }
        for &id in &ids[..100] {
            queue.remove(id).expect("remove");
        }
        for &id in &ids[100..200] {
            queue.reschedule(id, 1, 5_000).expect("reschedule");
        }
        queue.put_record(b"a", Some(b"1")).expect("record");
        queue.put_record(b"b", Some(b"2")).expect("record");
        queue.put_record(b"a", None).expect("record");
        queue.flush().await.expect("flush");
        // 1,600 writes: one commit each would be 1,600 fsyncs.
        assert!(queue.commits() <= 20, "{} commits", queue.commits());
        drop(queue);

        let queue = RedbQueue::open(&path).expect("reopen");
        assert_eq!(queue.len().expect("len"), 900);
        let (due, _) = queue.due(u64::MAX, usize::MAX, &|_| false).expect("due");
        let rescheduled = due.iter().filter(|p| p.not_before_ms == 5_000).count();
        assert_eq!(rescheduled, 100);
        let in_flight: Vec<u64> = due.iter().filter(|p| p.sending).map(|p| p.id).collect();
        assert_eq!(
            in_flight,
            ids[200..300],
            "marked, no outcome: the answer was lost"
        );
        assert!(due.iter().filter(|p| p.sending).all(|p| p.attempts == 1));
        assert_eq!(
            queue.records().expect("records"),
            [(b"b".to_vec(), b"2".to_vec())]
        );
        let new = queue.insert(request(0), 0, u64::MAX).expect("insert");
        assert!(new > ids[999], "ids are not reused after a reopen");
        drop(queue);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn flush_waits_for_the_commit() {
        let (path, dir) = temp_path();
        // A linger far longer than the test lets the write sit in the journal.
        let queue = RedbQueue::open_with_linger(&path, Duration::from_secs(1)).expect("open");
        queue.insert(request(1), 0, u64::MAX).expect("insert");
        assert_eq!(queue.commits(), 0, "not committed before the linger");
        queue.flush().await.expect("flush");
        assert_eq!(queue.commits(), 1);
        drop(queue);
        let _ = std::fs::remove_dir_all(dir);
    }
}
