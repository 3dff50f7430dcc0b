//! What the log consumers keep in the store: a watermark per (consumer, workspace), durable
//! "wake me at T" schedules, and the index that finds the workspaces that moved.
//!
//! Two traits, by reach. [`ConsumerLog`] is one workspace's watermarks, reached through
//! [`TenantStore::consumers`](super::TenantStore::consumers) like any tenant data.
//! [`ConsumerIndex`] spans workspaces but holds no tenant content (ids, positions, times),
//! so the runner can find what to do without opening every workspace: SQLite keeps hints
//! and schedules in `platform.db`, Postgres reads its platform-level `log_heads` and
//! `consumer_watermarks` tables.
//!
//! Every write here is bookkeeping: it records no business event (marked `exempt` in the
//! backends, which the sync-action lint checks), and on Postgres it never takes the
//! workspace's head-row lock, so it does not queue behind user writes.

use async_trait::async_trait;

use super::{Millis, StoreResult, WorkspaceId};

/// A durable consumer's move past a page: from the watermark it read to the last event it
/// handled. A backend applies it as compare-and-set, in the same transaction as the
/// consumer's output; `Conflict` when the watermark is no longer at `from` (another
/// instance got there first): the transaction is rolled back and nothing is doubled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advance {
    pub consumer: &'static str,
    pub from: i64,
    pub to: i64,
}

/// Where a durable consumer stands in one workspace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsumerState {
    /// The last sync_id consumed (0: nothing yet).
    pub position: i64,
    /// Set when one event kept failing: the consumer does not move in this workspace until
    /// resumed. Holds the failing event's sync_id and the last error.
    pub stopped: Option<(i64, String)>,
}

/// One workspace's consumer watermarks.
#[async_trait]
pub trait ConsumerLog: Send + Sync {
    /// Where `consumer` stands; position 0 when it never ran here.
    async fn state(&self, consumer: &str) -> StoreResult<ConsumerState>;
    /// Moves the watermark for a page that produced no output (compare-and-set, see
    /// [`Advance`]).
    async fn advance(&self, advance: Advance) -> StoreResult<()>;
    /// Stops `consumer` here at the event `at` that kept failing.
    async fn stop(&self, consumer: &str, at: i64, error: &str) -> StoreResult<()>;
    /// Lets a stopped consumer go again (it retries the event it stopped at). `false` when
    /// it was not stopped.
    async fn resume(&self, consumer: &str) -> StoreResult<bool>;
}

/// A due "wake `consumer` in `workspace`" request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wake {
    pub workspace: WorkspaceId,
    pub consumer: String,
    pub at: Millis,
}

/// Cross-workspace bookkeeping for the runner.
#[async_trait]
pub trait ConsumerIndex: Send + Sync {
    /// Workspaces that may have events past one of `consumers`' watermarks, in id order
    /// after `after`, at most `limit`. Found without opening the other workspaces. May
    /// name workspaces that turn out to be caught up; never misses one whose events were
    /// committed through this store (a change copied in behind the server's back is found
    /// by the runner's sweep).
    async fn maybe_behind(&self, consumers: &[&'static str], after: Option<WorkspaceId>, limit: usize) -> StoreResult<Vec<WorkspaceId>>;
    /// Every durable consumer of `workspace` stood at `head`: the workspace need not be
    /// found by [`maybe_behind`](Self::maybe_behind) until it moves again.
    async fn caught_up(&self, workspace: WorkspaceId, head: i64) -> StoreResult<()>;
    /// Asks for `consumer` to be woken in `workspace` at `at`; the earliest request stands.
    async fn schedule(&self, workspace: WorkspaceId, consumer: &str, at: Millis) -> StoreResult<()>;
    /// Requests due at `now`, earliest first (one indexed query across all workspaces).
    async fn due(&self, now: Millis, limit: usize) -> StoreResult<Vec<Wake>>;
    /// The earliest request not yet due, to sleep until.
    async fn next_wake(&self) -> StoreResult<Option<Millis>>;
    /// Drops a request once handled, unless a newer, later one replaced it.
    async fn unschedule(&self, wake: &Wake) -> StoreResult<()>;
    /// Every registered workspace in id order after `after`, at most `limit`: the sweep's
    /// safety net walks these a page at a time.
    async fn workspaces(&self, after: Option<WorkspaceId>, limit: usize) -> StoreResult<Vec<WorkspaceId>>;
}
