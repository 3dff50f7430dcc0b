//! The one place that merges every feature's routes, the OpenAPI document, and the global
//! layers (request ids, tracing, body limit, panic catching, problem+json fallbacks).

use axum::Router;
use axum::extract::Request;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderName;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Instrument;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::app::App;
use crate::error::AppError;

#[derive(OpenApi)]
#[openapi(
    info(title = "edgedesk", description = "Self-hosted help desk API. Errors are application/problem+json (RFC 9457)."),
    modifiers(&Security),
    security(("bearer" = []), ("cookie" = [])),
    tags(
        (name = "auth", description = "Setup, login, sessions and API tokens"),
        (name = "users", description = "User management (platform administrators)"),
        (name = "workspaces", description = "Workspaces and members"),
        (name = "tickets", description = "Tickets, comments and links"),
        (name = "sync", description = "Bootstrap, delta sync and the audit trail"),
        (name = "notifications", description = "Notifications, preferences and following tickets"),
        (name = "attachments", description = "Files on tickets and comments, their versions, and the storage quota"),
        (name = "keys", description = "Key bundles for client-side encryption"),
        (name = "mail", description = "Mail channels: the workspace's support address in (IMAP) and out (SMTP)"),
        (name = "notes", description = "Collaborative ticket notes (y-websocket)"),
        (name = "search", description = "Full-text search over tickets, replies, notes and file names"),
        (name = "ops", description = "Health and readiness"),
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
        components.add_security_scheme("cookie", SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(crate::auth::SESSION_COOKIE))));
    }
}

/// The API's routes and its OpenAPI document, before state and layers: the request/response
/// routes, then the long-lived streams (kept apart so that per-frame layers stay off them).
pub fn api() -> (Router<App>, Router<App>, utoipa::openapi::OpenApi) {
    let (routes, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
        .merge(crate::auth::routes())
        .merge(crate::tenants::routes())
        .merge(crate::tickets::routes())
        .merge(crate::sync::routes())
        .merge(crate::notifications::routes())
        .merge(crate::attachments::routes())
        .merge(crate::keys::routes())
        .merge(crate::mail::routes())
        .merge(crate::search::routes())
        .split_for_parts();
    let (streams, streams_openapi) = crate::live::routes().merge(crate::notes::routes()).split_for_parts();
    openapi.merge(streams_openapi);
    crate::http::openapi::complete(&mut openapi);
    (routes, streams, openapi)
}

pub fn build(app: App) -> Router {
    let (api, streams, openapi) = api();
    let request_id = HeaderName::from_static("x-request-id");
    let body_limit = app.config().body_limit;
    // Tracing and panic catching wrap every response body and see each of its frames; a
    // live stream writes a frame per event to every subscriber, so the stream routes get
    // `stream_guard` instead.
    api.merge(SwaggerUi::new("/api/docs").url("/api/openapi.json", openapi))
        .fallback(crate::console::serve)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| AppError::internal("handler panicked").into_response()))
        .layer(TraceLayer::new_for_http())
        .merge(streams.method_not_allowed_fallback(method_not_allowed).layer(axum::middleware::from_fn(stream_guard)))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(app)
}

/// What TraceLayer and CatchPanicLayer give the other routes (a span, a log line with the
/// status, a problem+json 500 on panic), without wrapping the response body.
async fn stream_guard(request: Request, next: Next) -> Response {
    let span = tracing::debug_span!("request", method = %request.method(), uri = %request.uri().path());
    let started = std::time::Instant::now();
    let opened = AssertUnwindSafe(next.run(request)).catch_unwind().instrument(span.clone()).await;
    let response = opened.unwrap_or_else(|_| AppError::internal("handler panicked").into_response());
    tracing::debug!(parent: &span, status = response.status().as_u16(), latency_ms = started.elapsed().as_millis() as u64, "stream answered");
    response
}

async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", tag = "ops", security(()), responses((status = 200, body = Object)))]
async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// Readiness: the store answers.
#[utoipa::path(get, path = "/ready", tag = "ops", security(()), responses((status = 200, body = Object), (status = 503, body = crate::error::Problem)))]
async fn ready(State(app): State<App>) -> Result<axum::Json<serde_json::Value>, AppError> {
    app.store().platform.ping().await?;
    Ok(axum::Json(serde_json::json!({ "status": "ready" })))
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "ops", security(()), responses((status = 200, content_type = "text/plain", body = String)))]
async fn metrics(State(app): State<App>) -> Response {
    let mut body = format!(
        "# HELP edgedesk_sse_connections Live event streams open on this instance.\n\
         # TYPE edgedesk_sse_connections gauge\n\
         edgedesk_sse_connections {}\n\
         # HELP edgedesk_live_topics Workspaces this instance is following for live subscribers.\n\
         # TYPE edgedesk_live_topics gauge\n\
         edgedesk_live_topics {}\n\
         # HELP edgedesk_build_info Build information.\n\
         # TYPE edgedesk_build_info gauge\n\
         edgedesk_build_info{{version=\"{}\"}} 1\n",
        app.live().limits.open(),
        app.live().bus.topic_count(),
        env!("CARGO_PKG_VERSION"),
    );
    let (watched, revoked) = app.live().watch.counts();
    body.push_str(&format!(
        "# HELP edgedesk_bootstraps_open Snapshots (sync/bootstrap) open on this instance.\n\
         # TYPE edgedesk_bootstraps_open gauge\n\
         edgedesk_bootstraps_open {}\n\
         # HELP edgedesk_access_watched Long-lived connections whose access is watched.\n\
         # TYPE edgedesk_access_watched gauge\n\
         edgedesk_access_watched {watched}\n\
         # HELP edgedesk_access_revoked_total Long-lived connections ended because their access changed.\n\
         # TYPE edgedesk_access_revoked_total counter\n\
         edgedesk_access_revoked_total {revoked}\n",
        app.sync().bootstraps.open(),
    ));
    body.push_str(&app.notes().render_metrics());
    body.push_str(&app.store().metrics.render());
    body.push_str(&app.runner().render_metrics());
    body.push_str(&app.search().render_metrics());
    if let Some(delivery) = app.delivery() {
        body.push_str(&delivery.render_metrics());
    }
    if let Some(ingest) = app.ingest() {
        body.push_str(&ingest.render_metrics());
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
