//! Workspace routes: create and list (platform level), one workspace, and its members.

use axum::extract::FromRef;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Guarded, PlatformConn, TenantAdmin, TenantConn, TenantStaff, TenantsState};
use crate::auth::AuthState;
use crate::error::{AppError, AppResult, Problem};
use crate::http::extract::ApiJson;
use crate::store::{Member, Millis, Role, UserId, Workspace, WorkspaceId};

pub fn routes<S>() -> OpenApiRouter<S>
where
    AuthState: FromRef<S>,
    TenantsState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    OpenApiRouter::new()
        .routes(routes!(list_workspaces, create_workspace))
        .routes(routes!(get_workspace))
        .routes(routes!(list_members, add_member))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkspaceView {
    pub id: WorkspaceId,
    pub name: String,
    pub created_at: Millis,
    /// The caller's role in this workspace.
    pub role: Role,
}

impl WorkspaceView {
    fn new(ws: Workspace, role: Role) -> Self {
        Self { id: ws.id, name: ws.name, created_at: ws.created_at, role }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWorkspace {
    pub name: String,
}

/// Creates a workspace with the caller as its owner (platform administrators only).
#[utoipa::path(post, path = "/api/workspaces", tag = "workspaces", request_body = NewWorkspace,
    responses((status = 201, body = WorkspaceView), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn create_workspace(conn: PlatformConn, ApiJson(body): ApiJson<NewWorkspace>) -> AppResult<(StatusCode, axum::Json<WorkspaceView>)> {
    if !conn.caller.user.is_admin {
        return Err(AppError::Forbidden("only platform administrators create workspaces".into()));
    }
    let workspace =
        super::create_workspace(conn.platform.as_ref(), conn.tenants.as_ref(), &conn.memberships, conn.caller.user.id, &body.name).await?;
    Ok((StatusCode::CREATED, axum::Json(WorkspaceView::new(workspace, Role::Owner))))
}

/// The workspaces the caller belongs to.
#[utoipa::path(get, path = "/api/workspaces", tag = "workspaces", responses((status = 200, body = Vec<WorkspaceView>), (status = 401, body = Problem)))]
async fn list_workspaces(conn: PlatformConn) -> AppResult<axum::Json<Vec<WorkspaceView>>> {
    let mine = conn.platform.workspaces_of(conn.caller.user.id).await?;
    Ok(axum::Json(mine.into_iter().map(|(ws, role)| WorkspaceView::new(ws, role)).collect()))
}

/// One workspace the caller belongs to.
#[utoipa::path(get, path = "/api/workspaces/{ws}", tag = "workspaces", params(("ws" = uuid::Uuid, Path, description = "Workspace id")),
    responses((status = 200, body = WorkspaceView), (status = 400, body = Problem), (status = 404, body = Problem)))]
async fn get_workspace(conn: TenantConn) -> AppResult<axum::Json<WorkspaceView>> {
    let ws = conn.platform.workspace(conn.workspace).await?.ok_or(AppError::NotFound)?;
    Ok(axum::Json(WorkspaceView::new(ws, conn.role)))
}

/// The workspace's members (staff only).
#[utoipa::path(get, path = "/api/workspaces/{ws}/members", tag = "workspaces", params(("ws" = uuid::Uuid, Path, description = "Workspace id")),
    responses((status = 200, body = Vec<Member>), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn list_members(Guarded(conn, _): TenantStaff) -> AppResult<axum::Json<Vec<Member>>> {
    Ok(axum::Json(conn.platform.list_members(conn.workspace).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    /// The user, by email…
    pub email: Option<String>,
    /// …or by id.
    pub user_id: Option<UserId>,
    pub role: Role,
}

/// Adds a member or changes a member's role (workspace owners and admins). Only owners
/// grant or take away ownership, and the last owner cannot be demoted.
#[utoipa::path(post, path = "/api/workspaces/{ws}/members", tag = "workspaces", params(("ws" = uuid::Uuid, Path, description = "Workspace id")), request_body = AddMember,
    responses((status = 201, body = Member, description = "added"), (status = 200, body = Member, description = "role changed"),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn add_member(Guarded(conn, _): TenantAdmin, ApiJson(body): ApiJson<AddMember>) -> AppResult<(StatusCode, axum::Json<Member>)> {
    let user = match (&body.email, body.user_id) {
        (Some(email), None) => conn.platform.user_by_email(email).await?.map(|(user, _)| user),
        (None, Some(id)) => conn.platform.user(id).await?,
        _ => return Err(AppError::invalid("email", "give exactly one of email or user_id")),
    };
    let field = if body.email.is_some() { "email" } else { "user_id" };
    let user = user.ok_or_else(|| AppError::invalid(field, "no such user"))?;
    let current = conn.platform.member_role(conn.workspace, user.id).await?;
    let touches_owner = body.role == Role::Owner || current == Some(Role::Owner);
    if touches_owner && conn.role != Role::Owner {
        return Err(AppError::Forbidden("only owners grant or change ownership".into()));
    }
    if current == Some(Role::Owner) && body.role != Role::Owner {
        let owners = conn.platform.list_members(conn.workspace).await?.iter().filter(|m| m.role == Role::Owner).count();
        if owners <= 1 {
            return Err(AppError::Conflict("a workspace keeps at least one owner".into()));
        }
    }
    if current == Some(body.role) {
        let member = conn.platform.list_members(conn.workspace).await?.into_iter().find(|m| m.user_id == user.id);
        return member.map(|m| (StatusCode::OK, axum::Json(m))).ok_or(AppError::NotFound);
    }
    let (member, added) = conn.platform.upsert_member(conn.workspace, user.id, body.role).await?;
    conn.forget_membership(user.id);
    conn.store.record_member(conn.user(), &member, added).await?;
    Ok((if added { StatusCode::CREATED } else { StatusCode::OK }, axum::Json(member)))
}
