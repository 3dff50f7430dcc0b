//! Open tenant databases: opened lazily, kept in a capped LRU, closed when idle.
//!
//! The cap bounds what 10,000 workspaces cost: at most `max_open_tenants` pools exist;
//! opening one more closes the least recently used. A handle evicted while a request still
//! holds it stays usable until that request drops it (it is an `Arc`); its pool closes then.
//! Opening happens outside the map's lock, so a slow disk delays only its own workspace.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use scheduled_thread_pool::ScheduledThreadPool;

use tokio::sync::broadcast;

use super::executor::Executor;
use super::feed;
use super::hints::LogHints;
use super::pool::SqlitePool;
use super::pool::{self, PoolShape};
use super::tenant::SqliteTenant;
use super::{SqliteOptions, migrate};
use crate::store::{Millis, StoreError, StoreMetrics, StoreResult, TenantStore, TenantStores, UserId, Wakeup, Workspace, WorkspaceId};

/// Connections per tenant pool beyond one per SQLite worker thread: room for bootstrap
/// streams, which run outside the workers. Connections close after a minute idle, so a
/// quiet workspace holds none.
const BOOTSTRAP_CONNECTIONS: u32 = 4;
/// Page cache per tenant connection (KiB): small, because many tenants may be open.
const TENANT_CACHE_KIB: u32 = 1024;

pub struct SqliteTenants {
    data_dir: PathBuf,
    threads: Arc<ScheduledThreadPool>,
    exec: Arc<Executor>,
    options: SqliteOptions,
    /// A std mutex: held only for map operations, never across an await.
    open: Mutex<HashMap<WorkspaceId, Arc<SqliteTenant>>>,
    wakeups: broadcast::Sender<Wakeup>,
    /// platform.db, for the consumers' hints and schedules (see `consumers.rs`).
    pub(super) platform: SqlitePool,
    hints: Arc<LogHints>,
    /// Workspace files opened so far.
    opens: std::sync::atomic::AtomicU64,
    sweeper: std::sync::OnceLock<scheduled_thread_pool::JobHandle>,
    /// Kept alive for its callbacks; `None` if the platform refused a watch.
    _watcher: Option<feed::FileWatch>,
}

impl SqliteTenants {
    pub fn new(
        data_dir: PathBuf,
        threads: Arc<ScheduledThreadPool>,
        exec: Arc<Executor>,
        options: SqliteOptions,
        platform: SqlitePool,
    ) -> Self {
        let (wakeups, _) = broadcast::channel(feed::CAPACITY);
        let watcher = if options.watch_files { feed::watch(&data_dir.join("tenants"), wakeups.clone()) } else { None };
        let hints = Arc::new(LogHints::new(platform.clone()));
        Self {
            data_dir,
            threads,
            exec,
            options,
            open: Mutex::new(HashMap::new()),
            wakeups,
            platform,
            hints,
            opens: Default::default(),
            sweeper: Default::default(),
            _watcher: watcher,
        }
    }

    pub(super) fn exec(&self) -> &Arc<Executor> {
        &self.exec
    }

    /// A handle on an existing workspace, as this backend's own type.
    pub(super) async fn open_tenant(&self, workspace: WorkspaceId) -> StoreResult<Arc<SqliteTenant>> {
        if let Some(tenant) = self.cached(workspace) {
            return Ok(tenant);
        }
        let tenant = self.open_pool(workspace, false).await?;
        Ok(self.insert(tenant))
    }

    fn db_path(&self, workspace: WorkspaceId) -> PathBuf {
        crate::store::workspace_folder(&self.data_dir, workspace).join("tenant.db")
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<WorkspaceId, Arc<SqliteTenant>>> {
        // A panic while holding this lock leaves the map itself consistent: keep serving.
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn cached(&self, workspace: WorkspaceId) -> Option<Arc<SqliteTenant>> {
        let tenant = self.map().get(&workspace).cloned()?;
        tenant.touch();
        Some(tenant)
    }

    /// Inserts a freshly opened tenant (or returns the one a racing request opened first),
    /// evicting the least recently used beyond the cap.
    fn insert(&self, tenant: Arc<SqliteTenant>) -> Arc<SqliteTenant> {
        let mut map = self.map();
        let id = tenant.workspace_id();
        if let Some(existing) = map.get(&id) {
            return existing.clone();
        }
        map.insert(id, tenant.clone());
        while map.len() > self.options.max_open_tenants {
            let oldest = map.iter().filter(|(k, _)| **k != id).min_by_key(|(_, t)| t.last_used()).map(|(k, _)| *k);
            match oldest {
                Some(key) => map.remove(&key),
                None => break,
            };
        }
        tenant
    }

    async fn open_pool(&self, workspace: WorkspaceId, create: bool) -> StoreResult<Arc<SqliteTenant>> {
        self.opens.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.db_path(workspace);
        let threads = self.threads.clone();
        let pool_size = self.exec.threads() as u32 + BOOTSTRAP_CONNECTIONS;
        let pool = self
            .exec
            .run(move || {
                if create && let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| StoreError::Internal(format!("cannot create {}: {e}", dir.display())))?;
                }
                let shape = PoolShape { max_size: pool_size, cache_kib: TENANT_CACHE_KIB, create };
                let pool = pool::open(&path, shape, threads)?;
                let mut conn = pool.get().map_err(|e| StoreError::Unavailable(e.to_string()))?;
                migrate::apply(&mut conn, migrate::TENANT)?;
                drop(conn);
                Ok(pool)
            })
            .await?;
        Ok(Arc::new(SqliteTenant::new(workspace, pool, self.exec.clone(), self.wakeups.clone(), self.hints.clone())))
    }
}

#[async_trait]
impl TenantStores for SqliteTenants {
    fn wakeups(&self) -> broadcast::Receiver<Wakeup> {
        self.wakeups.subscribe()
    }

    async fn create(&self, workspace: &Workspace, actor: UserId) -> StoreResult<Arc<dyn TenantStore>> {
        let tenant = self.open_pool(workspace.id, true).await?;
        tenant.init_workspace(actor, workspace.clone()).await?;
        Ok(self.insert(tenant))
    }

    async fn open(&self, workspace: WorkspaceId) -> StoreResult<Arc<dyn TenantStore>> {
        Ok(self.open_tenant(workspace).await?)
    }

    async fn import(
        &self,
        workspace: &Workspace,
        mut rows: tokio::sync::mpsc::Receiver<crate::store::TenantRow>,
        commit: tokio::sync::oneshot::Receiver<()>,
    ) -> StoreResult<u64> {
        if tokio::fs::try_exists(self.db_path(workspace.id)).await.unwrap_or(true) {
            return Err(StoreError::Conflict(format!("workspace {} already has storage here", workspace.id)));
        }
        let tenant = self.open_pool(workspace.id, true).await?;
        let (ws, pool) = (workspace.clone(), tenant.pool().clone());
        let imported = tokio::task::spawn_blocking(move || {
            let mut conn = pool.get().map_err(|e| StoreError::Unavailable(e.to_string()))?;
            super::transfer::import(&mut conn, &ws, &mut rows, commit)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("import task failed: {e}")))?;
        if imported.is_err() {
            // Nothing was committed; leave no empty file behind to block a retry.
            drop(tenant);
            let _ = tokio::fs::remove_dir_all(crate::store::workspace_folder(&self.data_dir, workspace.id)).await;
        }
        imported
    }
}

impl SqliteTenants {
    /// Releases handles idle for longer than the configured time.
    fn close_idle(&self) {
        let cutoff = Millis::now().0 - self.options.tenant_idle.as_millis() as i64;
        // Only handles nobody else holds: an in-flight request keeps its tenant open.
        self.map().retain(|_, tenant| Arc::strong_count(tenant) > 1 || tenant.last_used() >= cutoff);
    }

    /// Closes idle workspaces a few times per idle period, on the pools' helper threads,
    /// for as long as this store lives.
    pub fn start_idle_sweeper(self: &Arc<Self>) {
        let every = (self.options.tenant_idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let weak = Arc::downgrade(self);
        let job = self.threads.execute_at_fixed_rate(every, every, move || {
            if let Some(tenants) = weak.upgrade() {
                tenants.close_idle();
            }
        });
        let _ = self.sweeper.set(job);
    }
}

impl Drop for SqliteTenants {
    fn drop(&mut self) {
        if let Some(job) = self.sweeper.get() {
            job.cancel();
        }
    }
}

impl StoreMetrics for SqliteTenants {
    fn render(&self) -> String {
        format!(
            "# HELP edgedesk_open_tenants Workspaces whose storage is open in this instance.\n\
             # TYPE edgedesk_open_tenants gauge\n\
             edgedesk_open_tenants {}\n\
             # HELP edgedesk_tenant_opens_total Workspace files opened (each open reads and migrates the file).\n\
             # TYPE edgedesk_tenant_opens_total counter\n\
             edgedesk_tenant_opens_total {}\n",
            self.map().len(),
            self.opens.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}
