//! `sync/bootstrap`, `sync/delta` and `audit` routes.

use axum::body::Body;
use axum::extract::{FromRef, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::AuthState;
use crate::error::{AppError, AppResult, FieldError, Problem};
use crate::http::extract::ApiQuery;
use crate::http::parse_limit;
use crate::store::bootstrap::{BootstrapSink, CHANNEL_CHUNKS};
use crate::store::{AuditQuery, Millis, SyncEvent, UserId};
use crate::tenants::{Guarded, TenantAdmin, TenantConn, TenantsState};

pub fn routes<S>() -> OpenApiRouter<S>
where
    AuthState: FromRef<S>,
    TenantsState: FromRef<S>,
    super::SyncState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    OpenApiRouter::new().routes(routes!(bootstrap)).routes(routes!(delta)).routes(routes!(audit))
}

/// Everything the caller may see, as NDJSON: a header line with the `sync_id` the snapshot
/// is consistent at, one line per row (`"type"`: `workspace`, `member`, `ticket`, `comment`,
/// `link`), and a footer with the row count and a SHA-256 checksum over the row lines.
/// Continue with `sync/delta?after=<header sync_id>`. A stream that ends without its footer
/// was cut short and must be discarded. A workspace serves a few snapshots at once (429
/// beyond), an instance a few dozen (503 beyond), and a snapshot stays open at most
/// `EDGEDESK_BOOTSTRAP_MAX_SECS`, however slowly it is read.
#[utoipa::path(get, path = "/api/workspaces/{ws}/sync/bootstrap", tag = "sync", params(("ws" = uuid::Uuid, Path, description = "Workspace id")),
    responses((status = 200, content_type = "application/x-ndjson", body = String), (status = 404, body = Problem),
        (status = 429, body = Problem), (status = 503, body = Problem)))]
async fn bootstrap(conn: TenantConn, State(sync): State<super::SyncState>) -> AppResult<Response> {
    let pass = sync.bootstraps.enter(conn.workspace)?;
    let (tx, mut rx) = mpsc::channel(CHANNEL_CHUNKS);
    let store = conn.store.clone();
    let audience = conn.audience();
    let workspace = conn.workspace;
    let sink = BootstrapSink::new(tx, sync.bootstraps.max_open());
    // The pass lives as long as the snapshot does: until its producer has finished.
    let producer = tokio::spawn(async move {
        let summary = store.bootstrap(audience, sink).await;
        drop(pass);
        summary
    });
    // Wait for the first chunk (it holds the header): if the snapshot cannot start, the
    // client gets a proper error instead of a 200 with a truncated body.
    let Some(first) = rx.recv().await else {
        return Err(match producer.await {
            Ok(Err(err)) => err.into(),
            Ok(Ok(_)) => AppError::internal("bootstrap ended without output"),
            Err(err) => AppError::internal(err),
        });
    };
    tokio::spawn(async move {
        match producer.await {
            Ok(Ok(summary)) => tracing::debug!(%workspace, rows = summary.count, sync_id = summary.sync_id, "bootstrap sent"),
            Ok(Err(err)) => tracing::info!(%workspace, error = %err, "bootstrap stream ended early"),
            Err(err) => tracing::error!(%workspace, error = %err, "bootstrap task failed"),
        }
    });
    let body = futures::stream::once(async move { first }).chain(ReceiverStream::new(rx)).map(Ok::<_, std::convert::Infallible>);
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeltaParams {
    /// The last sync_id the client has applied (a bootstrap header's, or a previous `last_sync_id`). Default 0.
    #[param(value_type = Option<i64>, minimum = 0)]
    after: Option<String>,
    /// 1 to 1000, default 500.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeltaResponse {
    pub events: Vec<SyncEvent>,
    /// Pass as `after` next time. May be past the last event shown: events the caller may
    /// not see are skipped, not withheld.
    pub last_sync_id: i64,
    pub has_more: bool,
}

fn parse_after(raw: Option<&str>) -> Result<i64, FieldError> {
    match raw {
        None => Ok(0),
        Some(text) => text.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| FieldError::new("after", "must be a sync_id (0 or more)")),
    }
}

/// Events after `after`, oldest first, filtered to what the caller may see.
#[utoipa::path(get, path = "/api/workspaces/{ws}/sync/delta", tag = "sync", params(("ws" = uuid::Uuid, Path, description = "Workspace id"), DeltaParams),
    responses((status = 200, body = DeltaResponse), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn delta(conn: TenantConn, ApiQuery(params): ApiQuery<DeltaParams>) -> AppResult<axum::Json<DeltaResponse>> {
    let after = parse_after(params.after.as_deref());
    let limit = parse_limit(params.limit.as_deref(), 500, 1000);
    let (after, limit) = collect(after, limit)?;
    let page = conn.store.delta(conn.audience(), after, limit).await?;
    Ok(axum::Json(DeltaResponse { events: page.events, last_sync_id: page.last_sync_id, has_more: page.has_more }))
}

/// Both results, or every error at once.
fn collect<A, B>(a: Result<A, FieldError>, b: Result<B, FieldError>) -> AppResult<(A, B)> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (a, b) => Err(AppError::Validation([a.err(), b.err()].into_iter().flatten().collect())),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only events by this user.
    #[param(value_type = Option<String>, format = Uuid)]
    actor: Option<String>,
    /// `ticket`, `comment`, `link`, `member`, `workspace`.
    entity: Option<String>,
    entity_id: Option<String>,
    /// e.g. `ticket.updated`.
    kind: Option<String>,
    /// RFC 3339; events at or after.
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// RFC 3339; events before.
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<String>,
    /// `next_cursor` from the previous page.
    #[param(pattern = r"^-?[0-9]{1,18}$")]
    cursor: Option<String>,
    /// 1 to 500, default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub items: Vec<SyncEvent>,
    pub next_cursor: Option<String>,
}

/// The workspace's audit trail (owners and admins): every change, who made it and when.
#[utoipa::path(get, path = "/api/workspaces/{ws}/audit", tag = "sync", params(("ws" = uuid::Uuid, Path, description = "Workspace id"), AuditParams),
    responses((status = 200, body = AuditPage), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
async fn audit(Guarded(conn, _): TenantAdmin, ApiQuery(params): ApiQuery<AuditParams>) -> AppResult<axum::Json<AuditPage>> {
    let mut errors = Vec::new();
    let actor = params
        .actor
        .as_deref()
        .and_then(|a| a.parse::<UserId>().map_err(|_| errors.push(FieldError::new("actor", "must be a user id"))).ok());
    let mut time = |field: &str, raw: Option<&str>| {
        raw.and_then(|t| {
            Millis::parse_rfc3339(t).or_else(|| {
                errors.push(FieldError::new(field, "must be an RFC 3339 timestamp"));
                None
            })
        })
    };
    let since = time("since", params.since.as_deref());
    let until = time("until", params.until.as_deref());
    let limit = parse_limit(params.limit.as_deref(), 100, 500).map_err(|e| errors.push(e)).unwrap_or(100);
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let before =
        params.cursor.as_deref().map(|c| c.parse::<i64>().map_err(|_| AppError::BadRequest("malformed cursor".into()))).transpose()?;
    let query = AuditQuery { actor, entity: params.entity, entity_id: params.entity_id, kind: params.kind, since, until, before, limit };
    let page = conn.store.audit(&query).await?;
    let next_cursor = if page.has_more { page.items.last().map(|e| e.sync_id.to_string()) } else { None };
    Ok(axum::Json(AuditPage { items: page.items, next_cursor }))
}
