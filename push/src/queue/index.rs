//! The queue's in-memory view: pushes by id and the schedule, shared by both queues (the redb
//! queue keeps it as the readable copy of what its journal writes).

use std::collections::{BTreeMap, BTreeSet};

use super::QueuedPush;

#[derive(Debug, Default)]
pub(super) struct Index {
    items: BTreeMap<u64, QueuedPush>,
    // (due ms, id): finding due pushes never scans the whole queue.
    due: BTreeSet<(u64, u64)>,
}

impl Index {
    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    pub(super) fn last_id(&self) -> Option<u64> {
        self.items.last_key_value().map(|(&id, _)| id)
    }

    /// Stores `item`, replacing the push with the same id.
    pub(super) fn put(&mut self, item: QueuedPush) {
        self.due.insert((item.not_before_ms, item.id));
        if let Some(old) = self.items.insert(item.id, item) {
            let new_at = self.items[&old.id].not_before_ms;
            if old.not_before_ms != new_at {
                self.due.remove(&(old.not_before_ms, old.id));
            }
        }
    }

    /// Changes the push `id` in place; `None` if it is gone.
    pub(super) fn update(
        &mut self,
        id: u64,
        change: impl FnOnce(&mut QueuedPush),
    ) -> Option<&QueuedPush> {
        let mut item = self.items.get(&id)?.clone();
        change(&mut item);
        self.put(item);
        self.items.get(&id)
    }

    pub(super) fn remove(&mut self, id: u64) -> Option<QueuedPush> {
        let item = self.items.remove(&id)?;
        self.due.remove(&(item.not_before_ms, id));
        Some(item)
    }

    /// See [`super::PushQueue::due`].
    pub(super) fn due(
        &self,
        now_ms: u64,
        limit: usize,
        skip: &dyn Fn(u64) -> bool,
    ) -> (Vec<QueuedPush>, Option<u64>) {
        let mut out = Vec::new();
        for &(at, id) in &self.due {
            if skip(id) {
                continue;
            }
            if at > now_ms || out.len() >= limit {
                return (out, Some(at));
            }
            if let Some(item) = self.items.get(&id) {
                out.push(item.clone());
            }
        }
        (out, None)
    }
}
