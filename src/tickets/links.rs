//! Links between tickets (relates to / duplicates / blocks). Staff only: requesters do
//! not see links, which could name tickets that are not theirs.

use axum::extract::FromRef;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{LinkPath, TicketPath};
use crate::auth::AuthState;
use crate::error::{AppResult, Problem};
use crate::http::extract::{ApiJson, ApiPath};
use crate::store::{LinkKind, TicketId, TicketLink};
use crate::tenants::{Guarded, TenantStaff, TenantsState};

pub fn routes<S>() -> OpenApiRouter<S>
where
    AuthState: FromRef<S>,
    TenantsState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    OpenApiRouter::new().routes(routes!(list_links, add_link)).routes(routes!(remove_link))
}

/// Links from or to a ticket.
#[utoipa::path(get, path = "/api/workspaces/{ws}/tickets/{id}/links", tag = "tickets",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id"), ("id" = uuid::Uuid, Path)),
    responses((status = 200, body = Vec<TicketLink>), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn list_links(Guarded(conn, _): TenantStaff, ApiPath(path): ApiPath<TicketPath>) -> AppResult<axum::Json<Vec<TicketLink>>> {
    Ok(axum::Json(conn.store.list_links(path.id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLink {
    pub target_id: TicketId,
    pub kind: LinkKind,
}

/// Links this ticket to another: `relates_to`, `duplicates` or `blocks` (read "this ticket <kind> target").
#[utoipa::path(post, path = "/api/workspaces/{ws}/tickets/{id}/links", tag = "tickets",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id"), ("id" = uuid::Uuid, Path)), request_body = NewLink,
    responses((status = 201, body = TicketLink), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn add_link(
    Guarded(conn, _): TenantStaff,
    ApiPath(path): ApiPath<TicketPath>,
    ApiJson(body): ApiJson<NewLink>,
) -> AppResult<(StatusCode, axum::Json<TicketLink>)> {
    let link = conn.store.add_link(conn.user(), path.id, body.target_id, body.kind).await?;
    Ok((StatusCode::CREATED, axum::Json(link)))
}

/// Removes a link.
#[utoipa::path(delete, path = "/api/workspaces/{ws}/tickets/{id}/links/{link}", tag = "tickets",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id"), ("id" = uuid::Uuid, Path), ("link" = uuid::Uuid, Path, description = "Link id")),
    responses((status = 204), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn remove_link(Guarded(conn, _): TenantStaff, ApiPath(path): ApiPath<LinkPath>) -> AppResult<StatusCode> {
    conn.store.remove_link(conn.user(), path.id, path.link).await?;
    Ok(StatusCode::NO_CONTENT)
}
