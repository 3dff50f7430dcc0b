//! Caps on live connections, per user and per instance: beyond them, 429.
//!
//! A slot is taken before anything is subscribed and released when its stream ends (Drop),
//! however it ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::AppError;
use crate::store::UserId;

pub struct ConnectionLimits {
    per_user: usize,
    per_instance: usize,
    /// (total, per user). A std mutex: held for a counter update only.
    counts: Mutex<(usize, HashMap<UserId, usize>)>,
}

/// One counted connection.
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    user: UserId,
}

impl ConnectionLimits {
    pub fn new(per_user: usize, per_instance: usize) -> Arc<Self> {
        Arc::new(Self { per_user, per_instance, counts: Mutex::default() })
    }

    pub fn acquire(self: &Arc<Self>, user: UserId) -> Result<Slot, AppError> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mine = counts.1.get(&user).copied().unwrap_or(0);
        if counts.0 >= self.per_instance || mine >= self.per_user {
            return Err(AppError::TooManyRequests { retry_after_secs: 5 });
        }
        counts.0 += 1;
        *counts.1.entry(user).or_insert(0) += 1;
        Ok(Slot { limits: self.clone(), user })
    }

    /// Live connections right now.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.limits.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.0 = counts.0.saturating_sub(1);
        if let Some(n) = counts.1.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                counts.1.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_user_and_per_instance_and_released_on_drop() {
        let limits = ConnectionLimits::new(2, 3);
        let (a, b) = (UserId::new(), UserId::new());
        let a1 = limits.acquire(a).unwrap();
        let _a2 = limits.acquire(a).unwrap();
        assert!(limits.acquire(a).is_err(), "per user");
        let _b1 = limits.acquire(b).unwrap();
        assert!(limits.acquire(b).is_err(), "per instance");
        drop(a1);
        assert_eq!(limits.open(), 2);
        assert!(limits.acquire(b).is_ok());
    }
}
