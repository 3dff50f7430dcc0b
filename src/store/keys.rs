//! Users' key bundles for client-side encryption, at the storage boundary.
//!
//! A bundle is a user's public keys (classical and post-quantum) and their private keys
//! encrypted by the client under a secret the server never sees. The server keeps every
//! version and interprets none of it: a bundle is replaced by a new version (`key_version`
//! = current + 1, refused otherwise so two devices cannot silently overwrite each other),
//! and old versions stay readable, because files wrapped for them still exist.
//!
//! Bundles are platform data (a person's keys span their workspaces), kept beside the users
//! they belong to, and move with a workspace's members on export and import.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Millis, StoreResult, UserId};

/// One version of a user's key bundle, every field as the client wrote it (base64 text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyBundle {
    pub classical_public_key: String,
    pub pq_public_key: String,
    pub classical_priv_encrypted: String,
    pub pq_priv_encrypted: String,
    /// 1 for a user's first bundle, then 2, 3, …
    pub key_version: u32,
    pub created_at: Millis,
}

/// What another member may see of a bundle: its public half.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PublicKeys {
    pub user_id: UserId,
    pub classical_public_key: String,
    pub pq_public_key: String,
    pub key_version: u32,
}

impl KeyBundle {
    pub fn public(&self, user: UserId) -> PublicKeys {
        PublicKeys {
            user_id: user,
            classical_public_key: self.classical_public_key.clone(),
            pq_public_key: self.pq_public_key.clone(),
            key_version: self.key_version,
        }
    }
}

/// A user's bundle as stored (export/import only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyBundleRecord {
    pub user_id: UserId,
    #[serde(flatten)]
    pub bundle: KeyBundle,
}

/// Key bundles, per user and version.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// The newest version, if the user has one.
    async fn current_keys(&self, user: UserId) -> StoreResult<Option<KeyBundle>>;
    async fn keys_version(&self, user: UserId, version: u32) -> StoreResult<Option<KeyBundle>>;
    /// Every version, oldest first.
    async fn all_keys(&self, user: UserId) -> StoreResult<Vec<KeyBundle>>;
    /// Stores `bundle` as the user's next version: `Conflict` unless its `key_version` is
    /// the current one + 1 (1 for a first bundle), decided atomically so that of two racing
    /// writers of the same version one wins and the other is told. `created_at` is set here.
    async fn put_keys(&self, user: UserId, bundle: KeyBundle) -> StoreResult<KeyBundle>;
    /// Inserts a version moved from another installation as it was; one already here is
    /// left alone (`false`).
    async fn import_keys(&self, record: &KeyBundleRecord) -> StoreResult<bool>;
}

/// The key versions there can be (the OpenAPI document says `minimum = 1, maximum =
/// 2147483647` wherever one is accepted): what both backends store.
pub const KEY_VERSIONS: std::ops::RangeInclusive<u32> = 1..=i32::MAX as u32;

/// The `Conflict` a stale or skipped version gets, in the same words on both backends.
pub fn version_conflict(current: u32, given: u32) -> super::StoreError {
    super::StoreError::Conflict(format!("key_version must be {} (the current version is {current}); {given} was given", current + 1))
}
