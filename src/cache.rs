//! A small time-bounded map for per-instance caches of answers that are cheap to get
//! wrong for a few seconds and expensive to ask for on every request (who a bearer token
//! belongs to, a member's role).
//!
//! Entries expire after `ttl`; writers that know an entry is stale remove it at once.
//! Other instances (and other processes, such as the CLI) learn of a change only when
//! the entry expires, so `ttl` is the bound on how long a revocation made elsewhere can
//! lag. The map is bounded: past `capacity` it drops expired entries, then everything.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    /// A std mutex: held for one map operation, never across an await.
    map: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self { ttl, capacity, map: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (V, Instant)>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &K) -> Option<V> {
        if self.ttl.is_zero() {
            return None;
        }
        let map = self.lock();
        let (value, at) = map.get(key)?;
        (at.elapsed() < self.ttl).then(|| value.clone())
    }

    pub fn insert(&self, key: K, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.lock();
        if map.len() >= self.capacity {
            let ttl = self.ttl;
            map.retain(|_, (_, at)| at.elapsed() < ttl);
            if map.len() >= self.capacity {
                map.clear();
            }
        }
        map.insert(key, (value, Instant::now()));
    }

    pub fn remove(&self, key: &K) {
        self.lock().remove(key);
    }

    /// Removes every entry whose value matches.
    pub fn remove_where(&self, mut stale: impl FnMut(&K, &V) -> bool) {
        self.lock().retain(|k, (v, _)| !stale(k, v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_can_be_removed_and_stay_bounded() {
        let cache = TtlCache::new(Duration::from_millis(50), 3);
        cache.insert("a", 1);
        assert_eq!(cache.get(&"a"), Some(1));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(&"a"), None);
        for (i, k) in ["a", "b", "c", "d"].into_iter().enumerate() {
            cache.insert(k, i);
        }
        assert!(cache.lock().len() <= 3);
        cache.insert("x", 7);
        cache.remove_where(|_, v| *v == 7);
        assert_eq!(cache.get(&"x"), None);
        let off: TtlCache<&str, i32> = TtlCache::new(Duration::ZERO, 3);
        off.insert("a", 1);
        assert_eq!(off.get(&"a"), None);
    }
}
