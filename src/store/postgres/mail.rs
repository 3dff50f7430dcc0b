//! Mail channels in Postgres (row-level security scopes every statement to the workspace).

use async_trait::async_trait;
use tokio_postgres::{Row, Transaction};

use super::error;
use super::log::{self, PgWrite};
use super::tenant::PgTenant;
use crate::store::mail::*;
use crate::store::{Event, StoreError, StoreResult, TenantStore, UserId, WorkspaceId};

pub(super) const CHANNEL_COLS: &str = "id, settings, imap_password, smtp_password, created_at, updated_at";

pub(super) fn channel_from_row(row: &Row) -> StoreResult<ChannelRecord> {
    let settings: serde_json::Value = row.try_get(1).map_err(error)?;
    Ok(ChannelRecord {
        id: row.try_get(0).map_err(error)?,
        settings: serde_json::from_value(settings).map_err(|e| StoreError::internal(format!("a mail channel's settings: {e}")))?,
        imap_password: row.try_get(2).map_err(error)?,
        smtp_password: row.try_get(3).map_err(error)?,
        created_at: row.try_get(4).map_err(error)?,
        updated_at: row.try_get(5).map_err(error)?,
    })
}

async fn channel(tx: &Transaction<'_>, ws: WorkspaceId, id: ChannelId) -> StoreResult<Option<ChannelRecord>> {
    let row = tx
        .query_opt(&format!("SELECT {CHANNEL_COLS} FROM mail_channels WHERE workspace_id = $1 AND id = $2"), &[&ws, &id])
        .await
        .map_err(error)?;
    row.as_ref().map(channel_from_row).transpose()
}

/// The store's error for a write, with a unique address named as such.
fn address_taken(err: tokio_postgres::Error) -> StoreError {
    match error(err) {
        StoreError::Conflict(_) => StoreError::Conflict(ADDRESS_TAKEN.into()),
        other => other,
    }
}

async fn write_channel(w: &mut PgWrite<'_>, ws: WorkspaceId, actor: UserId, c: &ChannelRecord, created: bool) -> StoreResult<()> {
    let settings = serde_json::to_value(&c.settings).map_err(StoreError::internal)?;
    let address = c.settings.address_key();
    let changed = if created {
        w.tx()
            .execute(
                "INSERT INTO mail_channels (workspace_id, id, address, settings, imap_password, smtp_password, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[&ws, &c.id, &address, &settings, &c.imap_password, &c.smtp_password, &c.created_at, &c.updated_at],
            )
            .await
    } else {
        w.tx()
            .execute(
                "UPDATE mail_channels SET address = $3, settings = $4, imap_password = $5, smtp_password = $6, updated_at = $7
                 WHERE workspace_id = $1 AND id = $2",
                &[&ws, &c.id, &address, &settings, &c.imap_password, &c.smtp_password, &c.updated_at],
            )
            .await
    }
    .map_err(address_taken)?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    w.record(Some(actor), Event::mail_channel(&MailChannel::from(c), created)).await?;
    Ok(())
}

#[async_trait]
impl MailStore for PgTenant {
    async fn channels(&self) -> StoreResult<Vec<ChannelRecord>> {
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, self.workspace_id(), false).await?;
        let rows = tx
            .query(
                &format!("SELECT {CHANNEL_COLS} FROM mail_channels WHERE workspace_id = $1 ORDER BY created_at, id"),
                &[&self.workspace_id()],
            )
            .await
            .map_err(error)?;
        rows.iter().map(channel_from_row).collect()
    }

    async fn channel(&self, id: ChannelId) -> StoreResult<Option<ChannelRecord>> {
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, self.workspace_id(), false).await?;
        channel(&tx, self.workspace_id(), id).await
    }

    async fn create_channel(&self, actor: UserId, channel: &ChannelRecord) -> StoreResult<()> {
        let mut client = self.client().await?;
        let mut w = self.write_tx(&mut client).await?;
        write_channel(&mut w, self.workspace_id(), actor, channel, true).await?;
        w.commit().await
    }

    async fn update_channel(&self, actor: UserId, channel: &ChannelRecord) -> StoreResult<()> {
        let mut client = self.client().await?;
        let mut w = self.write_tx(&mut client).await?;
        write_channel(&mut w, self.workspace_id(), actor, channel, false).await?;
        w.commit().await
    }

    async fn delete_channel(&self, actor: UserId, id: ChannelId) -> StoreResult<()> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let mut w = self.write_tx(&mut client).await?;
        let removed = channel(w.tx(), ws, id).await?.ok_or(StoreError::NotFound)?;
        w.tx().execute("DELETE FROM mail_channels WHERE workspace_id = $1 AND id = $2", &[&ws, &id]).await.map_err(error)?;
        w.record(Some(actor), Event::mail_channel_deleted(&ChannelRemoved { id, address: removed.settings.address })).await?;
        w.commit().await
    }
}
