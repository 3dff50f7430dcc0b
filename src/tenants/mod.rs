//! Workspaces and membership: the `TenantConn` / `PlatformConn` extractors through which
//! handlers reach data, role guards on top of them, and the workspace and member routes.
//!
//! A workspace the caller is not a member of answers 404, exactly like one that does not
//! exist: membership is checked against the platform registry before the workspace's own
//! storage is even opened.

mod extract;
mod routes;
pub mod transfer;

pub use extract::{AdminRule, Guarded, PlatformConn, RoleRule, StaffRule, TenantAdmin, TenantConn, TenantStaff};
pub use routes::routes;

use std::sync::Arc;

use crate::cache::TtlCache;
use crate::store::{Role, Store};

/// What the tenant extractors and workspace routes need from the application.
#[derive(Clone)]
pub struct TenantsState {
    pub store: Store,
    /// (workspace, user) → role, `None` for "not a member"; dropped here on every change.
    pub memberships: Arc<TtlCache<(WorkspaceId, UserId), Option<Role>>>,
    /// Told of every membership change made here, so open streams follow it at once.
    pub watch: Arc<crate::auth::watch::AccessWatch>,
}

use crate::error::AppResult;
use crate::store::{Millis, PlatformStore, TenantStores, UserId, Workspace, WorkspaceId};

/// Creates a workspace owned by `owner`: its storage with `workspace.created` first, then
/// the registry entry and membership, then the owner's `member.added`. Storage comes first
/// so that a failure in between leaves an unregistered folder (invisible, removable), never
/// a registered workspace without storage. Used by the HTTP route and the CLI alike.
pub async fn create_workspace(
    platform: &dyn PlatformStore,
    tenants: &dyn TenantStores,
    memberships: &TtlCache<(WorkspaceId, UserId), Option<Role>>,
    owner: UserId,
    name: &str,
) -> AppResult<Workspace> {
    let name = crate::auth::validate_name("name", name, 200)?;
    let workspace = Workspace { id: WorkspaceId::new(), name, created_at: Millis::now() };
    let tenant = tenants.create(&workspace, owner).await?;
    let member = platform.create_workspace(&workspace, owner).await?;
    // A membership lookup made before the workspace existed may have cached "no".
    memberships.remove(&(workspace.id, owner));
    tenant.record_member(owner, &member, true).await?;
    tracing::info!(workspace = %workspace.id, "workspace created");
    Ok(workspace)
}
