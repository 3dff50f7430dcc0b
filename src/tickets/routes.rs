//! Ticket routes: list with filters and cursor pagination, create, get, patch, delete.

use axum::extract::FromRef;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{TicketPath, comments, cursor, links, validate};
use crate::auth::AuthState;
use crate::error::{AppError, AppResult, FieldError, Problem};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery};
use crate::http::parse_limit;
use crate::store::{NewTicket, Priority, SortOrder, Status, Ticket, TicketPatch, TicketQuery, TicketSort, UserId};
use crate::tenants::filter::{FilterParams, Tag};
use crate::tenants::{Guarded, TenantConn, TenantStaff, TenantsState};

pub fn routes<S>() -> OpenApiRouter<S>
where
    AuthState: FromRef<S>,
    TenantsState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    OpenApiRouter::new()
        .routes(routes!(list_tickets, create_ticket))
        .routes(routes!(get_ticket, patch_ticket, delete_ticket))
        .merge(comments::routes())
        .merge(links::routes())
}

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 200;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// `updated_at` (default) or `created_at`.
    #[param(pattern = r"^(updated_at|created_at)$")]
    sort: Option<String>,
    /// `desc` (default) or `asc`.
    #[param(pattern = r"^(desc|asc)$")]
    order: Option<String>,
    /// `next_cursor` from the previous page (made for the same `sort` and `order`: 409 otherwise).
    #[param(pattern = r"^[uc]\.[da]\.-?[0-9]{1,18}\.[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    cursor: Option<String>,
    /// 1 to 200, default 50.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    limit: Option<String>,
}

impl ListParams {
    fn into_query(self, filter: &FilterParams) -> AppResult<TicketQuery> {
        let mut errors = Vec::new();
        let filter = filter.parse(&mut errors);
        let mut enum_param = |field: &str, raw: Option<&str>, parse: &dyn Fn(&str) -> bool, allowed: &str| {
            if let Some(raw) = raw
                && !parse(raw)
            {
                errors.push(FieldError::new(field, format!("must be one of {allowed}")));
            }
        };
        enum_param("sort", self.sort.as_deref(), &|s| matches!(s, "updated_at" | "created_at"), "updated_at, created_at");
        enum_param("order", self.order.as_deref(), &|s| matches!(s, "asc" | "desc"), "asc, desc");
        let limit = parse_limit(self.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT).map_err(|e| errors.push(e)).unwrap_or(DEFAULT_LIMIT);
        if !errors.is_empty() {
            return Err(AppError::Validation(errors));
        }
        let sort = if self.sort.as_deref() == Some("created_at") { TicketSort::CreatedAt } else { TicketSort::UpdatedAt };
        let order = if self.order.as_deref() == Some("asc") { SortOrder::Asc } else { SortOrder::Desc };
        let after = self.cursor.as_deref().map(|c| cursor::decode(c, sort, order)).transpose()?;
        Ok(TicketQuery {
            status: filter.status,
            priority: filter.priority,
            assignee: filter.assignee,
            requester: filter.requester,
            tag: filter.tag,
            sort,
            order,
            after,
            limit,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TicketList {
    pub items: Vec<Ticket>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Lists tickets the caller may see (requesters: their own).
#[utoipa::path(get, path = "/api/workspaces/{ws}/tickets", tag = "tickets", params(("ws" = uuid::Uuid, Path, description = "Workspace id"), FilterParams, ListParams),
    responses((status = 200, body = TicketList), (status = 400, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn list_tickets(
    conn: TenantConn,
    ApiQuery(filter): ApiQuery<FilterParams>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> AppResult<axum::Json<TicketList>> {
    let query = params.into_query(&filter)?;
    let page = conn.store.list_tickets(conn.audience(), &query).await?;
    let next_cursor = match (page.has_more, page.items.last()) {
        (true, Some(last)) => Some(cursor::encode(query.sort, query.order, last)),
        _ => None,
    };
    Ok(axum::Json(TicketList { items: page.items, next_cursor }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTicketRequest {
    #[schema(min_length = 1, max_length = 300, pattern = r"\S")]
    pub title: String,
    /// Default `open`. Staff only.
    pub status: Option<Status>,
    /// Default `normal`. Staff only.
    pub priority: Option<Priority>,
    /// Default: the caller. Staff only; must be a member.
    pub requester_id: Option<UserId>,
    /// Staff only; must be an agent, admin or owner.
    pub assignee_id: Option<UserId>,
    /// Staff only. Up to 20, each 1-40 of `a-z 0-9 - _ : .` (stored lower-cased).
    #[schema(max_items = 20, value_type = Option<Vec<Tag>>)]
    pub tags: Option<Vec<String>>,
}

fn staff_only_fields(conn: &TenantConn, fields: &[(&str, bool)]) -> AppResult<()> {
    if conn.role.is_staff() {
        return Ok(());
    }
    match fields.iter().find(|(_, present)| *present) {
        Some((name, _)) => Err(AppError::Forbidden(format!("requesters may not set {name}"))),
        None => Ok(()),
    }
}

/// Creates a ticket. Requesters give only a title and become its requester.
#[utoipa::path(post, path = "/api/workspaces/{ws}/tickets", tag = "tickets", params(("ws" = uuid::Uuid, Path, description = "Workspace id")), request_body = NewTicketRequest,
    responses((status = 201, body = Ticket), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn create_ticket(conn: TenantConn, ApiJson(body): ApiJson<NewTicketRequest>) -> AppResult<(StatusCode, axum::Json<Ticket>)> {
    staff_only_fields(
        &conn,
        &[
            ("status", body.status.is_some()),
            ("priority", body.priority.is_some()),
            ("requester_id", body.requester_id.is_some()),
            ("assignee_id", body.assignee_id.is_some()),
            ("tags", body.tags.is_some()),
        ],
    )?;
    let mut errors = Vec::new();
    let title = validate::title(&body.title).map_err(|e| errors.push(e)).ok();
    let tags = validate::tags(body.tags.as_deref().unwrap_or_default()).map_err(|e| errors.push(e)).ok();
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let requester_id = body.requester_id.unwrap_or(conn.user());
    if requester_id != conn.user() {
        validate::member(&conn, "requester_id", requester_id, false).await?;
    }
    if let Some(assignee) = body.assignee_id {
        validate::member(&conn, "assignee_id", assignee, true).await?;
    }
    let new = NewTicket {
        title: title.unwrap_or_default(),
        status: body.status.unwrap_or(Status::Open),
        priority: body.priority.unwrap_or(Priority::Normal),
        requester_id,
        assignee_id: body.assignee_id,
        tags: tags.unwrap_or_default(),
    };
    let ticket = conn.store.create_ticket(conn.user(), new).await?;
    Ok((StatusCode::CREATED, axum::Json(ticket)))
}

/// One ticket.
#[utoipa::path(get, path = "/api/workspaces/{ws}/tickets/{id}", tag = "tickets", params(("ws" = uuid::Uuid, Path, description = "Workspace id"), ("id" = uuid::Uuid, Path)),
    responses((status = 200, body = Ticket), (status = 400, body = Problem), (status = 404, body = Problem)))]
async fn get_ticket(conn: TenantConn, ApiPath(path): ApiPath<TicketPath>) -> AppResult<axum::Json<Ticket>> {
    conn.store.ticket(conn.audience(), path.id).await?.map(axum::Json).ok_or(AppError::NotFound)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTicketRequest {
    #[schema(min_length = 1, max_length = 300, pattern = r"\S")]
    pub title: Option<String>,
    pub status: Option<Status>,
    /// Staff only.
    pub priority: Option<Priority>,
    /// Staff only. `null` unassigns.
    #[serde(default, deserialize_with = "crate::http::present")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub assignee_id: Option<Option<UserId>>,
    /// Staff only. Replaces the whole set.
    #[schema(max_items = 20, value_type = Option<Vec<Tag>>)]
    pub tags: Option<Vec<String>>,
}

/// Changes a ticket. Requesters may change the title and status of their own tickets.
#[utoipa::path(patch, path = "/api/workspaces/{ws}/tickets/{id}", tag = "tickets", params(("ws" = uuid::Uuid, Path, description = "Workspace id"), ("id" = uuid::Uuid, Path)),
    request_body = PatchTicketRequest,
    responses((status = 200, body = Ticket), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn patch_ticket(
    conn: TenantConn,
    ApiPath(path): ApiPath<TicketPath>,
    ApiJson(body): ApiJson<PatchTicketRequest>,
) -> AppResult<axum::Json<Ticket>> {
    staff_only_fields(
        &conn,
        &[("priority", body.priority.is_some()), ("assignee_id", body.assignee_id.is_some()), ("tags", body.tags.is_some())],
    )?;
    let mut errors = Vec::new();
    let title = body.title.as_deref().map(validate::title).transpose().map_err(|e| errors.push(e)).ok().flatten();
    let tags = body.tags.as_deref().map(validate::tags).transpose().map_err(|e| errors.push(e)).ok().flatten();
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    if let Some(Some(assignee)) = body.assignee_id {
        validate::member(&conn, "assignee_id", assignee, true).await?;
    }
    let patch = TicketPatch { title, status: body.status, priority: body.priority, assignee_id: body.assignee_id, tags };
    if patch.is_empty() {
        // Nothing to change: the ticket as it is, and nothing recorded.
        return Ok(axum::Json(conn.store.ticket(conn.audience(), path.id).await?.ok_or(AppError::NotFound)?));
    }
    Ok(axum::Json(conn.store.update_ticket(conn.user(), conn.audience(), path.id, patch).await?))
}

/// Deletes a ticket (staff only). It disappears from lists, lookups and bootstrap; the log keeps its history.
#[utoipa::path(delete, path = "/api/workspaces/{ws}/tickets/{id}", tag = "tickets", params(("ws" = uuid::Uuid, Path, description = "Workspace id"), ("id" = uuid::Uuid, Path)),
    responses((status = 204), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn delete_ticket(Guarded(conn, _): TenantStaff, ApiPath(path): ApiPath<TicketPath>) -> AppResult<StatusCode> {
    conn.store.delete_ticket(conn.user(), path.id).await?;
    Ok(StatusCode::NO_CONTENT)
}
