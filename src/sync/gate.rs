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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::AppError;
use crate::store::WorkspaceId;

#[derive(Debug, Clone, Copy)]
pub struct GateLimits {
    pub per_workspace: usize,
    pub per_instance: usize,
    pub max_open: Duration,
}

pub struct BootstrapGate {
    limits: GateLimits,
    /// (open in all, open per workspace). A std mutex: held for a counter update only.
    open: Mutex<(usize, HashMap<WorkspaceId, usize>)>,
}

/// One open snapshot; dropping it frees its place.
pub struct Pass {
    gate: Arc<BootstrapGate>,
    workspace: WorkspaceId,
}

impl BootstrapGate {
    pub fn new(limits: GateLimits) -> Arc<Self> {
        Arc::new(Self { limits, open: Mutex::default() })
    }

    pub fn max_open(&self) -> Duration {
        self.limits.max_open
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, HashMap<WorkspaceId, usize>)> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a snapshot of `workspace`, or the answer to give instead.
    pub fn enter(self: &Arc<Self>, workspace: WorkspaceId) -> Result<Pass, AppError> {
        let mut open = self.lock();
        // The wait a refused client is told: a snapshot in progress ends by then at worst.
        let retry_after_secs = self.limits.max_open.as_secs().clamp(1, 30);
        if open.0 >= self.limits.per_instance {
            return Err(AppError::Overloaded { retry_after_secs });
        }
        let mine = open.1.entry(workspace).or_insert(0);
        if *mine >= self.limits.per_workspace {
            return Err(AppError::TooManyRequests { retry_after_secs });
        }
        *mine += 1;
        open.0 += 1;
        Ok(Pass { gate: self.clone(), workspace })
    }

    /// Snapshots open right now.
    pub fn open(&self) -> usize {
        self.lock().0
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut open = self.gate.lock();
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.workspace) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.1.remove(&self.workspace);
            }
        }
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
