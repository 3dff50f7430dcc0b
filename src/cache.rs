//! A bounded, time-limited cache for per-instance answers that are cheap to get wrong for a
//! few seconds and expensive to ask for on every request (who a bearer token belongs to, a
//! member's role).
//!
//! Entries expire `ttl` after they were stored; writers that know an entry is stale remove
//! it at once. Other instances (and other processes, such as the CLI) learn of a change
//! only when the entry expires, so `ttl` is the bound on how long a revocation made
//! elsewhere can lag for ordinary requests (long-lived streams do not rely on it: see
//! `auth::watch`). The cache is `moka`'s: past `capacity` it evicts by recency and
//! frequency (TinyLFU), so one caller probing many keys cannot flush everyone else's
//! entries.

use std::hash::Hash;
use std::time::Duration;

use moka::sync::Cache;

pub struct TtlCache<K, V> {
    /// `None` when caching is off (a zero ttl).
    inner: Option<Cache<K, V>>,
}

impl<K, V> TtlCache<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new(ttl: Duration, capacity: u64) -> Self {
        let inner =
            (!ttl.is_zero()).then(|| Cache::builder().max_capacity(capacity).time_to_live(ttl).support_invalidation_closures().build());
        Self { inner }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        self.inner.as_ref()?.get(key)
    }

    pub fn insert(&self, key: K, value: V) {
        if let Some(cache) = &self.inner {
            cache.insert(key, value);
        }
    }

    pub fn remove(&self, key: &K) {
        if let Some(cache) = &self.inner {
            cache.invalidate(key);
        }
    }

    /// Removes every entry whose value matches (no later `get` returns one).
    pub fn remove_where(&self, stale: impl Fn(&K, &V) -> bool + Send + Sync + 'static) {
        if let Some(cache) = &self.inner
            && cache.invalidate_entries_if(move |k, v| stale(k, v)).is_err()
        {
            // Only when closures are unsupported, which `new` rules out; be safe anyway.
            cache.invalidate_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_can_be_removed_and_stay_bounded() {
        let cache = TtlCache::new(Duration::from_millis(50), 100);
        cache.insert("a", 1);
        assert_eq!(cache.get(&"a"), Some(1));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(&"a"), None);
        cache.insert("x", 7);
        cache.insert("y", 8);
        cache.remove_where(|_, v| *v == 7);
        assert_eq!(cache.get(&"x"), None);
        assert_eq!(cache.get(&"y"), Some(8));
        let off: TtlCache<&str, i32> = TtlCache::new(Duration::ZERO, 3);
        off.insert("a", 1);
        assert_eq!(off.get(&"a"), None);
    }

    #[test]
    fn one_caller_probing_many_keys_does_not_flush_the_hot_ones() {
        let cache: TtlCache<u64, u64> = TtlCache::new(Duration::from_secs(60), 1_000);
        for _ in 0..5 {
            for k in 0..100 {
                cache.insert(k, k);
                let _ = cache.get(&k);
            }
        }
        // A probe of 100,000 keys nobody asks for again.
        for k in 1_000_000..1_100_000 {
            cache.insert(k, 0);
        }
        if let Some(inner) = &cache.inner {
            inner.run_pending_tasks();
        }
        let kept = (0..100).filter(|k| cache.get(k).is_some()).count();
        assert!(kept >= 90, "the often-used entries survive a probe: {kept} of 100");
    }
}
