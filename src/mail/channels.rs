//! The mail channel routes (owners and admins): list, create, read, change, delete, and
//! test a channel. Passwords go in (write-only) and never come out: the answers say
//! `password_set`.
//!
//! Every text that reaches a mail server in a command or a header (host, user, password,
//! mailbox, address, display name) is refused when it holds a control character, so no
//! value can end a command line early and smuggle in another.

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::secrets::{self, Which};
use super::{MailState, probe};
use crate::auth::AuthState;
use crate::error::{AppError, AppResult, FieldError, Problem};
use crate::http::extract::{ApiJson, ApiPath};
use crate::store::mail::{ChannelId, ChannelRecord, ChannelSettings, MailChannel, Security, Server};
use crate::store::{Millis, WorkspaceId};
use crate::tenants::{Guarded, TenantAdmin, TenantConn, TenantsState};

pub(super) fn routes<S>() -> OpenApiRouter<S>
where
    AuthState: FromRef<S>,
    TenantsState: FromRef<S>,
    MailState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    OpenApiRouter::new()
        .routes(routes!(list_channels, create_channel))
        .routes(routes!(get_channel, patch_channel, delete_channel))
        .routes(routes!(test_channel))
}

#[derive(Debug, Deserialize)]
pub struct ChannelPath {
    #[allow(dead_code)]
    pub ws: WorkspaceId,
    pub id: ChannelId,
}

/// One mail server of a new channel.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerInput {
    /// A host name or an IP address.
    #[schema(min_length = 1, max_length = 253, pattern = r"^[A-Za-z0-9._:-]+$")]
    pub host: String,
    #[schema(minimum = 1, maximum = 65535)]
    #[serde(deserialize_with = "crate::http::number::u16")]
    pub port: u16,
    pub security: Security,
    /// The login name (empty or absent: an SMTP relay that takes mail without a login).
    #[serde(default)]
    #[schema(max_length = 320, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub user: String,
    /// Write-only: stored sealed, never returned.
    #[schema(min_length = 1, max_length = 1024, pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$", write_only)]
    pub password: Option<String>,
}

/// A new channel.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewChannel {
    /// The support address.
    #[schema(min_length = 3, max_length = 254, pattern = r"^[^\s@\u0000-\u001f\u007f-\u009f]+@[^\s@\u0000-\u001f\u007f-\u009f]+$")]
    pub address: String,
    /// The name replies are sent under.
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*\S[^\u0000-\u001f\u007f-\u009f]*$")]
    pub display_name: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
    pub imap: ServerInput,
    /// The IMAP folder to read (default `INBOX`).
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*\S[^\u0000-\u001f\u007f-\u009f]*$")]
    pub mailbox: Option<String>,
    pub smtp: ServerInput,
}

/// Changes to one server of a channel: absent fields stay.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerPatch {
    #[schema(min_length = 1, max_length = 253, pattern = r"^[A-Za-z0-9._:-]+$")]
    pub host: Option<String>,
    #[schema(minimum = 1, maximum = 65535)]
    #[serde(default, deserialize_with = "crate::http::number::opt_u16")]
    pub port: Option<u16>,
    pub security: Option<Security>,
    #[schema(max_length = 320, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub user: Option<String>,
    /// A new password; `null` removes the stored one. Write-only.
    #[serde(default, deserialize_with = "crate::http::present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 1024, pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$", write_only)]
    pub password: Option<Option<String>>,
}

/// Changes to a channel: absent fields stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelPatch {
    #[schema(min_length = 3, max_length = 254, pattern = r"^[^\s@\u0000-\u001f\u007f-\u009f]+@[^\s@\u0000-\u001f\u007f-\u009f]+$")]
    pub address: Option<String>,
    /// `null` removes it.
    #[serde(default, deserialize_with = "crate::http::present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*\S[^\u0000-\u001f\u007f-\u009f]*$")]
    pub display_name: Option<Option<String>>,
    pub enabled: Option<bool>,
    pub imap: Option<ServerPatch>,
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*\S[^\u0000-\u001f\u007f-\u009f]*$")]
    pub mailbox: Option<String>,
    pub smtp: Option<ServerPatch>,
}

/// Collects what is wrong with a request's fields, to answer all of it in one 422.
#[derive(Default)]
struct Check(Vec<FieldError>);

impl Check {
    fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// Refuses control characters and more than `max` characters; with `required`, a
    /// value that is empty or only spaces. Returns it trimmed.
    fn text(&mut self, field: &str, value: &str, max: usize, required: bool) -> String {
        if value.chars().any(char::is_control) {
            self.fail(field, "must not contain control characters (line breaks, tabs, NUL)");
        } else if value.chars().count() > max {
            self.fail(field, format!("must be at most {max} characters"));
        } else if required && value.trim_matches(crate::http::is_space).is_empty() {
            self.fail(field, "must not be empty");
        }
        value.trim_matches(crate::http::is_space).to_string()
    }

    fn host(&mut self, field: &str, host: &str) -> String {
        let ok = (1..=253).contains(&host.len()) && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
        if !ok {
            self.fail(field, "must be a host name or an IP address");
        }
        host.to_ascii_lowercase()
    }

    fn port(&mut self, field: &str, port: u16) {
        if port == 0 {
            self.fail(field, "must be from 1 to 65535");
        }
    }

    fn password(&mut self, field: &str, password: &str) {
        if password.is_empty() {
            self.fail(field, "must not be empty (send null to remove the password)");
        } else if password.chars().any(char::is_control) {
            self.fail(field, "must not contain control characters");
        } else if password.chars().count() > 1024 {
            self.fail(field, "must be at most 1024 characters");
        }
    }

    fn address(&mut self, field: &str, address: &str) -> String {
        if let Err(e) = crate::auth::validate_email(field, address) {
            self.0.push(e);
        }
        address.trim().to_string()
    }

    fn done(self) -> AppResult<()> {
        if self.0.is_empty() { Ok(()) } else { Err(AppError::Validation(self.0)) }
    }
}

/// A password for the store: sealed for this workspace, channel and server.
fn seal(state: &MailState, conn: &TenantConn, channel: ChannelId, which: Which, password: &str) -> Vec<u8> {
    secrets::seal(&state.seal_key, conn.workspace, channel, which, password)
}

/// A server's settings after `patch`, checked into `check`.
fn patched_server(check: &mut Check, prefix: &str, server: &Server, patch: &ServerPatch) -> Server {
    Server {
        host: patch.host.as_deref().map_or_else(|| server.host.clone(), |h| check.host(&format!("{prefix}.host"), h)),
        port: patch.port.inspect(|p| check.port(&format!("{prefix}.port"), *p)).unwrap_or(server.port),
        security: patch.security.unwrap_or(server.security),
        user: patch.user.as_deref().map_or_else(|| server.user.clone(), |u| check.text(&format!("{prefix}.user"), u, 320, false)),
    }
}

/// The workspace's mail channels.
#[utoipa::path(get, path = "/api/workspaces/{ws}/mail/channels", tag = "mail",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id")),
    responses((status = 200, body = Vec<MailChannel>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn list_channels(Guarded(conn, _): TenantAdmin) -> AppResult<axum::Json<Vec<MailChannel>>> {
    let channels = conn.store.mail().channels().await?;
    Ok(axum::Json(channels.iter().map(MailChannel::from).collect()))
}

/// Connects a mailbox: mail to `address` is read from the IMAP server, replies go out
/// through the SMTP server. One channel per address (409 for a second).
#[utoipa::path(post, path = "/api/workspaces/{ws}/mail/channels", tag = "mail", request_body = NewChannel,
    params(("ws" = uuid::Uuid, Path, description = "Workspace id")),
    responses((status = 201, body = MailChannel), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
async fn create_channel(
    Guarded(conn, _): TenantAdmin,
    State(state): State<MailState>,
    ApiJson(body): ApiJson<NewChannel>,
) -> AppResult<(StatusCode, axum::Json<MailChannel>)> {
    let mut check = Check::default();
    let address = check.address("address", &body.address);
    let display_name = body.display_name.as_deref().map(|n| check.text("display_name", n, 200, true));
    let mailbox = body.mailbox.as_deref().map_or_else(|| "INBOX".to_string(), |m| check.text("mailbox", m, 200, true));
    let mut server = |prefix: &str, input: &ServerInput| {
        check.port(&format!("{prefix}.port"), input.port);
        if let Some(p) = &input.password {
            check.password(&format!("{prefix}.password"), p);
        }
        Server {
            host: check.host(&format!("{prefix}.host"), &input.host),
            port: input.port,
            security: input.security,
            user: check.text(&format!("{prefix}.user"), &input.user, 320, false),
        }
    };
    let (imap, smtp) = (server("imap", &body.imap), server("smtp", &body.smtp));
    check.done()?;
    let id = ChannelId::new();
    let now = Millis::now();
    let record = ChannelRecord {
        id,
        settings: ChannelSettings { address, display_name, enabled: body.enabled.unwrap_or(true), imap, mailbox, smtp },
        imap_password: body.imap.password.as_deref().map(|p| seal(&state, &conn, id, Which::Imap, p)),
        smtp_password: body.smtp.password.as_deref().map(|p| seal(&state, &conn, id, Which::Smtp, p)),
        created_at: now,
        updated_at: now,
    };
    conn.store.mail().create_channel(conn.user(), &record).await?;
    Ok((StatusCode::CREATED, axum::Json(MailChannel::from(&record))))
}

/// One channel.
#[utoipa::path(get, path = "/api/workspaces/{ws}/mail/channels/{id}", tag = "mail",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id"), ("id" = uuid::Uuid, Path)),
    responses((status = 200, body = MailChannel), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn get_channel(Guarded(conn, _): TenantAdmin, ApiPath(path): ApiPath<ChannelPath>) -> AppResult<axum::Json<MailChannel>> {
    let channel = conn.store.mail().channel(path.id).await?.ok_or(AppError::NotFound)?;
    Ok(axum::Json(MailChannel::from(&channel)))
}

/// Changes a channel; absent fields stay as they are, a password only when one is sent
/// (`null` removes it).
#[utoipa::path(patch, path = "/api/workspaces/{ws}/mail/channels/{id}", tag = "mail", request_body = ChannelPatch,
    params(("ws" = uuid::Uuid, Path, description = "Workspace id"), ("id" = uuid::Uuid, Path)),
    responses((status = 200, body = MailChannel), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
async fn patch_channel(
    Guarded(conn, _): TenantAdmin,
    State(state): State<MailState>,
    ApiPath(path): ApiPath<ChannelPath>,
    ApiJson(body): ApiJson<ChannelPatch>,
) -> AppResult<axum::Json<MailChannel>> {
    let mut channel = conn.store.mail().channel(path.id).await?.ok_or(AppError::NotFound)?;
    let mut check = Check::default();
    let s = &mut channel.settings;
    if let Some(address) = &body.address {
        s.address = check.address("address", address);
    }
    if let Some(name) = &body.display_name {
        s.display_name = name.as_deref().map(|n| check.text("display_name", n, 200, true));
    }
    if let Some(mailbox) = &body.mailbox {
        s.mailbox = check.text("mailbox", mailbox, 200, true);
    }
    s.enabled = body.enabled.unwrap_or(s.enabled);
    let (imap, smtp) = (body.imap.unwrap_or_default(), body.smtp.unwrap_or_default());
    s.imap = patched_server(&mut check, "imap", &s.imap, &imap);
    s.smtp = patched_server(&mut check, "smtp", &s.smtp, &smtp);
    for (prefix, patch) in [("imap", &imap), ("smtp", &smtp)] {
        if let Some(Some(p)) = &patch.password {
            check.password(&format!("{prefix}.password"), p);
        }
    }
    check.done()?;
    if let Some(password) = &imap.password {
        channel.imap_password = password.as_deref().map(|p| seal(&state, &conn, channel.id, Which::Imap, p));
    }
    if let Some(password) = &smtp.password {
        channel.smtp_password = password.as_deref().map(|p| seal(&state, &conn, channel.id, Which::Smtp, p));
    }
    channel.updated_at = Millis::now();
    conn.store.mail().update_channel(conn.user(), &channel).await?;
    Ok(axum::Json(MailChannel::from(&channel)))
}

/// Removes a channel: its mailbox is no longer read, and nothing more is sent through it.
#[utoipa::path(delete, path = "/api/workspaces/{ws}/mail/channels/{id}", tag = "mail",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id"), ("id" = uuid::Uuid, Path)),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn delete_channel(Guarded(conn, _): TenantAdmin, ApiPath(path): ApiPath<ChannelPath>) -> AppResult<StatusCode> {
    conn.store.mail().delete_channel(conn.user(), path.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Tries both servers as the mail workers will (connect, TLS as set, log in, open the
/// mailbox; nothing is read or sent) and reports each in words. 200 whether or not they
/// work: `ok` says.
#[utoipa::path(post, path = "/api/workspaces/{ws}/mail/channels/{id}/test", tag = "mail",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id"), ("id" = uuid::Uuid, Path)),
    responses((status = 200, body = probe::ProbeReport), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn test_channel(
    Guarded(conn, _): TenantAdmin,
    State(state): State<MailState>,
    ApiPath(path): ApiPath<ChannelPath>,
) -> AppResult<axum::Json<probe::ProbeReport>> {
    let channel = conn.store.mail().channel(path.id).await?.ok_or(AppError::NotFound)?;
    let open = |which: Which, sealed: &Option<Vec<u8>>| match sealed {
        None => Err(format!("no {} password is set", which.as_str().to_uppercase())),
        Some(sealed) => secrets::open(&state.seal_key, conn.workspace, channel.id, which, sealed).map_err(|_| {
            format!(
                "the stored {} password cannot be opened (it was sealed by a server with another master key): set it again",
                which.as_str().to_uppercase()
            )
        }),
    };
    let (imap_password, smtp_password) = (open(Which::Imap, &channel.imap_password), open(Which::Smtp, &channel.smtp_password));
    let s = &channel.settings;
    let (imap, smtp) = tokio::join!(
        probe::imap(&s.imap, &s.mailbox, imap_password.as_ref().map(|p| p.as_str()).map_err(String::as_str), &state.config),
        probe::smtp(&s.smtp, smtp_password.as_ref().map(|p| p.as_str()).map_err(String::as_str), &state.config),
    );
    Ok(axum::Json(probe::ProbeReport { ok: imap.ok && smtp.ok, imap, smtp }))
}
