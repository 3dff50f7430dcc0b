//! Moving a workspace between installations and backends: `edgedesk tenant export|import`.
//!
//! The file is NDJSON: a header naming the workspace, its members' user accounts (with
//! their password hashes, so people can still log in after the move: treat the file as a
//! secret), their memberships, then every row of the workspace's storage and its whole log
//! as [`TenantRow`]s. Import refuses a workspace that already exists, creates the users it
//! lacks (keeping their ids), writes the storage in one transaction, and registers the
//! workspace last, as creation does: a failed import leaves nothing registered.
//!
//! Imported users never become platform administrators here, whatever the file says: a
//! platform's administrators are its own decision (the import says whose rights it dropped).
//! Files are read and written through tokio's I/O, so the file work runs on blocking
//! threads, never on the async workers.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::store::{Millis, Role, Store, StoreError, StoreResult, TenantRow, User, UserId, Workspace, WorkspaceId};

pub const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Meta {
    Export { format: u32, workspace: Workspace },
    User { user: User, password_hash: String },
    Membership { user_id: UserId, role: Role, joined_at: Millis },
}

async fn write_line(out: &mut (dyn AsyncWrite + Unpin + Send), value: &impl Serialize) -> StoreResult<()> {
    let mut line = serde_json::to_vec(value).map_err(StoreError::internal)?;
    line.push(b'\n');
    out.write_all(&line).await.map_err(StoreError::internal)
}

/// What an import brought in.
#[derive(Debug)]
pub struct Imported {
    pub workspace: Workspace,
    /// Users created here (the rest were here already).
    pub users_created: usize,
    /// Emails of imported users the file called platform administrators: here they are not.
    pub admin_rights_dropped: Vec<String>,
}

/// Writes `workspace` to `out`. Returns the number of lines written.
pub async fn export_workspace(store: &Store, workspace: WorkspaceId, out: &mut (dyn AsyncWrite + Unpin + Send)) -> StoreResult<u64> {
    let ws = store.platform.workspace(workspace).await?.ok_or(StoreError::NotFound)?;
    write_line(out, &Meta::Export { format: FORMAT, workspace: ws }).await?;
    let mut lines = 1;
    let members = store.platform.list_members(workspace).await?;
    for member in &members {
        let (user, password_hash) = store.platform.user_secret(member.user_id).await?.ok_or(StoreError::NotFound)?;
        write_line(out, &Meta::User { user, password_hash }).await?;
        write_line(out, &Meta::Membership { user_id: member.user_id, role: member.role, joined_at: member.joined_at }).await?;
        lines += 2;
    }
    let tenant = store.tenants.open(workspace).await?;
    let (tx, mut rx) = mpsc::channel(256);
    let producer = tokio::spawn(async move { tenant.export(tx).await });
    while let Some(row) = rx.recv().await {
        write_line(out, &row).await?;
        lines += 1;
    }
    producer.await.map_err(StoreError::internal)??;
    out.flush().await.map_err(StoreError::internal)?;
    Ok(lines)
}

/// Reads an export from `input` into this installation. Returns the workspace.
pub async fn import_workspace(store: &Store, input: &mut (dyn AsyncBufRead + Unpin + Send)) -> StoreResult<Imported> {
    let mut lines = input.lines();
    async fn next(lines: &mut tokio::io::Lines<&mut (dyn AsyncBufRead + Unpin + Send)>) -> StoreResult<Option<serde_json::Value>> {
        match lines.next_line().await.map_err(StoreError::internal)? {
            None => Ok(None),
            Some(line) => {
                serde_json::from_str(&line).map(Some).map_err(|e| StoreError::invalid("file", format!("not an edgedesk export line: {e}")))
            }
        }
    }
    let workspace = match next(&mut lines).await?.map(serde_json::from_value::<Meta>) {
        Some(Ok(Meta::Export { format: FORMAT, workspace })) => workspace,
        Some(Ok(Meta::Export { format, .. })) => {
            return Err(StoreError::invalid("file", format!("export format {format} is not supported")));
        }
        _ => return Err(StoreError::invalid("file", "this is not an edgedesk workspace export")),
    };
    if store.platform.workspace(workspace.id).await?.is_some() {
        return Err(StoreError::Conflict(format!("workspace {} already exists here", workspace.id)));
    }
    let mut memberships = Vec::new();
    let (tx, rx) = mpsc::channel(256);
    let tenants = store.tenants.clone();
    let target = workspace.clone();
    let writer = tokio::spawn(async move { tenants.import(&target, rx).await });
    let mut sent = Ok(());
    let (mut users_created, mut admin_rights_dropped) = (0, Vec::new());
    while let Some(value) = next(&mut lines).await? {
        match value.get("type").and_then(|t| t.as_str()) {
            Some("user") | Some("membership") => match serde_json::from_value::<Meta>(value).map_err(StoreError::internal)? {
                Meta::User { mut user, password_hash } => {
                    let was_admin = std::mem::replace(&mut user.is_admin, false);
                    if store.platform.import_user(&user, &password_hash).await? {
                        users_created += 1;
                        if was_admin {
                            admin_rights_dropped.push(user.email.clone());
                        }
                    }
                }
                Meta::Membership { user_id, role, .. } => memberships.push((user_id, role)),
                Meta::Export { .. } => return Err(StoreError::invalid("file", "a second export header")),
            },
            _ => {
                let row: TenantRow = serde_json::from_value(value).map_err(|e| StoreError::invalid("file", format!("bad row: {e}")))?;
                if tx.send(row).await.is_err() {
                    // The writer stopped early; its error says why.
                    sent = Err(());
                    break;
                }
            }
        }
    }
    drop(tx);
    let imported = writer.await.map_err(StoreError::internal)?;
    imported?;
    if sent.is_err() {
        return Err(StoreError::internal("the import stopped before the end of the file"));
    }
    let owner = memberships
        .iter()
        .find(|(_, role)| *role == Role::Owner)
        .map(|(user, _)| *user)
        .ok_or_else(|| StoreError::invalid("file", "the export names no owner"))?;
    // The workspace's copy of its memberships came with the file: finishing each mirror
    // records nothing unless the platform here knows a member by another name or email.
    let change = store.platform.create_workspace(&workspace, owner).await?;
    let tenant = store.tenants.open(workspace.id).await?;
    super::mirror(store.platform.as_ref(), tenant.as_ref(), change.mirror, change.after.as_ref()).await?;
    for (user, role) in memberships.into_iter().filter(|(user, _)| *user != owner) {
        super::change_member(store.platform.as_ref(), tenant.as_ref(), user, Some(role), Some(owner))
            .await
            .map_err(StoreError::internal)?;
    }
    Ok(Imported { workspace, users_created, admin_rights_dropped })
}
