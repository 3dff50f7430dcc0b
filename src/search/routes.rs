//! `GET /api/workspaces/{ws}/search` and `GET …/search/status`.

use std::time::Duration;

use axum::extract::{FromRef, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::SearchState;
use super::find::{self, Hit, MAX_OFFSET, Request};
use super::index::WorkspaceIndex;
use crate::auth::AuthState;
use crate::error::{AppError, AppResult, FieldError, Problem};
use crate::http::extract::ApiQuery;
use crate::http::parse_limit;
use crate::tenants::filter::FilterParams;
use crate::tenants::{Guarded, TenantConn, TenantStaff, TenantsState};

pub fn routes<S>() -> OpenApiRouter<S>
where
    AuthState: FromRef<S>,
    TenantsState: FromRef<S>,
    SearchState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    OpenApiRouter::new().routes(routes!(search)).routes(routes!(status))
}

pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 100;
/// How long a search waits for the index to take in what was written before it.
pub const FRESH_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// What to find: words (typos forgiven from 4 letters, the last word also as a
    /// beginning) and `"quoted phrases"`. A query with no letters or digits, an unclosed
    /// quote or more than 32 words is refused with 422 saying which.
    #[param(min_length = 1, max_length = 500)]
    q: String,
    /// 1 to 100, default 20.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `next_cursor` from the previous page.
    #[param(pattern = r"^o\.[0-9]{1,4}$")]
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchPage {
    /// Best first.
    pub items: Vec<Hit>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
    /// The index answered with every change up to this sync_id.
    pub indexed_through: i64,
    /// The workspace's newest sync_id when the search began.
    pub head: i64,
}

fn cursor_offset(raw: Option<&str>) -> Result<usize, FieldError> {
    match raw {
        None => Ok(0),
        Some(text) => text
            .strip_prefix("o.")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n <= MAX_OFFSET)
            .ok_or_else(|| FieldError::new("cursor", "not a cursor this search gave")),
    }
}

/// The workspace's index, caught up with `head` if it can be within [`FRESH_WAIT`]: the
/// indexer is woken and asked to commit at once, and the search waits for it. An index
/// that stands past the head (the database was restored to an earlier state) is rebuilt.
async fn fresh_index(search: &SearchState, conn: &TenantConn) -> AppResult<(std::sync::Arc<WorkspaceIndex>, i64)> {
    let head = conn.store.head().await?;
    let mut index = search.indexes.get(conn.workspace).await.map_err(AppError::internal)?;
    if index.position() > head {
        tracing::warn!(workspace = %conn.workspace, at = index.position(), head, "the search index is ahead of the log; rebuilding it");
        index = search.indexes.reset(conn.workspace).await.map_err(AppError::internal)?;
        search.runner.reposition(conn.workspace, super::indexer::CONSUMER);
    }
    if index.visible() >= head {
        return Ok((index, head));
    }
    let mut visible = index.watch_visible();
    index.waiting.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    let committing = index.clone();
    let _ = tokio::task::spawn_blocking(move || committing.commit_now()).await;
    search.runner.reposition(conn.workspace, super::indexer::CONSUMER);
    let _ = tokio::time::timeout(FRESH_WAIT, visible.wait_for(|at| *at >= head)).await;
    index.waiting.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    Ok((index, head))
}

/// Finds tickets the caller may see by their text: title, number and tags, replies,
/// internal notes and the collaborative note (staff), and file names. Requesters find only
/// their own tickets and match only public text. Takes the ticket list's filters.
#[utoipa::path(get, path = "/api/workspaces/{ws}/search", tag = "search",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id"), SearchParams, FilterParams),
    responses((status = 200, body = SearchPage), (status = 400, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn search(
    conn: TenantConn,
    State(search): State<SearchState>,
    ApiQuery(params): ApiQuery<SearchParams>,
    ApiQuery(filter): ApiQuery<FilterParams>,
) -> AppResult<axum::Json<SearchPage>> {
    let mut errors = Vec::new();
    let filter = filter.parse(&mut errors);
    let limit = parse_limit(params.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT).map_err(|e| errors.push(e)).unwrap_or(DEFAULT_LIMIT);
    let offset = cursor_offset(params.cursor.as_deref()).map_err(|e| errors.push(e)).unwrap_or(0);
    let parsed = super::query::parse(&params.q).map_err(|e| errors.push(FieldError::new("q", e.to_string()))).ok();
    let Some(parsed) = parsed.filter(|_| errors.is_empty()) else { return Err(AppError::Validation(errors)) };
    let (index, head) = fresh_index(&search, &conn).await?;
    let indexed_through = index.visible();
    let request = Request { parsed, audience: conn.audience(), filter, offset, limit };
    let (items, more) =
        tokio::task::spawn_blocking(move || find::find(&index, &request)).await.map_err(AppError::internal)?.map_err(AppError::internal)?;
    let next = offset + items.len();
    let next_cursor = (more && next <= MAX_OFFSET).then(|| format!("o.{next}"));
    Ok(axum::Json(SearchPage { items, next_cursor, indexed_through, head }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchStatus {
    /// Every change up to this sync_id is searchable.
    pub indexed_through: i64,
    /// The workspace's newest sync_id.
    pub head: i64,
    /// Changes not yet searchable (`head - indexed_through`).
    pub lag: i64,
    /// Tickets in the index.
    pub documents: u64,
}

/// How far this instance's index of the workspace is behind its log (staff).
#[utoipa::path(get, path = "/api/workspaces/{ws}/search/status", tag = "search",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id")),
    responses((status = 200, body = SearchStatus), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn status(Guarded(conn, _): TenantStaff, State(search): State<SearchState>) -> AppResult<axum::Json<SearchStatus>> {
    let head = conn.store.head().await?;
    let index = search.indexes.get(conn.workspace).await.map_err(AppError::internal)?;
    if index.visible() < head {
        search.runner.reposition(conn.workspace, super::indexer::CONSUMER);
    }
    let indexed_through = index.visible();
    let documents = index.searcher().num_docs();
    Ok(axum::Json(SearchStatus { indexed_through, head, lag: (head - indexed_through).max(0), documents }))
}
