//! Notification preferences in `platform.db`, per user and kind.

use async_trait::async_trait;
use rusqlite::params;

use super::platform::SqlitePlatform;
use super::{blocking, error};
use crate::store::notifications::{NotificationKind, NotificationPreferences, Preference, complete_preferences};
use crate::store::{StoreError, StoreResult, UserId, WorkspaceId};

#[async_trait]
impl NotificationPreferences for SqlitePlatform {
    async fn preferences(&self, user: UserId) -> StoreResult<Vec<Preference>> {
        blocking(&self.exec, &self.pool, move |conn| {
            let stored: Vec<Preference> = conn
                .prepare_cached("SELECT kind, in_app, email FROM notification_preferences WHERE user_id = ?1")
                .and_then(|mut stmt| {
                    stmt.query_map(params![user], |r| Ok(Preference { kind: r.get(0)?, in_app: r.get(1)?, email: r.get(2)? }))?.collect()
                })
                .map_err(error)?;
            Ok(complete_preferences(&stored))
        })
        .await
    }

    async fn set_preferences(&self, user: UserId, preferences: &[Preference]) -> StoreResult<()> {
        let preferences = preferences.to_vec();
        blocking(&self.exec, &self.pool, move |conn| {
            let tx = conn.transaction().map_err(error)?;
            for p in &preferences {
                tx.prepare_cached(
                    "INSERT INTO notification_preferences (user_id, kind, in_app, email) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (user_id, kind) DO UPDATE SET in_app = excluded.in_app, email = excluded.email",
                )
                .and_then(|mut stmt| stmt.execute(params![user, p.kind, p.in_app, p.email]))
                .map_err(|e| match error(e) {
                    StoreError::Internal(msg) if msg.contains("FOREIGN KEY") => StoreError::NotFound,
                    other => other,
                })?;
            }
            tx.commit().map_err(error)
        })
        .await
    }

    async fn muted_in_app(&self, workspace: WorkspaceId) -> StoreResult<Vec<(UserId, NotificationKind)>> {
        blocking(&self.exec, &self.pool, move |conn| {
            conn.prepare_cached(
                "SELECT p.user_id, p.kind FROM memberships m
                 JOIN notification_preferences p ON p.user_id = m.user_id AND p.in_app = 0 WHERE m.workspace_id = ?1",
            )
            .and_then(|mut stmt| stmt.query_map(params![workspace], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(error)
        })
        .await
    }
}
