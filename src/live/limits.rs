//! Caps on live connections, per user and per instance: beyond them, 429.
//!
//! A slot is taken before anything is subscribed and released when its stream ends (Drop),
//! however it ends.

use std::sync::Arc;

use crate::caps::{Caps, Place};
use crate::error::AppError;
use crate::store::UserId;

pub struct ConnectionLimits {
    caps: Arc<Caps<UserId>>,
}

/// One counted connection.
pub type Slot = Place<UserId>;

impl ConnectionLimits {
    pub fn new(per_user: usize, per_instance: usize) -> Arc<Self> {
        Arc::new(Self { caps: Caps::new(per_user, per_instance) })
    }

    pub fn acquire(&self, user: UserId) -> Result<Slot, AppError> {
        self.caps.acquire(user).map_err(|_| AppError::TooManyRequests { retry_after_secs: 5 })
    }

    /// Live connections right now.
    pub fn open(&self) -> usize {
        self.caps.open()
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
