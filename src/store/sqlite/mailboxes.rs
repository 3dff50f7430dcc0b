//! The mailboxes that are read, and their reader leases, in `platform.db` beside the
//! consumers' bookkeeping: cross-workspace, and finding them opens no tenant file.

use async_trait::async_trait;
use rusqlite::params;

use super::error;
use crate::store::mail::{ChannelId, MailboxLease, Mailboxes};
use crate::store::{Millis, StoreResult, WorkspaceId};

/// The mailboxes that are read, in `platform.db` (finding them opens no tenant file).
#[async_trait]
impl Mailboxes for super::tenants::SqliteTenants {
    async fn set_readable(&self, workspace: WorkspaceId, channel: ChannelId, changed_at: Option<Millis>) -> StoreResult<()> {
        super::blocking(self.exec(), &self.platform, move |conn| {
            match changed_at {
                Some(at) => conn
                    .prepare_cached(
                        "INSERT INTO mailboxes (workspace_id, channel_id, changed_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (workspace_id, channel_id) DO UPDATE SET changed_at = MAX(changed_at, excluded.changed_at)",
                    )
                    .and_then(|mut stmt| stmt.execute(params![workspace, channel, at])),
                None => conn
                    .prepare_cached("DELETE FROM mailboxes WHERE workspace_id = ?1 AND channel_id = ?2")
                    .and_then(|mut stmt| stmt.execute(params![workspace, channel])),
            }
            .map_err(error)?;
            Ok(())
        })
        .await
    }

    async fn readable(&self) -> StoreResult<Vec<MailboxLease>> {
        super::blocking(self.exec(), &self.platform, move |conn| {
            conn.prepare_cached(
                "SELECT workspace_id, channel_id, changed_at, reader, reader_until FROM mailboxes ORDER BY workspace_id, channel_id",
            )
            .and_then(|mut stmt| {
                stmt.query_map([], |r| {
                    Ok(MailboxLease {
                        workspace: r.get(0)?,
                        channel: r.get(1)?,
                        changed_at: r.get(2)?,
                        reader: r.get(3)?,
                        reader_until: r.get(4)?,
                    })
                })?
                .collect()
            })
            .map_err(error)
        })
        .await
    }

    async fn hold(&self, workspace: WorkspaceId, channel: ChannelId, holder: &str, now: Millis, until: Millis) -> StoreResult<bool> {
        let holder = holder.to_string();
        super::blocking(self.exec(), &self.platform, move |conn| {
            conn.prepare_cached(
                "UPDATE mailboxes SET reader = ?3, reader_until = ?5
                 WHERE workspace_id = ?1 AND channel_id = ?2 AND (reader IS NULL OR reader = ?3 OR reader_until < ?4)",
            )
            .and_then(|mut stmt| stmt.execute(params![workspace, channel, holder, now, until]))
            .map(|changed| changed == 1)
            .map_err(error)
        })
        .await
    }

    async fn release(&self, workspace: WorkspaceId, channel: ChannelId, holder: &str) -> StoreResult<()> {
        let holder = holder.to_string();
        super::blocking(self.exec(), &self.platform, move |conn| {
            conn.prepare_cached(
                "UPDATE mailboxes SET reader = NULL, reader_until = NULL WHERE workspace_id = ?1 AND channel_id = ?2 AND reader = ?3",
            )
            .and_then(|mut stmt| stmt.execute(params![workspace, channel, holder]))
            .map_err(error)?;
            Ok(())
        })
        .await
    }
}
