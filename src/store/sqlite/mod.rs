//! The SQLite backend: `data/platform.db` plus one `data/tenants/<id>/tenant.db` per workspace.
//!
//! Every call runs on the SQLite worker threads (`executor.rs`), never on an async worker.
//! Writes take the write lock up front (`BEGIN IMMEDIATE`), so there is one writer per
//! file and the log's ids are handed out in commit order. Tenant pools are opened lazily
//! and kept in a capped LRU (see `tenants.rs`).

mod access;
mod attachments;
mod consumers;
mod executor;
mod feed;
mod hints;
mod keys;
mod log;
mod mail;
mod mailboxes;
mod migrate;
mod notes;
mod notifications;
mod platform;
mod pool;
mod preferences;
mod schedules;
mod tenant;
mod tenants;
mod transfer;
mod types;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};
use scheduled_thread_pool::ScheduledThreadPool;

use crate::store::{Store, StoreError, StoreResult};
use pool::{PoolShape, SqlitePool};

#[derive(Debug, Clone, Copy)]
pub struct SqliteOptions {
    pub max_open_tenants: usize,
    pub tenant_idle: Duration,
    /// Watch `tenants/` for commits made by other processes (the CLI). Always on in the
    /// server; tests turn it off to see the in-process signal alone.
    pub watch_files: bool,
}

impl SqliteOptions {
    pub fn new(max_open_tenants: usize, tenant_idle: Duration) -> Self {
        Self { max_open_tenants, tenant_idle, watch_files: true }
    }
}

/// Threads for platform work (see `open`).
const PLATFORM_THREADS: usize = 2;

/// Opens (creating when missing) the data directory's platform database and migrates it.
/// Tenant databases are opened on first use.
pub fn open(data_dir: &Path, options: SqliteOptions) -> StoreResult<Store> {
    std::fs::create_dir_all(data_dir.join("tenants"))
        .map_err(|e| StoreError::Internal(format!("cannot create {}: {e}", data_dir.display())))?;
    // Two helper threads serve every pool's reaper; r2d2 would start three per pool otherwise.
    let threads = Arc::new(ScheduledThreadPool::builder().num_threads(2).thread_name_pattern("sqlite-pool-{}").build());
    let platform_pool =
        pool::open(&data_dir.join("platform.db"), PoolShape { max_size: 16, cache_kib: 8 * 1024, create: true }, threads.clone())?;
    {
        let mut conn = platform_pool.get().map_err(|e| StoreError::Unavailable(e.to_string()))?;
        migrate::apply(&mut conn, migrate::PLATFORM)?;
    }
    let exec = Arc::new(executor::Executor::new("sqlite", executor::Executor::default_threads()));
    // Platform work (authentication above all) has threads of its own, so that no amount
    // of tenant work queued or waiting on the shared ones can keep a caller from being
    // recognised.
    let platform_exec = Arc::new(executor::Executor::new("sqlite-platform", PLATFORM_THREADS));
    let platform = Arc::new(platform::SqlitePlatform::new(platform_pool.clone(), platform_exec));
    let tenants = Arc::new(tenants::SqliteTenants::new(data_dir.to_owned(), threads, exec, options, platform_pool));
    tenants.start_idle_sweeper();
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

/// Applies pending migrations to the platform database and every tenant database found
/// under the data directory (what `edgedesk migrate` does in SQLite mode). Returns the
/// number of tenant databases visited.
pub fn migrate_all(data_dir: &Path) -> StoreResult<usize> {
    let mut platform = Connection::open(data_dir.join("platform.db")).map_err(error)?;
    migrate::apply(&mut platform, migrate::PLATFORM)?;
    let mut visited = 0;
    let tenants = data_dir.join("tenants");
    let entries = match std::fs::read_dir(&tenants) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StoreError::internal(e)),
    };
    for entry in entries {
        let path = entry.map_err(StoreError::internal)?.path().join("tenant.db");
        if path.exists() {
            let mut conn = Connection::open(&path).map_err(error)?;
            migrate::apply(&mut conn, migrate::TENANT)?;
            visited += 1;
        }
    }
    Ok(visited)
}

/// Maps SQLite's errors onto the store's: constraint violations to conflicts, lock
/// timeouts to "unavailable", everything else internal.
pub(crate) fn error(err: rusqlite::Error) -> StoreError {
    match &err {
        rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
        rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::ConstraintViolation => match failure.extended_code {
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                    StoreError::Conflict("already exists".into())
                }
                _ => StoreError::Internal(err.to_string()),
            },
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreError::Unavailable(err.to_string()),
            _ => StoreError::Internal(err.to_string()),
        },
        _ => StoreError::Internal(err.to_string()),
    }
}

/// Runs `f` with a pooled connection on the SQLite workers.
async fn blocking<T, F>(exec: &executor::Executor, pool: &SqlitePool, f: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
{
    let pool = pool.clone();
    exec.run(move || {
        let mut conn = pool.get().map_err(|e| StoreError::Unavailable(e.to_string()))?;
        f(&mut conn)
    })
    .await
}
