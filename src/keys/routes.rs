//! The key bundle routes: the caller's own bundle, its old versions, and another member's
//! public keys.

use axum::extract::{FromRef, State};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{KeysState, may_read_keys};
use crate::auth::{AuthState, AuthUser};
use crate::error::{AppError, AppResult, Problem};
use crate::http::extract::{ApiJson, ApiPath};
use crate::http::opaque::{MAX_OPAQUE_CHARS, opaque};
use crate::store::keys::{KEY_VERSIONS, KeyBundle, PublicKeys};
use crate::store::{Millis, UserId, WorkspaceId};
use crate::tenants::{TenantConn, TenantsState};

pub fn routes<S>() -> OpenApiRouter<S>
where
    AuthState: FromRef<S>,
    TenantsState: FromRef<S>,
    KeysState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    OpenApiRouter::new().routes(routes!(my_keys, put_my_keys)).routes(routes!(my_keys_version)).routes(routes!(member_keys))
}

/// A new version of the caller's key bundle. Every field is the client's own base64; the
/// private keys arrive encrypted under a secret the server never sees.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBundle {
    #[schema(min_length = 1, max_length = 22000, pattern = r"^[A-Za-z0-9+/_-]+={0,2}$")]
    pub classical_public_key: String,
    #[schema(min_length = 1, max_length = 22000, pattern = r"^[A-Za-z0-9+/_-]+={0,2}$")]
    pub pq_public_key: String,
    #[schema(min_length = 1, max_length = 22000, pattern = r"^[A-Za-z0-9+/_-]+={0,2}$")]
    pub classical_priv_encrypted: String,
    #[schema(min_length = 1, max_length = 22000, pattern = r"^[A-Za-z0-9+/_-]+={0,2}$")]
    pub pq_priv_encrypted: String,
    /// The current version + 1 (1 for a first bundle); anything else is a 409.
    #[schema(minimum = 1, maximum = 2147483647)]
    #[serde(deserialize_with = "crate::http::number::u32")]
    pub key_version: u32,
}

/// The caller's current key bundle (404 when they have none yet).
#[utoipa::path(get, path = "/api/me/keys", tag = "keys",
    responses((status = 200, body = KeyBundle), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn my_keys(caller: AuthUser, State(state): State<KeysState>) -> AppResult<axum::Json<KeyBundle>> {
    state.keys.current_keys(caller.user.id).await?.map(axum::Json).ok_or(AppError::NotFound)
}

/// One version of the caller's key bundle, old ones included (to decrypt files wrapped for
/// them).
#[utoipa::path(get, path = "/api/me/keys/{version}", tag = "keys",
    params(("version" = u32, Path, minimum = 1, description = "The bundle's key_version")),
    responses((status = 200, body = KeyBundle), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn my_keys_version(
    caller: AuthUser,
    State(state): State<KeysState>,
    ApiPath(version): ApiPath<u32>,
) -> AppResult<axum::Json<KeyBundle>> {
    state.keys.keys_version(caller.user.id, version).await?.map(axum::Json).ok_or(AppError::NotFound)
}

/// Stores a new version of the caller's key bundle. `key_version` must be the current one
/// + 1: a stale or skipped version is a 409 naming the version expected, so two devices
/// cannot overwrite each other's keys. Earlier versions stay readable.
#[utoipa::path(put, path = "/api/me/keys", tag = "keys", request_body = NewKeyBundle,
    responses((status = 200, body = KeyBundle), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 409, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
async fn put_my_keys(
    caller: AuthUser,
    State(state): State<KeysState>,
    ApiJson(body): ApiJson<NewKeyBundle>,
) -> AppResult<axum::Json<KeyBundle>> {
    opaque("classical_public_key", &body.classical_public_key, MAX_OPAQUE_CHARS)?;
    opaque("pq_public_key", &body.pq_public_key, MAX_OPAQUE_CHARS)?;
    opaque("classical_priv_encrypted", &body.classical_priv_encrypted, MAX_OPAQUE_CHARS)?;
    opaque("pq_priv_encrypted", &body.pq_priv_encrypted, MAX_OPAQUE_CHARS)?;
    if !KEY_VERSIONS.contains(&body.key_version) {
        return Err(AppError::invalid("key_version", "from 1 to 2147483647"));
    }
    let bundle = KeyBundle {
        classical_public_key: body.classical_public_key,
        pq_public_key: body.pq_public_key,
        classical_priv_encrypted: body.classical_priv_encrypted,
        pq_priv_encrypted: body.pq_priv_encrypted,
        key_version: body.key_version,
        created_at: Millis(0),
    };
    Ok(axum::Json(state.keys.put_keys(caller.user.id, bundle).await?))
}

/// A member's current public keys, to wrap a file key for them. Staff read any member's; a
/// requester only staff members' and their own. 404 for anyone else, for a non-member, and
/// for a member without keys.
#[utoipa::path(get, path = "/api/workspaces/{ws}/members/{user}/keys", tag = "keys",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id"), ("user" = uuid::Uuid, Path, description = "The member's user id")),
    responses((status = 200, body = PublicKeys), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn member_keys(
    conn: TenantConn,
    State(state): State<KeysState>,
    ApiPath(path): ApiPath<(WorkspaceId, UserId)>,
) -> AppResult<axum::Json<PublicKeys>> {
    let user = path.1;
    let role = conn.role_of(user).await?.ok_or(AppError::NotFound)?;
    if !may_read_keys(conn.user(), conn.role, user, role) {
        return Err(AppError::NotFound);
    }
    let bundle = state.keys.current_keys(user).await?.ok_or(AppError::NotFound)?;
    Ok(axum::Json(bundle.public(user)))
}
