//! Access checks in `platform.db`: one trip to the workers for a whole slice of grants.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::platform::{SqlitePlatform, USER_COLS, user_from_row};
use super::{blocking, error};
use crate::store::access::{AccessChecks, Grant};
use crate::store::{Credential, Millis, Role, StoreResult, User};

/// Where a credential lives and what keeps it live (`?1` its id, `?2` now).
fn credential_table(credential: Credential) -> (&'static str, &'static str) {
    match credential {
        Credential::Session(_) => ("sessions", "c.expires_at > ?2"),
        Credential::ApiToken(_) => ("api_tokens", "(c.expires_at IS NULL OR c.expires_at > ?2)"),
    }
}

/// The credential's enabled user, if it is still live: `cols` of `users u`.
fn credential_user(conn: &rusqlite::Connection, credential: Credential, now: Millis) -> rusqlite::Result<Option<User>> {
    let (table, live) = credential_table(credential);
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {USER_COLS} FROM {table} c JOIN users u ON u.id = c.user_id WHERE c.id = ?1 AND {live} AND u.disabled = 0"
    ))?;
    match credential {
        Credential::Session(id) => stmt.query_row(params![id, now], user_from_row),
        Credential::ApiToken(id) => stmt.query_row(params![id, now], user_from_row),
    }
    .optional()
}

#[async_trait]
impl AccessChecks for SqlitePlatform {
    async fn roles_now(&self, grants: &[Grant], now: Millis) -> StoreResult<Vec<Option<Role>>> {
        let grants = grants.to_vec();
        blocking(&self.exec, &self.pool, move |conn| {
            let tx = conn.transaction().map_err(error)?;
            let mut out = Vec::with_capacity(grants.len());
            for g in &grants {
                if credential_user(&tx, g.credential, now).map_err(error)?.is_none_or(|u| u.id != g.user) {
                    out.push(None);
                    continue;
                }
                let role = tx
                    .prepare_cached("SELECT role FROM memberships WHERE workspace_id = ?1 AND user_id = ?2")
                    .and_then(|mut stmt| stmt.query_row(params![g.workspace, g.user], |r| r.get::<_, Role>(0)).optional())
                    .map_err(error)?;
                out.push(role);
            }
            Ok(out)
        })
        .await
    }

    async fn credential_user(&self, credential: Credential, now: Millis) -> StoreResult<Option<User>> {
        blocking(&self.exec, &self.pool, move |conn| credential_user(conn, credential, now).map_err(error)).await
    }
}
