//! Workspaces and membership: the `TenantConn` / `PlatformConn` extractors through which
//! handlers reach data, role guards on top of them, and the workspace and member routes.
//!
//! A workspace the caller is not a member of answers 404, exactly like one that does not
//! exist: membership is checked against the platform registry before the workspace's own
//! storage is even opened.

mod extract;
pub mod filter;
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
use crate::store::{
    Member, MemberChange, Millis, PendingMirror, PlatformStore, StoreResult, TenantStore, TenantStores, UserId, Workspace, WorkspaceId,
};

/// Creates a workspace owned by `owner`: its storage with `workspace.created` first, then
/// the registry entry and membership (leaving the owner's mirror pending), then the
/// owner's `member.added`. Storage comes first so that a failure in between leaves an
/// unregistered folder (invisible, removable), never a registered workspace without
/// storage; a failure before the mirror is finished at the next start
/// ([`finish_pending_mirrors`]). Used by the HTTP route and the CLI alike.
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
    let change = platform.create_workspace(&workspace, owner).await?;
    // A membership lookup made before the workspace existed may have cached "no".
    memberships.remove(&(workspace.id, owner));
    mirror(platform, tenant.as_ref(), change.mirror, change.after.as_ref()).await?;
    tracing::info!(workspace = %workspace.id, "workspace created");
    Ok(workspace)
}

/// Adds, changes (`Some(role)`) or removes (`None`) `user`'s membership of `tenant`, then
/// writes its mirror in the workspace. The platform change and its pending mirror commit
/// together; should the mirror fail or the process die before it, the next start writes it.
pub async fn change_member(
    platform: &dyn PlatformStore,
    tenant: &dyn TenantStore,
    user: UserId,
    role: Option<Role>,
    actor: Option<UserId>,
) -> AppResult<MemberChange> {
    let change = platform.set_member(tenant.workspace_id(), user, role, actor).await?;
    mirror(platform, tenant, change.mirror, change.after.as_ref()).await?;
    Ok(change)
}

/// Writes `pending`'s mirror as `member` and forgets it: the one way every path finishes one.
async fn mirror(
    platform: &dyn PlatformStore,
    tenant: &dyn TenantStore,
    pending: PendingMirror,
    member: Option<&Member>,
) -> StoreResult<()> {
    tenant.mirror_member(pending.actor, pending.user, member).await?;
    platform.mirror_done(pending).await
}

/// Writes the mirrors that membership changes left pending (a crash between the platform's
/// commit and the workspace's), each from the membership as it is now. Returns how many.
pub async fn finish_pending_mirrors(platform: &dyn PlatformStore, tenants: &dyn TenantStores) -> StoreResult<usize> {
    let mut done = 0;
    loop {
        let pending = platform.pending_mirrors(256).await?;
        let mut progress = false;
        for p in pending {
            let finished = async {
                let current = platform.member(p.workspace, p.user).await?;
                let tenant = tenants.open(p.workspace).await?;
                mirror(platform, tenant.as_ref(), p, current.as_ref()).await
            };
            match finished.await {
                Ok(()) => {
                    done += 1;
                    progress = true;
                }
                // Left pending for the next start; the others go on.
                Err(err) => tracing::warn!(workspace = %p.workspace, user = %p.user, error = %err, "cannot finish a membership's mirror"),
            }
        }
        if !progress {
            return Ok(done);
        }
    }
}
