//! Typed access to data: `PlatformConn` (cross-tenant, visible in a handler's signature)
//! and `TenantConn` (one workspace, the caller's role known), with `TenantStaff` and
//! `TenantAdmin` narrowing by role.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, RawPathParams};
use axum::http::request::Parts;

use super::TenantsState;
use crate::auth::{AuthState, AuthUser};
use crate::error::AppError;
use crate::store::{Audience, PlatformStore, Role, TenantStore, UserId, WorkspaceId};

/// Platform (cross-tenant) data for an authenticated caller.
pub struct PlatformConn {
    pub caller: AuthUser,
    pub platform: Arc<dyn PlatformStore>,
    pub tenants: Arc<dyn crate::store::TenantStores>,
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
        let store = TenantsState::from_ref(state).store;
        Ok(Self { caller, platform: store.platform, tenants: store.tenants })
    }
}

/// One workspace's data, for a caller who is a member of it. Queries through `store`
/// can only reach this workspace.
#[derive(Clone)]
pub struct TenantConn {
    pub caller: AuthUser,
    pub workspace: WorkspaceId,
    pub role: Role,
    pub store: Arc<dyn TenantStore>,
    pub platform: Arc<dyn PlatformStore>,
}

impl TenantConn {
    pub fn user(&self) -> UserId {
        self.caller.user.id
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
        let store = TenantsState::from_ref(state).store;
        let role = store.platform.member_role(workspace, caller.user.id).await?.ok_or(AppError::NotFound)?;
        let tenant = store.tenants.open(workspace).await?;
        let conn = TenantConn { caller, workspace, role, store: tenant, platform: store.platform };
        parts.extensions.insert(conn.clone());
        Ok(conn)
    }
}

/// A `TenantConn` whose caller is staff (owner, admin or agent).
pub struct TenantStaff(pub TenantConn);

impl<S> FromRequestParts<S> for TenantStaff
where
    AuthState: FromRef<S>,
    TenantsState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let conn = TenantConn::from_request_parts(parts, state).await?;
        if !conn.role.is_staff() {
            return Err(AppError::Forbidden("agents and administrators only".into()));
        }
        Ok(Self(conn))
    }
}

/// A `TenantConn` whose caller is an owner or admin of the workspace.
pub struct TenantAdmin(pub TenantConn);

impl<S> FromRequestParts<S> for TenantAdmin
where
    AuthState: FromRef<S>,
    TenantsState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let conn = TenantConn::from_request_parts(parts, state).await?;
        if !conn.role.is_admin() {
            return Err(AppError::Forbidden("workspace administrators only".into()));
        }
        Ok(Self(conn))
    }
}
