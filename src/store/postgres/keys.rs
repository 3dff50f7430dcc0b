//! Key bundles in Postgres (`key_bundles`, every version kept).

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::error;
use super::platform::PgPlatform;
use crate::store::keys::{KeyBundle, KeyBundleRecord, KeyStore, version_conflict};
use crate::store::{Millis, StoreError, StoreResult, UserId};

const COLS: &str = "classical_public_key, pq_public_key, classical_priv_encrypted, pq_priv_encrypted, version, created_at";

fn bundle_from_row(row: &Row) -> StoreResult<KeyBundle> {
    let version: i32 = row.try_get(4).map_err(error)?;
    Ok(KeyBundle {
        classical_public_key: row.try_get(0).map_err(error)?,
        pq_public_key: row.try_get(1).map_err(error)?,
        classical_priv_encrypted: row.try_get(2).map_err(error)?,
        pq_priv_encrypted: row.try_get(3).map_err(error)?,
        key_version: u32::try_from(version).map_err(StoreError::internal)?,
        created_at: row.try_get(5).map_err(error)?,
    })
}

fn version_param(version: u32) -> StoreResult<i32> {
    i32::try_from(version).map_err(|_| StoreError::invalid("key_version", "too large"))
}

async fn current(client: &impl GenericClient, user: UserId) -> StoreResult<Option<KeyBundle>> {
    let row = client
        .query_opt(&format!("SELECT {COLS} FROM key_bundles WHERE user_id = $1 ORDER BY version DESC LIMIT 1"), &[&user])
        .await
        .map_err(error)?;
    row.as_ref().map(bundle_from_row).transpose()
}

async fn insert(client: &impl GenericClient, user: UserId, b: &KeyBundle, guard: &str) -> StoreResult<u64> {
    client
        .execute(
            &format!(
                "INSERT INTO key_bundles (user_id, version, classical_public_key, pq_public_key, classical_priv_encrypted, pq_priv_encrypted, created_at)
                 SELECT $1, $2, $3, $4, $5, $6, $7 {guard}"
            ),
            &[&user, &version_param(b.key_version)?, &b.classical_public_key, &b.pq_public_key, &b.classical_priv_encrypted, &b.pq_priv_encrypted, &b.created_at],
        )
        .await
        .map_err(error)
}

#[async_trait]
impl KeyStore for PgPlatform {
    async fn current_keys(&self, user: UserId) -> StoreResult<Option<KeyBundle>> {
        current(&self.client().await?, user).await
    }

    async fn keys_version(&self, user: UserId, version: u32) -> StoreResult<Option<KeyBundle>> {
        let Ok(version) = i32::try_from(version) else { return Ok(None) };
        let row = self
            .client()
            .await?
            .query_opt(&format!("SELECT {COLS} FROM key_bundles WHERE user_id = $1 AND version = $2"), &[&user, &version])
            .await
            .map_err(error)?;
        row.as_ref().map(bundle_from_row).transpose()
    }

    async fn all_keys(&self, user: UserId) -> StoreResult<Vec<KeyBundle>> {
        let rows = self
            .client()
            .await?
            .query(&format!("SELECT {COLS} FROM key_bundles WHERE user_id = $1 ORDER BY version"), &[&user])
            .await
            .map_err(error)?;
        rows.iter().map(bundle_from_row).collect()
    }

    async fn put_keys(&self, user: UserId, bundle: KeyBundle) -> StoreResult<KeyBundle> {
        let bundle = KeyBundle { created_at: Millis::now(), ..bundle };
        let client = self.client().await?;
        // The guard decides for one writer; the primary key decides between racing ones.
        let guard = "WHERE (SELECT COALESCE(MAX(version), 0) FROM key_bundles WHERE user_id = $1) = $2 - 1";
        let inserted = match insert(&client, user, &bundle, guard).await {
            Ok(n) => n,
            Err(StoreError::Conflict(_)) => 0,
            Err(other) => return Err(other),
        };
        if inserted == 1 {
            return Ok(bundle);
        }
        let now = current(&client, user).await?.map_or(0, |b| b.key_version);
        Err(version_conflict(now, bundle.key_version))
    }

    async fn import_keys(&self, record: &KeyBundleRecord) -> StoreResult<bool> {
        let client = self.client().await?;
        let guard = "WHERE NOT EXISTS (SELECT 1 FROM key_bundles WHERE user_id = $1 AND version = $2)";
        Ok(insert(&client, record.user_id, &record.bundle, guard).await? == 1)
    }
}
