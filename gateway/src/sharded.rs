//! A hash map split into independently locked shards, so the per-message path never takes
//! a global lock. Locks are `std` locks, never held across an `.await`.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Sharded `HashMap<K, V>`.
#[derive(Debug)]
pub(crate) struct Sharded<K, V> {
    shards: Box<[RwLock<HashMap<K, V>>]>,
    hasher: RandomState,
}

impl<K: Hash + Eq, V> Sharded<K, V> {
    /// A map with `shards` shards (rounded up to a power of two).
    pub(crate) fn new(shards: usize) -> Self {
        let count = shards.max(1).next_power_of_two();
        Self {
            shards: (0..count).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &K) -> &RwLock<HashMap<K, V>> {
        let index = (self.hasher.hash_one(key) as usize) & (self.shards.len() - 1);
        &self.shards[index]
    }

    /// Read access to the shard holding `key`.
    pub(crate) fn read(&self, key: &K) -> RwLockReadGuard<'_, HashMap<K, V>> {
        // A panic while holding a shard lock leaves plain data behind; keep serving.
        self.shard(key)
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Write access to the shard holding `key`.
    pub(crate) fn write(&self, key: &K) -> RwLockWriteGuard<'_, HashMap<K, V>> {
        self.shard(key)
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Number of entries (takes each shard's lock in turn; for metrics, not the hot path).
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .len()
            })
            .sum()
    }
}

impl<K: Hash + Eq, V: Clone> Sharded<K, V> {
    /// A snapshot of every value (one shard lock at a time; for drains and listings).
    pub(crate) fn values(&self) -> Vec<V> {
        self.shards
            .iter()
            .flat_map(|s| {
                s.read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .values()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// A clone of the value at `key`.
    pub(crate) fn get(&self, key: &K) -> Option<V> {
        self.read(key).get(key).cloned()
    }
}
