//! The application: shared handles built once, background tasks, and the server's life
//! from bind to graceful shutdown.
//!
//! `App` is a cheap-to-clone `Arc`. Features never see it whole: each takes the slice it
//! needs (`AuthState`, `TenantsState`) through `FromRef`, so a handler's signature says
//! what it can reach.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::FromRef;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::AuthState;
use crate::auth::password::Passwords;
use crate::auth::throttle::{LoginThrottle, ThrottleLimits};
use crate::auth::watch::AccessWatch;
use crate::cache::TtlCache;
use crate::config::Config;
use crate::http::client::TrustedProxies;
use crate::live::{Bus, BusConfig, LiveState};
use crate::notifications::{NotificationsConsumer, NotificationsState};
use crate::store::sqlite::SqliteOptions;
use crate::store::{Role, Store, StoreError, UserId, WorkspaceId};
use crate::sync::SyncState;
use crate::sync::gate::{BootstrapGate, GateLimits};
use crate::sync::runner::{Consumer, Pacing, Runner};
use crate::tenants::TenantsState;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Entries per cache before it sweeps itself (see `cache.rs`).
const CACHE_CAPACITY: u64 = 100_000;

#[derive(Clone)]
pub struct App(Arc<AppInner>);

struct AppInner {
    config: Config,
    store: Store,
    auth: AuthState,
    live: LiveState,
    sync: SyncState,
    notes: Arc<crate::notes::Notes>,
    search: Arc<crate::search::Indexes>,
    attachments: crate::attachments::AttachmentsState,
    mail: crate::mail::MailState,
    /// The mail delivery workers, on instances that run the consumers.
    delivery: Option<Arc<crate::mail::Delivery>>,
    /// The mailbox readers, likewise.
    ingest: Option<Arc<crate::mail::ingest::Ingest>>,
    /// Every log consumer's drain loop (see `sync::runner`).
    runner: Arc<Runner>,
    memberships: Arc<TtlCache<(WorkspaceId, UserId), Option<Role>>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Drop for AppInner {
    /// An application dropped without being stopped (a test that only builds one) still
    /// ends its background tasks.
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl App {
    /// Opens the store, prepares credentials, and prewarms the dummy password hash.
    pub async fn build(config: Config) -> Result<Self, BoxError> {
        Self::build_with(config, ThrottleLimits::default()).await
    }

    pub async fn build_with(config: Config, limits: ThrottleLimits) -> Result<Self, BoxError> {
        crate::crypto::install_tls_provider();
        let master = crate::crypto::load_or_create_master_key(&config.master_key_file)
            .map_err(|e| format!("master key {}: {e}", config.master_key_file.display()))?;
        let store = open_store(&config).await?;
        // Membership mirrors a crash left unwritten (normally none: one indexed read).
        match crate::tenants::finish_pending_mirrors(store.platform.as_ref(), store.tenants.as_ref()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(mirrors = n, "finished membership mirrors left pending by an earlier run"),
            Err(err) => tracing::warn!(error = %err, "cannot read pending membership mirrors; they stay for the next start"),
        }
        let passwords = Passwords::prewarm(config.bcrypt_cost).await.map_err(|e| e.to_string())?;
        let watch = AccessWatch::new(store.access.clone(), config.stream_recheck);
        let auth = AuthState {
            platform: store.platform.clone(),
            passwords: Arc::new(passwords),
            throttle: Arc::new(LoginThrottle::new(limits)),
            session_ttl: config.session_ttl,
            cookie_secure: config.cookie_secure,
            credentials: Arc::new(TtlCache::new(config.auth_cache_ttl, CACHE_CAPACITY)),
            stream_key: Arc::new(crate::crypto::derive_key(&master, "stream-token")?),
            access: store.access.clone(),
            watch: watch.clone(),
        };
        let memberships = Arc::new(TtlCache::new(config.auth_cache_ttl, CACHE_CAPACITY));
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let seal_key = Arc::new(crate::crypto::derive_key(&master, crate::mail::secrets::PURPOSE)?);
        let delivery = config.run_consumers.then(|| {
            crate::mail::Delivery::start(
                store.tenants.clone(),
                store.consumers.clone(),
                seal_key.clone(),
                config.mail,
                config.delivery,
                shutdown.child_token(),
                &tasks,
            )
        });
        let blobs = open_blobs(&config)?;
        // Every instance indexes for itself: the index is this instance's cache of the log.
        let search = crate::search::Indexes::new(
            crate::search::index::Place::new(&config.data_dir, &config.search, config.database_url.is_some()),
            config.search.clone(),
            shutdown.child_token(),
            tasks.clone(),
        );
        let mut durable: Vec<Arc<dyn Consumer>> = vec![Arc::new(crate::search::SearchConsumer::new(search.clone()))];
        durable.extend(match &delivery {
            Some(delivery) => vec![
                Arc::new(NotificationsConsumer::new(store.notification_preferences.clone())) as Arc<dyn Consumer>,
                Arc::new(crate::mail::MailConsumer::new(
                    delivery.clone(),
                    blobs.clone(),
                    store.mailboxes.clone(),
                    store.notification_preferences.clone(),
                    config.delivery.lease,
                )),
            ],
            None => Vec::new(),
        });
        let pacing = Pacing {
            retry: crate::backoff::Backoff { cap: config.consumer_retry_cap, ..crate::sync::runner::RETRY },
            idle: config.consumer_idle,
        };
        let runner = Runner::start(store.tenants.clone(), store.consumers.clone(), durable, pacing, shutdown.child_token(), tasks.clone());
        if let Some(delivery) = &delivery {
            delivery.attach(&runner);
        }
        let bus = Bus::start(
            runner.clone(),
            BusConfig { ring: config.sse_ring, lag: config.sse_lag, heartbeat: config.sse_heartbeat },
            shutdown.child_token(),
        );
        let limits = crate::live::limits::ConnectionLimits::new(config.sse_max_per_user, config.sse_max_connections);
        tasks.spawn(watch.clone().run(shutdown.child_token()));
        let notes = crate::notes::Notes::start(config.notes, runner.clone(), store.tenants.clone(), shutdown.child_token(), tasks.clone());
        tasks.spawn(crate::attachments::sweep_forever(store.clone(), blobs.clone(), shutdown.child_token()));
        let attachments = crate::attachments::AttachmentsState { blobs, upload_limit: config.upload_limit };
        // Mailboxes are read where the background work runs.
        let ingest = config.run_consumers.then(|| {
            let filer = crate::mail::filing::Filer {
                platform: store.platform.clone(),
                uploads: Arc::new(attachments.clone()),
                limits: config.filing,
            };
            crate::mail::ingest::Ingest::start(
                store.tenants.clone(),
                store.mailboxes.clone(),
                filer,
                seal_key.clone(),
                config.mail,
                config.ingest,
                shutdown.child_token(),
                &tasks,
            )
        });
        let mail = crate::mail::MailState { seal_key, config: config.mail };
        let live = LiveState { bus, limits, watch };
        let sync = SyncState {
            bootstraps: BootstrapGate::new(GateLimits {
                per_workspace: config.bootstrap_max_per_workspace,
                per_instance: config.bootstrap_max,
                max_open: config.bootstrap_max_open,
            }),
        };
        Ok(Self(Arc::new(AppInner {
            config,
            store,
            auth,
            live,
            sync,
            notes,
            search,
            attachments,
            mail,
            delivery,
            ingest,
            runner,
            memberships,
            shutdown,
            tasks,
        })))
    }

    pub fn config(&self) -> &Config {
        &self.0.config
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }

    pub fn live(&self) -> &LiveState {
        &self.0.live
    }

    pub fn sync(&self) -> &SyncState {
        &self.0.sync
    }

    pub fn notes(&self) -> &Arc<crate::notes::Notes> {
        &self.0.notes
    }

    pub fn search(&self) -> &Arc<crate::search::Indexes> {
        &self.0.search
    }

    pub fn runner(&self) -> &Arc<Runner> {
        &self.0.runner
    }

    /// The mail delivery workers (`None` on an instance that does not run the consumers).
    pub fn delivery(&self) -> Option<&Arc<crate::mail::Delivery>> {
        self.0.delivery.as_ref()
    }

    /// The mailbox readers (`None` on an instance that does not run the consumers).
    pub fn ingest(&self) -> Option<&Arc<crate::mail::ingest::Ingest>> {
        self.0.ingest.as_ref()
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.0.shutdown.clone()
    }
}

impl FromRef<App> for AuthState {
    fn from_ref(app: &App) -> Self {
        app.0.auth.clone()
    }
}

impl FromRef<App> for SyncState {
    fn from_ref(app: &App) -> Self {
        app.0.sync.clone()
    }
}

impl FromRef<App> for TrustedProxies {
    fn from_ref(app: &App) -> Self {
        app.0.config.trusted_proxies.clone()
    }
}

impl FromRef<App> for LiveState {
    fn from_ref(app: &App) -> Self {
        app.0.live.clone()
    }
}

impl FromRef<App> for crate::attachments::AttachmentsState {
    fn from_ref(app: &App) -> Self {
        app.0.attachments.clone()
    }
}

impl FromRef<App> for crate::mail::MailState {
    fn from_ref(app: &App) -> Self {
        app.0.mail.clone()
    }
}

impl FromRef<App> for crate::notes::NotesState {
    fn from_ref(app: &App) -> Self {
        crate::notes::NotesState { notes: app.0.notes.clone(), watch: app.0.auth.watch.clone() }
    }
}

impl FromRef<App> for crate::search::SearchState {
    fn from_ref(app: &App) -> Self {
        crate::search::SearchState { indexes: app.0.search.clone(), runner: app.0.runner.clone() }
    }
}

impl FromRef<App> for crate::keys::KeysState {
    fn from_ref(app: &App) -> Self {
        crate::keys::KeysState { keys: app.0.store.keys.clone() }
    }
}

impl FromRef<App> for NotificationsState {
    fn from_ref(app: &App) -> Self {
        NotificationsState { preferences: app.0.store.notification_preferences.clone() }
    }
}

impl FromRef<App> for TenantsState {
    fn from_ref(app: &App) -> Self {
        TenantsState { store: app.0.store.clone(), memberships: app.0.memberships.clone(), watch: app.0.auth.watch.clone() }
    }
}

/// Opens the configured attachment storage.
pub fn open_blobs(config: &Config) -> Result<Arc<dyn crate::store::blobs::BlobStore>, BoxError> {
    Ok(match &config.blobs {
        crate::config::BlobSettings::Local => Arc::new(crate::store::blobs::local::LocalBlobs::new(&config.data_dir)),
        crate::config::BlobSettings::S3(settings) => {
            Arc::new(crate::store::blobs::s3::S3Blobs::new(settings).map_err(|e| format!("attachment storage: {e}"))?)
        }
    })
}

/// Opens the configured backend.
pub async fn open_store(config: &Config) -> Result<Store, BoxError> {
    if let Some(url) = &config.database_url {
        let options = crate::store::postgres::PgOptions {
            database_url: url.expose().to_string(),
            admin_database_url: config.admin_database_url.as_ref().map(|u| u.expose().to_string()),
            allow_privileged_role: config.dev_allow_privileged_role,
            ca_file: config.database_ca_file.clone(),
            pool_size: config.database_pool_size,
        };
        return crate::store::postgres::open(&options).await.map_err(|e| format!("Postgres: {e}").into());
    }
    let data_dir = config.data_dir.clone();
    let options = SqliteOptions::new(config.max_open_tenants, config.tenant_idle);
    let store = tokio::task::spawn_blocking(move || crate::store::sqlite::open(&data_dir, options))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e: StoreError| format!("cannot open the data directory: {e}"))?;
    Ok(store)
}

/// A running server: its address and the means to stop it.
pub struct Server {
    pub addr: SocketAddr,
    pub app: App,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Fires shutdown and waits for the server and its background tasks to finish.
    pub async fn stop(self) -> Result<(), BoxError> {
        self.app.0.shutdown.cancel();
        self.handle.await.map_err(|e| e.to_string())??;
        self.app.0.tasks.close();
        self.app.0.tasks.wait().await;
        Ok(())
    }

    /// Waits until the server stops on its own (a signal, or `shutdown_token().cancel()`).
    pub async fn wait(self) -> Result<(), BoxError> {
        self.handle.await.map_err(|e| e.to_string())??;
        self.app.0.tasks.close();
        self.app.0.tasks.wait().await;
        Ok(())
    }
}

/// Binds `config.listen` (port 0 picks a free port) and serves until shutdown is fired.
pub async fn start(app: App) -> Result<Server, BoxError> {
    let listener = TcpListener::bind(app.config().listen).await.map_err(|e| format!("cannot listen on {}: {e}", app.config().listen))?;
    let addr = listener.local_addr()?;
    let router = crate::router::build(app.clone());
    let cancel = app.shutdown_token();
    let write_timeout = app.config().write_timeout;
    let handle = tokio::spawn(async move {
        let listener = crate::http::conn::TimeoutListener::new(listener, write_timeout);
        axum::serve(listener, router.into_make_service_with_connect_info::<crate::http::conn::PeerAddr>())
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await
    });
    Ok(Server { addr, app, handle })
}

/// File descriptors one busy workspace may hold: a pool of up to eight connections, each
/// with the database, its WAL and its shared-memory file open. (A quiet one holds none.)
const FDS_PER_TENANT: u64 = 8 * 3;

/// Raises the soft open-files limit to the hard limit (many workspaces mean many files),
/// and warns when the tenant cap could still exhaust it.
fn raise_open_files_limit(max_open_tenants: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            let needed = max_open_tenants as u64 * FDS_PER_TENANT + 256;
            if limit < needed {
                tracing::warn!(
                    limit,
                    needed,
                    "the open-files limit is low for EDGEDESK_MAX_OPEN_TENANTS; raise `ulimit -n` or lower the cap"
                );
            }
        }
        Err(err) => tracing::warn!(error = %err, "cannot raise the open-files limit"),
    }
}

/// Session cookies go out with `Secure` when `EDGEDESK_COOKIE_SECURE` is set or a trusted
/// proxy says the client used HTTPS. Served on a non-loopback address with neither, they
/// cross the network in clear: say so.
fn warn_about_plain_cookies(config: &Config) {
    if let Some(warning) = plain_cookie_warning(config) {
        tracing::warn!(listen = %config.listen, "{warning}");
    }
}

/// The warning, when `config` would send session cookies in clear to other machines.
pub fn plain_cookie_warning(config: &Config) -> Option<&'static str> {
    (!config.cookie_secure && !config.listen.ip().is_loopback() && config.trusted_proxies.0.is_empty()).then_some(
        "session cookies are served over plain HTTP on a non-loopback address: put the server behind TLS \
         (set EDGEDESK_TRUSTED_PROXIES for the proxy) or set EDGEDESK_COOKIE_SECURE=true",
    )
}

/// `edgedesk serve`: start, say where, and run until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> Result<(), BoxError> {
    raise_open_files_limit(config.max_open_tenants);
    warn_about_plain_cookies(&config);
    let app = App::build(config).await?;
    let server = start(app.clone()).await?;
    let base = format!("http://{}", server.addr);
    match app.config().database_url {
        Some(_) => println!("edgedesk listening on {base} (data in Postgres)"),
        None => println!("edgedesk listening on {base} (data in {})", app.config().data_dir.display()),
    }
    println!("API docs: {base}/api/docs");
    if app.store().platform.user_count().await? == 0 {
        println!("No users yet. Create the first administrator:");
        println!(
            "  curl -X POST {base}/api/setup -H 'content-type: application/json' \\\n    -d '{{\"email\":\"you@example.com\",\"password\":\"a long passphrase\",\"name\":\"Your Name\"}}'"
        );
        println!("  or: edgedesk user create --admin --email you@example.com --name 'Your Name'  (password on stdin)");
    }
    let token = app.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        token.cancel();
    });
    server.wait().await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
