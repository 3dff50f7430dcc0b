//! Notification preferences in Postgres: platform data, per user and kind.

use async_trait::async_trait;

use super::platform::PgPlatform;
use super::{error, pool_error};
use crate::store::notifications::{NotificationKind, NotificationPreferences, Preference, complete_preferences};
use crate::store::{StoreError, StoreResult, UserId, WorkspaceId};

#[async_trait]
impl NotificationPreferences for PgPlatform {
    async fn preferences(&self, user: UserId) -> StoreResult<Vec<Preference>> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows =
            client.query("SELECT kind, in_app, email FROM notification_preferences WHERE user_id = $1", &[&user]).await.map_err(error)?;
        let stored = rows
            .iter()
            .map(|r| {
                Ok(Preference {
                    kind: r.try_get(0).map_err(error)?,
                    in_app: r.try_get(1).map_err(error)?,
                    email: r.try_get(2).map_err(error)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(complete_preferences(&stored))
    }

    async fn set_preferences(&self, user: UserId, preferences: &[Preference]) -> StoreResult<()> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(error)?;
        for p in preferences {
            tx.execute(
                "INSERT INTO notification_preferences (user_id, kind, in_app, email) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (user_id, kind) DO UPDATE SET in_app = excluded.in_app, email = excluded.email",
                &[&user, &p.kind, &p.in_app, &p.email],
            )
            .await
            .map_err(|e| match e.code() {
                Some(code) if *code == tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION => StoreError::NotFound,
                _ => error(e),
            })?;
        }
        tx.commit().await.map_err(error)
    }

    async fn muted_in_app(&self, workspace: WorkspaceId) -> StoreResult<Vec<(UserId, NotificationKind)>> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query(
                "SELECT p.user_id, p.kind FROM memberships m
                 JOIN notification_preferences p ON p.user_id = m.user_id AND NOT p.in_app WHERE m.workspace_id = $1",
                &[&workspace],
            )
            .await
            .map_err(error)?;
        rows.iter().map(|r| Ok((r.try_get(0).map_err(error)?, r.try_get(1).map_err(error)?))).collect()
    }
}
