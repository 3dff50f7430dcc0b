//! Log consumers in Postgres: watermarks and schedules in platform-level tables readable
//! across workspaces but written only in a transaction scoped to the row's workspace
//! (schema/postgres/0003). Every write here is bookkeeping: it records no event and never
//! takes the workspace's head-row lock.

use async_trait::async_trait;

use super::log::{Bookkeeping, advance_watermark};
use super::tenant::{PgTenant, PgTenants};
use super::{error, pool_error};
use crate::store::{Advance, ConsumerIndex, ConsumerLog, ConsumerState, Millis, StoreResult, TenantStore, Wake, WorkspaceId};

#[async_trait]
impl ConsumerLog for PgTenant {
    async fn state(&self, consumer: &str) -> StoreResult<ConsumerState> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT position, stopped_at, last_error FROM consumer_watermarks WHERE workspace_id = $1 AND consumer = $2",
                &[&self.workspace_id(), &consumer],
            )
            .await
            .map_err(error)?;
        let Some(row) = row else { return Ok(ConsumerState::default()) };
        let stopped: Option<i64> = row.try_get(1).map_err(error)?;
        let last_error: Option<String> = row.try_get(2).map_err(error)?;
        Ok(ConsumerState { position: row.try_get(0).map_err(error)?, stopped: stopped.map(|at| (at, last_error.unwrap_or_default())) })
    }

    async fn advance(&self, advance: Advance) -> StoreResult<()> {
        let mut client = self.client().await?;
        let mut b = Bookkeeping::begin(&mut client, self.workspace_id()).await?;
        b.exempt("bookkeeping: a consumer's watermark");
        advance_watermark(b.tx(), self.workspace_id(), advance, Millis::now()).await?;
        b.commit().await
    }

    async fn stop(&self, consumer: &str, at: i64, error_text: &str) -> StoreResult<()> {
        let mut client = self.client().await?;
        let mut b = Bookkeeping::begin(&mut client, self.workspace_id()).await?;
        b.exempt("bookkeeping: a consumer stops at an event that keeps failing");
        b.tx()
            .execute(
                "INSERT INTO consumer_watermarks (workspace_id, consumer, position, stopped_at, last_error, updated_at)
             VALUES ($1, $2, 0, $3, $4, $5)
             ON CONFLICT (workspace_id, consumer) DO UPDATE SET stopped_at = excluded.stopped_at, last_error = excluded.last_error,
             updated_at = excluded.updated_at",
                &[&self.workspace_id(), &consumer, &at, &error_text, &Millis::now()],
            )
            .await
            .map_err(error)?;
        b.commit().await
    }

    async fn resume(&self, consumer: &str) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let mut b = Bookkeeping::begin(&mut client, self.workspace_id()).await?;
        b.exempt("bookkeeping: a stopped consumer may go again");
        let changed = b
            .tx()
            .execute(
                "UPDATE consumer_watermarks SET stopped_at = NULL, last_error = NULL, updated_at = $3
                 WHERE workspace_id = $1 AND consumer = $2 AND stopped_at IS NOT NULL",
                &[&self.workspace_id(), &consumer, &Millis::now()],
            )
            .await
            .map_err(error)?;
        b.commit().await?;
        Ok(changed > 0)
    }
}

fn wake_from_row(row: &tokio_postgres::Row) -> StoreResult<Wake> {
    Ok(Wake { workspace: row.try_get(0).map_err(error)?, consumer: row.try_get(1).map_err(error)?, at: row.try_get(2).map_err(error)? })
}

#[async_trait]
impl ConsumerIndex for PgTenants {
    async fn maybe_behind(&self, consumers: &[&'static str], after: Option<WorkspaceId>, limit: usize) -> StoreResult<Vec<WorkspaceId>> {
        let client = self.pool().get().await.map_err(pool_error)?;
        let names: Vec<String> = consumers.iter().map(|c| c.to_string()).collect();
        let rows = client
            .query(
                "SELECT h.workspace_id FROM log_heads h
                 WHERE ($2::uuid IS NULL OR h.workspace_id > $2) AND EXISTS (
                     SELECT 1 FROM unnest($1::text[]) c(name)
                     LEFT JOIN consumer_watermarks w ON w.workspace_id = h.workspace_id AND w.consumer = c.name
                     WHERE w.stopped_at IS NULL AND h.head > COALESCE(w.position, 0))
                 ORDER BY h.workspace_id LIMIT $3",
                &[&names, &after, &(limit as i64)],
            )
            .await
            .map_err(error)?;
        rows.iter().map(|r| r.try_get(0).map_err(error)).collect()
    }

    async fn caught_up(&self, _workspace: WorkspaceId, _head: i64) -> StoreResult<()> {
        // Nothing to drop: `maybe_behind` compares heads with watermarks directly.
        Ok(())
    }

    async fn schedule(&self, workspace: WorkspaceId, consumer: &str, at: Millis) -> StoreResult<()> {
        let mut client = self.pool().get().await.map_err(pool_error)?;
        let mut b = Bookkeeping::begin(&mut client, workspace).await?;
        b.exempt("bookkeeping: a consumer's schedule");
        b.tx()
            .execute(
                "INSERT INTO consumer_wakes AS w (workspace_id, consumer, wake_at) VALUES ($1, $2, $3)
             ON CONFLICT (workspace_id, consumer) DO UPDATE SET wake_at = LEAST(w.wake_at, excluded.wake_at)",
                &[&workspace, &consumer, &at],
            )
            .await
            .map_err(error)?;
        b.commit().await
    }

    async fn due(&self, now: Millis, limit: usize) -> StoreResult<Vec<Wake>> {
        let client = self.pool().get().await.map_err(pool_error)?;
        let rows = client
            .query(
                "SELECT workspace_id, consumer, wake_at FROM consumer_wakes WHERE wake_at <= $1 ORDER BY wake_at LIMIT $2",
                &[&now, &(limit as i64)],
            )
            .await
            .map_err(error)?;
        rows.iter().map(wake_from_row).collect()
    }

    async fn next_wake(&self) -> StoreResult<Option<Millis>> {
        let client = self.pool().get().await.map_err(pool_error)?;
        let row = client.query_one("SELECT MIN(wake_at) FROM consumer_wakes", &[]).await.map_err(error)?;
        row.try_get(0).map_err(error)
    }

    async fn unschedule(&self, wake: &Wake) -> StoreResult<()> {
        let mut client = self.pool().get().await.map_err(pool_error)?;
        let mut b = Bookkeeping::begin(&mut client, wake.workspace).await?;
        b.exempt("bookkeeping: a consumer's schedule");
        b.tx()
            .execute(
                "DELETE FROM consumer_wakes WHERE workspace_id = $1 AND consumer = $2 AND wake_at <= $3",
                &[&wake.workspace, &wake.consumer, &wake.at],
            )
            .await
            .map_err(error)?;
        b.commit().await
    }

    async fn workspaces(&self, after: Option<WorkspaceId>, limit: usize) -> StoreResult<Vec<WorkspaceId>> {
        let client = self.pool().get().await.map_err(pool_error)?;
        let rows = client
            .query("SELECT id FROM workspaces WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2", &[&after, &(limit as i64)])
            .await
            .map_err(error)?;
        rows.iter().map(|r| r.try_get(0).map_err(error)).collect()
    }
}
