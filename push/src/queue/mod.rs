//! The durable push queue: a small trait, an in-memory implementation for tests, and redb.
//!
//! # Exactly once across restarts
//!
//! The dispatcher records every send before it makes it ([`PushQueue::start_send`], durable
//! before the request leaves, see [`PushQueue::flush`]) and its outcome after (a removal or a
//! reschedule). A push found with [`QueuedPush::sending`] set after a restart is one whose
//! provider answer was lost: it is the only kind sent again, and the dispatcher counts it.

mod durable;
mod index;

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::{PushRequest, QueueError};
use index::Index;

pub use durable::{DEFAULT_LINGER, RedbQueue};

/// A caller's record kept beside the queue: key, value.
pub type Record = (Vec<u8>, Vec<u8>);

/// What [`PushQueue::flush`] returns.
pub type Flush<'a> = Pin<Box<dyn Future<Output = Result<(), QueueError>> + Send + 'a>>;

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
    /// A send was started (and counted in `attempts`) and its outcome not recorded yet. Seen
    /// on a push read back after a restart, it means the provider's answer was lost.
    #[serde(default)]
    pub sending: bool,
}

/// Storage for pending pushes. Every method is short and synchronous; a durable queue may
/// make its writes durable later, in groups: [`PushQueue::flush`] waits for them.
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
    /// Records that a send of `id` is starting: one more attempt, marked
    /// [`QueuedPush::sending`]. Returns the push as updated, `None` if it is gone.
    fn start_send(&self, id: u64) -> Result<Option<QueuedPush>, QueueError>;
    /// Records a failed attempt (`attempts` sends so far) and the next due time.
    fn reschedule(&self, id: u64, attempts: u32, not_before_ms: u64) -> Result<(), QueueError>;
    /// Forgets a push (delivered or given up).
    fn remove(&self, id: u64) -> Result<(), QueueError>;
    /// Stores (`Some`) or deletes (`None`) a record of the caller's, kept beside the queue
    /// in order with the queue's own writes and as durable as they are (the gateway keeps its
    /// badges and push de-duplication marks here). A queue that keeps nothing across a
    /// restart ignores it.
    fn put_record(&self, _key: &[u8], _value: Option<&[u8]>) -> Result<(), QueueError> {
        Ok(())
    }
    /// The records committed so far: read them at start, before writing any.
    fn records(&self) -> Result<Vec<Record>, QueueError> {
        Ok(Vec::new())
    }
    /// Resolves once every write made before the call is durable (at once for a queue that
    /// keeps nothing across a restart).
    fn flush(&self) -> Flush<'_> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// A queue in memory: for tests, and for deployments that accept losing pushes on restart.
#[derive(Default)]
pub struct MemoryQueue {
    inner: Mutex<(Index, u64)>,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, (Index, u64)> {
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
        m.1 += 1;
        let id = m.1;
        m.0.put(QueuedPush::new(id, request, not_before_ms, expires_at_ms));
        Ok(id)
    }

    fn len(&self) -> Result<usize, QueueError> {
        Ok(self.lock().0.len())
    }

    fn due(
        &self,
        now_ms: u64,
        limit: usize,
        skip: &dyn Fn(u64) -> bool,
    ) -> Result<(Vec<QueuedPush>, Option<u64>), QueueError> {
        Ok(self.lock().0.due(now_ms, limit, skip))
    }

    fn start_send(&self, id: u64) -> Result<Option<QueuedPush>, QueueError> {
        Ok(self.lock().0.update(id, QueuedPush::start_send).cloned())
    }

    fn reschedule(&self, id: u64, attempts: u32, not_before_ms: u64) -> Result<(), QueueError> {
        self.lock()
            .0
            .update(id, |item| item.reschedule(attempts, not_before_ms));
        Ok(())
    }

    fn remove(&self, id: u64) -> Result<(), QueueError> {
        self.lock().0.remove(id);
        Ok(())
    }
}

impl QueuedPush {
    fn new(id: u64, request: PushRequest, not_before_ms: u64, expires_at_ms: u64) -> Self {
        Self {
            id,
            request,
            attempts: 0,
            not_before_ms,
            expires_at_ms,
            sending: false,
        }
    }

    fn start_send(&mut self) {
        self.attempts = self.attempts.saturating_add(1);
        self.sending = true;
    }

    fn reschedule(&mut self, attempts: u32, not_before_ms: u64) {
        self.attempts = attempts;
        self.not_before_ms = not_before_ms;
        self.sending = false;
    }
}
