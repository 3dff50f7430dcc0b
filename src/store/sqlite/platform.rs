//! Platform data in `data/platform.db`: users, sessions, API tokens, workspaces, memberships.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use std::sync::Arc;

use super::executor::Executor;
use super::pool::SqlitePool;
use super::types::{member_from_row, workspace_from_row};
use super::{blocking, error};
use crate::store::*;

/// A session's `last_seen_at` is refreshed at most this often, so that reads stay reads.
const TOUCH_EVERY_MS: i64 = 60_000;

pub(super) const USER_COLS: &str = "u.id, u.email, u.name, u.is_admin, u.disabled, u.created_at";

pub(super) fn user_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        email: row.get(1)?,
        name: row.get(2)?,
        is_admin: row.get(3)?,
        disabled: row.get(4)?,
        created_at: row.get(5)?,
    })
}

fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

fn insert_user(conn: &Connection, user: &NewUser, only_if_first: bool) -> StoreResult<Option<User>> {
    let row = User {
        id: UserId::new(),
        email: user.email.trim().to_string(),
        name: user.name.clone(),
        is_admin: user.is_admin,
        disabled: false,
        created_at: Millis::now(),
    };
    let guard = if only_if_first { "WHERE NOT EXISTS (SELECT 1 FROM users)" } else { "" };
    let inserted = conn
        .execute(
            &format!(
                "INSERT INTO users (id, email, email_norm, name, password_hash, is_admin, created_at)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 {guard}"
            ),
            params![row.id, row.email, normalize_email(&row.email), row.name, user.password_hash, row.is_admin, row.created_at],
        )
        .map_err(|e| match error(e) {
            StoreError::Conflict(_) => StoreError::Conflict("a user with this email exists".into()),
            other => other,
        })?;
    Ok((inserted == 1).then_some(row))
}

const MEMBER_SELECT: &str = "SELECT m.user_id, u.email, u.name, m.role, m.created_at
     FROM memberships m JOIN users u ON u.id = m.user_id";

fn member_in(conn: &rusqlite::Connection, workspace: WorkspaceId, user: UserId) -> StoreResult<Option<Member>> {
    conn.prepare_cached(&format!("{MEMBER_SELECT} WHERE m.workspace_id = ?1 AND m.user_id = ?2"))
        .and_then(|mut stmt| stmt.query_row(params![workspace, user], member_from_row).optional())
        .map_err(error)
}

/// Records that the workspace's copy of this membership is to be brought up to date.
fn leave_pending(conn: &rusqlite::Connection, workspace: WorkspaceId, user: UserId, actor: Option<UserId>) -> StoreResult<PendingMirror> {
    let seq: i64 = conn
        .query_row(
            "INSERT INTO member_mirrors (workspace_id, user_id, actor_id, seq, created_at) VALUES (?1, ?2, ?3, 1, ?4)
             ON CONFLICT (workspace_id, user_id) DO UPDATE SET actor_id = excluded.actor_id, seq = member_mirrors.seq + 1
             RETURNING seq",
            params![workspace, user, actor, Millis::now()],
            |r| r.get(0),
        )
        .map_err(error)?;
    Ok(PendingMirror { workspace, user, actor, seq })
}

pub struct SqlitePlatform {
    pub(super) pool: SqlitePool,
    pub(super) exec: Arc<Executor>,
}

impl SqlitePlatform {
    pub fn new(pool: SqlitePool, exec: Arc<Executor>) -> Self {
        Self { pool, exec }
    }
}

#[async_trait]
impl PlatformStore for SqlitePlatform {
    async fn ping(&self) -> StoreResult<()> {
        blocking(&self.exec, &self.pool, |conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(error)).await
    }

    async fn user_count(&self) -> StoreResult<u64> {
        blocking(&self.exec, &self.pool, |conn| {
            conn.query_row("SELECT COUNT(*) FROM users", [], |row| row.get::<_, i64>(0)).map(|n| n as u64).map_err(error)
        })
        .await
    }

    async fn create_first_admin(&self, user: NewUser) -> StoreResult<User> {
        blocking(&self.exec, &self.pool, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(error)?;
            let created = insert_user(&tx, &NewUser { is_admin: true, ..user }, true)?;
            tx.commit().map_err(error)?;
            created.ok_or_else(|| StoreError::Conflict("setup is already done: users exist".into()))
        })
        .await
    }

    async fn create_user(&self, user: NewUser) -> StoreResult<User> {
        blocking(&self.exec, &self.pool, move |conn| insert_user(conn, &user, false)?.ok_or(StoreError::internal("user not inserted")))
            .await
    }

    async fn user(&self, id: UserId) -> StoreResult<Option<User>> {
        blocking(&self.exec, &self.pool, move |conn| {
            conn.query_row(&format!("SELECT {USER_COLS} FROM users u WHERE u.id = ?1"), params![id], user_from_row)
                .optional()
                .map_err(error)
        })
        .await
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<(User, String)>> {
        let email = normalize_email(email);
        blocking(&self.exec, &self.pool, move |conn| {
            conn.prepare_cached(&format!("SELECT {USER_COLS}, u.password_hash FROM users u WHERE u.email_norm = ?1"))
                .and_then(|mut stmt| stmt.query_row(params![email], |row| Ok((user_from_row(row)?, row.get(6)?))).optional())
                .map_err(error)
        })
        .await
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        blocking(&self.exec, &self.pool, |conn| {
            let mut stmt = conn.prepare(&format!("SELECT {USER_COLS} FROM users u ORDER BY u.created_at, u.id")).map_err(error)?;
            stmt.query_map([], user_from_row).and_then(|rows| rows.collect()).map_err(error)
        })
        .await
    }

    async fn update_user(&self, id: UserId, patch: UserPatch) -> StoreResult<User> {
        blocking(&self.exec, &self.pool, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(error)?;
            let changed = tx
                .execute(
                    "UPDATE users SET name = COALESCE(?2, name), disabled = COALESCE(?3, disabled),
                     is_admin = COALESCE(?4, is_admin) WHERE id = ?1",
                    params![id, patch.name, patch.disabled, patch.is_admin],
                )
                .map_err(error)?;
            if changed == 0 {
                return Err(StoreError::NotFound);
            }
            if patch.disabled == Some(true) {
                // A disabled user is signed out everywhere at once.
                tx.execute("DELETE FROM sessions WHERE user_id = ?1", params![id]).map_err(error)?;
            }
            let user =
                tx.query_row(&format!("SELECT {USER_COLS} FROM users u WHERE u.id = ?1"), params![id], user_from_row).map_err(error)?;
            tx.commit().map_err(error)?;
            Ok(user)
        })
        .await
    }

    async fn set_password(&self, id: UserId, password_hash: String) -> StoreResult<()> {
        blocking(&self.exec, &self.pool, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(error)?;
            let changed = tx.execute("UPDATE users SET password_hash = ?2 WHERE id = ?1", params![id, password_hash]).map_err(error)?;
            if changed == 0 {
                return Err(StoreError::NotFound);
            }
            tx.execute("DELETE FROM sessions WHERE user_id = ?1", params![id]).map_err(error)?;
            tx.commit().map_err(error)
        })
        .await
    }

    async fn create_session(&self, session: NewSession) -> StoreResult<SessionInfo> {
        blocking(&self.exec, &self.pool, move |conn| {
            let now = Millis::now();
            let info = session.started_at(now);
            conn.execute(
                "INSERT INTO sessions (id, token_hash, user_id, created_at, expires_at, last_seen_at, user_agent, ip)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?4, ?6, ?7)",
                params![info.id, session.token_hash, session.user_id, now, info.expires_at, info.user_agent, info.ip],
            )
            .map_err(error)?;
            // Expired sessions are swept when new ones are made: no background job needed.
            conn.execute("DELETE FROM sessions WHERE expires_at <= ?1", params![now]).map_err(error)?;
            Ok(info)
        })
        .await
    }

    async fn authenticate(&self, token_hash: &str, now: Millis) -> StoreResult<Option<(User, Credential)>> {
        let token_hash = token_hash.to_string();
        blocking(&self.exec, &self.pool, move |conn| {
            let session = conn
                .prepare_cached(&format!(
                    "SELECT {USER_COLS}, s.id, s.last_seen_at FROM sessions s JOIN users u ON u.id = s.user_id
                     WHERE s.token_hash = ?1 AND s.expires_at > ?2 AND u.disabled = 0"
                ))
                .and_then(|mut stmt| {
                    stmt.query_row(params![token_hash, now], |row| {
                        Ok((user_from_row(row)?, row.get::<_, SessionId>(6)?, row.get::<_, Millis>(7)?))
                    })
                    .optional()
                })
                .map_err(error)?;
            if let Some((user, id, last_seen)) = session {
                if now.0 - last_seen.0 > TOUCH_EVERY_MS {
                    conn.execute("UPDATE sessions SET last_seen_at = ?2 WHERE id = ?1", params![id, now]).map_err(error)?;
                }
                return Ok(Some((user, Credential::Session(id))));
            }
            let token = conn
                .prepare_cached(&format!(
                    "SELECT {USER_COLS}, t.id, t.last_used_at FROM api_tokens t JOIN users u ON u.id = t.user_id
                     WHERE t.token_hash = ?1 AND (t.expires_at IS NULL OR t.expires_at > ?2) AND u.disabled = 0"
                ))
                .and_then(|mut stmt| {
                    stmt.query_row(params![token_hash, now], |row| {
                        Ok((user_from_row(row)?, row.get::<_, TokenId>(6)?, row.get::<_, Option<Millis>>(7)?))
                    })
                    .optional()
                })
                .map_err(error)?;
            if let Some((user, id, last_used)) = token {
                if last_used.is_none_or(|at| now.0 - at.0 > TOUCH_EVERY_MS) {
                    conn.execute("UPDATE api_tokens SET last_used_at = ?2 WHERE id = ?1", params![id, now]).map_err(error)?;
                }
                return Ok(Some((user, Credential::ApiToken(id))));
            }
            Ok(None)
        })
        .await
    }

    async fn list_sessions(&self, user: UserId, now: Millis) -> StoreResult<Vec<SessionInfo>> {
        blocking(&self.exec, &self.pool, move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT id, created_at, expires_at, last_seen_at, user_agent, ip FROM sessions
                     WHERE user_id = ?1 AND expires_at > ?2 ORDER BY created_at DESC",
                )
                .map_err(error)?;
            stmt.query_map(params![user, now], |row| {
                Ok(SessionInfo {
                    id: row.get(0)?,
                    created_at: row.get(1)?,
                    expires_at: row.get(2)?,
                    last_seen_at: row.get(3)?,
                    user_agent: row.get(4)?,
                    ip: row.get(5)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(error)
        })
        .await
    }

    async fn revoke_session(&self, user: UserId, session: SessionId) -> StoreResult<bool> {
        blocking(&self.exec, &self.pool, move |conn| {
            conn.execute("DELETE FROM sessions WHERE id = ?1 AND user_id = ?2", params![session, user]).map(|n| n == 1).map_err(error)
        })
        .await
    }

    async fn create_api_token(&self, token: NewApiToken) -> StoreResult<ApiTokenInfo> {
        blocking(&self.exec, &self.pool, move |conn| {
            let info = ApiTokenInfo {
                id: TokenId::new(),
                name: token.name,
                created_at: Millis::now(),
                expires_at: token.expires_at,
                last_used_at: None,
            };
            conn.execute(
                "INSERT INTO api_tokens (id, token_hash, user_id, name, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![info.id, token.token_hash, token.user_id, info.name, info.created_at, info.expires_at],
            )
            .map_err(error)?;
            Ok(info)
        })
        .await
    }

    async fn list_api_tokens(&self, user: UserId) -> StoreResult<Vec<ApiTokenInfo>> {
        blocking(&self.exec, &self.pool, move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT id, name, created_at, expires_at, last_used_at FROM api_tokens
                     WHERE user_id = ?1 ORDER BY created_at DESC",
                )
                .map_err(error)?;
            stmt.query_map(params![user], |row| {
                Ok(ApiTokenInfo {
                    id: row.get(0)?,
                    name: row.get(1)?,
                    created_at: row.get(2)?,
                    expires_at: row.get(3)?,
                    last_used_at: row.get(4)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(error)
        })
        .await
    }

    async fn revoke_api_token(&self, user: UserId, token: TokenId) -> StoreResult<bool> {
        blocking(&self.exec, &self.pool, move |conn| {
            conn.execute("DELETE FROM api_tokens WHERE id = ?1 AND user_id = ?2", params![token, user]).map(|n| n == 1).map_err(error)
        })
        .await
    }

    async fn create_workspace(&self, workspace: &Workspace, owner: UserId) -> StoreResult<MemberChange> {
        let workspace = workspace.clone();
        blocking(&self.exec, &self.pool, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(error)?;
            tx.execute(
                "INSERT INTO workspaces (id, name, created_by, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![workspace.id, workspace.name, owner, workspace.created_at],
            )
            .map_err(error)?;
            tx.execute(
                "INSERT INTO memberships (workspace_id, user_id, role, created_at) VALUES (?1, ?2, 'owner', ?3)",
                params![workspace.id, owner, workspace.created_at],
            )
            .map_err(error)?;
            let member = member_in(&tx, workspace.id, owner)?;
            let mirror = leave_pending(&tx, workspace.id, owner, Some(owner))?;
            tx.commit().map_err(error)?;
            Ok(MemberChange { before: None, after: member, mirror })
        })
        .await
    }

    async fn workspace(&self, id: WorkspaceId) -> StoreResult<Option<Workspace>> {
        blocking(&self.exec, &self.pool, move |conn| {
            conn.query_row("SELECT id, name, created_at FROM workspaces WHERE id = ?1", params![id], workspace_from_row)
                .optional()
                .map_err(error)
        })
        .await
    }

    async fn list_workspaces(&self) -> StoreResult<Vec<Workspace>> {
        blocking(&self.exec, &self.pool, |conn| {
            let mut stmt = conn.prepare("SELECT id, name, created_at FROM workspaces ORDER BY created_at, id").map_err(error)?;
            stmt.query_map([], workspace_from_row).and_then(|rows| rows.collect()).map_err(error)
        })
        .await
    }

    async fn workspaces_of(&self, user: UserId) -> StoreResult<Vec<(Workspace, Role)>> {
        blocking(&self.exec, &self.pool, move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT w.id, w.name, w.created_at, m.role FROM memberships m JOIN workspaces w ON w.id = m.workspace_id
                     WHERE m.user_id = ?1 ORDER BY w.created_at, w.id",
                )
                .map_err(error)?;
            stmt.query_map(params![user], |row| {
                Ok((Workspace { id: row.get(0)?, name: row.get(1)?, created_at: row.get(2)? }, row.get(3)?))
            })
            .and_then(|rows| rows.collect())
            .map_err(error)
        })
        .await
    }

    async fn member_role(&self, workspace: WorkspaceId, user: UserId) -> StoreResult<Option<Role>> {
        blocking(&self.exec, &self.pool, move |conn| {
            conn.prepare_cached("SELECT role FROM memberships WHERE workspace_id = ?1 AND user_id = ?2")
                .and_then(|mut stmt| stmt.query_row(params![workspace, user], |row| row.get(0)).optional())
                .map_err(error)
        })
        .await
    }

    async fn set_member(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        role: Option<Role>,
        actor: Option<UserId>,
    ) -> StoreResult<MemberChange> {
        blocking(&self.exec, &self.pool, move |conn| {
            // IMMEDIATE: the file's write lock from the first read, so the owner count below
            // cannot change before this commits (SQLite admits one writer).
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(error)?;
            let before: Option<Role> = tx
                .query_row("SELECT role FROM memberships WHERE workspace_id = ?1 AND user_id = ?2", params![workspace, user], |r| r.get(0))
                .optional()
                .map_err(error)?;
            let owners: i64 = tx
                .query_row("SELECT count(*) FROM memberships WHERE workspace_id = ?1 AND role = 'owner'", params![workspace], |r| r.get(0))
                .map_err(error)?;
            check_owners(before, role, owners)?;
            match role {
                Some(role) => tx.execute(
                    "INSERT INTO memberships (workspace_id, user_id, role, created_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role",
                    params![workspace, user, role, Millis::now()],
                ),
                None => tx.execute("DELETE FROM memberships WHERE workspace_id = ?1 AND user_id = ?2", params![workspace, user]),
            }
            .map_err(|e| match error(e) {
                StoreError::Internal(msg) if msg.contains("FOREIGN KEY") => StoreError::NotFound,
                other => other,
            })?;
            let after = member_in(&tx, workspace, user)?;
            let mirror = leave_pending(&tx, workspace, user, actor)?;
            tx.commit().map_err(error)?;
            Ok(MemberChange { before, after, mirror })
        })
        .await
    }

    async fn member(&self, workspace: WorkspaceId, user: UserId) -> StoreResult<Option<Member>> {
        blocking(&self.exec, &self.pool, move |conn| member_in(conn, workspace, user)).await
    }

    async fn pending_mirrors(&self, limit: usize) -> StoreResult<Vec<PendingMirror>> {
        blocking(&self.exec, &self.pool, move |conn| {
            conn.prepare_cached("SELECT workspace_id, user_id, actor_id, seq FROM member_mirrors ORDER BY created_at LIMIT ?1")
                .and_then(|mut stmt| {
                    stmt.query_map(params![limit as i64], |r| {
                        Ok(PendingMirror { workspace: r.get(0)?, user: r.get(1)?, actor: r.get(2)?, seq: r.get(3)? })
                    })?
                    .collect()
                })
                .map_err(error)
        })
        .await
    }

    async fn mirror_done(&self, pending: PendingMirror) -> StoreResult<()> {
        blocking(&self.exec, &self.pool, move |conn| {
            conn.execute(
                "DELETE FROM member_mirrors WHERE workspace_id = ?1 AND user_id = ?2 AND seq = ?3",
                params![pending.workspace, pending.user, pending.seq],
            )
            .map(|_| ())
            .map_err(error)
        })
        .await
    }

    async fn user_secret(&self, id: UserId) -> StoreResult<Option<(User, String)>> {
        blocking(&self.exec, &self.pool, move |conn| {
            conn.query_row(&format!("SELECT {USER_COLS}, u.password_hash FROM users u WHERE u.id = ?1"), params![id], |row| {
                Ok((user_from_row(row)?, row.get(6)?))
            })
            .optional()
            .map_err(error)
        })
        .await
    }

    async fn import_user(&self, user: &User, password_hash: &str) -> StoreResult<bool> {
        let (user, password_hash) = (user.clone(), password_hash.to_string());
        blocking(&self.exec, &self.pool, move |conn| {
            let exists: bool =
                conn.query_row("SELECT EXISTS (SELECT 1 FROM users WHERE id = ?1)", params![user.id], |r| r.get(0)).map_err(error)?;
            if exists {
                return Ok(false);
            }
            conn.execute(
                "INSERT INTO users (id, email, email_norm, name, password_hash, is_admin, disabled, created_at) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7)",
                params![user.id, user.email, normalize_email(&user.email), user.name, password_hash, user.disabled, user.created_at],
            )
            .map_err(|e| match error(e) {
                StoreError::Conflict(_) => StoreError::Conflict(format!("another user already has the email {}", user.email)),
                other => other,
            })?;
            Ok(true)
        })
        .await
    }

    async fn list_members(&self, workspace: WorkspaceId) -> StoreResult<Vec<Member>> {
        blocking(&self.exec, &self.pool, move |conn| {
            let mut stmt =
                conn.prepare(&format!("{MEMBER_SELECT} WHERE m.workspace_id = ?1 ORDER BY m.created_at, m.user_id")).map_err(error)?;
            stmt.query_map(params![workspace], member_from_row).and_then(|rows| rows.collect()).map_err(error)
        })
        .await
    }
}
