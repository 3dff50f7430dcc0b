//! Platform data in Postgres: users, sessions, API tokens, workspaces, memberships.

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::Row;

use super::types::{member_from_row, workspace_from_row};
use super::{error, pool_error};
use crate::store::*;

/// A session's `last_seen_at` is refreshed at most this often, so that reads stay reads.
const TOUCH_EVERY_MS: i64 = 60_000;

pub(super) const USER_COLS: &str = "u.id, u.email, u.name, u.is_admin, u.disabled, u.created_at";
const MEMBER_SELECT: &str = "SELECT m.user_id, u.email, u.name, m.role, m.created_at FROM memberships m JOIN users u ON u.id = m.user_id";

pub(super) fn user_from_row(row: &Row) -> StoreResult<User> {
    Ok(User {
        id: row.try_get(0).map_err(error)?,
        email: row.try_get(1).map_err(error)?,
        name: row.try_get(2).map_err(error)?,
        is_admin: row.try_get(3).map_err(error)?,
        disabled: row.try_get(4).map_err(error)?,
        created_at: row.try_get(5).map_err(error)?,
    })
}

fn session_from_row(row: &Row) -> StoreResult<SessionInfo> {
    Ok(SessionInfo {
        id: row.try_get(0).map_err(error)?,
        created_at: row.try_get(1).map_err(error)?,
        expires_at: row.try_get(2).map_err(error)?,
        last_seen_at: row.try_get(3).map_err(error)?,
        user_agent: row.try_get(4).map_err(error)?,
        ip: row.try_get(5).map_err(error)?,
    })
}

fn token_from_row(row: &Row) -> StoreResult<ApiTokenInfo> {
    Ok(ApiTokenInfo {
        id: row.try_get(0).map_err(error)?,
        name: row.try_get(1).map_err(error)?,
        created_at: row.try_get(2).map_err(error)?,
        expires_at: row.try_get(3).map_err(error)?,
        last_used_at: row.try_get(4).map_err(error)?,
    })
}

fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

fn email_conflict(err: tokio_postgres::Error) -> StoreError {
    match error(err) {
        StoreError::Conflict(_) => StoreError::Conflict("a user with this email exists".into()),
        other => other,
    }
}

async fn member_in(client: &impl GenericClient, workspace: WorkspaceId, user: UserId) -> StoreResult<Option<Member>> {
    let row = client
        .query_opt(&format!("{MEMBER_SELECT} WHERE m.workspace_id = $1 AND m.user_id = $2"), &[&workspace, &user])
        .await
        .map_err(error)?;
    row.as_ref().map(member_from_row).transpose()
}

/// Records that the workspace's copy of this membership is to be brought up to date.
async fn leave_pending(tx: &impl GenericClient, workspace: WorkspaceId, user: UserId, actor: Option<UserId>) -> StoreResult<PendingMirror> {
    let seq: i64 = tx
        .query_one(
            "INSERT INTO member_mirrors (workspace_id, user_id, actor_id, seq, created_at) VALUES ($1, $2, $3, 1, $4)
             ON CONFLICT (workspace_id, user_id) DO UPDATE SET actor_id = excluded.actor_id, seq = member_mirrors.seq + 1
             RETURNING seq",
            &[&workspace, &user, &actor, &Millis::now()],
        )
        .await
        .map_err(error)?
        .try_get(0)
        .map_err(error)?;
    Ok(PendingMirror { workspace, user, actor, seq })
}

pub struct PgPlatform {
    pub(super) pool: Pool,
}

impl PgPlatform {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    pub(super) async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_error)
    }

    async fn insert_user(&self, user: NewUser, only_if_first: bool) -> StoreResult<Option<User>> {
        let row = User {
            id: UserId::new(),
            email: user.email.trim().to_string(),
            name: user.name,
            is_admin: user.is_admin,
            disabled: false,
            created_at: Millis::now(),
        };
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(error)?;
        if only_if_first {
            // Serialises racing setups: the second waits, then sees the first user.
            tx.execute("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE", &[]).await.map_err(error)?;
            if tx.query_one("SELECT EXISTS (SELECT 1 FROM users)", &[]).await.map_err(error)?.try_get::<_, bool>(0).map_err(error)? {
                return Ok(None);
            }
        }
        tx.execute(
            "INSERT INTO users (id, email, email_norm, name, password_hash, is_admin, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&row.id, &row.email, &normalize_email(&row.email), &row.name, &user.password_hash, &row.is_admin, &row.created_at],
        )
        .await
        .map_err(email_conflict)?;
        tx.commit().await.map_err(error)?;
        Ok(Some(row))
    }
}

#[async_trait]
impl PlatformStore for PgPlatform {
    async fn ping(&self) -> StoreResult<()> {
        self.client().await?.execute("SELECT 1", &[]).await.map_err(error).map(|_| ())
    }

    async fn user_count(&self) -> StoreResult<u64> {
        let n: i64 = self.client().await?.query_one("SELECT COUNT(*) FROM users", &[]).await.map_err(error)?.try_get(0).map_err(error)?;
        Ok(n as u64)
    }

    async fn create_first_admin(&self, user: NewUser) -> StoreResult<User> {
        self.insert_user(NewUser { is_admin: true, ..user }, true)
            .await?
            .ok_or_else(|| StoreError::Conflict("setup is already done: users exist".into()))
    }

    async fn create_user(&self, user: NewUser) -> StoreResult<User> {
        self.insert_user(user, false).await?.ok_or_else(|| StoreError::internal("user not inserted"))
    }

    async fn user(&self, id: UserId) -> StoreResult<Option<User>> {
        let row =
            self.client().await?.query_opt(&format!("SELECT {USER_COLS} FROM users u WHERE u.id = $1"), &[&id]).await.map_err(error)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<(User, String)>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!("SELECT {USER_COLS}, u.password_hash FROM users u WHERE u.email_norm = $1"))
            .await
            .map_err(error)?;
        let row = client.query_opt(&stmt, &[&normalize_email(email)]).await.map_err(error)?;
        row.map(|row| Ok((user_from_row(&row)?, row.try_get(6).map_err(error)?))).transpose()
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        let rows = self
            .client()
            .await?
            .query(&format!("SELECT {USER_COLS} FROM users u ORDER BY u.created_at, u.id"), &[])
            .await
            .map_err(error)?;
        rows.iter().map(user_from_row).collect()
    }

    async fn update_user(&self, id: UserId, patch: UserPatch) -> StoreResult<User> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(error)?;
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE users u SET name = COALESCE($2, name), disabled = COALESCE($3, disabled), is_admin = COALESCE($4, is_admin)
                     WHERE u.id = $1 RETURNING {USER_COLS}"
                ),
                &[&id, &patch.name, &patch.disabled, &patch.is_admin],
            )
            .await
            .map_err(error)?
            .ok_or(StoreError::NotFound)?;
        if patch.disabled == Some(true) {
            tx.execute("DELETE FROM sessions WHERE user_id = $1", &[&id]).await.map_err(error)?;
        }
        let user = user_from_row(&row)?;
        tx.commit().await.map_err(error)?;
        Ok(user)
    }

    async fn set_password(&self, id: UserId, password_hash: String) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(error)?;
        if tx.execute("UPDATE users SET password_hash = $2 WHERE id = $1", &[&id, &password_hash]).await.map_err(error)? == 0 {
            return Err(StoreError::NotFound);
        }
        tx.execute("DELETE FROM sessions WHERE user_id = $1", &[&id]).await.map_err(error)?;
        tx.commit().await.map_err(error)
    }

    async fn create_session(&self, session: NewSession) -> StoreResult<SessionInfo> {
        let now = Millis::now();
        let info = session.started_at(now);
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO sessions (id, token_hash, user_id, created_at, expires_at, last_seen_at, user_agent, ip) VALUES ($1, $2, $3, $4, $5, $4, $6, $7)",
                &[&info.id, &session.token_hash, &session.user_id, &now, &info.expires_at, &info.user_agent, &info.ip],
            )
            .await
            .map_err(error)?;
        client.execute("DELETE FROM sessions WHERE expires_at <= $1", &[&now]).await.map_err(error)?;
        Ok(info)
    }

    async fn authenticate(&self, token_hash: &str, now: Millis) -> StoreResult<Option<(User, Credential)>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {USER_COLS}, s.id, s.last_seen_at FROM sessions s JOIN users u ON u.id = s.user_id
                 WHERE s.token_hash = $1 AND s.expires_at > $2 AND NOT u.disabled"
            ))
            .await
            .map_err(error)?;
        if let Some(row) = client.query_opt(&stmt, &[&token_hash, &now]).await.map_err(error)? {
            let (user, id, last_seen): (User, SessionId, Millis) =
                (user_from_row(&row)?, row.try_get(6).map_err(error)?, row.try_get(7).map_err(error)?);
            if now.0 - last_seen.0 > TOUCH_EVERY_MS {
                client.execute("UPDATE sessions SET last_seen_at = $2 WHERE id = $1", &[&id, &now]).await.map_err(error)?;
            }
            return Ok(Some((user, Credential::Session(id))));
        }
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {USER_COLS}, t.id, t.last_used_at FROM api_tokens t JOIN users u ON u.id = t.user_id
                 WHERE t.token_hash = $1 AND (t.expires_at IS NULL OR t.expires_at > $2) AND NOT u.disabled"
            ))
            .await
            .map_err(error)?;
        if let Some(row) = client.query_opt(&stmt, &[&token_hash, &now]).await.map_err(error)? {
            let (user, id, last_used): (User, TokenId, Option<Millis>) =
                (user_from_row(&row)?, row.try_get(6).map_err(error)?, row.try_get(7).map_err(error)?);
            if last_used.is_none_or(|at| now.0 - at.0 > TOUCH_EVERY_MS) {
                client.execute("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1", &[&id, &now]).await.map_err(error)?;
            }
            return Ok(Some((user, Credential::ApiToken(id))));
        }
        Ok(None)
    }

    async fn list_sessions(&self, user: UserId, now: Millis) -> StoreResult<Vec<SessionInfo>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, created_at, expires_at, last_seen_at, user_agent, ip FROM sessions WHERE user_id = $1 AND expires_at > $2 ORDER BY created_at DESC",
                &[&user, &now],
            )
            .await
            .map_err(error)?;
        rows.iter().map(session_from_row).collect()
    }

    async fn revoke_session(&self, user: UserId, session: SessionId) -> StoreResult<bool> {
        let n =
            self.client().await?.execute("DELETE FROM sessions WHERE id = $1 AND user_id = $2", &[&session, &user]).await.map_err(error)?;
        Ok(n == 1)
    }

    async fn create_api_token(&self, token: NewApiToken) -> StoreResult<ApiTokenInfo> {
        let info = ApiTokenInfo {
            id: TokenId::new(),
            name: token.name,
            created_at: Millis::now(),
            expires_at: token.expires_at,
            last_used_at: None,
        };
        self.client()
            .await?
            .execute(
                "INSERT INTO api_tokens (id, token_hash, user_id, name, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
                &[&info.id, &token.token_hash, &token.user_id, &info.name, &info.created_at, &info.expires_at],
            )
            .await
            .map_err(error)?;
        Ok(info)
    }

    async fn list_api_tokens(&self, user: UserId) -> StoreResult<Vec<ApiTokenInfo>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, name, created_at, expires_at, last_used_at FROM api_tokens WHERE user_id = $1 ORDER BY created_at DESC",
                &[&user],
            )
            .await
            .map_err(error)?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_api_token(&self, user: UserId, token: TokenId) -> StoreResult<bool> {
        let n =
            self.client().await?.execute("DELETE FROM api_tokens WHERE id = $1 AND user_id = $2", &[&token, &user]).await.map_err(error)?;
        Ok(n == 1)
    }

    async fn create_workspace(&self, workspace: &Workspace, owner: UserId) -> StoreResult<MemberChange> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(error)?;
        tx.execute(
            "INSERT INTO workspaces (id, name, created_by, created_at) VALUES ($1, $2, $3, $4)",
            &[&workspace.id, &workspace.name, &owner, &workspace.created_at],
        )
        .await
        .map_err(error)?;
        tx.execute(
            "INSERT INTO memberships (workspace_id, user_id, role, created_at) VALUES ($1, $2, 'owner', $3)",
            &[&workspace.id, &owner, &workspace.created_at],
        )
        .await
        .map_err(error)?;
        let member = member_in(&tx, workspace.id, owner).await?;
        let mirror = leave_pending(&tx, workspace.id, owner, Some(owner)).await?;
        tx.commit().await.map_err(error)?;
        Ok(MemberChange { before: None, after: member, mirror })
    }

    async fn workspace(&self, id: WorkspaceId) -> StoreResult<Option<Workspace>> {
        let row =
            self.client().await?.query_opt("SELECT id, name, created_at FROM workspaces WHERE id = $1", &[&id]).await.map_err(error)?;
        row.as_ref().map(workspace_from_row).transpose()
    }

    async fn list_workspaces(&self) -> StoreResult<Vec<Workspace>> {
        let rows =
            self.client().await?.query("SELECT id, name, created_at FROM workspaces ORDER BY created_at, id", &[]).await.map_err(error)?;
        rows.iter().map(workspace_from_row).collect()
    }

    async fn workspaces_of(&self, user: UserId) -> StoreResult<Vec<(Workspace, Role)>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT w.id, w.name, w.created_at, m.role FROM memberships m JOIN workspaces w ON w.id = m.workspace_id
                 WHERE m.user_id = $1 ORDER BY w.created_at, w.id",
                &[&user],
            )
            .await
            .map_err(error)?;
        rows.iter().map(|row| Ok((workspace_from_row(row)?, row.try_get(3).map_err(error)?))).collect()
    }

    async fn member_role(&self, workspace: WorkspaceId, user: UserId) -> StoreResult<Option<Role>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached("SELECT role FROM memberships WHERE workspace_id = $1 AND user_id = $2").await.map_err(error)?;
        let row = client.query_opt(&stmt, &[&workspace, &user]).await.map_err(error)?;
        row.map(|r| r.try_get(0).map_err(error)).transpose()
    }

    async fn set_member(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        role: Option<Role>,
        actor: Option<UserId>,
    ) -> StoreResult<MemberChange> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(error)?;
        // Membership changes of one workspace take its registry row's lock first, so the
        // owner count below cannot change before this commits.
        tx.query_opt("SELECT 1 FROM workspaces WHERE id = $1 FOR UPDATE", &[&workspace])
            .await
            .map_err(error)?
            .ok_or(StoreError::NotFound)?;
        let before: Option<Role> = tx
            .query_opt("SELECT role FROM memberships WHERE workspace_id = $1 AND user_id = $2", &[&workspace, &user])
            .await
            .map_err(error)?
            .map(|r| r.try_get(0).map_err(error))
            .transpose()?;
        let owners: i64 = tx
            .query_one("SELECT count(*) FROM memberships WHERE workspace_id = $1 AND role = 'owner'", &[&workspace])
            .await
            .map_err(error)?
            .try_get(0)
            .map_err(error)?;
        check_owners(before, role, owners)?;
        match role {
            Some(role) => tx
                .execute(
                    "INSERT INTO memberships (workspace_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role",
                    &[&workspace, &user, &role, &Millis::now()],
                )
                .await
                .map_err(|e| match e.code() {
                    Some(code) if *code == tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION => StoreError::NotFound,
                    _ => error(e),
                })?,
            None => {
                tx.execute("DELETE FROM memberships WHERE workspace_id = $1 AND user_id = $2", &[&workspace, &user]).await.map_err(error)?
            }
        };
        let after = member_in(&tx, workspace, user).await?;
        let mirror = leave_pending(&tx, workspace, user, actor).await?;
        tx.commit().await.map_err(error)?;
        Ok(MemberChange { before, after, mirror })
    }

    async fn member(&self, workspace: WorkspaceId, user: UserId) -> StoreResult<Option<Member>> {
        let client = self.client().await?;
        member_in(&client, workspace, user).await
    }

    async fn pending_mirrors(&self, limit: usize) -> StoreResult<Vec<PendingMirror>> {
        let rows = self
            .client()
            .await?
            .query("SELECT workspace_id, user_id, actor_id, seq FROM member_mirrors ORDER BY created_at LIMIT $1", &[&(limit as i64)])
            .await
            .map_err(error)?;
        rows.iter()
            .map(|r| {
                Ok(PendingMirror {
                    workspace: r.try_get(0).map_err(error)?,
                    user: r.try_get(1).map_err(error)?,
                    actor: r.try_get(2).map_err(error)?,
                    seq: r.try_get(3).map_err(error)?,
                })
            })
            .collect()
    }

    async fn mirror_done(&self, pending: PendingMirror) -> StoreResult<()> {
        self.client()
            .await?
            .execute(
                "DELETE FROM member_mirrors WHERE workspace_id = $1 AND user_id = $2 AND seq = $3",
                &[&pending.workspace, &pending.user, &pending.seq],
            )
            .await
            .map_err(error)?;
        Ok(())
    }

    async fn user_secret(&self, id: UserId) -> StoreResult<Option<(User, String)>> {
        let row = self
            .client()
            .await?
            .query_opt(&format!("SELECT {USER_COLS}, u.password_hash FROM users u WHERE u.id = $1"), &[&id])
            .await
            .map_err(error)?;
        row.map(|row| Ok((user_from_row(&row)?, row.try_get(6).map_err(error)?))).transpose()
    }

    async fn import_user(&self, user: &User, password_hash: &str) -> StoreResult<bool> {
        let inserted = self
            .client()
            .await?
            .execute(
                "INSERT INTO users (id, email, email_norm, name, password_hash, is_admin, disabled, created_at) VALUES ($1, $2, $3, $4, $5, false, $6, $7)
                 ON CONFLICT (id) DO NOTHING",
                &[&user.id, &user.email, &normalize_email(&user.email), &user.name, &password_hash, &user.disabled, &user.created_at],
            )
            .await
            .map_err(|e| match error(e) {
                StoreError::Conflict(_) => StoreError::Conflict(format!("another user already has the email {}", user.email)),
                other => other,
            })?;
        Ok(inserted == 1)
    }

    async fn list_members(&self, workspace: WorkspaceId) -> StoreResult<Vec<Member>> {
        let rows = self
            .client()
            .await?
            .query(&format!("{MEMBER_SELECT} WHERE m.workspace_id = $1 ORDER BY m.created_at, m.user_id"), &[&workspace])
            .await
            .map_err(error)?;
        rows.iter().map(member_from_row).collect()
    }
}
