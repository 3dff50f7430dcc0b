//! The Postgres backend: one database, every workspace's rows side by side under
//! FORCE ROW LEVEL SECURITY, for installs that run several instances.
//!
//! Every tenant call is one transaction that first scopes itself with
//! `set_config('app.workspace_id', …, true)` (SET LOCAL), so the policies admit only that
//! workspace's rows and a pooled connection never carries the setting to its next user.
//! Writers of a workspace serialize on its `workspace_heads` row, which hands out sync ids
//! in commit order. Platform tables are reached only through `PlatformStore`. A dedicated
//! connection LISTENs for the log's empty notifications (`feed.rs`).

mod access;
mod attachments;
mod consumers;
mod feed;
mod keys;
mod log;
mod mail;
mod mailboxes;
pub mod migrate;
mod notes;
mod notifications;
mod platform;
mod preferences;
mod tenant;
pub mod tls;
mod transfer;
mod types;

use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;

use crate::store::{Store, StoreError, StoreResult};

#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connects as the app role.
    pub database_url: String,
    /// Connects as the owner role; when set, migrations run at start.
    pub admin_database_url: Option<String>,
    /// Development only: start even if the app role could bypass row-level security.
    pub allow_privileged_role: bool,
    pub pool_size: usize,
    /// The CA for `sslmode=verify-ca|verify-full` when the URL names none (see `tls`).
    pub ca_file: Option<std::path::PathBuf>,
}

/// Connects, migrates first when the owner's URL is given, and refuses to run on an
/// unmigrated database or as a role that row-level security would not bind.
pub async fn open(options: &PgOptions) -> StoreResult<Store> {
    let ca = options.ca_file.as_deref();
    if let Some(admin) = &options.admin_database_url {
        migrate::run(admin, &options.database_url, ca).await?;
    }
    let target = tls::target(&options.database_url, ca)?;
    // Platform work (authentication above all) has connections of its own: tenant work,
    // however much of it waits, cannot take them.
    let platform_pool = pool(&target, (options.pool_size / 4).clamp(2, 8))?;
    let pool = pool(&target, options.pool_size)?;
    let client = pool.get().await.map_err(pool_error)?;
    migrate::check_current(&client).await?;
    migrate::check_role(&client, options.allow_privileged_role).await?;
    drop(client);
    let (wakeups, _) = tokio::sync::broadcast::channel(feed::CAPACITY);
    let listener = tokio::spawn(feed::listen(target, wakeups.clone()));
    let platform = Arc::new(platform::PgPlatform::new(platform_pool));
    let tenants = Arc::new(tenant::PgTenants::new(pool, wakeups, listener));
    Ok(Store {
        platform: platform.clone(),
        access: platform.clone(),
        tenants: tenants.clone(),
        consumers: tenants.clone(),
        mailboxes: tenants.clone(),
        notification_preferences: platform.clone(),
        keys: platform,
        metrics: tenants,
    })
}

/// How long a request waits for a pooled connection (or for a new one to open) before it
/// answers 503.
pub const POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

pub fn pool(target: &tls::PgTarget, size: usize) -> StoreResult<Pool> {
    let manager =
        Manager::from_config(target.config.clone(), target.tls.clone(), ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(POOL_WAIT * 2))
        .recycle_timeout(Some(POOL_WAIT * 2))
        .build()
        .map_err(|e| StoreError::Internal(format!("cannot build the Postgres pool: {e}")))
}

/// Maps Postgres errors onto the store's: unique violations to conflicts, lost
/// connections to "unavailable", everything else internal.
pub(crate) fn error(err: tokio_postgres::Error) -> StoreError {
    // `Display` says only "db error"; the server's own message is what a log reader needs.
    let detail = match err.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => err.to_string(),
    };
    match err.code() {
        Some(code) if *code == SqlState::UNIQUE_VIOLATION => StoreError::Conflict("already exists".into()),
        Some(code) if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED => {
            StoreError::Unavailable(detail)
        }
        Some(_) => StoreError::Internal(detail),
        None if err.is_closed() => StoreError::Unavailable(detail),
        None => StoreError::Internal(detail),
    }
}

pub(crate) fn pool_error(err: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Unavailable(format!("no Postgres connection: {}", tls::describe(&err)))
}
