//! How many snapshots may be open at once, and for how long: a bootstrap holds a read
//! transaction (and, on SQLite, a connection of its workspace's pool and a blocking
//! thread) for as long as its reader takes, so a few clients that start one and never
//! read could otherwise take a workspace's connections, or the instance's.
//!
//! - Per workspace at most `per_workspace` at once (429 with Retry-After beyond): the rest
//!   of the workspace's traffic keeps its connections.
//! - Per instance at most `per_instance` (503 with Retry-After beyond).
//! - Each snapshot is closed `max_open` after it began, read or not
//!   (`store::bootstrap::BootstrapSink`): the reader gets a stream without its footer,
//!   which it must discard (and may retry).

use std::sync::Arc;
use std::time::Duration;

use crate::caps::{Caps, Full, Place};
use crate::error::AppError;
use crate::store::WorkspaceId;

#[derive(Debug, Clone, Copy)]
pub struct GateLimits {
    pub per_workspace: usize,
    pub per_instance: usize,
    pub max_open: Duration,
}

pub struct BootstrapGate {
    max_open: Duration,
    caps: Arc<Caps<WorkspaceId>>,
}

/// One open snapshot; dropping it frees its place.
pub type Pass = Place<WorkspaceId>;

impl BootstrapGate {
    pub fn new(limits: GateLimits) -> Arc<Self> {
        Arc::new(Self { max_open: limits.max_open, caps: Caps::new(limits.per_workspace, limits.per_instance) })
    }

    pub fn max_open(&self) -> Duration {
        self.max_open
    }

    /// A place for a snapshot of `workspace`, or the answer to give instead.
    pub fn enter(&self, workspace: WorkspaceId) -> Result<Pass, AppError> {
        // The wait a refused client is told: a snapshot in progress ends by then at worst.
        let retry_after_secs = self.max_open.as_secs().clamp(1, 30);
        self.caps.acquire(workspace).map_err(|full| match full {
            Full::Total => AppError::Overloaded { retry_after_secs },
            Full::Key => AppError::TooManyRequests { retry_after_secs },
        })
    }

    /// Snapshots open right now.
    pub fn open(&self) -> usize {
        self.caps.open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_capped_per_workspace_and_per_instance_and_freed_on_drop() {
        let gate = BootstrapGate::new(GateLimits { per_workspace: 2, per_instance: 3, max_open: Duration::from_secs(60) });
        let (a, b) = (WorkspaceId::new(), WorkspaceId::new());
        let first = gate.enter(a).unwrap();
        let _second = gate.enter(a).unwrap();
        assert!(matches!(gate.enter(a), Err(AppError::TooManyRequests { .. })), "the workspace is full");
        let _third = gate.enter(b).unwrap();
        assert!(matches!(gate.enter(b), Err(AppError::Overloaded { .. })), "the instance is full");
        drop(first);
        let _again = gate.enter(a).expect("a place came free");
        assert_eq!(gate.open(), 3);
    }
}
