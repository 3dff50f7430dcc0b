//! The `AuthUser` extractor (a live session or API token of an enabled user) and
//! `PlatformAdmin` on top of it.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;

use super::{AuthState, SESSION_COOKIE};
use crate::crypto::token_hash;
use crate::error::AppError;
use crate::store::{Credential, Millis, User};

/// An authenticated caller. Resolved once per request and cached in its extensions, so a
/// handler that also takes `TenantConn` does not look the token up twice.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user: User,
    pub credential: Credential,
}

/// The bearer token, or else the session cookie.
pub(crate) fn presented_token(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, token) = value.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string());
    }
    parts.headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == SESSION_COOKIE).then(|| value.to_string())
    })
}

impl<S> FromRequestParts<S> for AuthUser
where
    AuthState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(cached) = parts.extensions.get::<AuthUser>() {
            return Ok(cached.clone());
        }
        let token = presented_token(parts).filter(|t| !t.is_empty() && t.len() <= 256).ok_or(AppError::Unauthorized)?;
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            super::csrf::check(parts)?;
        }
        let auth = AuthState::from_ref(state);
        let hash = token_hash(&token);
        let caller = match auth.credentials.get(&hash) {
            Some(caller) => caller,
            None => {
                let (user, credential) = auth.platform.authenticate(&hash, Millis::now()).await?.ok_or(AppError::Unauthorized)?;
                let caller = AuthUser { user, credential };
                auth.credentials.insert(hash, caller.clone());
                caller
            }
        };
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

/// A platform administrator (may create and manage users).
pub struct PlatformAdmin(pub AuthUser);

impl<S> FromRequestParts<S> for PlatformAdmin
where
    AuthState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = AuthUser::from_request_parts(parts, state).await?;
        if !caller.user.is_admin {
            return Err(AppError::Forbidden("platform administrators only".into()));
        }
        Ok(Self(caller))
    }
}
