//! Connection pools for SQLite files: the pragmas every connection gets, and pool shape.
//!
//! WAL with `synchronous=NORMAL` (a commit is durable once it reaches the WAL; a power cut
//! can lose the last transactions but never corrupts), foreign keys on, a busy timeout so
//! concurrent writers queue instead of failing. Tenant pools share one scheduled thread
//! pool and start with no connections (`min_idle(0)`), so an open pool costs almost nothing
//! until used and 10,000 workspaces never mean 30,000 helper threads.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::OpenFlags;
use scheduled_thread_pool::ScheduledThreadPool;

use crate::store::{StoreError, StoreResult};

pub type SqlitePool = Pool<SqliteConnectionManager>;

#[derive(Debug, Clone, Copy)]
pub struct PoolShape {
    pub max_size: u32,
    /// Page cache per connection, in KiB.
    pub cache_kib: u32,
    pub create: bool,
}

/// How long a job waits for a connection before the request answers 503.
pub const WAIT: Duration = Duration::from_secs(2);

pub fn open(path: &Path, shape: PoolShape, threads: Arc<ScheduledThreadPool>) -> StoreResult<SqlitePool> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    if shape.create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    } else if !path.exists() {
        return Err(StoreError::Internal(format!("database file {} is missing", path.display())));
    }
    let cache_kib = shape.cache_kib;
    let manager = SqliteConnectionManager::file(path).with_flags(flags).with_init(move |conn| {
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;
             PRAGMA temp_store = MEMORY;
             PRAGMA cache_size = -{cache_kib};"
        ))
    });
    Pool::builder()
        .max_size(shape.max_size)
        .min_idle(Some(0))
        .idle_timeout(Some(Duration::from_secs(60)))
        .connection_timeout(WAIT)
        .thread_pool(threads)
        .build(manager)
        .map_err(|e| StoreError::Unavailable(e.to_string()))
}
