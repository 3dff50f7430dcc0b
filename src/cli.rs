//! The command line: `serve`, `migrate`, `tenant …`, `user …`, `attachments …`, `search rebuild`.
//!
//! Commands other than `serve` work on the same data directory directly, so they can run
//! while a server is up (SQLite serialises the writers).

use std::io::BufRead;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::app::{self, BoxError};
use crate::auth::password::Passwords;
use crate::config::Config;
use crate::store::{NewUser, Store};

#[derive(Debug, Parser)]
#[command(name = "edgedesk", version, about = "A self-hosted help desk server")]
pub struct Cli {
    /// A TOML file with settings (same keys as the environment, e.g. EDGEDESK_DATA_DIR).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (default 127.0.0.1:8080, data in ./data).
    Serve,
    /// Apply pending schema migrations to the platform and every workspace.
    Migrate,
    /// Manage workspaces.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Attachment storage upkeep.
    #[command(subcommand)]
    Attachments(AttachmentsCommand),
    /// Search index upkeep.
    #[command(subcommand)]
    Search(SearchCommand),
    /// Print the API's OpenAPI document (JSON), as served at /api/openapi.json.
    Openapi,
}

#[derive(Debug, Subcommand)]
pub enum SearchCommand {
    /// Build a workspace's search index anew from its log, beside the one in use, and put it
    /// in its place (a running server switches to it). In Postgres mode this rebuilds the
    /// indexes of the machine it runs on (`EDGEDESK_SEARCH_DIR`).
    Rebuild {
        /// The workspace to rebuild.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        workspace: Option<String>,
        /// Every workspace.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AttachmentsCommand {
    /// Recompute each workspace's storage usage from its versions' rows, and compare it with
    /// the objects the store holds for them.
    Recount {
        /// One workspace (all of them when absent).
        workspace: Option<String>,
    },
    /// Remove objects that have no row (left by a crash between an upload's object and its
    /// row), older than an hour unless told otherwise.
    Sweep {
        /// One workspace (all of them when absent).
        workspace: Option<String>,
        /// Only objects at least this old. An upload in flight has its object before its
        /// row, so 0 is safe only while no server is running.
        #[arg(long, default_value_t = (crate::attachments::ORPHAN_GRACE_MS / 1000) as u64)]
        min_age_secs: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a workspace owned by an existing user.
    Create {
        name: String,
        /// The owner's email.
        #[arg(long)]
        owner: String,
    },
    /// List every workspace.
    List,
    /// Write a workspace (content, log, attachments with their bytes, members and their
    /// accounts and key bundles) to a file, to move it to another installation, backend or
    /// blob store. The file holds password hashes: keep it secret.
    Export { workspace: String, file: PathBuf },
    /// Create a workspace from an export file (into the backend this config points at).
    Import { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; the password is read from stdin (first line) or EDGEDESK_PASSWORD.
    Create(CreateUser),
    /// Replace a user's password (read like `create`); ends all their sessions.
    SetPassword {
        #[arg(long)]
        email: String,
    },
}

#[derive(Debug, Args)]
pub struct CreateUser {
    #[arg(long)]
    pub email: String,
    #[arg(long)]
    pub name: String,
    /// Make the user a platform administrator.
    #[arg(long)]
    pub admin: bool,
}

/// Runs `cli`'s command with `config` (loaded by the caller, which built the runtime from it).
pub async fn run(cli: Cli, config: Config) -> Result<(), BoxError> {
    match cli.command {
        Command::Serve => app::serve(config).await,
        Command::Migrate => migrate(&config).await,
        Command::Tenant(cmd) => tenant(&config, cmd).await,
        Command::User(cmd) => user(&config, cmd).await,
        Command::Attachments(cmd) => attachments(&config, cmd).await,
        Command::Search(cmd) => search(&config, cmd).await,
        Command::Openapi => {
            let (_, _, openapi) = crate::router::api();
            use std::io::Write;
            writeln!(std::io::stdout().lock(), "{}", openapi.to_pretty_json()?)?;
            Ok(())
        }
    }
}

/// Draws `done` of `total` on one line of a terminal, or says it every tenth when stderr is
/// not one.
struct Progress {
    label: String,
    tty: bool,
    shown: i64,
}

impl Progress {
    fn new(label: String) -> Self {
        use std::io::IsTerminal;
        Self { label, tty: std::io::stderr().is_terminal(), shown: -1 }
    }

    fn show(&mut self, done: i64, total: i64) {
        let total = total.max(done).max(1);
        let percent = done * 100 / total;
        if self.tty {
            let filled = (percent / 4) as usize;
            eprint!("\r{} [{}{}] {percent:>3}% {done}/{total} events", self.label, "#".repeat(filled), ".".repeat(25 - filled.min(25)));
        } else if percent / 10 != self.shown / 10 {
            eprintln!("{}: {percent}% ({done}/{total} events)", self.label);
        }
        self.shown = percent;
    }

    fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

async fn search(config: &Config, cmd: SearchCommand) -> Result<(), BoxError> {
    let SearchCommand::Rebuild { workspace, all } = cmd;
    let store = app::open_store(config).await?;
    let workspaces = match (workspace, all) {
        (Some(w), _) => vec![w.parse().map_err(|_| format!("{w:?} is not a workspace id"))?],
        (None, _) => store.platform.list_workspaces().await?.into_iter().map(|w| w.id).collect(),
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();
    let place = crate::search::index::Place::new(&config.data_dir, &config.search, config.database_url.is_some());
    let indexes = crate::search::Indexes::new(place, config.search.clone(), shutdown.clone(), tasks.clone());
    let count = workspaces.len();
    for (i, id) in workspaces.into_iter().enumerate() {
        let tenant = store.tenants.open(id).await?;
        let mut progress = Progress::new(format!("[{}/{count}] {id}", i + 1));
        let rebuilt = crate::search::indexer::rebuild(&indexes, &tenant, |done, total| progress.show(done, total)).await;
        progress.finish();
        let rebuilt = rebuilt.map_err(|e| format!("{id}: {e}"))?;
        println!("{id}\t{} ticket(s) from {} event(s), through sync_id {}", rebuilt.documents, rebuilt.events, rebuilt.through);
    }
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    Ok(())
}

async fn attachments(config: &Config, cmd: AttachmentsCommand) -> Result<(), BoxError> {
    let store = app::open_store(config).await?;
    let blobs = app::open_blobs(config)?;
    let one = |workspace: Option<String>| -> Result<Option<crate::store::WorkspaceId>, BoxError> {
        workspace.map(|w| w.parse().map_err(|_| format!("{w:?} is not a workspace id").into())).transpose()
    };
    let (which, sweep) = match cmd {
        AttachmentsCommand::Recount { workspace } => (one(workspace)?, None),
        AttachmentsCommand::Sweep { workspace, min_age_secs } => {
            (one(workspace)?, Some(min_age_secs.saturating_mul(1000).min(i64::MAX as u64) as i64))
        }
    };
    let workspaces = match which {
        Some(id) => vec![id],
        None => store.platform.list_workspaces().await?.into_iter().map(|w| w.id).collect(),
    };
    let mut mismatched = 0;
    for id in workspaces {
        let tenant = store.tenants.open(id).await?;
        if let Some(grace_ms) = sweep {
            let swept = crate::attachments::sweep_orphans(&tenant, &blobs, grace_ms).await?;
            println!("{id}	{swept} orphaned object(s) removed");
            continue;
        }
        let used = tenant.attachments().recount().await?;
        let known: std::collections::HashSet<_> = tenant.attachments().known_versions().await?.into_iter().collect();
        let stored: u64 = blobs
            .list(id)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|o| known.contains(&(o.key.attachment, o.key.version)))
            .map(|o| o.size)
            .sum();
        println!("{id}	used {used} bytes	objects with rows {stored} bytes");
        if stored != used {
            mismatched += 1;
            eprintln!("{id}: the rows count {used} bytes but their objects hold {stored}: some objects are missing or changed");
        }
    }
    if mismatched > 0 {
        return Err(format!("{mismatched} workspace(s) whose objects do not match their rows").into());
    }
    Ok(())
}

async fn migrate(config: &Config) -> Result<(), BoxError> {
    if let Some(app_url) = &config.database_url {
        let admin = config.admin_database_url.as_ref().ok_or(
            "EDGEDESK_ADMIN_DATABASE_URL must name the owner role (migrations run as the owner, and grant the app role of EDGEDESK_DATABASE_URL)",
        )?;
        let applied = crate::store::postgres::migrate::run(admin.expose(), app_url.expose(), config.database_ca_file.as_deref()).await?;
        println!("applied {applied} migration(s); the app role has its grants");
        return Ok(());
    }
    let data_dir = config.data_dir.clone();
    let visited = tokio::task::spawn_blocking(move || crate::store::sqlite::migrate_all(&data_dir)).await??;
    println!("migrated platform.db and {visited} workspace database(s)");
    Ok(())
}

async fn tenant(config: &Config, cmd: TenantCommand) -> Result<(), BoxError> {
    let store = app::open_store(config).await?;
    match cmd {
        TenantCommand::Create { name, owner } => {
            let (user, _) = store.platform.user_by_email(&owner).await?.ok_or_else(|| format!("no user with email {owner}"))?;
            // A fresh process has nothing cached: a disabled cache is the honest argument.
            let no_cache = crate::cache::TtlCache::new(std::time::Duration::ZERO, 0);
            let ws = crate::tenants::create_workspace(store.platform.as_ref(), store.tenants.as_ref(), &no_cache, user.id, &name)
                .await
                .map_err(|e| e.to_string())?;
            println!("{}\t{}", ws.id, ws.name);
        }
        TenantCommand::List => {
            for ws in store.platform.list_workspaces().await? {
                println!("{}\t{}\t{}", ws.id, ws.created_at.to_rfc3339(), ws.name);
            }
        }
        TenantCommand::Export { workspace, file } => {
            let id: crate::store::WorkspaceId = workspace.parse().map_err(|_| format!("{workspace:?} is not a workspace id"))?;
            let mut out = tokio::io::BufWriter::new(tokio::fs::File::create(&file).await?);
            let lines = crate::tenants::transfer::export_workspace(&store, app::open_blobs(config)?.as_ref(), id, &mut out)
                .await
                .map_err(|e| e.to_string())?;
            out.into_inner().sync_all().await?;
            println!("wrote {lines} lines to {}", file.display());
        }
        TenantCommand::Import { file } => {
            let mut input = tokio::io::BufReader::new(tokio::fs::File::open(&file).await?);
            let imported = crate::tenants::transfer::import_workspace(&store, &app::open_blobs(config)?, &mut input)
                .await
                .map_err(|e| e.to_string())?;
            println!("{}\t{}", imported.workspace.id, imported.workspace.name);
            eprintln!("{} user(s) created", imported.users_created);
            for email in &imported.admin_rights_dropped {
                eprintln!("{email}: a platform administrator where the export was made, an ordinary user here");
            }
        }
    }
    Ok(())
}

fn read_password() -> Result<String, BoxError> {
    if let Ok(password) = std::env::var("EDGEDESK_PASSWORD") {
        return Ok(password);
    }
    eprintln!("password (one line on stdin):");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

async fn hash_password(config: &Config, password: String) -> Result<String, BoxError> {
    Passwords::validate("password", &password).map_err(|e| format!("{}: {}", e.field, e.message))?;
    crate::auth::password::hash_with_cost(password, config.bcrypt_cost).await.map_err(|e| e.to_string().into())
}

async fn user(config: &Config, cmd: UserCommand) -> Result<(), BoxError> {
    let store: Store = app::open_store(config).await?;
    match cmd {
        UserCommand::Create(args) => {
            let password_hash = hash_password(config, read_password()?).await?;
            let user =
                store.platform.create_user(NewUser { email: args.email, name: args.name, password_hash, is_admin: args.admin }).await?;
            println!("{}\t{}{}", user.id, user.email, if user.is_admin { "\t(administrator)" } else { "" });
        }
        UserCommand::SetPassword { email } => {
            let (user, _) = store.platform.user_by_email(&email).await?.ok_or_else(|| format!("no user with email {email}"))?;
            let password_hash = hash_password(config, read_password()?).await?;
            store.platform.set_password(user.id, password_hash).await?;
            println!("password changed for {}; their sessions have ended", user.email);
        }
    }
    Ok(())
}
