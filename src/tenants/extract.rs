//! Typed access to data: `PlatformConn` (cross-tenant, visible in a handler's signature)
//! and `TenantConn` (one workspace, the caller's role known), with `TenantStaff` and
//! `TenantAdmin` narrowing by role.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, RawPathParams};
use axum::http::request::Parts;

use super::TenantsState;
use crate::auth::watch::AccessWatch;
use crate::auth::{AuthState, AuthUser};
use crate::error::AppError;
use crate::store::{Audience, PlatformStore, Role, TenantStore, UserId, WorkspaceId};

/// Platform (cross-tenant) data for an authenticated caller.
pub struct PlatformConn {
    pub caller: AuthUser,
    pub platform: Arc<dyn PlatformStore>,
    pub tenants: Arc<dyn crate::store::TenantStores>,
    pub memberships: Arc<crate::cache::TtlCache<(WorkspaceId, UserId), Option<Role>>>,
    pub watch: Arc<AccessWatch>,
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
        let TenantsState { store, memberships, watch } = TenantsState::from_ref(state);
        Ok(Self { caller, platform: store.platform, tenants: store.tenants, memberships, watch })
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
    pub platform: Arc<dyn PlatformStore>,
}

impl TenantConn {
    pub fn user(&self) -> UserId {
        self.caller.user.id
    }

    /// Drops the cached role of `user` here, after changing it.
    pub fn forget_membership(&self, user: UserId) {
        self.memberships.remove(&(self.workspace, user));
        self.watch.changed();
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
