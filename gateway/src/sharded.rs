//! A hash map split into independently locked shards, so the per-message path never takes
//! a global lock. Locks are `std` locks, never held across an `.await`.
//!
//! Keys hash with foldhash (seeded per process) rather than SipHash: the keys are ids from
//! verified tokens and from backends, and the per-member lookups of a room fan-out made
//! SipHash and key clones the largest user-space cost. Lookups take any [`Equivalent`] form
//! of the key, so callers holding `&AppId, &UserId` never build an owned tuple.

use std::hash::{BuildHasher, Hash};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::{DefaultHashBuilder, Equivalent, HashMap};

/// Sharded `HashMap<K, V>`.
#[derive(Debug)]
pub(crate) struct Sharded<K, V> {
    shards: Box<[RwLock<HashMap<K, V>>]>,
    hasher: DefaultHashBuilder,
}

impl<K: Hash + Eq, V> Sharded<K, V> {
    /// A map with `shards` shards (rounded up to a power of two).
    pub(crate) fn new(shards: usize) -> Self {
        let count = shards.max(1).next_power_of_two();
        Self {
            shards: (0..count).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: DefaultHashBuilder::default(),
        }
    }

    /// The shard for `key`; a borrowed form of a key hashes like the key itself.
    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &RwLock<HashMap<K, V>> {
        let index = (self.hasher.hash_one(key) as usize) & (self.shards.len() - 1);
        &self.shards[index]
    }

    /// Read access to the shard holding `key`.
    pub(crate) fn read<Q: Hash + ?Sized>(&self, key: &Q) -> RwLockReadGuard<'_, HashMap<K, V>> {
        // A panic while holding a shard lock leaves plain data behind; keep serving.
        self.shard(key)
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Write access to the shard holding `key`.
    pub(crate) fn write<Q: Hash + ?Sized>(&self, key: &Q) -> RwLockWriteGuard<'_, HashMap<K, V>> {
        self.shard(key)
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Calls `f` with the value at `key` under the shard's read lock.
    pub(crate) fn with<Q, R>(&self, key: &Q, f: impl FnOnce(Option<&V>) -> R) -> R
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        f(self.read(key).get(key))
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
    pub(crate) fn get<Q: Hash + Equivalent<K> + ?Sized>(&self, key: &Q) -> Option<V> {
        self.with(key, |v| v.cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Hash)]
    struct Borrowed<'a>(&'a str, u32);

    impl Equivalent<(String, u32)> for Borrowed<'_> {
        fn equivalent(&self, key: &(String, u32)) -> bool {
            self.0 == key.0 && self.1 == key.1
        }
    }

    #[test]
    fn borrowed_keys_find_the_shard_and_entry_of_owned_keys() {
        let map: Sharded<(String, u32), u32> = Sharded::new(16);
        for i in 0..1_000 {
            let key = (format!("user-{i}"), i);
            map.write(&key).insert(key, i * 2);
        }
        for i in 0..1_000 {
            let name = format!("user-{i}");
            assert_eq!(map.get(&Borrowed(&name, i)), Some(i * 2), "key {i}");
        }
        assert_eq!(map.get(&Borrowed("user-1", 2)), None);
        assert_eq!(map.len(), 1_000);
    }
}
