//! Auth routes: first-admin setup, login/logout, me, own sessions and API tokens, and the
//! platform administrator's user management.

use std::time::Instant;

use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::password::Passwords;
use super::{API_TOKEN_PREFIX, AuthState, AuthUser, PlatformAdmin, SESSION_COOKIE, SESSION_PREFIX};
use crate::crypto::{new_token, token_hash};
use crate::error::{AppError, AppResult, FieldError, Problem};
use crate::http::client::Client;
use crate::http::extract::{ApiJson, ApiPath};
use crate::store::{
    ApiTokenInfo, Credential, Millis, NewApiToken, NewSession, NewUser, SessionId, SessionInfo, TokenId, User, UserId, UserPatch,
};

pub fn routes<S>() -> OpenApiRouter<S>
where
    AuthState: FromRef<S>,
    crate::http::client::TrustedProxies: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    OpenApiRouter::new()
        .routes(routes!(setup_state, setup))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(list_sessions))
        .routes(routes!(revoke_session))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(list_users, create_user))
        .routes(routes!(update_user))
        .routes(routes!(super::stream::stream_token))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserRequest {
    #[schema(min_length = 3, max_length = 254, pattern = r"^[^\s@\u0000-\u001f\u007f-\u009f]+@[^\s@\u0000-\u001f\u007f-\u009f]+$")]
    pub email: String,
    /// 8 to 72 characters.
    #[schema(min_length = 8, max_length = 72)]
    pub password: String,
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: String,
    /// Only honoured on `POST /api/users`; the first user is always an administrator.
    #[serde(default)]
    pub is_admin: bool,
}

/// Exactly the schema's rule: no whitespace or control character anywhere, one `@` between
/// non-empty parts, at most 254 characters.
pub fn validate_email(field: &str, email: &str) -> Result<(), FieldError> {
    let ok = email.chars().count() <= 254
        && !email.chars().any(|c| crate::http::is_space(c) || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if ok { Ok(()) } else { Err(FieldError::new(field, "must be an email address")) }
}

/// Trimmed, 1 to `max` characters, as a 422 on failure.
pub fn validate_name(field: &str, value: &str, max: usize) -> AppResult<String> {
    validate_text(field, value, max).map_err(|e| AppError::Validation(vec![e]))
}

/// At most `max` characters as sent (the schema's `maxLength`), at least one of them not a
/// space (its `pattern`); returned trimmed.
pub fn validate_text(field: &str, value: &str, max: usize) -> Result<String, FieldError> {
    if value.chars().count() > max {
        return Err(FieldError::new(field, format!("must be at most {max} characters")));
    }
    let value = value.trim_matches(crate::http::is_space);
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    Ok(value.to_string())
}

impl NewUserRequest {
    async fn into_new_user(self, passwords: &Passwords) -> AppResult<NewUser> {
        let mut errors = Vec::new();
        if let Err(e) = validate_email("email", &self.email) {
            errors.push(e);
        }
        let name = validate_text("name", &self.name, 200).map_err(|e| errors.push(e)).ok();
        if let Err(e) = Passwords::validate("password", &self.password) {
            errors.push(e);
        }
        if !errors.is_empty() {
            return Err(AppError::Validation(errors));
        }
        Ok(NewUser {
            email: self.email.trim().to_string(),
            name: name.unwrap_or_default(),
            password_hash: passwords.hash(self.password).await?,
            is_admin: self.is_admin,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SetupState {
    /// True until the first administrator exists (then `POST /api/setup` is refused).
    pub needed: bool,
}

/// Whether the first administrator is still to be created (the console's first-run screen).
#[utoipa::path(get, path = "/api/setup", tag = "auth", security(()), responses((status = 200, body = SetupState)))]
async fn setup_state(State(auth): State<AuthState>) -> AppResult<axum::Json<SetupState>> {
    Ok(axum::Json(SetupState { needed: auth.platform.user_count().await? == 0 }))
}

/// Creates the first platform administrator. Refused (409) once any user exists.
#[utoipa::path(post, path = "/api/setup", tag = "auth", request_body = NewUserRequest,
    responses((status = 201, body = User), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn setup(State(auth): State<AuthState>, ApiJson(body): ApiJson<NewUserRequest>) -> AppResult<(StatusCode, axum::Json<User>)> {
    if auth.platform.user_count().await? > 0 {
        return Err(AppError::Conflict("setup is already done: users exist".into()));
    }
    let new = body.into_new_user(&auth.passwords).await?;
    let user = auth.platform.create_first_admin(new).await?;
    tracing::info!(user = %user.id, "first administrator created");
    Ok((StatusCode::CREATED, axum::Json(user)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// The session token; send it as `Authorization: Bearer <token>`. Shown once.
    pub token: String,
    pub user: User,
    pub expires_at: Millis,
}

/// Password login. Sets the HttpOnly session cookie as well as returning the token.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem)))]
async fn login(
    State(auth): State<AuthState>,
    client: Client,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginRequest>,
) -> AppResult<Response> {
    // Longer than any password that can be set: it cannot be right. The same answer as any
    // wrong password (it counts towards throttling below, like one).
    let impossible = body.password.chars().count() > super::password::MAX_LEN;
    let ip = client.ip;
    let _attempt = auth
        .throttle
        .begin(&body.email, ip, Instant::now())
        .map_err(|wait| AppError::TooManyRequests { retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64 })?;
    let found = auth.platform.user_by_email(&body.email).await?;
    // Verify on every path, against the dummy hash when there is no such user.
    let hash = found.as_ref().map(|(_, hash)| hash.clone());
    let suspect = auth.throttle.suspect(ip, Instant::now());
    let password = if impossible { String::new() } else { body.password };
    let matches = auth.passwords.verify(password, hash, suspect).await? && !impossible;
    let user = match found {
        Some((user, _)) if matches && !user.disabled => user,
        _ => {
            auth.throttle.record_failure(&body.email, ip, Instant::now());
            return Err(AppError::Unauthorized);
        }
    };
    auth.throttle.record_success(&body.email, ip);
    let token = new_token(SESSION_PREFIX);
    let expires_at = Millis::now().plus(auth.session_ttl);
    let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(|ua| ua.chars().take(256).collect());
    auth.platform
        .create_session(NewSession {
            token_hash: token_hash(&token),
            user_id: user.id,
            expires_at,
            user_agent,
            ip: ip.map(|ip| ip.to_string()),
        })
        .await?;
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        auth.session_ttl.as_secs(),
        if auth.cookie_secure || client.https { "; Secure" } else { "" }
    );
    let mut response = axum::Json(LoginResponse { token, user, expires_at }).into_response();
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).map_err(AppError::internal)?);
    Ok(response)
}

/// Ends the calling session and clears the cookie. API tokens are revoked with
/// `DELETE /api/auth/tokens/{id}` instead.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth",
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem)))]
async fn logout(State(auth): State<AuthState>, caller: AuthUser) -> AppResult<Response> {
    let Credential::Session(session) = caller.credential else {
        return Err(AppError::BadRequest("an API token cannot log out; revoke it instead".into()));
    };
    auth.platform.revoke_session(caller.user.id, session).await?;
    auth.forget_credential(caller.credential);
    let clear = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&clear).map_err(AppError::internal)?);
    Ok(response)
}

/// The calling user.
#[utoipa::path(get, path = "/api/me", tag = "auth", responses((status = 200, body = User), (status = 401, body = Problem)))]
async fn me(caller: AuthUser) -> axum::Json<User> {
    axum::Json(caller.user)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    #[serde(flatten)]
    pub session: SessionInfo,
    /// Whether this is the session making the request.
    pub current: bool,
}

/// The caller's live sessions.
#[utoipa::path(get, path = "/api/auth/sessions", tag = "auth", responses((status = 200, body = Vec<SessionView>), (status = 401, body = Problem)))]
async fn list_sessions(State(auth): State<AuthState>, caller: AuthUser) -> AppResult<axum::Json<Vec<SessionView>>> {
    let sessions = auth.platform.list_sessions(caller.user.id, Millis::now()).await?;
    let views = sessions
        .into_iter()
        .map(|session| SessionView { current: caller.credential == Credential::Session(session.id), session })
        .collect();
    Ok(axum::Json(views))
}

/// Ends one of the caller's sessions (404 for anyone else's).
#[utoipa::path(delete, path = "/api/auth/sessions/{id}", tag = "auth", params(("id" = uuid::Uuid, Path)),
    responses((status = 204), (status = 400, body = Problem), (status = 404, body = Problem)))]
async fn revoke_session(State(auth): State<AuthState>, caller: AuthUser, ApiPath(id): ApiPath<SessionId>) -> AppResult<StatusCode> {
    if !auth.platform.revoke_session(caller.user.id, id).await? {
        return Err(AppError::NotFound);
    }
    auth.forget_credential(Credential::Session(id));
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTokenRequest {
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    pub name: String,
    /// Lifetime in days; omitted, the token lives until revoked.
    #[schema(minimum = 1, maximum = 3650)]
    #[serde(default, deserialize_with = "crate::http::extract::optional_whole_u32")]
    pub expires_in_days: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    /// The token itself. Shown only in this response; store it now.
    pub token: String,
    #[serde(flatten)]
    pub info: ApiTokenInfo,
}

/// The caller's API tokens (never the secrets).
#[utoipa::path(get, path = "/api/auth/tokens", tag = "auth", responses((status = 200, body = Vec<ApiTokenInfo>), (status = 401, body = Problem)))]
async fn list_tokens(State(auth): State<AuthState>, caller: AuthUser) -> AppResult<axum::Json<Vec<ApiTokenInfo>>> {
    Ok(axum::Json(auth.platform.list_api_tokens(caller.user.id).await?))
}

/// Creates an API token for the caller.
#[utoipa::path(post, path = "/api/auth/tokens", tag = "auth", request_body = NewTokenRequest,
    responses((status = 201, body = CreatedToken), (status = 401, body = Problem), (status = 422, body = Problem)))]
async fn create_token(
    State(auth): State<AuthState>,
    caller: AuthUser,
    ApiJson(body): ApiJson<NewTokenRequest>,
) -> AppResult<(StatusCode, axum::Json<CreatedToken>)> {
    let name = validate_text("name", &body.name, 100).map_err(|e| AppError::Validation(vec![e]))?;
    let expires_at = match body.expires_in_days {
        Some(0) => return Err(AppError::invalid("expires_in_days", "must be at least 1")),
        Some(days) if days > 3650 => return Err(AppError::invalid("expires_in_days", "must be at most 3650")),
        Some(days) => Some(Millis::now().plus(std::time::Duration::from_secs(u64::from(days) * 86_400))),
        None => None,
    };
    let token = new_token(API_TOKEN_PREFIX);
    let info =
        auth.platform.create_api_token(NewApiToken { token_hash: token_hash(&token), user_id: caller.user.id, name, expires_at }).await?;
    Ok((StatusCode::CREATED, axum::Json(CreatedToken { token, info })))
}

/// Revokes one of the caller's API tokens (404 for anyone else's).
#[utoipa::path(delete, path = "/api/auth/tokens/{id}", tag = "auth", params(("id" = uuid::Uuid, Path)),
    responses((status = 204), (status = 400, body = Problem), (status = 404, body = Problem)))]
async fn revoke_token(State(auth): State<AuthState>, caller: AuthUser, ApiPath(id): ApiPath<TokenId>) -> AppResult<StatusCode> {
    if !auth.platform.revoke_api_token(caller.user.id, id).await? {
        return Err(AppError::NotFound);
    }
    auth.forget_credential(Credential::ApiToken(id));
    Ok(StatusCode::NO_CONTENT)
}

/// Every user (platform administrators only).
#[utoipa::path(get, path = "/api/users", tag = "users", responses((status = 200, body = Vec<User>), (status = 403, body = Problem)))]
async fn list_users(State(auth): State<AuthState>, _admin: PlatformAdmin) -> AppResult<axum::Json<Vec<User>>> {
    Ok(axum::Json(auth.platform.list_users().await?))
}

/// Creates a user (platform administrators only).
#[utoipa::path(post, path = "/api/users", tag = "users", request_body = NewUserRequest,
    responses((status = 201, body = User), (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_user(
    State(auth): State<AuthState>,
    _admin: PlatformAdmin,
    ApiJson(body): ApiJson<NewUserRequest>,
) -> AppResult<(StatusCode, axum::Json<User>)> {
    let new = body.into_new_user(&auth.passwords).await?;
    Ok((StatusCode::CREATED, axum::Json(auth.platform.create_user(new).await?)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: Option<String>,
    /// Disabling signs the user out everywhere and refuses further logins.
    pub disabled: Option<bool>,
    pub is_admin: Option<bool>,
}

/// Changes a user's name, disabled flag or administrator flag (platform administrators only).
#[utoipa::path(patch, path = "/api/users/{id}", tag = "users", params(("id" = uuid::Uuid, Path)), request_body = UpdateUserRequest,
    responses((status = 200, body = User), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn update_user(
    State(auth): State<AuthState>,
    PlatformAdmin(admin): PlatformAdmin,
    ApiPath(id): ApiPath<UserId>,
    ApiJson(body): ApiJson<UpdateUserRequest>,
) -> AppResult<axum::Json<User>> {
    if id == admin.user.id && (body.disabled == Some(true) || body.is_admin == Some(false)) {
        return Err(AppError::Conflict("administrators cannot disable or demote themselves".into()));
    }
    let name = body.name.as_deref().map(|n| validate_text("name", n, 200)).transpose().map_err(|e| AppError::Validation(vec![e]))?;
    let user = auth.platform.update_user(id, UserPatch { name, disabled: body.disabled, is_admin: body.is_admin }).await?;
    auth.forget_user(id);
    Ok(axum::Json(user))
}
