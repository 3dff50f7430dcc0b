//! Comment routes: public replies and internal notes on a ticket.

use axum::extract::FromRef;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::TicketPath;
use super::validate;
use crate::auth::AuthState;
use crate::error::{AppError, AppResult, Problem};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery};
use crate::http::parse_limit;
use crate::store::{Comment, CommentId, CommentQuery};
use crate::tenants::{TenantConn, TenantsState};

pub fn routes<S>() -> OpenApiRouter<S>
where
    AuthState: FromRef<S>,
    TenantsState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    OpenApiRouter::new().routes(routes!(list_comments, add_comment))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CommentParams {
    /// `next_cursor` from the previous page.
    #[param(value_type = Option<String>, format = Uuid)]
    cursor: Option<String>,
    /// 1 to 200, default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    limit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CommentList {
    pub items: Vec<Comment>,
    pub next_cursor: Option<String>,
}

/// A ticket's comments, oldest first. Requesters never see internal notes.
#[utoipa::path(get, path = "/api/workspaces/{ws}/tickets/{id}/comments", tag = "tickets",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id"), ("id" = uuid::Uuid, Path), CommentParams),
    responses((status = 200, body = CommentList), (status = 400, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn list_comments(
    conn: TenantConn,
    ApiPath(path): ApiPath<TicketPath>,
    ApiQuery(params): ApiQuery<CommentParams>,
) -> AppResult<axum::Json<CommentList>> {
    let limit = parse_limit(params.limit.as_deref(), 100, 200).map_err(|e| AppError::Validation(vec![e]))?;
    // Comment ids are time-ordered UUIDs: the last id seen is the cursor.
    let after = params
        .cursor
        .as_deref()
        .map(|c| c.parse::<CommentId>().map_err(|_| AppError::BadRequest("malformed cursor".into())))
        .transpose()?;
    let page = conn.store.list_comments(conn.audience(), path.id, &CommentQuery { after, limit }).await?;
    let next_cursor = if page.has_more { page.items.last().map(|c| c.id.to_string()) } else { None };
    Ok(axum::Json(CommentList { items: page.items, next_cursor }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewComment {
    #[schema(min_length = 1, max_length = 65536, pattern = r"\S")]
    pub body: String,
    /// An internal note, visible to staff only. Default false.
    #[serde(default)]
    pub internal: bool,
    /// Files to carry on this public reply (and in its mail): ids of attachments the caller
    /// uploaded to the ticket without a `comment_id`, at most 20 (one named twice counts
    /// once). An internal note's files are uploaded with its `comment_id` instead.
    #[serde(default)]
    #[schema(value_type = Vec<uuid::Uuid>, max_items = 20)]
    pub attachments: Vec<crate::store::blobs::AttachmentId>,
}

/// Adds a public reply, or (staff only) an internal note.
#[utoipa::path(post, path = "/api/workspaces/{ws}/tickets/{id}/comments", tag = "tickets",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id"), ("id" = uuid::Uuid, Path)), request_body = NewComment,
    responses((status = 201, body = Comment), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn add_comment(
    conn: TenantConn,
    ApiPath(path): ApiPath<TicketPath>,
    ApiJson(body): ApiJson<NewComment>,
) -> AppResult<(StatusCode, axum::Json<Comment>)> {
    if body.internal && !conn.role.is_staff() {
        return Err(AppError::Forbidden("requesters cannot write internal notes".into()));
    }
    let text = validate::body(&body.body).map_err(|e| AppError::Validation(vec![e]))?;
    let files = validate::reply_files(body.attachments).map_err(|e| AppError::Validation(vec![e]))?;
    if body.internal && !files.is_empty() {
        return Err(AppError::Conflict(
            "attachments: an internal note's files are uploaded with its comment_id, after it is written".into(),
        ));
    }
    let comment = conn.store.add_comment(conn.user(), conn.audience(), path.id, text, body.internal, files).await?;
    Ok((StatusCode::CREATED, axum::Json(comment)))
}
