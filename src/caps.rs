//! Places counted per key and in all, each capped: live connections per user and per
//! instance, open snapshots per workspace and per instance. A place is taken before the
//! work starts and given back when its [`Place`] is dropped, however the work ends.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// Which cap a refused place ran into (the total is checked first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Total,
    Key,
}

pub struct Caps<K: Eq + Hash + Clone> {
    per_key: usize,
    total: usize,
    /// (in all, per key). A std mutex: held for a counter update only.
    counts: Mutex<(usize, HashMap<K, usize>)>,
}

/// One counted place.
pub struct Place<K: Eq + Hash + Clone> {
    caps: Arc<Caps<K>>,
    key: K,
}

impl<K: Eq + Hash + Clone> Caps<K> {
    pub fn new(per_key: usize, total: usize) -> Arc<Self> {
        Arc::new(Self { per_key, total, counts: Mutex::new((0, HashMap::new())) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, HashMap<K, usize>)> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn acquire(self: &Arc<Self>, key: K) -> Result<Place<K>, Full> {
        let mut counts = self.lock();
        if counts.0 >= self.total {
            return Err(Full::Total);
        }
        let mine = counts.1.entry(key.clone()).or_insert(0);
        if *mine >= self.per_key {
            return Err(Full::Key);
        }
        *mine += 1;
        counts.0 += 1;
        Ok(Place { caps: self.clone(), key })
    }

    /// Places taken right now.
    pub fn open(&self) -> usize {
        self.lock().0
    }
}

impl<K: Eq + Hash + Clone> Drop for Place<K> {
    fn drop(&mut self) {
        let mut counts = self.caps.lock();
        counts.0 = counts.0.saturating_sub(1);
        if let Some(n) = counts.1.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.1.remove(&self.key);
            }
        }
    }
}
