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
use crate::http::extract::{ApiJson, ApiPath};
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
        .routes(routes!(remove_member))
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
    /// At least one character that is not a space; surrounding spaces are trimmed.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: String,
}

/// Creates a workspace with the caller as its owner (platform administrators only).
#[utoipa::path(post, path = "/api/workspaces", tag = "workspaces", request_body = NewWorkspace,
    responses((status = 201, body = WorkspaceView), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn create_workspace(conn: PlatformConn, ApiJson(body): ApiJson<NewWorkspace>) -> AppResult<(StatusCode, axum::Json<WorkspaceView>)> {
    if !conn.caller.user.is_admin {
        return Err(AppError::Forbidden("only platform administrators create workspaces".into()));
    }
    let workspace = conn.create_workspace(&body.name).await?;
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
    Ok(axum::Json(WorkspaceView::new(conn.workspace_info().await?, conn.role)))
}

/// The workspace's members (staff only).
#[utoipa::path(get, path = "/api/workspaces/{ws}/members", tag = "workspaces", params(("ws" = uuid::Uuid, Path, description = "Workspace id")),
    responses((status = 200, body = Vec<Member>), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn list_members(Guarded(conn, _): TenantStaff) -> AppResult<axum::Json<Vec<Member>>> {
    Ok(axum::Json(conn.members().await?))
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
async fn add_member(
    Guarded(conn, _): TenantAdmin,
    users: PlatformConn,
    ApiJson(body): ApiJson<AddMember>,
) -> AppResult<(StatusCode, axum::Json<Member>)> {
    // Finding the user is a platform read (any user, by email or id): hence `PlatformConn`.
    let user = match (&body.email, body.user_id) {
        (Some(email), None) => users.platform.user_by_email(email).await?.map(|(user, _)| user),
        (None, Some(id)) => users.platform.user(id).await?,
        (Some(email), Some(id)) => match users.platform.user(id).await? {
            Some(user) if user.email.eq_ignore_ascii_case(email) => Some(user),
            _ => return Err(AppError::Conflict("email and user_id name different users".into())),
        },
        (None, None) => return Err(AppError::invalid("email", "give email or user_id")),
    };
    let field = if body.email.is_some() { "email" } else { "user_id" };
    // A well-formed reference to nobody: a conflict with the users there are.
    let user = user.ok_or_else(|| AppError::Conflict(format!("{field}: no such user")))?;
    let current = conn.role_of(user.id).await?;
    if (body.role == Role::Owner || current == Some(Role::Owner)) && conn.role != Role::Owner {
        return Err(AppError::Forbidden("only owners grant or change ownership".into()));
    }
    if current == Some(body.role) {
        let member = conn.members().await?.into_iter().find(|m| m.user_id == user.id);
        return member.map(|m| (StatusCode::OK, axum::Json(m))).ok_or(AppError::NotFound);
    }
    // The last-owner rule is the store's, checked under the same lock as the change.
    let change = conn.set_member(user.id, Some(body.role)).await?;
    let member = change.after.ok_or(AppError::NotFound)?;
    Ok((if change.before.is_none() { StatusCode::CREATED } else { StatusCode::OK }, axum::Json(member)))
}

/// Removes a member (workspace owners and admins; only owners remove owners, and the last
/// owner stays). Their open streams end; the log records `member.removed`.
#[utoipa::path(delete, path = "/api/workspaces/{ws}/members/{user}", tag = "workspaces",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id"), ("user" = uuid::Uuid, Path, description = "The member's user id")),
    responses((status = 204, description = "removed"), (status = 400, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn remove_member(Guarded(conn, _): TenantAdmin, ApiPath(path): ApiPath<(WorkspaceId, UserId)>) -> AppResult<StatusCode> {
    let user = path.1;
    let current = conn.role_of(user).await?.ok_or(AppError::NotFound)?;
    if current == Role::Owner && conn.role != Role::Owner {
        return Err(AppError::Forbidden("only owners remove owners".into()));
    }
    conn.set_member(user, None).await?;
    Ok(StatusCode::NO_CONTENT)
}
