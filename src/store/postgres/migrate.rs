//! Postgres migrations, the app role's grants, and the checks the server makes at start.
//!
//! `edgedesk migrate` (and a server started with EDGEDESK_ADMIN_DATABASE_URL) connects as
//! the owner role, takes a session advisory lock so that instances starting together do
//! not race, applies the missing files of `schema/postgres/` each in its own transaction,
//! and grants the app role exactly what it needs: the log is append-only to it (no UPDATE
//! or DELETE on `sync_actions`), tickets are soft-deleted (no DELETE), and so on.

use tokio_postgres::Client;

use super::error;
use crate::store::{StoreError, StoreResult};

pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

macro_rules! migration {
    ($version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/postgres/", $name, ".sql")),
        }
    };
}

pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_init"),
    migration!(2, "0002_notify"),
    migration!(3, "0003_consumers_notifications"),
    migration!(4, "0004_member_mirrors"),
    migration!(5, "0005_notes"),
    migration!(6, "0006_attachments"),
    migration!(7, "0007_key_bundles"),
    migration!(8, "0008_mail"),
    migration!(9, "0009_outbox"),
    migration!(10, "0010_inbound"),
    migration!(11, "0011_note_presence"),
    migration!(12, "0012_mail_thread"),
];

/// "edgedesk" in ASCII: the advisory lock migrations hold.
const LOCK_KEY: i64 = 0x6564_6765_6465_736b;

/// The tables holding workspace data, under row-level security.
pub const TENANT_TABLES: &[&str] = &[
    "workspace_heads",
    "workspace_info",
    "members",
    "tickets",
    "comments",
    "ticket_links",
    "sync_actions",
    "log_heads",
    "consumer_watermarks",
    "consumer_wakes",
    "notification_tickets",
    "ticket_followers",
    "notifications",
    "notes",
    "note_updates",
    "note_presence",
    "attachments",
    "attachment_versions",
    "storage_quota",
    "quota_reservations",
    "mail_channels",
    "mail_outbox",
    "mail_inbound",
    "mailboxes",
];

/// What the app role may do, table by table.
const GRANTS: &[(&str, &str)] = &[
    ("users", "SELECT, INSERT, UPDATE"),
    ("sessions", "SELECT, INSERT, UPDATE, DELETE"),
    ("api_tokens", "SELECT, INSERT, UPDATE, DELETE"),
    ("workspaces", "SELECT, INSERT, UPDATE"),
    ("memberships", "SELECT, INSERT, UPDATE, DELETE"),
    ("member_mirrors", "SELECT, INSERT, UPDATE, DELETE"),
    ("workspace_heads", "SELECT, INSERT, UPDATE"),
    ("workspace_info", "SELECT, INSERT, UPDATE"),
    ("members", "SELECT, INSERT, UPDATE, DELETE"),
    ("tickets", "SELECT, INSERT, UPDATE"),
    ("comments", "SELECT, INSERT"),
    ("ticket_links", "SELECT, INSERT, DELETE"),
    ("sync_actions", "SELECT, INSERT"),
    ("log_heads", "SELECT, INSERT, UPDATE"),
    ("consumer_watermarks", "SELECT, INSERT, UPDATE"),
    ("consumer_wakes", "SELECT, INSERT, UPDATE, DELETE"),
    ("notification_tickets", "SELECT, INSERT, UPDATE"),
    ("ticket_followers", "SELECT, INSERT, UPDATE, DELETE"),
    ("notifications", "SELECT, INSERT, UPDATE"),
    ("notification_preferences", "SELECT, INSERT, UPDATE, DELETE"),
    ("notes", "SELECT, INSERT, UPDATE"),
    ("note_updates", "SELECT, INSERT, DELETE"),
    ("note_presence", "SELECT, INSERT, UPDATE, DELETE"),
    ("attachments", "SELECT, INSERT, UPDATE"),
    ("attachment_versions", "SELECT, INSERT, DELETE"),
    ("storage_quota", "SELECT, INSERT, UPDATE"),
    ("quota_reservations", "SELECT, INSERT, DELETE"),
    ("key_bundles", "SELECT, INSERT"),
    ("mail_channels", "SELECT, INSERT, UPDATE, DELETE"),
    ("mail_outbox", "SELECT, INSERT, UPDATE"),
    ("mail_inbound", "SELECT, INSERT, UPDATE"),
    ("mailboxes", "SELECT, INSERT, UPDATE, DELETE"),
    ("schema_migrations", "SELECT"),
];

pub async fn connect(url: &str, ca_file: Option<&std::path::Path>) -> StoreResult<Client> {
    let target = super::tls::target(url, ca_file)?;
    let (client, connection) = target
        .config
        .connect(target.tls)
        .await
        .map_err(|e| StoreError::Unavailable(format!("cannot connect to Postgres: {}", super::tls::describe(&e))))?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::warn!(error = %err, "Postgres connection ended");
        }
    });
    Ok(client)
}

/// The user name in a Postgres URL (the app role to grant to).
pub fn role_of(url: &str) -> StoreResult<String> {
    let config = super::tls::config(url)?;
    config.get_user().map(str::to_string).ok_or_else(|| StoreError::Internal("EDGEDESK_DATABASE_URL names no user (the app role)".into()))
}

/// Applies pending migrations as the owner and grants the app role its privileges.
/// Returns how many migrations ran.
pub async fn run(admin_url: &str, app_url: &str, ca_file: Option<&std::path::Path>) -> StoreResult<usize> {
    let app_role = role_of(app_url)?;
    let owner = connect(admin_url, ca_file).await?;
    let owner_role: String = owner.query_one("SELECT current_user::text", &[]).await.map_err(error)?.try_get(0).map_err(error)?;
    if owner_role == app_role {
        return Err(StoreError::Internal(format!(
            "EDGEDESK_DATABASE_URL and EDGEDESK_ADMIN_DATABASE_URL both connect as {app_role:?}: the server must run as a separate role \
             that owns nothing, or row-level security does not bind it"
        )));
    }
    owner.batch_execute("SET client_min_messages = warning").await.map_err(error)?;
    owner.execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY]).await.map_err(error)?;
    let result = apply(&owner, &app_role).await;
    // Released on disconnect as well; explicitly here so a long-lived caller is not blocked.
    let _ = owner.execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY]).await;
    result
}

async fn apply(owner: &Client, app_role: &str) -> StoreResult<usize> {
    owner
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at bigint NOT NULL)",
        )
        .await
        .map_err(error)?;
    let current: i32 =
        owner.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]).await.map_err(error)?.try_get(0).map_err(error)?;
    let latest = MIGRATIONS.last().map_or(0, |m| m.version);
    if current > latest {
        return Err(StoreError::Internal(format!(
            "database schema version {current} is newer than this build knows ({latest}); upgrade edgedesk"
        )));
    }
    let mut applied = 0;
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        let tx = format!(
            "BEGIN; {sql}\nINSERT INTO schema_migrations (version, name, applied_at) VALUES ({v}, '{n}', (extract(epoch from now()) * 1000)::bigint); COMMIT;",
            sql = migration.sql,
            v = migration.version,
            n = migration.name
        );
        if let Err(err) = owner.batch_execute(&tx).await {
            let _ = owner.batch_execute("ROLLBACK").await;
            return Err(StoreError::Internal(format!("migration {} failed: {err}", migration.name)));
        }
        applied += 1;
    }
    let role: String = owner.query_one("SELECT quote_ident($1)", &[&app_role]).await.map_err(error)?.try_get(0).map_err(error)?;
    let mut grants = format!("GRANT USAGE ON SCHEMA public TO {role};\n");
    for (table, privileges) in GRANTS {
        grants.push_str(&format!("REVOKE ALL ON {table} FROM {role}; GRANT {privileges} ON {table} TO {role};\n"));
    }
    owner.batch_execute(&grants).await.map_err(|e| StoreError::Internal(format!("granting {app_role} its privileges failed: {e}")))?;
    Ok(applied)
}

/// Refuses a database this build has not migrated (or that a newer build has).
pub async fn check_current(client: &Client) -> StoreResult<()> {
    let latest = MIGRATIONS.last().map_or(0, |m| m.version);
    let row = client.query_opt("SELECT MAX(version) FROM schema_migrations", &[]).await;
    let current: Option<i32> = match row {
        Ok(Some(row)) => row.try_get(0).map_err(error)?,
        Ok(None) => None,
        Err(err) if err.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => None,
        Err(err) => return Err(error(err)),
    };
    match current {
        Some(v) if v == latest => Ok(()),
        Some(v) if v > latest => {
            Err(StoreError::Internal(format!("the database is at schema version {v}, newer than this build ({latest}); upgrade edgedesk")))
        }
        _ => Err(StoreError::Internal(
            "the database is not migrated: run `edgedesk migrate` with EDGEDESK_ADMIN_DATABASE_URL set to the owner role".into(),
        )),
    }
}

/// Refuses to run as a role that row-level security would not bind: a superuser, a
/// BYPASSRLS role, or the owner of the tenant tables.
pub async fn check_role(client: &Client, allow_privileged: bool) -> StoreResult<()> {
    let tables: Vec<String> = TENANT_TABLES.iter().map(|t| t.to_string()).collect();
    let row = client
        .query_one(
            "SELECT r.rolname, r.rolsuper, r.rolbypassrls,
                    (SELECT count(*) FROM pg_tables t WHERE t.schemaname = 'public' AND t.tableowner = current_user AND t.tablename = ANY($1))
             FROM pg_roles r WHERE r.rolname = current_user",
            &[&tables],
        )
        .await
        .map_err(error)?;
    let (name, superuser, bypass, owned): (String, bool, bool, i64) =
        (row.try_get(0).map_err(error)?, row.try_get(1).map_err(error)?, row.try_get(2).map_err(error)?, row.try_get(3).map_err(error)?);
    let mut problems = Vec::new();
    if superuser {
        problems.push("is a superuser");
    }
    if bypass {
        problems.push("has BYPASSRLS");
    }
    if owned > 0 {
        problems.push("owns the tenant tables");
    }
    if problems.is_empty() {
        return Ok(());
    }
    let message = format!(
        "the app role {name:?} {}: row-level security would not bind it. Connect EDGEDESK_DATABASE_URL as a separate role \
         (CREATE ROLE edgedesk_app LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '…'), keep the owner role for \
         EDGEDESK_ADMIN_DATABASE_URL, and run `edgedesk migrate` to grant the app role its privileges",
        problems.join(" and ")
    );
    if allow_privileged {
        tracing::error!(
            "{message}. STARTING ANYWAY because EDGEDESK_DEV_ALLOW_PRIVILEGED_ROLE is set: tenant isolation is NOT enforced by the database"
        );
        eprintln!(
            "WARNING: {message}. Starting anyway (EDGEDESK_DEV_ALLOW_PRIVILEGED_ROLE): tenant isolation is NOT enforced by the database."
        );
        return Ok(());
    }
    Err(StoreError::Internal(message))
}
