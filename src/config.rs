//! Typed settings, read from the environment and an optional TOML file.
//!
//! Keys are the same in both places (`EDGEDESK_DATA_DIR = "./data"` in the file, or the
//! variable); the environment wins over the file, and the file over the defaults. Secrets
//! (database URLs) are wrapped in [`Secret`] so that `Debug` output and logs never show them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A string that must not appear in logs: `Debug` prints a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Where attachment bytes are kept.
#[derive(Debug, Clone)]
pub enum BlobSettings {
    /// `<data dir>/tenants/<ws>/blobs/`.
    Local,
    S3(crate::store::blobs::s3::S3Settings),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Where platform.db and tenants/<id>/ live (SQLite mode) and the master key by default.
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Unset: one SQLite file per workspace. `postgres://…`: Postgres mode, as the app role.
    pub database_url: Option<Secret>,
    /// The Postgres owner role, used by `edgedesk migrate`.
    pub admin_database_url: Option<Secret>,
    /// The CA certificate(s), PEM, that `sslmode=verify-ca|verify-full` checks the Postgres
    /// server against when the URL gives no `sslrootcert`.
    pub database_ca_file: Option<PathBuf>,
    /// 32 random bytes, created with mode 0600 on first start when missing.
    pub master_key_file: PathBuf,
    /// How many tenant databases may be open at once; the least recently used closes first.
    pub max_open_tenants: usize,
    /// A tenant database unused for this long is closed by the background sweeper.
    pub tenant_idle: Duration,
    /// The largest request body accepted, in bytes (413 beyond it).
    pub body_limit: usize,
    pub session_ttl: Duration,
    /// Whether the session cookie carries `Secure` (set it when served over HTTPS).
    pub cookie_secure: bool,
    /// Proxies whose `X-Forwarded-For`/`Forwarded` and `X-Forwarded-Proto` are believed
    /// (`EDGEDESK_TRUSTED_PROXIES`, comma-separated CIDRs; none by default).
    pub trusted_proxies: crate::http::client::TrustedProxies,
    /// `text` (default) or `json` log lines.
    pub log_format: LogFormat,
    /// bcrypt work factor for new password hashes (4–31, default 12).
    pub bcrypt_cost: u32,
    /// Postgres mode: connections in the app role's pool.
    pub database_pool_size: usize,
    /// Development only: let the server run as a Postgres role that row-level security does
    /// not bind (superuser, BYPASSRLS, table owner). Logged loudly at every start.
    pub dev_allow_privileged_role: bool,
    /// Live streams: a `: ping` comment to every stream this often, so proxies and clients
    /// know an idle stream is alive.
    pub sse_heartbeat: Duration,
    /// Live streams: events kept per workspace for replay after a reconnect.
    pub sse_ring: usize,
    /// Live streams: events a subscriber may fall behind before it is closed (it reconnects
    /// and catches up from the log).
    pub sse_lag: usize,
    /// A response write that makes no progress for this long ends its connection: a client
    /// that stopped reading, a live stream's included.
    pub write_timeout: Duration,
    /// Live streams open at once per user, and per instance (429 beyond).
    pub sse_max_per_user: usize,
    pub sse_max_connections: usize,
    /// Snapshots (`sync/bootstrap`) open at once per workspace (429 beyond) and per
    /// instance (503 beyond), and the longest one may stay open, read or not.
    pub bootstrap_max_per_workspace: usize,
    pub bootstrap_max: usize,
    pub bootstrap_max_open: Duration,
    /// How long an instance may reuse "this token is this user" and "this user has this
    /// role here" without asking the store. Changes made through this instance apply at
    /// once; this bounds how long a revocation made elsewhere (another instance, the CLI)
    /// can lag. Zero disables the caches.
    pub auth_cache_ttl: Duration,
    /// How often open streams' access is checked again (`auth::watch`): the bound on how
    /// long a change made on another instance takes to close them.
    pub stream_recheck: Duration,
    /// Where attachment bytes go: files beside each workspace, or one S3-compatible bucket.
    pub blobs: BlobSettings,
    /// The largest upload, in bytes (separate from `body_limit`, which bounds JSON).
    pub upload_limit: u64,
    /// How mail servers are reached (see `mail::MailConfig`).
    pub mail: crate::mail::MailConfig,
    /// How outgoing mail is retried, expired and held back (see `mail::DeliveryConfig`).
    pub delivery: crate::mail::DeliveryConfig,
    /// How mailboxes are read (see `mail::ingest::IngestConfig`).
    pub ingest: crate::mail::ingest::IngestConfig,
    /// What an incoming message may bring (see `mail::filing::FilingLimits`).
    pub filing: crate::mail::filing::FilingLimits,
    /// Collaborative notes (see `notes::NotesConfig` for what each bounds).
    pub notes: crate::notes::NotesConfig,
    /// Search indexes: where (Postgres mode) and how many open (see `search::SearchConfig`).
    pub search: crate::search::SearchConfig,
    /// Whether this instance runs the durable log consumers (notifications, and later mail,
    /// search, webhooks). Off, it serves requests and live streams only, and leaves that
    /// work to the instances that have it on (several may: they never double an effect).
    pub run_consumers: bool,
    /// Log consumers: the longest pause between retries of a failing page (the pauses grow
    /// from 50 ms, with full jitter). An event that failed 8 times stops its consumer in
    /// that workspace.
    pub consumer_retry_cap: Duration,
    /// Log consumers: how long a caught-up (consumer, workspace) stays ready before it
    /// retires; a workspace quiet for this long is forgotten until it moves.
    pub consumer_idle: Duration,
    /// Runtime workers (default: one per core the process may use).
    pub worker_threads: usize,
    /// Whether each runtime worker is bound to one core (see `runtime`).
    pub pin_workers: crate::runtime::Pinning,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("setting {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// Where settings come from: the file's table, then the environment on top.
struct Sources {
    file: HashMap<String, String>,
    env: HashMap<String, String>,
}

impl Sources {
    fn get(&self, key: &str) -> Option<&str> {
        self.env.get(key).or_else(|| self.file.get(key)).map(String::as_str).filter(|v| !v.is_empty())
    }

    fn parse<T: std::str::FromStr>(&self, key: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|e: T::Err| ConfigError::Invalid { key, message: e.to_string() }),
        }
    }
}

impl Config {
    /// Reads the process environment and, when given, a TOML file.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::from_sources(file, std::env::vars().collect())
    }

    /// Defaults only, rooted at `data_dir`: what tests start servers with.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        let mut config = Self::from_sources(None, HashMap::new()).unwrap_or_else(|_| unreachable!("defaults parse"));
        config.data_dir = data_dir.into();
        config.master_key_file = config.data_dir.join("master.key");
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config
    }

    fn from_sources(file: Option<&Path>, env: HashMap<String, String>) -> Result<Self, ConfigError> {
        let file = match file {
            Some(path) => read_toml(path)?,
            None => HashMap::new(),
        };
        let src = Sources { file, env };
        let data_dir: PathBuf = src.parse("EDGEDESK_DATA_DIR", PathBuf::from("./data"))?;
        let master_key_file = src.get("EDGEDESK_MASTER_KEY_FILE").map(PathBuf::from).unwrap_or_else(|| data_dir.join("master.key"));
        let log_format = match src.get("EDGEDESK_LOG_FORMAT").unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::Invalid { key: "EDGEDESK_LOG_FORMAT", message: format!("{other:?} is not text or json") });
            }
        };
        let max_open_tenants: usize = src.parse("EDGEDESK_MAX_OPEN_TENANTS", 256)?;
        if max_open_tenants == 0 {
            return Err(ConfigError::Invalid { key: "EDGEDESK_MAX_OPEN_TENANTS", message: "must be at least 1".into() });
        }
        let blobs = match src.get("EDGEDESK_BLOB_STORE").unwrap_or("local") {
            "local" => BlobSettings::Local,
            "s3" => {
                let need = |key: &'static str| {
                    src.get(key)
                        .map(str::to_string)
                        .ok_or(ConfigError::Invalid { key, message: "required with EDGEDESK_BLOB_STORE=s3".into() })
                };
                BlobSettings::S3(crate::store::blobs::s3::S3Settings {
                    bucket: need("EDGEDESK_S3_BUCKET")?,
                    endpoint: src.get("EDGEDESK_S3_ENDPOINT").map(str::to_string),
                    region: src.get("EDGEDESK_S3_REGION").unwrap_or("us-east-1").to_string(),
                    access_key_id: need("EDGEDESK_S3_ACCESS_KEY_ID")?,
                    secret_access_key: need("EDGEDESK_S3_SECRET_ACCESS_KEY")?,
                    prefix: src.get("EDGEDESK_S3_PREFIX").unwrap_or("edgedesk").to_string(),
                })
            }
            other => return Err(ConfigError::Invalid { key: "EDGEDESK_BLOB_STORE", message: format!("{other:?} is not local or s3") }),
        };
        let bcrypt_cost: u32 = src.parse("EDGEDESK_BCRYPT_COST", 12)?;
        if !(4..=31).contains(&bcrypt_cost) {
            return Err(ConfigError::Invalid { key: "EDGEDESK_BCRYPT_COST", message: "must be from 4 to 31".into() });
        }
        Ok(Self {
            data_dir,
            listen: src.parse("EDGEDESK_LISTEN", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            database_url: src.get("EDGEDESK_DATABASE_URL").map(Secret::new),
            admin_database_url: src.get("EDGEDESK_ADMIN_DATABASE_URL").map(Secret::new),
            database_ca_file: src.get("EDGEDESK_DATABASE_CA_FILE").map(PathBuf::from),
            master_key_file,
            max_open_tenants,
            tenant_idle: Duration::from_secs(src.parse("EDGEDESK_TENANT_IDLE_SECS", 300)?),
            body_limit: src.parse("EDGEDESK_BODY_LIMIT", 1024 * 1024)?,
            session_ttl: Duration::from_secs(3600 * src.parse::<u64>("EDGEDESK_SESSION_TTL_HOURS", 24 * 30)?),
            cookie_secure: src.parse("EDGEDESK_COOKIE_SECURE", false)?,
            trusted_proxies: crate::http::client::TrustedProxies::parse(src.get("EDGEDESK_TRUSTED_PROXIES").unwrap_or(""))
                .map_err(|message| ConfigError::Invalid { key: "EDGEDESK_TRUSTED_PROXIES", message })?,
            log_format,
            bcrypt_cost,
            auth_cache_ttl: Duration::from_secs(src.parse("EDGEDESK_AUTH_CACHE_SECS", 5)?),
            stream_recheck: Duration::from_millis(src.parse::<u64>("EDGEDESK_STREAM_RECHECK_MS", 2_000)?.max(10)),
            database_pool_size: src.parse("EDGEDESK_DATABASE_POOL_SIZE", 16)?,
            sse_heartbeat: Duration::from_secs(src.parse("EDGEDESK_SSE_HEARTBEAT_SECS", 15)?.max(1)),
            sse_ring: src.parse::<usize>("EDGEDESK_SSE_RING", 1024)?.max(1),
            sse_lag: src.parse::<usize>("EDGEDESK_SSE_LAG", 256)?.max(1),
            sse_max_per_user: src.parse("EDGEDESK_SSE_MAX_PER_USER", 16)?,
            write_timeout: Duration::from_secs(src.parse::<u64>("EDGEDESK_WRITE_TIMEOUT_SECS", 30)?.max(1)),
            sse_max_connections: src.parse("EDGEDESK_SSE_MAX_CONNECTIONS", 20_000)?,
            bootstrap_max_per_workspace: src.parse::<usize>("EDGEDESK_BOOTSTRAP_MAX_PER_WORKSPACE", 2)?.max(1),
            bootstrap_max: src.parse::<usize>("EDGEDESK_BOOTSTRAP_MAX", 32)?.max(1),
            bootstrap_max_open: Duration::from_secs(src.parse::<u64>("EDGEDESK_BOOTSTRAP_MAX_SECS", 120)?.max(1)),
            dev_allow_privileged_role: src.parse("EDGEDESK_DEV_ALLOW_PRIVILEGED_ROLE", false)?,
            blobs,
            upload_limit: src.parse::<u64>("EDGEDESK_UPLOAD_LIMIT_BYTES", 25 * 1000 * 1000)?.max(1),
            mail: crate::mail::MailConfig {
                reach: if src.parse("EDGEDESK_MAIL_ALLOW_PRIVATE_HOSTS", false)? {
                    crate::http::outbound::Reach::Any
                } else {
                    crate::http::outbound::Reach::Public
                },
                timeout: Duration::from_secs(src.parse::<u64>("EDGEDESK_MAIL_TIMEOUT_SECS", 30)?.max(1)),
            },
            delivery: crate::mail::DeliveryConfig {
                backoff: crate::backoff::Backoff::new(
                    Duration::from_millis(src.parse::<u64>("EDGEDESK_MAIL_RETRY_BASE_MS", 30_000)?.max(1)),
                    Duration::from_millis(src.parse::<u64>("EDGEDESK_MAIL_RETRY_CAP_MS", 3_600_000)?.max(1)),
                ),
                expiry: Duration::from_secs(src.parse::<u64>("EDGEDESK_MAIL_EXPIRY_SECS", 4 * 24 * 3600)?),
                lease: Duration::from_millis(src.parse::<u64>("EDGEDESK_MAIL_LEASE_MS", 300_000)?.max(100)),
                workers: src.parse::<usize>("EDGEDESK_MAIL_WORKERS", 2)?.max(1),
                batch: 20,
                breaker: crate::mail::breaker::BreakerConfig {
                    window: Duration::from_millis(src.parse::<u64>("EDGEDESK_MAIL_BREAKER_WINDOW_MS", 60_000)?.max(1)),
                    min_tries: src.parse::<usize>("EDGEDESK_MAIL_BREAKER_MIN_TRIES", 5)?.max(1),
                    failure_rate: f64::from(src.parse::<u8>("EDGEDESK_MAIL_BREAKER_FAILURE_PERCENT", 50)?.clamp(1, 100)) / 100.0,
                    open_for: Duration::from_millis(src.parse::<u64>("EDGEDESK_MAIL_BREAKER_OPEN_MS", 60_000)?.max(1)),
                },
            },
            ingest: crate::mail::ingest::IngestConfig {
                scan: Duration::from_millis(src.parse::<u64>("EDGEDESK_MAIL_IMAP_SCAN_MS", 10_000)?.max(10)),
                lease: Duration::from_millis(src.parse::<u64>("EDGEDESK_MAIL_IMAP_LEASE_MS", 60_000)?.max(100)),
                idle: Duration::from_secs(src.parse::<u64>("EDGEDESK_MAIL_IMAP_IDLE_SECS", 20 * 60)?.clamp(1, 29 * 60)),
                poll: Duration::from_secs(src.parse::<u64>("EDGEDESK_MAIL_IMAP_POLL_SECS", 60)?.max(1)),
                reconnect: crate::backoff::Backoff::new(
                    Duration::from_millis(src.parse::<u64>("EDGEDESK_MAIL_IMAP_RECONNECT_BASE_MS", 1_000)?.max(1)),
                    Duration::from_millis(src.parse::<u64>("EDGEDESK_MAIL_IMAP_RECONNECT_CAP_MS", 300_000)?.max(1)),
                ),
            },
            filing: crate::mail::filing::FilingLimits {
                max_message_bytes: src.parse::<u64>("EDGEDESK_MAIL_MAX_MESSAGE_BYTES", 30 * 1024 * 1024)?.max(1024),
                max_attachments: src.parse::<usize>("EDGEDESK_MAIL_MAX_ATTACHMENTS", 20)?,
                per_sender_hourly: src.parse::<u64>("EDGEDESK_MAIL_PER_SENDER_HOURLY", 30)?.max(1),
            },
            notes: crate::notes::NotesConfig {
                max_frame: src.parse::<usize>("EDGEDESK_NOTE_MAX_FRAME_BYTES", 2 * 1024 * 1024)?.max(1024),
                updates_per_sec: src.parse::<u32>("EDGEDESK_NOTE_UPDATES_PER_SEC", 300)?.max(1),
                burst: src.parse::<u32>("EDGEDESK_NOTE_BURST", 1_000)?.max(1),
                per_document: src.parse::<usize>("EDGEDESK_NOTE_MAX_PER_DOCUMENT", 200)?.max(1),
                per_user: src.parse::<usize>("EDGEDESK_NOTE_MAX_PER_USER", 32)?.max(1),
                max_connections: src.parse::<usize>("EDGEDESK_NOTE_MAX_CONNECTIONS", 20_000)?.max(1),
                idle: Duration::from_millis(src.parse::<u64>("EDGEDESK_NOTE_IDLE_MS", 30_000)?),
                text_delay: Duration::from_millis(src.parse::<u64>("EDGEDESK_NOTE_TEXT_DELAY_MS", 1_000)?),
                compact_after: src.parse::<u64>("EDGEDESK_NOTE_COMPACT_AFTER", 500)?.max(1),
                compact_every: Duration::from_millis(src.parse::<u64>("EDGEDESK_NOTE_COMPACT_EVERY_MS", 30_000)?.max(10)),
                ..crate::notes::NotesConfig::default()
            },
            search: crate::search::SearchConfig {
                dir: src.get("EDGEDESK_SEARCH_DIR").map(PathBuf::from),
                open_cap: src.parse::<usize>("EDGEDESK_SEARCH_OPEN_INDEXES", 128)?.max(1),
                writers: src.parse::<usize>("EDGEDESK_SEARCH_WRITERS", 4)?.max(1),
                writer_bytes: src.parse::<usize>("EDGEDESK_SEARCH_WRITER_MB", 32)?.clamp(15, 4_000) * 1024 * 1024,
                commit_every: Duration::from_millis(src.parse::<u64>("EDGEDESK_SEARCH_COMMIT_MS", 500)?.max(10)),
                writer_idle: Duration::from_millis(src.parse::<u64>("EDGEDESK_SEARCH_WRITER_IDLE_MS", 5_000)?.max(10)),
            },
            run_consumers: src.parse("EDGEDESK_RUN_CONSUMERS", true)?,
            consumer_idle: Duration::from_millis(src.parse::<u64>("EDGEDESK_CONSUMER_IDLE_MS", 10_000)?.max(1)),
            consumer_retry_cap: Duration::from_millis(src.parse::<u64>("EDGEDESK_CONSUMER_RETRY_CAP_MS", 30_000)?.max(1)),
            worker_threads: src.parse("EDGEDESK_WORKER_THREADS", crate::runtime::default_workers())?.max(1),
            pin_workers: src.parse("EDGEDESK_PIN_WORKERS", crate::runtime::Pinning::Auto)?,
        })
    }
}

fn read_toml(path: &Path) -> Result<HashMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    let table: toml::Table =
        text.parse().map_err(|e: toml::de::Error| ConfigError::Parse { path: path.to_owned(), message: e.message().to_string() })?;
    Ok(table
        .into_iter()
        .map(|(key, value)| {
            let value = match value {
                toml::Value::String(s) => s,
                other => other.to_string(),
            };
            (key, value)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_wins_over_file_and_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edgedesk.toml");
        std::fs::write(&path, "EDGEDESK_DATA_DIR = \"/srv/desk\"\nEDGEDESK_MAX_OPEN_TENANTS = 12\n").unwrap();
        let env = HashMap::from([("EDGEDESK_MAX_OPEN_TENANTS".to_string(), "7".to_string())]);
        let config = Config::from_sources(Some(&path), env).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/srv/desk"));
        assert_eq!(config.master_key_file, PathBuf::from("/srv/desk/master.key"));
        assert_eq!(config.max_open_tenants, 7);
        assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
    }

    #[test]
    fn bad_values_name_their_key() {
        let env = HashMap::from([("EDGEDESK_LISTEN".to_string(), "nowhere".to_string())]);
        let err = Config::from_sources(None, env).unwrap_err();
        assert!(err.to_string().contains("EDGEDESK_LISTEN"), "{err}");
        let env = HashMap::from([("EDGEDESK_PIN_WORKERS".to_string(), "always".to_string())]);
        let err = Config::from_sources(None, env).unwrap_err();
        assert!(err.to_string().contains("EDGEDESK_PIN_WORKERS") && err.to_string().contains("auto, on or off"), "{err}");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let env = HashMap::from([("EDGEDESK_DATABASE_URL".to_string(), "postgres://app:hunter2@db/desk".to_string())]);
        let config = Config::from_sources(None, env).unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
