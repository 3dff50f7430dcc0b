//! The mailboxes that are read, and their reader leases, in a platform-level table every
//! instance reads (schema/postgres/0010).

use async_trait::async_trait;

use super::error;
use super::log;
use crate::store::mail::{ChannelId, MailboxLease, Mailboxes};
use crate::store::{Millis, StoreResult, WorkspaceId};

/// The mailboxes that are read: readable by every instance, each row written only in a
/// transaction scoped to its workspace (schema/postgres/0010). Bookkeeping: no event.
#[async_trait]
impl Mailboxes for super::tenant::PgTenants {
    async fn set_readable(&self, workspace: WorkspaceId, channel: ChannelId, changed_at: Option<Millis>) -> StoreResult<()> {
        match changed_at {
            Some(at) => {
                self.mailbox_write(
                    workspace,
                    "INSERT INTO mailboxes AS m (workspace_id, channel_id, changed_at) VALUES ($1, $2, $3)
                     ON CONFLICT (workspace_id, channel_id) DO UPDATE SET changed_at = GREATEST(m.changed_at, excluded.changed_at)",
                    &[&workspace, &channel, &at],
                )
                .await
            }
            None => {
                self.mailbox_write(workspace, "DELETE FROM mailboxes WHERE workspace_id = $1 AND channel_id = $2", &[&workspace, &channel])
                    .await
            }
        }
        .map(drop)
    }

    async fn readable(&self) -> StoreResult<Vec<MailboxLease>> {
        let client = self.pool().get().await.map_err(super::pool_error)?;
        let rows = client
            .query(
                "SELECT workspace_id, channel_id, changed_at, reader, reader_until FROM mailboxes ORDER BY workspace_id, channel_id",
                &[],
            )
            .await
            .map_err(error)?;
        rows.iter()
            .map(|r| {
                Ok(MailboxLease {
                    workspace: r.try_get(0).map_err(error)?,
                    channel: r.try_get(1).map_err(error)?,
                    changed_at: r.try_get(2).map_err(error)?,
                    reader: r.try_get(3).map_err(error)?,
                    reader_until: r.try_get(4).map_err(error)?,
                })
            })
            .collect()
    }

    async fn hold(&self, workspace: WorkspaceId, channel: ChannelId, holder: &str, now: Millis, until: Millis) -> StoreResult<bool> {
        let changed = self
            .mailbox_write(
                workspace,
                "UPDATE mailboxes SET reader = $3, reader_until = $5
                 WHERE workspace_id = $1 AND channel_id = $2 AND (reader IS NULL OR reader = $3 OR reader_until < $4)",
                &[&workspace, &channel, &holder, &now, &until],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn release(&self, workspace: WorkspaceId, channel: ChannelId, holder: &str) -> StoreResult<()> {
        self.mailbox_write(
            workspace,
            "UPDATE mailboxes SET reader = NULL, reader_until = NULL WHERE workspace_id = $1 AND channel_id = $2 AND reader = $3",
            &[&workspace, &channel, &holder],
        )
        .await
        .map(drop)
    }
}

impl super::tenant::PgTenants {
    /// One statement on `mailboxes` in a transaction scoped to `workspace`; rows changed.
    async fn mailbox_write(
        &self,
        workspace: WorkspaceId,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> StoreResult<u64> {
        let mut client = self.pool().get().await.map_err(super::pool_error)?;
        let mut b = log::Bookkeeping::begin(&mut client, workspace).await?;
        b.exempt("bookkeeping: which mailboxes are read, and by whom");
        let changed = b.tx().execute(sql, params).await.map_err(error)?;
        b.commit().await?;
        Ok(changed)
    }
}
