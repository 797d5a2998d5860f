//! The durable push queue: a small trait, an in-memory implementation for tests, and redb.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::{PushRequest, QueueError};

/// A push waiting in the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedPush {
    /// Queue-assigned id, unique for the life of the queue.
    pub id: u64,
    /// The push.
    pub request: PushRequest,
    /// Sends attempted so far.
    pub attempts: u32,
    /// Not to be sent before this time (ms since the epoch).
    pub not_before_ms: u64,
    /// Dropped as expired after this time (ms since the epoch).
    pub expires_at_ms: u64,
}

/// Storage for pending pushes. Every method is a short synchronous transaction.
pub trait PushQueue: Send + Sync + 'static {
    /// Stores a new push, returning its id.
    fn insert(
        &self,
        request: PushRequest,
        not_before_ms: u64,
        expires_at_ms: u64,
    ) -> Result<u64, QueueError>;
    /// Pushes stored.
    fn len(&self) -> Result<usize, QueueError>;
    /// Whether no push is stored.
    fn is_empty(&self) -> Result<bool, QueueError> {
        Ok(self.len()? == 0)
    }
    /// Up to `limit` pushes due at `now_ms` whose id `skip` rejects, earliest first, plus the
    /// due time of the first push not returned (to sleep until).
    fn due(
        &self,
        now_ms: u64,
        limit: usize,
        skip: &dyn Fn(u64) -> bool,
    ) -> Result<(Vec<QueuedPush>, Option<u64>), QueueError>;
    /// Records a failed attempt and the next due time.
    fn reschedule(&self, id: u64, attempts: u32, not_before_ms: u64) -> Result<(), QueueError>;
    /// Forgets a push (delivered or given up).
    fn remove(&self, id: u64) -> Result<(), QueueError>;
}

#[derive(Default)]
struct Mem {
    next_id: u64,
    items: BTreeMap<u64, QueuedPush>,
    due: BTreeSet<(u64, u64)>,
}

/// A queue in memory: for tests, and for deployments that accept losing pushes on restart.
#[derive(Default)]
pub struct MemoryQueue {
    inner: Mutex<Mem>,
}

impl std::fmt::Debug for MemoryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryQueue").finish_non_exhaustive()
    }
}

impl MemoryQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PushQueue for MemoryQueue {
    fn insert(
        &self,
        request: PushRequest,
        not_before_ms: u64,
        expires_at_ms: u64,
    ) -> Result<u64, QueueError> {
        let mut m = self.lock();
        m.next_id += 1;
        let id = m.next_id;
        m.items.insert(
            id,
            QueuedPush {
                id,
                request,
                attempts: 0,
                not_before_ms,
                expires_at_ms,
            },
        );
        m.due.insert((not_before_ms, id));
        Ok(id)
    }

    fn len(&self) -> Result<usize, QueueError> {
        Ok(self.lock().items.len())
    }

    fn due(
        &self,
        now_ms: u64,
        limit: usize,
        skip: &dyn Fn(u64) -> bool,
    ) -> Result<(Vec<QueuedPush>, Option<u64>), QueueError> {
        let m = self.lock();
        let mut out = Vec::new();
        for &(at, id) in &m.due {
            if skip(id) {
                continue;
            }
            if at > now_ms || out.len() >= limit {
                return Ok((out, Some(at)));
            }
            if let Some(item) = m.items.get(&id) {
                out.push(item.clone());
            }
        }
        Ok((out, None))
    }

    fn reschedule(&self, id: u64, attempts: u32, not_before_ms: u64) -> Result<(), QueueError> {
        let mut m = self.lock();
        let Some(item) = m.items.get_mut(&id) else {
            return Ok(());
        };
        let old = (item.not_before_ms, id);
        item.attempts = attempts;
        item.not_before_ms = not_before_ms;
        m.due.remove(&old);
        m.due.insert((not_before_ms, id));
        Ok(())
    }

    fn remove(&self, id: u64) -> Result<(), QueueError> {
        let mut m = self.lock();
        if let Some(item) = m.items.remove(&id) {
            m.due.remove(&(item.not_before_ms, id));
        }
        Ok(())
    }
}

/// id → JSON-encoded [`QueuedPush`].
const ITEMS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("push_items");
/// (due ms, id): the schedule, so finding due pushes never scans the whole queue.
const DUE: TableDefinition<'_, (u64, u64), ()> = TableDefinition::new("push_due");

/// A queue in an embedded redb file: every insert, reschedule and removal is a committed,
/// fsynced transaction, so a restart loses no pending push.
///
/// Delivery is at-least-once: a push whose removal had not committed when the process died is
/// sent again after the restart.
pub struct RedbQueue {
    db: Database,
    next_id: AtomicU64,
    len: AtomicUsize,
}

impl std::fmt::Debug for RedbQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbQueue")
            .field("len", &self.len.load(Ordering::Relaxed))
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
    /// Opens (or creates) the queue file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, QueueError> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        let (last, len) = {
            let items = txn.open_table(ITEMS)?;
            txn.open_table(DUE)?;
            let last = items.last()?.map_or(0, |(k, _)| k.value());
            (last, usize::try_from(items.len()?).unwrap_or(usize::MAX))
        };
        txn.commit()?;
        Ok(Self {
            db,
            next_id: AtomicU64::new(last + 1),
            len: AtomicUsize::new(len),
        })
    }
}

impl PushQueue for RedbQueue {
    fn insert(
        &self,
        request: PushRequest,
        not_before_ms: u64,
        expires_at_ms: u64,
    ) -> Result<u64, QueueError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let item = QueuedPush {
            id,
            request,
            attempts: 0,
            not_before_ms,
            expires_at_ms,
        };
        let bytes = encode(&item)?;
        let txn = self.db.begin_write()?;
        {
            txn.open_table(ITEMS)?.insert(id, bytes.as_slice())?;
            txn.open_table(DUE)?.insert((not_before_ms, id), ())?;
        }
        txn.commit()?;
        self.len.fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }

    fn len(&self) -> Result<usize, QueueError> {
        Ok(self.len.load(Ordering::Relaxed))
    }

    fn due(
        &self,
        now_ms: u64,
        limit: usize,
        skip: &dyn Fn(u64) -> bool,
    ) -> Result<(Vec<QueuedPush>, Option<u64>), QueueError> {
        let txn = self.db.begin_read()?;
        let items = txn.open_table(ITEMS)?;
        let due = txn.open_table(DUE)?;
        let mut out = Vec::new();
        for entry in due.iter()? {
            let (key, _) = entry?;
            let (at, id) = key.value();
            if skip(id) {
                continue;
            }
            if at > now_ms || out.len() >= limit {
                return Ok((out, Some(at)));
            }
            if let Some(bytes) = items.get(id)? {
                out.push(decode(id, bytes.value())?);
            }
        }
        Ok((out, None))
    }

    fn reschedule(&self, id: u64, attempts: u32, not_before_ms: u64) -> Result<(), QueueError> {
        let txn = self.db.begin_write()?;
        {
            let mut items = txn.open_table(ITEMS)?;
            let mut due = txn.open_table(DUE)?;
            let current = match items.get(id)? {
                Some(bytes) => decode(id, bytes.value())?,
                None => return Ok(()),
            };
            due.remove((current.not_before_ms, id))?;
            let item = QueuedPush {
                attempts,
                not_before_ms,
                ..current
            };
            items.insert(id, encode(&item)?.as_slice())?;
            due.insert((not_before_ms, id), ())?;
        }
        txn.commit()?;
        Ok(())
    }

    fn remove(&self, id: u64) -> Result<(), QueueError> {
        let txn = self.db.begin_write()?;
        let removed = {
            let mut items = txn.open_table(ITEMS)?;
            let mut due = txn.open_table(DUE)?;
            let removed = items
                .remove(id)?
                .map(|bytes| decode(id, bytes.value()))
                .transpose()?;
            if let Some(item) = &removed {
                due.remove((item.not_before_ms, id))?;
            }
            removed.is_some()
        };
        txn.commit()?;
        if removed {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }
}
