//! The log consumers' cross-workspace bookkeeping in `platform.db`: the hints that say which
//! workspaces may be behind (`hints.rs`), durable wake requests, and the registry the
//! runner's sweep walks. None of it is tenant content, and finding any of it opens no
//! tenant file.

use async_trait::async_trait;
use rusqlite::params;

use super::hints::LogHints;
use super::tenants::SqliteTenants;
use super::{blocking, error};
use crate::store::{ConsumerIndex, Millis, StoreResult, Wake, WorkspaceId};

fn wake_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Wake> {
    Ok(Wake { workspace: row.get(0)?, consumer: row.get(1)?, at: row.get(2)? })
}

#[async_trait]
impl ConsumerIndex for SqliteTenants {
    async fn maybe_behind(&self, _consumers: &[&'static str], after: Option<WorkspaceId>, limit: usize) -> StoreResult<Vec<WorkspaceId>> {
        // A hint stands for any consumer: which one is behind is the tenant's to say.
        blocking(self.exec(), &self.platform, move |conn| LogHints::list(conn, after, limit)).await
    }

    async fn caught_up(&self, workspace: WorkspaceId, head: i64) -> StoreResult<()> {
        self.open_tenant(workspace).await?.clear_hint_if_at(head).await.map(drop)
    }

    async fn schedule(&self, workspace: WorkspaceId, consumer: &str, at: Millis) -> StoreResult<()> {
        let consumer = consumer.to_string();
        blocking(self.exec(), &self.platform, move |conn| {
            conn.prepare_cached(
                "INSERT INTO consumer_wakes (workspace_id, consumer, wake_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (workspace_id, consumer) DO UPDATE SET wake_at = MIN(wake_at, excluded.wake_at)",
            )
            .and_then(|mut stmt| stmt.execute(params![workspace, consumer, at]))
            .map_err(error)?;
            Ok(())
        })
        .await
    }

    async fn due(&self, now: Millis, limit: usize) -> StoreResult<Vec<Wake>> {
        blocking(self.exec(), &self.platform, move |conn| {
            conn.prepare_cached("SELECT workspace_id, consumer, wake_at FROM consumer_wakes WHERE wake_at <= ?1 ORDER BY wake_at LIMIT ?2")
                .and_then(|mut stmt| stmt.query_map(params![now, limit as i64], wake_from_row)?.collect())
                .map_err(error)
        })
        .await
    }

    async fn next_wake(&self) -> StoreResult<Option<Millis>> {
        blocking(self.exec(), &self.platform, move |conn| {
            conn.query_row("SELECT MIN(wake_at) FROM consumer_wakes", [], |row| row.get(0)).map_err(error)
        })
        .await
    }

    async fn unschedule(&self, wake: &Wake) -> StoreResult<()> {
        let wake = wake.clone();
        blocking(self.exec(), &self.platform, move |conn| {
            conn.prepare_cached("DELETE FROM consumer_wakes WHERE workspace_id = ?1 AND consumer = ?2 AND wake_at <= ?3")
                .and_then(|mut stmt| stmt.execute(params![wake.workspace, wake.consumer, wake.at]))
                .map_err(error)?;
            Ok(())
        })
        .await
    }

    async fn workspaces(&self, after: Option<WorkspaceId>, limit: usize) -> StoreResult<Vec<WorkspaceId>> {
        blocking(self.exec(), &self.platform, move |conn| {
            conn.prepare_cached("SELECT id FROM workspaces WHERE (?1 IS NULL OR id > ?1) ORDER BY id LIMIT ?2")
                .and_then(|mut stmt| stmt.query_map(params![after, limit as i64], |row| row.get(0))?.collect())
                .map_err(error)
        })
        .await
    }
}
