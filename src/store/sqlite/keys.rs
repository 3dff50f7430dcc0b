//! Key bundles in `platform.db` (`key_bundles`, every version kept).

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::platform::SqlitePlatform;
use super::{blocking, error};
use crate::store::keys::{KeyBundle, KeyBundleRecord, KeyStore, version_conflict};
use crate::store::{Millis, StoreError, StoreResult, UserId};

const COLS: &str = "classical_public_key, pq_public_key, classical_priv_encrypted, pq_priv_encrypted, version, created_at";

fn bundle_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyBundle> {
    Ok(KeyBundle {
        classical_public_key: row.get(0)?,
        pq_public_key: row.get(1)?,
        classical_priv_encrypted: row.get(2)?,
        pq_priv_encrypted: row.get(3)?,
        key_version: row.get(4)?,
        created_at: row.get(5)?,
    })
}

fn current(conn: &Connection, user: UserId) -> StoreResult<Option<KeyBundle>> {
    conn.prepare_cached(&format!("SELECT {COLS} FROM key_bundles WHERE user_id = ?1 ORDER BY version DESC LIMIT 1"))
        .and_then(|mut stmt| stmt.query_row(params![user], bundle_from_row).optional())
        .map_err(error)
}

fn insert(conn: &Connection, user: UserId, b: &KeyBundle, guard: &str) -> StoreResult<usize> {
    conn.execute(
        &format!(
            "INSERT INTO key_bundles (user_id, version, classical_public_key, pq_public_key, classical_priv_encrypted, pq_priv_encrypted, created_at)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 {guard}"
        ),
        params![user, b.key_version, b.classical_public_key, b.pq_public_key, b.classical_priv_encrypted, b.pq_priv_encrypted, b.created_at],
    )
    .map_err(error)
}

#[async_trait]
impl KeyStore for SqlitePlatform {
    async fn current_keys(&self, user: UserId) -> StoreResult<Option<KeyBundle>> {
        blocking(&self.exec, &self.pool, move |conn| current(conn, user)).await
    }

    async fn keys_version(&self, user: UserId, version: u32) -> StoreResult<Option<KeyBundle>> {
        blocking(&self.exec, &self.pool, move |conn| {
            conn.prepare_cached(&format!("SELECT {COLS} FROM key_bundles WHERE user_id = ?1 AND version = ?2"))
                .and_then(|mut stmt| stmt.query_row(params![user, version], bundle_from_row).optional())
                .map_err(error)
        })
        .await
    }

    async fn all_keys(&self, user: UserId) -> StoreResult<Vec<KeyBundle>> {
        blocking(&self.exec, &self.pool, move |conn| {
            conn.prepare_cached(&format!("SELECT {COLS} FROM key_bundles WHERE user_id = ?1 ORDER BY version"))
                .and_then(|mut stmt| stmt.query_map(params![user], bundle_from_row)?.collect())
                .map_err(error)
        })
        .await
    }

    async fn put_keys(&self, user: UserId, bundle: KeyBundle) -> StoreResult<KeyBundle> {
        let bundle = KeyBundle { created_at: Millis::now(), ..bundle };
        blocking(&self.exec, &self.pool, move |conn| {
            // One statement decides: the version must follow the newest one stored.
            let guard = "WHERE (SELECT COALESCE(MAX(version), 0) FROM key_bundles WHERE user_id = ?1) = ?2 - 1";
            let inserted = match insert(conn, user, &bundle, guard) {
                Ok(n) => n,
                Err(StoreError::Conflict(_)) => 0,
                Err(other) => return Err(other),
            };
            if inserted == 1 {
                return Ok(bundle);
            }
            let now = current(conn, user)?.map_or(0, |b| b.key_version);
            Err(version_conflict(now, bundle.key_version))
        })
        .await
    }

    async fn import_keys(&self, record: &KeyBundleRecord) -> StoreResult<bool> {
        let record = record.clone();
        blocking(&self.exec, &self.pool, move |conn| {
            let guard = "WHERE NOT EXISTS (SELECT 1 FROM key_bundles WHERE user_id = ?1 AND version = ?2)";
            Ok(insert(conn, record.user_id, &record.bundle, guard)? == 1)
        })
        .await
    }
}
