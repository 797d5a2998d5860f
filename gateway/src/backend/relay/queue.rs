//! The relay's offline queue: messages for users of an app who have no session, kept in one
//! redb file (`offline.redb`, keys `(app, user, order)`) until the user's next login.
//!
//! Bounded per user (count and payload bytes) and each message expires. Writes go to one
//! writer thread that applies everything queued meanwhile in one transaction and commits it
//! with one fsync (group commit, as the session store does), then answers every waiter.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use prost::Message;
use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use crate::ids::{AppId, MessageId, UserId};

const MESSAGES: TableDefinition<'_, (&str, &str, u64), &[u8]> = TableDefinition::new("messages");

/// Most operations in one commit: bounds a commit's time and memory under a flood.
const MAX_BATCH: usize = 4096;

/// An offline-queue failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The queue's file could not be opened, read or written.
    #[error("offline queue {path}: {reason}")]
    Io {
        /// The queue's file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The writer has stopped (shutting down, or a commit failed before).
    #[error("offline queue writer stopped")]
    Stopped,
}

/// Per-user bounds of an app's offline queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OfflineLimits {
    /// Messages kept per user at most.
    pub max_messages: usize,
    /// Payload bytes kept per user at most.
    pub max_bytes: usize,
    /// How long a message is kept; older ones are dropped (and counted) instead of delivered.
    pub ttl: Duration,
}

impl Default for OfflineLimits {
    fn default() -> Self {
        Self {
            max_messages: 1000,
            max_bytes: 1024 * 1024,
            ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The wall clock in ms since the Unix epoch (expiry survives restarts); injectable for tests.
pub type WallClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// One stored message, as the file holds it.
#[derive(Clone, PartialEq, prost::Message)]
struct Record {
    #[prost(string, tag = "1")]
    from: String,
    #[prost(uint64, tag = "2")]
    sent_at_ms: u64,
    #[prost(uint64, tag = "3")]
    expires_at_ms: u64,
    #[prost(bytes = "bytes", tag = "4")]
    payload: Bytes,
    #[prost(uint64, tag = "5")]
    message_id: u64,
}

/// A queued message, read back for delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedMessage {
    /// Its place in the user's queue.
    pub order: u64,
    /// The sender.
    pub from: Option<UserId>,
    /// The id the sender's receipt named.
    pub message_id: MessageId,
    /// When it was sent (ms since the Unix epoch).
    pub sent_at_ms: u64,
    /// When it expires (ms since the Unix epoch).
    pub expires_at_ms: u64,
    /// The payload.
    pub payload: Bytes,
}

/// A message to queue.
#[derive(Clone, Debug)]
pub struct NewMessage {
    /// The sender.
    pub from: Option<UserId>,
    /// The id the sender's receipt names.
    pub message_id: MessageId,
    /// The payload.
    pub payload: Bytes,
}

/// What [`OfflineQueue::enqueue`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// Committed to the file.
    Stored,
    /// The user's queue is at its bound (after dropping its expired messages): not stored.
    Full,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// `imgate_offline_queue_messages_total{outcome}`: `queued`, `delivered` (handed to a
/// session and removed), `expired` (dropped past their TTL), `refused_full`. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct OfflineQueueMetrics {
    messages: Family<OutcomeLabels, Counter>,
}

impl OfflineQueueMetrics {
    /// Registers the metrics into `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        metrics.register(registry);
        metrics
    }

    /// Registers metrics made with `default()` (they count from their creation on).
    pub fn register(&self, registry: &mut Registry) {
        registry
            .sub_registry_with_prefix("imgate_offline_queue")
            .register(
                "messages",
                "Relay offline-queue messages by outcome: queued, delivered, expired, refused_full",
                self.messages.clone(),
            );
    }

    /// The count of `outcome` so far (tests, dashboards' sanity).
    pub fn get(&self, outcome: &'static str) -> u64 {
        self.messages
            .get_or_create(&OutcomeLabels { outcome })
            .get()
    }

    pub(super) fn add(&self, outcome: &'static str, n: usize) {
        if n > 0 {
            self.messages
                .get_or_create(&OutcomeLabels { outcome })
                .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
        }
    }
}

enum Op {
    Enqueue {
        app: AppId,
        user: UserId,
        message: NewMessage,
        limits: OfflineLimits,
        reply: oneshot::Sender<Result<Enqueued, QueueError>>,
    },
    Remove {
        app: AppId,
        user: UserId,
        orders: Vec<u64>,
        reply: oneshot::Sender<Result<(), QueueError>>,
    },
}

/// The offline queue of every relay app, in one redb file.
pub struct OfflineQueue {
    path: PathBuf,
    db: Arc<Database>,
    ops: Option<mpsc::UnboundedSender<Op>>,
    writer: Option<std::thread::JoinHandle<()>>,
    clock: WallClock,
    metrics: OfflineQueueMetrics,
}

impl std::fmt::Debug for OfflineQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfflineQueue")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What the writer keeps per user with queued messages (rebuilt from the file at open).
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    count: usize,
    bytes: usize,
    next_order: u64,
}

type Key = (AppId, UserId);

impl OfflineQueue {
    /// Opens (or creates) the queue at `path` (its directory too) and starts its writer.
    pub fn open(path: &Path, metrics: OfflineQueueMetrics) -> Result<Self, QueueError> {
        Self::open_with_clock(path, metrics, Arc::new(crate::handle::wall_ms))
    }

    /// [`OfflineQueue::open`] with the wall clock `clock` decides expiry by.
    pub fn open_with_clock(
        path: &Path,
        metrics: OfflineQueueMetrics,
        clock: WallClock,
    ) -> Result<Self, QueueError> {
        let io = |e: &dyn std::fmt::Display| QueueError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| io(&e))?;
        }
        let db = Arc::new(Database::create(path).map_err(|e| io(&e))?);
        let totals = load_totals(&db).map_err(|e| io(&e))?;
        let (ops, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            db: Arc::clone(&db),
            path: path.display().to_string(),
            clock: Arc::clone(&clock),
            metrics: metrics.clone(),
            totals,
        };
        let writer = std::thread::Builder::new()
            .name("imgate-offline".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| io(&e))?;
        Ok(Self {
            path: path.to_owned(),
            db,
            ops: Some(ops),
            writer: Some(writer),
            clock,
            metrics,
        })
    }

    /// The queue's metrics.
    pub fn metrics(&self) -> &OfflineQueueMetrics {
        &self.metrics
    }

    /// Now, by the queue's clock.
    pub(super) fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// Queues `message` for `user`; returns once it is committed (or refused).
    pub async fn enqueue(
        &self,
        app: &AppId,
        user: &UserId,
        message: NewMessage,
        limits: OfflineLimits,
    ) -> Result<Enqueued, QueueError> {
        let (reply, answer) = oneshot::channel();
        self.send(Op::Enqueue {
            app: app.clone(),
            user: user.clone(),
            message,
            limits,
            reply,
        })?;
        answer.await.map_err(|_| QueueError::Stopped)?
    }

    /// Removes `orders` from `user`'s queue; returns once that is committed.
    pub async fn remove(
        &self,
        app: &AppId,
        user: &UserId,
        orders: Vec<u64>,
    ) -> Result<(), QueueError> {
        if orders.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.send(Op::Remove {
            app: app.clone(),
            user: user.clone(),
            orders,
            reply,
        })?;
        answer.await.map_err(|_| QueueError::Stopped)?
    }

    fn send(&self, op: Op) -> Result<(), QueueError> {
        self.ops
            .as_ref()
            .ok_or(QueueError::Stopped)?
            .send(op)
            .map_err(|_| QueueError::Stopped)
    }

    /// The oldest `limit` messages of `user`'s queue, in order (expired ones included: the
    /// caller drops them).
    pub async fn oldest(
        &self,
        app: &AppId,
        user: &UserId,
        limit: usize,
    ) -> Result<Vec<QueuedMessage>, QueueError> {
        let db = Arc::clone(&self.db);
        let (app, user) = (app.clone(), user.clone());
        let path = self.path.display().to_string();
        tokio::task::spawn_blocking(move || {
            read_oldest(&db, &app, &user, limit).map_err(|e| QueueError::Io {
                path,
                reason: e.to_string(),
            })
        })
        .await
        .map_err(|_| QueueError::Stopped)?
    }
}

impl Drop for OfflineQueue {
    /// Commits what is queued and closes the file, so it can be opened again at once.
    fn drop(&mut self) {
        self.ops = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

// redb's error is large, but it becomes text at once.
#[allow(clippy::result_large_err)]
fn read_oldest(
    db: &Database,
    app: &AppId,
    user: &UserId,
    limit: usize,
) -> Result<Vec<QueuedMessage>, redb::Error> {
    let txn = db.begin_read()?;
    let table = match txn.open_table(MESSAGES) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(error) => return Err(error.into()),
    };
    let (a, u) = (app.as_str(), user.as_str());
    let mut out = Vec::new();
    for entry in table.range((a, u, 0)..=(a, u, u64::MAX))?.take(limit) {
        let (key, value) = entry?;
        // A record this version cannot read is skipped, not delivered half-decoded.
        let Ok(record) = Record::decode(value.value()) else {
            continue;
        };
        out.push(QueuedMessage {
            order: key.value().2,
            from: (!record.from.is_empty()).then(|| UserId::new(record.from.as_str())),
            message_id: MessageId(record.message_id),
            sent_at_ms: record.sent_at_ms,
            expires_at_ms: record.expires_at_ms,
            payload: record.payload,
        });
    }
    Ok(out)
}

#[allow(clippy::result_large_err)]
fn load_totals(db: &Database) -> Result<HashMap<Key, Totals>, redb::Error> {
    let txn = db.begin_write()?;
    let mut totals: HashMap<Key, Totals> = HashMap::new();
    {
        let table = txn.open_table(MESSAGES)?;
        for entry in table.iter()? {
            let (key, value) = entry?;
            let (app, user, order) = key.value();
            let entry = totals
                .entry((AppId::new(app), UserId::new(user)))
                .or_default();
            entry.count += 1;
            entry.bytes += Record::decode(value.value()).map_or(0, |r| r.payload.len());
            entry.next_order = entry.next_order.max(order.saturating_add(1));
        }
    }
    txn.commit()?;
    Ok(totals)
}

struct Writer {
    db: Arc<Database>,
    path: String,
    clock: WallClock,
    metrics: OfflineQueueMetrics,
    totals: HashMap<Key, Totals>,
}

/// An answer to send once the batch it belongs to is committed.
enum Reply {
    Enqueue(oneshot::Sender<Result<Enqueued, QueueError>>, Enqueued),
    Remove(oneshot::Sender<Result<(), QueueError>>),
}

impl Writer {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Op>) {
        let mut batch = Vec::new();
        let mut failed: Option<QueueError> = None;
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let result = match &failed {
                // After a failed commit the in-memory totals may be wrong: refuse everything.
                Some(error) => Err(error.clone()),
                None => self.commit(&mut batch),
            };
            match result {
                Ok(replies) => {
                    let mut queued = 0;
                    for reply in replies {
                        match reply {
                            Reply::Enqueue(tx, outcome) => {
                                queued += usize::from(outcome == Enqueued::Stored);
                                let _ = tx.send(Ok(outcome));
                            }
                            Reply::Remove(tx) => {
                                let _ = tx.send(Ok(()));
                            }
                        }
                    }
                    self.metrics.add("queued", queued);
                }
                Err(error) => {
                    tracing::error!(%error, "offline queue commit failed; it refuses writes now");
                    failed = Some(error.clone());
                    for op in batch.drain(..) {
                        match op {
                            Op::Enqueue { reply, .. } => {
                                let _ = reply.send(Err(error.clone()));
                            }
                            Op::Remove { reply, .. } => {
                                let _ = reply.send(Err(error.clone()));
                            }
                        }
                    }
                }
            }
            batch.clear();
        }
    }

    /// Applies `batch` in one transaction and commits it; on success the ops are consumed
    /// into their replies.
    fn commit(&mut self, batch: &mut Vec<Op>) -> Result<Vec<Reply>, QueueError> {
        let io = |e: &dyn std::fmt::Display| QueueError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let mut totals = self.totals.clone();
        let txn = self.db.begin_write().map_err(|e| io(&e))?;
        let outcomes = apply(&txn, batch, &mut totals, (self.clock)()).map_err(|e| io(&e))?;
        txn.commit().map_err(|e| io(&e))?;
        // Committed: the totals and counts the batch computed are true now.
        totals.retain(|_, t| t.count > 0);
        self.totals = totals;
        self.metrics.add("expired", outcomes.expired);
        self.metrics.add("refused_full", outcomes.full);
        let mut replies = Vec::with_capacity(batch.len());
        for (op, outcome) in batch.drain(..).zip(outcomes.enqueued) {
            replies.push(match op {
                Op::Enqueue { reply, .. } => Reply::Enqueue(reply, outcome),
                Op::Remove { reply, .. } => Reply::Remove(reply),
            });
        }
        Ok(replies)
    }
}

struct Applied {
    /// One per op (a removal's entry is unused).
    enqueued: Vec<Enqueued>,
    expired: usize,
    full: usize,
}

#[allow(clippy::result_large_err)]
fn apply(
    txn: &WriteTransaction,
    batch: &[Op],
    totals: &mut HashMap<Key, Totals>,
    now_ms: u64,
) -> Result<Applied, redb::Error> {
    let mut table = txn.open_table(MESSAGES)?;
    let mut applied = Applied {
        enqueued: Vec::with_capacity(batch.len()),
        expired: 0,
        full: 0,
    };
    let mut buffer = Vec::new();
    for op in batch {
        match op {
            Op::Enqueue {
                app,
                user,
                message,
                limits,
                ..
            } => {
                let key = (app.clone(), user.clone());
                let size = message.payload.len();
                let fits = |t: &Totals| {
                    t.count < limits.max_messages && t.bytes + size <= limits.max_bytes
                };
                if !fits(
                    totals
                        .get(&key)
                        .copied()
                        .as_ref()
                        .unwrap_or(&Totals::default()),
                ) {
                    // Expired messages make room before a message is refused.
                    let (count, bytes) = drop_expired(&mut table, app, user, now_ms)?;
                    if let Some(t) = totals.get_mut(&key) {
                        t.count -= count.min(t.count);
                        t.bytes -= bytes.min(t.bytes);
                    }
                    applied.expired += count;
                }
                let entry = totals.entry(key).or_default();
                if !fits(entry) {
                    applied.full += 1;
                    applied.enqueued.push(Enqueued::Full);
                    continue;
                }
                let record = Record {
                    from: message
                        .from
                        .as_ref()
                        .map(|u| u.as_str().to_owned())
                        .unwrap_or_default(),
                    sent_at_ms: now_ms,
                    expires_at_ms: now_ms
                        .saturating_add(u64::try_from(limits.ttl.as_millis()).unwrap_or(u64::MAX)),
                    payload: message.payload.clone(),
                    message_id: message.message_id.0,
                };
                buffer.clear();
                record
                    .encode(&mut buffer)
                    .map_err(|e| redb::Error::Io(std::io::Error::other(format!("encode: {e}"))))?;
                table.insert((app.as_str(), user.as_str(), entry.next_order), &buffer[..])?;
                entry.next_order += 1;
                entry.count += 1;
                entry.bytes += size;
                applied.enqueued.push(Enqueued::Stored);
            }
            Op::Remove {
                app, user, orders, ..
            } => {
                let entry = totals.entry((app.clone(), user.clone())).or_default();
                for &order in orders {
                    if let Some(old) = table.remove((app.as_str(), user.as_str(), order))? {
                        let size = Record::decode(old.value()).map_or(0, |r| r.payload.len());
                        entry.count = entry.count.saturating_sub(1);
                        entry.bytes = entry.bytes.saturating_sub(size);
                    }
                }
                applied.enqueued.push(Enqueued::Stored);
            }
        }
    }
    Ok(applied)
}

/// Deletes `user`'s expired messages; returns how many and their payload bytes.
#[allow(clippy::result_large_err)]
fn drop_expired(
    table: &mut redb::Table<'_, (&str, &str, u64), &[u8]>,
    app: &AppId,
    user: &UserId,
    now_ms: u64,
) -> Result<(usize, usize), redb::Error> {
    let (a, u) = (app.as_str(), user.as_str());
    let mut expired = Vec::new();
    for entry in table.range((a, u, 0)..=(a, u, u64::MAX))? {
        let (key, value) = entry?;
        if let Ok(record) = Record::decode(value.value())
            && record.expires_at_ms <= now_ms
        {
            expired.push((key.value().2, record.payload.len()));
        }
    }
    for (order, _) in &expired {
        table.remove((a, u, *order))?;
    }
    Ok((expired.len(), expired.iter().map(|(_, size)| size).sum()))
}
