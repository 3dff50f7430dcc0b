//! Log hints in `platform.db`: "this workspace may have events a durable consumer has not
//! consumed", so that start-up (and a missed file-watch) finds the workspaces to catch up
//! without opening every tenant file.
//!
//! A hint is written under the tenant's write lock, before the COMMIT of the first batch
//! that records events while no hint stands, and dropped under the same lock once every
//! durable consumer stood at the head (`clear_if_at`), so the two cannot interleave, even
//! with another process (the CLI) writing the same file. A crash between a hint and its
//! COMMIT leaves a hint with nothing behind it: the runner finds the workspace caught up
//! and drops it. What a hint costs: one platform write when a quiet workspace starts
//! moving, and one when the runner finds it quiet again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::{Connection, params};

use super::error;
use super::pool::SqlitePool;
use crate::store::{Millis, StoreError, StoreResult, WorkspaceId};

pub struct LogHints {
    platform: SqlitePool,
}

impl LogHints {
    pub fn new(platform: SqlitePool) -> Self {
        Self { platform }
    }

    fn conn(&self) -> StoreResult<r2d2::PooledConnection<r2d2_sqlite::SqliteConnectionManager>> {
        self.platform.get().map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    fn mark(&self, workspace: WorkspaceId) -> StoreResult<()> {
        self.conn()?
            .prepare_cached("INSERT OR IGNORE INTO log_hints (workspace_id, marked_at) VALUES (?1, ?2)")
            .and_then(|mut stmt| stmt.execute(params![workspace, Millis::now()]))
            .map_err(error)?;
        Ok(())
    }

    fn clear(&self, workspace: WorkspaceId) -> StoreResult<()> {
        self.conn()?
            .prepare_cached("DELETE FROM log_hints WHERE workspace_id = ?1")
            .and_then(|mut stmt| stmt.execute(params![workspace]))
            .map_err(error)?;
        Ok(())
    }

    /// Hinted workspaces in id order after `after`.
    pub fn list(conn: &Connection, after: Option<WorkspaceId>, limit: usize) -> StoreResult<Vec<WorkspaceId>> {
        let mut stmt = conn
            .prepare_cached("SELECT workspace_id FROM log_hints WHERE (?1 IS NULL OR workspace_id > ?1) ORDER BY workspace_id LIMIT ?2")
            .map_err(error)?;
        stmt.query_map(params![after, limit as i64], |row| row.get(0)).and_then(|rows| rows.collect()).map_err(error)
    }
}

/// One workspace's hint, as its writer sees it: `marked` says a hint stands (so commits
/// need not write one), and is touched only under the tenant's write lock.
pub struct WorkspaceHint {
    workspace: WorkspaceId,
    hints: Arc<LogHints>,
    marked: AtomicBool,
}

impl WorkspaceHint {
    pub fn new(workspace: WorkspaceId, hints: Arc<LogHints>) -> Self {
        Self { workspace, hints, marked: AtomicBool::new(false) }
    }

    /// Called under the write lock before a COMMIT that records events. A hint that cannot
    /// be written does not fail the user's write: the runner's sweep still finds the
    /// workspace, and the next commit tries again.
    pub fn mark(&self) {
        if self.marked.load(Ordering::Acquire) {
            return;
        }
        match self.hints.mark(self.workspace) {
            Ok(()) => self.marked.store(true, Ordering::Release),
            Err(err) => tracing::warn!(workspace = %self.workspace, error = %err, "cannot write the log hint"),
        }
    }

    /// Called under the write lock: drops the hint if the log's head is still `head`.
    pub fn clear_if_at(&self, conn: &Connection, head: i64) -> StoreResult<bool> {
        if super::log::head(conn)? != head {
            return Ok(false);
        }
        self.hints.clear(self.workspace)?;
        self.marked.store(false, Ordering::Release);
        Ok(true)
    }
}
