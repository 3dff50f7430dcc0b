//! Typed access to data: `PlatformConn` (platform data, visible in a handler's signature)
//! and `TenantConn` (one workspace, the caller's role known), with `TenantStaff` and
//! `TenantAdmin` narrowing by role.
//!
//! What a handler can reach is what its extractors give it: `TenantConn` opens one
//! workspace's storage and reads or changes only that workspace's memberships (no handle
//! on the platform store); `PlatformConn` holds the platform store and reaches workspace
//! storage only through the operations below (a new workspace, the caller's own
//! workspaces). A handler that needs both takes both.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, RawPathParams};
use axum::http::request::Parts;

use super::TenantsState;
use crate::auth::watch::AccessWatch;
use crate::auth::{AuthState, AuthUser};
use crate::error::{AppError, AppResult};
use crate::store::{Audience, Member, MemberChange, PlatformStore, Role, TenantStore, UserId, Workspace, WorkspaceId};

/// Platform data for an authenticated caller.
pub struct PlatformConn {
    pub caller: AuthUser,
    pub platform: Arc<dyn PlatformStore>,
    tenants: Arc<dyn crate::store::TenantStores>,
    memberships: Arc<crate::cache::TtlCache<(WorkspaceId, UserId), Option<Role>>>,
}

impl PlatformConn {
    /// Creates a workspace owned by the caller (see `tenants::create_workspace`).
    pub async fn create_workspace(&self, name: &str) -> AppResult<Workspace> {
        super::create_workspace(self.platform.as_ref(), self.tenants.as_ref(), &self.memberships, self.caller.user.id, name).await
    }

    /// The caller's workspaces, each with the caller's role and its storage.
    pub async fn my_workspaces(&self) -> AppResult<Vec<(Workspace, Role, Arc<dyn TenantStore>)>> {
        let mut out = Vec::new();
        for (ws, role) in self.platform.workspaces_of(self.caller.user.id).await? {
            let tenant = self.tenants.open(ws.id).await?;
            out.push((ws, role, tenant));
        }
        Ok(out)
    }
}

impl<S> FromRequestParts<S> for PlatformConn
where
    AuthState: FromRef<S>,
    TenantsState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = AuthUser::from_request_parts(parts, state).await?;
        let TenantsState { store, memberships, .. } = TenantsState::from_ref(state);
        Ok(Self { caller, platform: store.platform, tenants: store.tenants, memberships })
    }
}

/// One workspace's data, for a caller who is a member of it. Queries through `store`
/// can only reach this workspace.
#[derive(Clone)]
pub struct TenantConn {
    pub caller: AuthUser,
    memberships: Arc<crate::cache::TtlCache<(WorkspaceId, UserId), Option<Role>>>,
    watch: Arc<AccessWatch>,
    pub workspace: WorkspaceId,
    pub role: Role,
    pub store: Arc<dyn TenantStore>,
    /// Reached only through the methods below, each scoped to this workspace.
    platform: Arc<dyn PlatformStore>,
}

impl TenantConn {
    pub fn user(&self) -> UserId {
        self.caller.user.id
    }

    /// This workspace's registry entry.
    pub async fn workspace_info(&self) -> AppResult<Workspace> {
        self.platform.workspace(self.workspace).await?.ok_or(AppError::NotFound)
    }

    /// This workspace's members.
    pub async fn members(&self) -> AppResult<Vec<Member>> {
        Ok(self.platform.list_members(self.workspace).await?)
    }

    /// `user`'s role in this workspace, if a member.
    pub async fn role_of(&self, user: UserId) -> AppResult<Option<Role>> {
        Ok(self.platform.member_role(self.workspace, user).await?)
    }

    /// Adds, changes or (`None`) removes `user`'s membership here, by the caller, with its
    /// mirror in the log; caches and open streams follow at once.
    pub async fn set_member(&self, user: UserId, role: Option<Role>) -> AppResult<MemberChange> {
        let change = super::change_member(self.platform.as_ref(), self.store.as_ref(), user, role, Some(self.user())).await;
        self.memberships.remove(&(self.workspace, user));
        self.watch.changed();
        change
    }

    /// What this caller may see: everything for staff, their own tickets for requesters.
    pub fn audience(&self) -> Audience {
        Audience::for_role(self.caller.user.id, self.role)
    }
}

impl<S> FromRequestParts<S> for TenantConn
where
    AuthState: FromRef<S>,
    TenantsState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(conn) = parts.extensions.get::<TenantConn>() {
            return Ok(conn.clone());
        }
        let caller = AuthUser::from_request_parts(parts, state).await?;
        let raw = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| AppError::internal("TenantConn used on a route without path parameters"))?;
        let ws_text = raw
            .iter()
            .find_map(|(name, value)| (name == "ws").then_some(value))
            .ok_or_else(|| AppError::internal("TenantConn used on a route without {ws}"))?;
        let workspace: WorkspaceId = ws_text.parse().map_err(|_| AppError::BadRequest("malformed workspace id".into()))?;
        let TenantsState { store, memberships, watch } = TenantsState::from_ref(state);
        let key = (workspace, caller.user.id);
        let role = match memberships.get(&key) {
            Some(role) => role,
            None => {
                let role = store.platform.member_role(workspace, caller.user.id).await?;
                memberships.insert(key, role);
                role
            }
        };
        let role = role.ok_or(AppError::NotFound)?;
        let tenant = store.tenants.open(workspace).await?;
        let conn = TenantConn { caller, memberships, watch, workspace, role, store: tenant, platform: store.platform };
        parts.extensions.insert(conn.clone());
        Ok(conn)
    }
}

/// A role requirement on top of `TenantConn`: what a guard admits and what it says otherwise.
pub trait RoleRule {
    fn admits(role: Role) -> bool;
    const REFUSAL: &'static str;
}

/// A `TenantConn` whose caller's role satisfies `R`; anyone else gets 403 (they are a
/// member, so the workspace's existence is no secret to them).
pub struct Guarded<R: RoleRule>(pub TenantConn, pub std::marker::PhantomData<R>);

impl<S, R> FromRequestParts<S> for Guarded<R>
where
    AuthState: FromRef<S>,
    TenantsState: FromRef<S>,
    S: Send + Sync,
    R: RoleRule,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let conn = TenantConn::from_request_parts(parts, state).await?;
        if !R::admits(conn.role) {
            return Err(AppError::Forbidden(R::REFUSAL.into()));
        }
        Ok(Self(conn, std::marker::PhantomData))
    }
}

pub enum StaffRule {}
impl RoleRule for StaffRule {
    fn admits(role: Role) -> bool {
        role.is_staff()
    }
    const REFUSAL: &'static str = "agents and administrators only";
}

pub enum AdminRule {}
impl RoleRule for AdminRule {
    fn admits(role: Role) -> bool {
        role.is_admin()
    }
    const REFUSAL: &'static str = "workspace administrators only";
}

/// Owners, admins and agents.
pub type TenantStaff = Guarded<StaffRule>;
/// Owners and admins.
pub type TenantAdmin = Guarded<AdminRule>;
