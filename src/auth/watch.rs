//! Long-lived connections follow changes of access: an SSE stream (and, later, a note
//! WebSocket) is authorised when it opens, then watched here until it ends.
//!
//! Each open connection registers its [`Grant`] (credential, user, workspace) and whether
//! it was opened as staff. Every [`AccessWatch::every`] (setting
//! `EDGEDESK_STREAM_RECHECK_MS`, default 2 s), and at once when a change is made through
//! this instance (logout, a revoked session or token, a disabled user, a changed or removed
//! membership), the watch asks the store, uncached, for every registered grant in one
//! round trip. A connection whose credential no longer lives, whose user was disabled or
//! removed from the workspace, or whose role crossed between staff and requester is
//! revoked: its stream ends and the client reconnects and is authorised afresh.
//!
//! The bound: a change made through this instance ends the connections it touches within
//! milliseconds; a change made elsewhere (another instance, the CLI) within `every`, on
//! both backends. No auth cache is consulted. When the store cannot be read the watch
//! keeps connections open and tries again next round (a change cannot be recorded while
//! the platform data is unreadable either).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::Millis;
use crate::store::access::{AccessChecks, Grant};

/// Grants asked about per round trip.
const CHUNK: usize = 500;

struct Watched {
    grant: Grant,
    staff: bool,
    revoked: CancellationToken,
}

pub struct AccessWatch {
    checks: Arc<dyn AccessChecks>,
    every: Duration,
    /// A std mutex: held to register, deregister or snapshot, never across an await.
    open: Mutex<HashMap<u64, Watched>>,
    next: AtomicU64,
    changed: Notify,
    revocations: AtomicU64,
}

/// One watched connection; dropping it stops the watching.
pub struct Lease {
    id: u64,
    watch: Arc<AccessWatch>,
    revoked: CancellationToken,
}

impl Lease {
    /// Cancelled when the grant no longer holds.
    pub fn revoked(&self) -> &CancellationToken {
        &self.revoked
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.watch.lock().remove(&self.id);
    }
}

impl AccessWatch {
    pub fn new(checks: Arc<dyn AccessChecks>, every: Duration) -> Arc<Self> {
        Arc::new(Self {
            checks,
            every,
            open: Mutex::default(),
            next: AtomicU64::new(0),
            changed: Notify::new(),
            revocations: AtomicU64::new(0),
        })
    }

    /// The bound on how long a change made elsewhere takes to reach an open connection.
    pub fn every(&self) -> Duration {
        self.every
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Watched>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watches a connection opened with `grant`, as staff or not.
    pub fn watch(self: &Arc<Self>, grant: Grant, staff: bool) -> Lease {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let revoked = CancellationToken::new();
        self.lock().insert(id, Watched { grant, staff, revoked: revoked.clone() });
        Lease { id, watch: self.clone(), revoked }
    }

    /// Access changed through this instance: check every connection now.
    pub fn changed(&self) {
        self.changed.notify_one();
    }

    /// Connections watched right now, and revoked since start (for `/metrics`).
    pub fn counts(&self) -> (usize, u64) {
        (self.lock().len(), self.revocations.load(Ordering::Relaxed))
    }

    /// Checks until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep(self.every) => {}
            }
            if let Err(err) = self.check().await {
                tracing::warn!(error = %err, "cannot check open connections' access; keeping them until the next round");
            }
        }
    }

    /// One round: asks about every distinct grant and revokes what no longer holds.
    pub async fn check(&self) -> crate::store::StoreResult<usize> {
        let grants: Vec<Grant> = {
            let distinct: HashSet<Grant> = self.lock().values().map(|w| w.grant).collect();
            distinct.into_iter().collect()
        };
        let mut roles = HashMap::with_capacity(grants.len());
        for chunk in grants.chunks(CHUNK) {
            let now = self.checks.roles_now(chunk, Millis::now()).await?;
            roles.extend(chunk.iter().copied().zip(now));
        }
        let mut revoked = 0;
        self.lock().retain(|_, w| {
            // A grant registered after the snapshot is checked next round.
            let Some(role) = roles.get(&w.grant) else { return true };
            let holds = role.is_some_and(|r| r.is_staff() == w.staff);
            if !holds {
                w.revoked.cancel();
                revoked += 1;
            }
            holds
        });
        if revoked > 0 {
            self.revocations.fetch_add(revoked as u64, Ordering::Relaxed);
            tracing::info!(revoked, "closed live connections whose access changed");
        }
        Ok(revoked)
    }
}
