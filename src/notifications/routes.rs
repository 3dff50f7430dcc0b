//! Notification routes: a user's notifications in a workspace, marking them read, unread
//! counts across workspaces, preferences, and following a ticket.

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::NotificationsState;
use crate::auth::{AuthState, AuthUser};
use crate::error::{AppError, AppResult, FieldError, Problem};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery};
use crate::http::parse_limit;
use crate::store::notifications::{FollowReason, Notification, NotificationId, NotificationQuery, Preference, ReadSelection};
use crate::store::{Audience, TicketId, WorkspaceId};
use crate::tenants::{PlatformConn, TenantConn, TenantsState};

pub fn routes<S>() -> OpenApiRouter<S>
where
    AuthState: FromRef<S>,
    TenantsState: FromRef<S>,
    NotificationsState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    OpenApiRouter::new()
        .routes(routes!(list_notifications))
        .routes(routes!(mark_read))
        .routes(routes!(my_unread))
        .routes(routes!(get_preferences, set_preferences))
        .routes(routes!(following, follow, unfollow))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotificationParams {
    /// `true`: unread ones only.
    #[param(value_type = Option<bool>)]
    unread: Option<String>,
    /// `next_cursor` from the previous page.
    #[param(pattern = r"^[1-9][0-9]{0,17}$")]
    cursor: Option<String>,
    /// 1 to 200, default 50.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    limit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationList {
    pub items: Vec<Notification>,
    pub next_cursor: Option<String>,
}

/// The caller's notifications in this workspace, newest first.
#[utoipa::path(get, path = "/api/workspaces/{ws}/notifications", tag = "notifications",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id"), NotificationParams),
    responses((status = 200, body = NotificationList), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn list_notifications(conn: TenantConn, ApiQuery(params): ApiQuery<NotificationParams>) -> AppResult<axum::Json<NotificationList>> {
    let limit = parse_limit(params.limit.as_deref(), 50, 200).map_err(|e| AppError::Validation(vec![e]))?;
    let unread_only = match params.unread.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(AppError::Validation(vec![FieldError::new("unread", "must be true or false")])),
    };
    let before = params
        .cursor
        .as_deref()
        .map(|c| c.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| AppError::BadRequest("malformed cursor".into())))
        .transpose()?;
    let page = conn.store.notifications().list(conn.audience(), &NotificationQuery { unread_only, before, limit }).await?;
    let next_cursor = if page.has_more { page.items.last().map(|n| n.seq.to_string()) } else { None };
    Ok(axum::Json(NotificationList { items: page.items, next_cursor }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkRead {
    /// These notifications (at most 500).
    #[schema(max_items = 500)]
    pub ids: Option<Vec<NotificationId>>,
    /// This notification and every older one.
    pub up_to: Option<NotificationId>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MarkedRead {
    /// The notifications that became read (already-read ones are not listed).
    pub read: Vec<NotificationId>,
}

/// Marks notifications read: `ids`, and everything `up_to` one; either, both, or neither
/// (which marks nothing).
#[utoipa::path(post, path = "/api/workspaces/{ws}/notifications/read", tag = "notifications",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id")), request_body = MarkRead,
    responses((status = 200, body = MarkedRead), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn mark_read(conn: TenantConn, ApiJson(body): ApiJson<MarkRead>) -> AppResult<axum::Json<MarkedRead>> {
    if body.ids.as_ref().is_some_and(|ids| ids.len() > 500) {
        return Err(AppError::Validation(vec![FieldError::new("ids", "at most 500 at once")]));
    }
    let mut read = Vec::new();
    for which in [body.ids.map(ReadSelection::Ids), body.up_to.map(ReadSelection::UpTo)].into_iter().flatten() {
        read.extend(conn.store.notifications().mark_read(conn.user(), which).await?);
    }
    Ok(axum::Json(MarkedRead { read }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkspaceUnread {
    pub workspace_id: WorkspaceId,
    pub name: String,
    pub unread: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MyUnread {
    pub workspaces: Vec<WorkspaceUnread>,
    pub total: u64,
}

/// Unread notifications in each of the caller's workspaces.
#[utoipa::path(get, path = "/api/me/notifications", tag = "notifications",
    responses((status = 200, body = MyUnread), (status = 401, body = Problem)))]
async fn my_unread(conn: PlatformConn) -> AppResult<axum::Json<MyUnread>> {
    let user = conn.caller.user.id;
    let mut workspaces = Vec::new();
    for (ws, role, tenant) in conn.my_workspaces().await? {
        let unread = tenant.notifications().unread_count(Audience::for_role(user, role)).await?;
        workspaces.push(WorkspaceUnread { workspace_id: ws.id, name: ws.name, unread });
    }
    let total = workspaces.iter().map(|w| w.unread).sum();
    Ok(axum::Json(MyUnread { workspaces, total }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    /// One entry per kind (a `PUT` may list only the kinds it changes).
    pub preferences: Vec<Preference>,
}

/// The caller's notification preferences, every kind listed (a kind never set is on).
#[utoipa::path(get, path = "/api/me/notification-preferences", tag = "notifications",
    responses((status = 200, body = Preferences), (status = 401, body = Problem)))]
async fn get_preferences(caller: AuthUser, State(state): State<NotificationsState>) -> AppResult<axum::Json<Preferences>> {
    Ok(axum::Json(Preferences { preferences: state.preferences.preferences(caller.user.id).await? }))
}

/// Sets some or all kinds; the answer lists every kind as it now stands.
#[utoipa::path(put, path = "/api/me/notification-preferences", tag = "notifications", request_body = Preferences,
    responses((status = 200, body = Preferences), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 422, body = Problem)))]
async fn set_preferences(
    caller: AuthUser,
    State(state): State<NotificationsState>,
    ApiJson(body): ApiJson<Preferences>,
) -> AppResult<axum::Json<Preferences>> {
    // A kind given twice: the later entry wins, as if applied in order.
    let mut latest: Vec<Preference> = Vec::with_capacity(body.preferences.len());
    for p in body.preferences.iter().rev() {
        if !latest.iter().any(|q: &Preference| q.kind == p.kind) {
            latest.push(*p);
        }
    }
    state.preferences.set_preferences(caller.user.id, &latest).await?;
    Ok(axum::Json(Preferences { preferences: state.preferences.preferences(caller.user.id).await? }))
}

/// `/api/workspaces/{ws}/tickets/{id}/follow`.
#[derive(Debug, Deserialize)]
pub struct FollowPath {
    #[allow(dead_code)]
    pub ws: WorkspaceId,
    pub id: TicketId,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Following {
    pub following: bool,
    /// Why: `requester` and `assignee` are automatic, `manual` is by choice.
    pub reason: Option<FollowReason>,
}

/// Whether the caller follows the ticket.
#[utoipa::path(get, path = "/api/workspaces/{ws}/tickets/{id}/follow", tag = "notifications",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id"), ("id" = uuid::Uuid, Path)),
    responses((status = 200, body = Following), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn following(conn: TenantConn, ApiPath(path): ApiPath<FollowPath>) -> AppResult<axum::Json<Following>> {
    conn.store.ticket(conn.audience(), path.id).await?.ok_or(AppError::NotFound)?;
    let reason = conn.store.notifications().following(conn.user(), path.id).await?;
    Ok(axum::Json(Following { following: reason.is_some(), reason }))
}

/// Follows the ticket: replies (and, for staff, internal notes) notify the caller.
#[utoipa::path(put, path = "/api/workspaces/{ws}/tickets/{id}/follow", tag = "notifications",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id"), ("id" = uuid::Uuid, Path)),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn follow(conn: TenantConn, ApiPath(path): ApiPath<FollowPath>) -> AppResult<StatusCode> {
    conn.store.notifications().set_following(conn.user(), conn.audience(), path.id, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stops following the ticket (also an automatic follow, until the caller is assigned it again).
#[utoipa::path(delete, path = "/api/workspaces/{ws}/tickets/{id}/follow", tag = "notifications",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id"), ("id" = uuid::Uuid, Path)),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn unfollow(conn: TenantConn, ApiPath(path): ApiPath<FollowPath>) -> AppResult<StatusCode> {
    conn.store.notifications().set_following(conn.user(), conn.audience(), path.id, false).await?;
    Ok(StatusCode::NO_CONTENT)
}
