//! The mail feature's routes: the channels (`channels.rs`), and each ticket's outgoing mail
//! as staff see it.

use axum::extract::FromRef;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::MailState;
use crate::auth::AuthState;
use crate::error::{AppError, AppResult, Problem};
use crate::http::extract::{ApiPath, TicketPath};
use crate::store::mail::OutboxMail;
use crate::tenants::{Guarded, TenantStaff, TenantsState};

pub fn routes<S>() -> OpenApiRouter<S>
where
    AuthState: FromRef<S>,
    TenantsState: FromRef<S>,
    MailState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    super::channels::routes().routes(routes!(ticket_mail))
}

/// The mail sent (or being sent) for a ticket's replies, oldest first: queued, sending,
/// sent (with the relay's answer), retrying (with the next attempt's time) or failed (with
/// why). Staff only.
#[utoipa::path(get, path = "/api/workspaces/{ws}/tickets/{id}/mail", tag = "mail",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id"), ("id" = uuid::Uuid, Path)),
    responses((status = 200, body = Vec<OutboxMail>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn ticket_mail(Guarded(conn, _): TenantStaff, ApiPath(path): ApiPath<TicketPath>) -> AppResult<axum::Json<Vec<OutboxMail>>> {
    conn.store.ticket(conn.audience(), path.id).await?.ok_or(AppError::NotFound)?;
    Ok(axum::Json(conn.store.mail().ticket_mail(path.id).await?))
}
