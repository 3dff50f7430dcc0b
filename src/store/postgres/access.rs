//! Access checks in Postgres (platform tables): one statement for a whole slice of grants.

use async_trait::async_trait;
use tokio_postgres::types::ToSql;

use super::error;
use super::platform::{PgPlatform, USER_COLS, user_from_row};
use crate::store::access::{AccessChecks, Grant};
use crate::store::{Credential, Millis, Role, SessionId, StoreResult, TokenId, User, UserId, WorkspaceId};

/// A grant's credential as the two nullable columns the statements take.
fn split(credential: Credential) -> (Option<SessionId>, Option<TokenId>) {
    match credential {
        Credential::Session(id) => (Some(id), None),
        Credential::ApiToken(id) => (None, Some(id)),
    }
}

/// The credential (`session_id` or `token_id`, one of them set) is live at `$now` for the
/// enabled user `u`.
const LIVE: &str = "NOT u.disabled AND (
       (g.session_id IS NOT NULL AND EXISTS (SELECT 1 FROM sessions s WHERE s.id = g.session_id AND s.user_id = u.id AND s.expires_at > $NOW))
    OR (g.token_id IS NOT NULL AND EXISTS (SELECT 1 FROM api_tokens t WHERE t.id = g.token_id AND t.user_id = u.id
                                           AND (t.expires_at IS NULL OR t.expires_at > $NOW))))";

#[async_trait]
impl AccessChecks for PgPlatform {
    async fn roles_now(&self, grants: &[Grant], now: Millis) -> StoreResult<Vec<Option<Role>>> {
        if grants.is_empty() {
            return Ok(Vec::new());
        }
        let (sessions, tokens): (Vec<_>, Vec<_>) = grants.iter().map(|g| split(g.credential)).unzip();
        let users: Vec<UserId> = grants.iter().map(|g| g.user).collect();
        let workspaces: Vec<WorkspaceId> = grants.iter().map(|g| g.workspace).collect();
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT g.i, m.role FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[]) WITH ORDINALITY
                   AS g(session_id, token_id, user_id, workspace_id, i)
                 JOIN users u ON u.id = g.user_id
                 JOIN memberships m ON m.workspace_id = g.workspace_id AND m.user_id = g.user_id
                 WHERE {}",
                LIVE.replace("$NOW", "$5")
            ))
            .await
            .map_err(error)?;
        let mut out = vec![None; grants.len()];
        for row in client.query(&stmt, &[&sessions as &(dyn ToSql + Sync), &tokens, &users, &workspaces, &now]).await.map_err(error)? {
            let i: i64 = row.try_get(0).map_err(error)?;
            let role: Role = row.try_get(1).map_err(error)?;
            if let Some(slot) = usize::try_from(i - 1).ok().and_then(|i| out.get_mut(i)) {
                *slot = Some(role);
            }
        }
        Ok(out)
    }

    async fn credential_user(&self, credential: Credential, now: Millis) -> StoreResult<Option<User>> {
        let (session, token) = split(credential);
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {USER_COLS} FROM (SELECT $1::uuid AS session_id, $2::uuid AS token_id) g
                 JOIN users u ON u.id = COALESCE((SELECT user_id FROM sessions WHERE id = g.session_id),
                                                 (SELECT user_id FROM api_tokens WHERE id = g.token_id))
                 WHERE {}",
                LIVE.replace("$NOW", "$3")
            ))
            .await
            .map_err(error)?;
        client
            .query_opt(&stmt, &[&session as &(dyn ToSql + Sync), &token, &now])
            .await
            .map_err(error)?
            .map(|row| user_from_row(&row))
            .transpose()
    }
}
