//! The attachment routes: uploads streamed into the blob store in the order the module
//! header gives, downloads streamed out with ETag, Range and safe headers.

use std::ops::Range;

use axum::body::Body;
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AttachmentsState, blob_error, content, store_file};
use crate::auth::AuthState;
use crate::error::{AppError, AppResult, Problem};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, TicketPath};
use crate::store::attachments::{Attachment, AttachmentVersion, EncryptionHeader, Upload, Usage};
use crate::store::blobs::{AttachmentId, BlobKey, VersionId};
use crate::store::{CommentId, Role, TicketId, WorkspaceId};
use crate::tenants::{Guarded, TenantConn, TenantStaff, TenantsState};

pub fn routes<S>() -> OpenApiRouter<S>
where
    AuthState: FromRef<S>,
    TenantsState: FromRef<S>,
    AttachmentsState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    OpenApiRouter::new()
        .routes(routes!(list_attachments, upload))
        .routes(routes!(download_latest, delete_attachment))
        .routes(routes!(list_versions, upload_version))
        .routes(routes!(download_version))
        .routes(routes!(get_storage, put_storage))
}

/// What an owner (or a platform administrator) sets about the workspace's storage.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageLimits {
    /// The most bytes the workspace's attachments may take; `null` for no limit.
    #[schema(minimum = 0, maximum = 9223372036854775807_u64)]
    #[serde(default, deserialize_with = "crate::http::number::opt_u64")]
    pub limit: Option<u64>,
    /// Versions kept per attachment (older ones are pruned).
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(deserialize_with = "crate::http::number::u32")]
    pub max_versions: u32,
}

/// The workspace's storage: bytes used, held by uploads in flight, the limit, and the
/// versions kept per attachment (staff).
#[utoipa::path(get, path = "/api/workspaces/{ws}/storage", tag = "attachments",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id")),
    responses((status = 200, body = Usage), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn get_storage(Guarded(conn, _): TenantStaff) -> AppResult<axum::Json<Usage>> {
    Ok(axum::Json(conn.store.attachments().usage().await?))
}

/// Sets the workspace's storage limit and versions kept (owners and platform
/// administrators). Lowering the limit below what is used refuses new uploads; it deletes
/// nothing.
#[utoipa::path(put, path = "/api/workspaces/{ws}/storage", tag = "attachments", request_body = StorageLimits,
    params(("ws" = uuid::Uuid, Path, description = "Workspace id")),
    responses((status = 200, body = Usage), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
async fn put_storage(conn: TenantConn, ApiJson(limits): ApiJson<StorageLimits>) -> AppResult<axum::Json<Usage>> {
    if conn.role != Role::Owner && !conn.caller.user.is_admin {
        return Err(AppError::Forbidden("workspace owners and platform administrators only".into()));
    }
    if limits.limit.is_some_and(|l| l > i64::MAX as u64) {
        return Err(AppError::invalid("limit", "at most 9223372036854775807 bytes"));
    }
    if !(1..=1000).contains(&limits.max_versions) {
        return Err(AppError::invalid("max_versions", "from 1 to 1000"));
    }
    Ok(axum::Json(conn.store.attachments().set_limits(conn.user(), limits.limit, limits.max_versions).await?))
}

#[derive(Debug, Deserialize)]
pub struct AttachmentPath {
    #[allow(dead_code)]
    pub ws: WorkspaceId,
    pub id: TicketId,
    pub att: AttachmentId,
}

#[derive(Debug, Deserialize)]
pub struct VersionPath {
    #[allow(dead_code)]
    pub ws: WorkspaceId,
    pub id: TicketId,
    pub att: AttachmentId,
    pub ver: VersionId,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadParams {
    /// The file's name, as it will be shown and offered on download (its directories and
    /// control characters are dropped).
    #[param(min_length = 1, max_length = 255, pattern = r"[^./\\\s\x00-\x1f\x7f-\x9f]")]
    name: String,
    /// Attach to this comment of the ticket (an internal note's attachment is staff-only).
    comment_id: Option<CommentId>,
}

/// An upload's `encryption` parameter, a deep object in the query
/// (`encryption[wrapped_dek]=…&encryption[key_version]=2&…`), documented as
/// [`EncryptionHeader`] in the routes' `params`.
#[derive(Debug, Default, Deserialize)]
pub struct EncryptionParams {
    #[serde(rename = "encryption[eph_classical_public]")]
    eph_classical_public: Option<String>,
    #[serde(rename = "encryption[eph_pq_ciphertext]")]
    eph_pq_ciphertext: Option<String>,
    #[serde(rename = "encryption[wrapped_dek]")]
    wrapped_dek: Option<String>,
    #[serde(rename = "encryption[key_version]")]
    key_version: Option<String>,
}

impl EncryptionParams {
    /// The header, if the upload is encrypted; 422 naming the field when it is half given
    /// or not base64.
    fn header(self) -> AppResult<Option<EncryptionHeader>> {
        const ALL: &str =
            "an encrypted upload gives all of encryption[eph_classical_public], [eph_pq_ciphertext], [wrapped_dek] and [key_version]";
        let (eph_classical_public, eph_pq_ciphertext, wrapped_dek, key_version) =
            match (self.eph_classical_public, self.eph_pq_ciphertext, self.wrapped_dek, self.key_version) {
                (None, None, None, None) => return Ok(None),
                (Some(a), Some(b), Some(c), Some(d)) => (a, b, c, d),
                (None, ..) => return Err(AppError::invalid("encryption[eph_classical_public]", ALL)),
                (_, None, ..) => return Err(AppError::invalid("encryption[eph_pq_ciphertext]", ALL)),
                (_, _, None, _) => return Err(AppError::invalid("encryption[wrapped_dek]", ALL)),
                (.., None) => return Err(AppError::invalid("encryption[key_version]", ALL)),
            };
        use crate::http::opaque::opaque;
        opaque("encryption[eph_classical_public]", &eph_classical_public, EncryptionHeader::MAX_KEY_CHARS)?;
        opaque("encryption[eph_pq_ciphertext]", &eph_pq_ciphertext, EncryptionHeader::MAX_CIPHERTEXT_CHARS)?;
        opaque("encryption[wrapped_dek]", &wrapped_dek, EncryptionHeader::MAX_KEY_CHARS)?;
        let key_version: u32 = key_version
            .parse()
            .ok()
            .filter(|v| crate::store::keys::KEY_VERSIONS.contains(v))
            .ok_or_else(|| AppError::invalid("encryption[key_version]", "from 1 to 2147483647"))?;
        Ok(Some(EncryptionHeader { eph_classical_public, eph_pq_ciphertext, wrapped_dek, key_version }))
    }
}

/// The declared length, if any (one beyond the upload limit is refused by [`store_file`],
/// after the visibility check and before a byte is read).
fn declared_length(headers: &HeaderMap) -> AppResult<Option<u64>> {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else { return Ok(None) };
    let length: u64 =
        value.to_str().ok().and_then(|v| v.parse().ok()).ok_or_else(|| AppError::BadRequest("malformed Content-Length".into()))?;
    Ok(Some(length))
}

/// Where an upload goes: a new attachment on the ticket, or a new version of `existing`.
struct Destination {
    ticket: TicketId,
    existing: Option<AttachmentId>,
}

/// One upload, new attachment or new version, in the order the module header gives.
async fn store_upload(
    conn: &TenantConn,
    state: &AttachmentsState,
    Destination { ticket, existing }: Destination,
    params: UploadParams,
    encryption: EncryptionParams,
    headers: &HeaderMap,
    body: Body,
) -> AppResult<Attachment> {
    let encryption = encryption.header()?;
    let name = match existing {
        Some(_) => String::new(),
        None if params.name.chars().count() > 255 => return Err(AppError::invalid("name", "at most 255 characters")),
        None => content::clean_name(&params.name).ok_or_else(|| AppError::invalid("name", "must name the file (1–255 characters)"))?,
    };
    let declared = declared_length(headers)?;
    let upload = Upload {
        ticket,
        comment: params.comment_id,
        existing,
        name,
        declared_type: headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string),
        declared_length: declared,
        encryption,
    };
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    store_file(&conn.store, state, conn.audience(), conn.user(), upload, Box::pin(stream)).await
}

/// Attaches a file to the ticket (or, with `comment_id`, to one of its comments). The body
/// is the file's bytes, streamed; `Content-Type` is checked against them. 413 beyond the
/// upload limit or the workspace's storage quota (with `used`, `limit`, `requested`).
#[utoipa::path(post, path = "/api/workspaces/{ws}/tickets/{id}/attachments", tag = "attachments",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id"), ("id" = uuid::Uuid, Path), UploadParams,
        ("encryption" = Option<EncryptionHeader>, Query, style = DeepObject, explode, description = "Set on a client-side encrypted upload, with all four fields: the version's wrapped file key and what unwraps it, stored and returned byte for byte. The body is then ciphertext, stored as application/octet-stream, never type-sniffed nor indexed.")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = Attachment), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 413, body = Problem), (status = 422, body = Problem)))]
async fn upload(
    conn: TenantConn,
    State(state): State<AttachmentsState>,
    ApiPath(path): ApiPath<TicketPath>,
    ApiQuery(params): ApiQuery<UploadParams>,
    ApiQuery(encryption): ApiQuery<EncryptionParams>,
    headers: HeaderMap,
    body: Body,
) -> AppResult<(StatusCode, axum::Json<Attachment>)> {
    let attachment =
        store_upload(&conn, &state, Destination { ticket: path.id, existing: None }, params, encryption, &headers, body).await?;
    Ok((StatusCode::CREATED, axum::Json(attachment)))
}

/// Uploads a new version of the attachment; older ones beyond the workspace's version
/// limit are pruned after the response.
#[utoipa::path(post, path = "/api/workspaces/{ws}/tickets/{id}/attachments/{att}/versions", tag = "attachments",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id"), ("id" = uuid::Uuid, Path), ("att" = uuid::Uuid, Path),
        ("encryption" = Option<EncryptionHeader>, Query, style = DeepObject, explode, description = "Set on a client-side encrypted upload, with all four fields: the version's wrapped file key and what unwraps it, stored and returned byte for byte. The body is then ciphertext, stored as application/octet-stream, never type-sniffed nor indexed.")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = Attachment), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 413, body = Problem), (status = 422, body = Problem)))]
async fn upload_version(
    conn: TenantConn,
    State(state): State<AttachmentsState>,
    ApiPath(path): ApiPath<AttachmentPath>,
    ApiQuery(encryption): ApiQuery<EncryptionParams>,
    headers: HeaderMap,
    body: Body,
) -> AppResult<(StatusCode, axum::Json<Attachment>)> {
    let params = UploadParams { name: String::new(), comment_id: None };
    let attachment =
        store_upload(&conn, &state, Destination { ticket: path.id, existing: Some(path.att) }, params, encryption, &headers, body).await?;
    Ok((StatusCode::CREATED, axum::Json(attachment)))
}

/// The ticket's attachments the caller may see, each with its latest version.
#[utoipa::path(get, path = "/api/workspaces/{ws}/tickets/{id}/attachments", tag = "attachments",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id"), ("id" = uuid::Uuid, Path)),
    responses((status = 200, body = Vec<Attachment>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn list_attachments(conn: TenantConn, ApiPath(path): ApiPath<TicketPath>) -> AppResult<axum::Json<Vec<Attachment>>> {
    conn.store.attachments().target(conn.audience(), path.id, None, None).await?;
    Ok(axum::Json(conn.store.attachments().list(conn.audience(), path.id).await?))
}

/// The attachment's versions, newest first.
#[utoipa::path(get, path = "/api/workspaces/{ws}/tickets/{id}/attachments/{att}/versions", tag = "attachments",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id"), ("id" = uuid::Uuid, Path), ("att" = uuid::Uuid, Path)),
    responses((status = 200, body = Vec<AttachmentVersion>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn list_versions(conn: TenantConn, ApiPath(path): ApiPath<AttachmentPath>) -> AppResult<axum::Json<Vec<AttachmentVersion>>> {
    let versions = conn.store.attachments().versions(conn.audience(), path.id, path.att).await?;
    if versions.is_empty() {
        return Err(AppError::NotFound);
    }
    Ok(axum::Json(versions))
}

/// Soft-deletes the attachment (staff, or the requester who uploaded it).
#[utoipa::path(delete, path = "/api/workspaces/{ws}/tickets/{id}/attachments/{att}", tag = "attachments",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id"), ("id" = uuid::Uuid, Path), ("att" = uuid::Uuid, Path)),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn delete_attachment(conn: TenantConn, ApiPath(path): ApiPath<AttachmentPath>) -> AppResult<StatusCode> {
    conn.store.attachments().delete(conn.user(), conn.audience(), path.id, path.att).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The latest version's bytes (`Range` for part of them: 206).
#[utoipa::path(get, path = "/api/workspaces/{ws}/tickets/{id}/attachments/{att}", tag = "attachments",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id"), ("id" = uuid::Uuid, Path), ("att" = uuid::Uuid, Path),
        ("Range" = Option<String>, Header, description = "bytes=start-end")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 206, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 304), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem), (status = 416, body = Problem)))]
async fn download_latest(
    conn: TenantConn,
    State(state): State<AttachmentsState>,
    ApiPath(path): ApiPath<AttachmentPath>,
    headers: HeaderMap,
) -> AppResult<Response> {
    let attachment = conn.store.attachments().get(conn.audience(), path.id, path.att).await?.ok_or(AppError::NotFound)?;
    let version = attachment.latest.clone();
    serve(&conn, &state, &attachment, &version, &headers).await
}

/// One version's bytes.
#[utoipa::path(get, path = "/api/workspaces/{ws}/tickets/{id}/attachments/{att}/versions/{ver}", tag = "attachments",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id"), ("id" = uuid::Uuid, Path), ("att" = uuid::Uuid, Path), ("ver" = uuid::Uuid, Path),
        ("Range" = Option<String>, Header, description = "bytes=start-end")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 206, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 304), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem), (status = 416, body = Problem)))]
async fn download_version(
    conn: TenantConn,
    State(state): State<AttachmentsState>,
    ApiPath(path): ApiPath<VersionPath>,
    headers: HeaderMap,
) -> AppResult<Response> {
    let attachment = conn.store.attachments().get(conn.audience(), path.id, path.att).await?.ok_or(AppError::NotFound)?;
    let versions = conn.store.attachments().versions(conn.audience(), path.id, path.att).await?;
    let version = versions.into_iter().find(|v| v.id == path.ver).ok_or(AppError::NotFound)?;
    serve(&conn, &state, &attachment, &version, &headers).await
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` against an object of `total` bytes. `Err` (416) for
/// one outside it; several ranges are answered with the whole object, as RFC 9110 allows.
fn parse_range(value: &str, total: u64) -> Result<Option<Range<u64>>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let (start, end) = spec.split_once('-').ok_or(())?;
    let range = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            total.saturating_sub(n)..total
        }
        (start, "") => start.parse::<u64>().map_err(|_| ())?..total,
        (start, end) => {
            let (start, end): (u64, u64) = (start.parse().map_err(|_| ())?, end.parse().map_err(|_| ())?);
            if end < start {
                return Err(());
            }
            start..(end + 1).min(total)
        }
    };
    if range.start >= total || range.start >= range.end {
        return Err(());
    }
    Ok(Some(range))
}

async fn serve(
    conn: &TenantConn,
    state: &AttachmentsState,
    attachment: &Attachment,
    version: &AttachmentVersion,
    headers: &HeaderMap,
) -> AppResult<Response> {
    let etag = format!("\"{}\"", version.sha256);
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.split(',').any(|t| t.trim() == etag)) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(value) => match parse_range(value, version.size) {
            Ok(range) => range,
            Err(()) => {
                let mut response = AppError::RangeNotSatisfiable.into_response();
                response.headers_mut().insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{}", version.size)).map_err(AppError::internal)?,
                );
                return Ok(response);
            }
        },
        None => None,
    };
    let key = BlobKey { workspace: conn.workspace, attachment: attachment.id, version: version.id };
    let read = state.blobs.get(&key, range.clone()).await.map_err(blob_error)?;
    let (status, length) = match &range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.end - r.start),
        None => (StatusCode::OK, read.total),
    };
    let mut response = Response::new(Body::from_stream(read.body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_str(content::served_type(&version.content_type)).map_err(AppError::internal)?);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    h.insert(header::ETAG, HeaderValue::from_str(&etag).map_err(AppError::internal)?);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(&content::disposition(&attachment.name)).map_err(AppError::internal)?);
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    if let Some(r) = range {
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {}-{}/{}", r.start, r.end - 1, read.total)).map_err(AppError::internal)?,
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some(0..10)));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some(90..100)));
        assert_eq!(parse_range("bytes=-5", 100), Ok(Some(95..100)));
        assert_eq!(parse_range("bytes=50-500", 100), Ok(Some(50..100)));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=9-1", 100), Err(()));
        assert_eq!(parse_range("bytes=x-1", 100), Err(()));
        assert_eq!(parse_range("bytes=-0", 100), Err(()));
    }
}
