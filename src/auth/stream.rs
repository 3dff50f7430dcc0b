//! Short-lived, single-purpose tokens for the two routes browsers open without headers
//! (EventSource, WebSocket): `POST /api/auth/stream-token`, then `?access_token=` on them.
//!
//! Stateless: `edst_` + base64url(user id ‖ expiry ms ‖ HMAC-SHA256 over both), keyed by a
//! key derived from the master key for this purpose only. Every instance sharing the master
//! key accepts it; nothing is stored; it lives [`TTL`]. It is accepted only where the
//! [`StreamToken`] extractor stands, so it cannot stand in for a session anywhere else.

use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use utoipa::ToSchema;

use super::{AuthState, AuthUser};
use crate::crypto::{mac, mac_ok};
use crate::error::{AppError, AppResult, Problem};
use crate::store::{Credential, Millis, UserId};

pub const PREFIX: &str = "edst_";
/// Long enough to open a stream after asking; too short to be worth stealing.
pub const TTL: Duration = Duration::from_secs(60);

pub fn mint(key: &[u8; 32], user: UserId, expires: Millis) -> String {
    let mut body = Vec::with_capacity(56);
    body.extend_from_slice(user.0.as_bytes());
    body.extend_from_slice(&expires.0.to_be_bytes());
    let tag = mac(key, &body);
    body.extend_from_slice(&tag);
    format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(body))
}

/// The user a token names, if it is genuine and unexpired at `now`.
pub fn verify(key: &[u8; 32], token: &str, now: Millis) -> Option<UserId> {
    let bytes = URL_SAFE_NO_PAD.decode(token.strip_prefix(PREFIX)?).ok()?;
    if bytes.len() != 56 || !mac_ok(key, &bytes[..24], &bytes[24..]) {
        return None;
    }
    let user = UserId(uuid::Uuid::from_slice(&bytes[..16]).ok()?);
    let expires = i64::from_be_bytes(bytes[16..24].try_into().ok()?);
    (now.0 < expires).then_some(user)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StreamTokenResponse {
    /// Pass as `?access_token=` to the events (and notes) stream.
    pub token: String,
    pub expires_at: Millis,
}

/// A token for opening one live stream from a browser (valid 60 s, stream routes only).
#[utoipa::path(post, path = "/api/auth/stream-token", tag = "auth",
    responses((status = 200, body = StreamTokenResponse), (status = 401, body = Problem)))]
pub async fn stream_token(State(auth): State<AuthState>, caller: AuthUser) -> AppResult<axum::Json<StreamTokenResponse>> {
    let expires_at = Millis::now().plus(TTL);
    Ok(axum::Json(StreamTokenResponse { token: mint(&auth.stream_key, caller.user.id, expires_at), expires_at }))
}

/// On a stream route: when the request carries `?access_token=` and no other credential,
/// verifies it and makes its user the request's caller (for `AuthUser` / `TenantConn`
/// after it). Invalid or expired: 401.
pub struct StreamToken;

impl<S> FromRequestParts<S> for StreamToken
where
    AuthState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = parts.uri.query().and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("access_token=").map(str::to_string)));
        let Some(token) = token else { return Ok(Self) };
        if super::extract::presented_token(parts).is_some() {
            return Ok(Self);
        }
        let auth = AuthState::from_ref(state);
        let user_id = verify(&auth.stream_key, &token, Millis::now()).ok_or(AppError::Unauthorized)?;
        let user = auth.platform.user(user_id).await?.filter(|u| !u.disabled).ok_or(AppError::Unauthorized)?;
        parts.extensions.insert(AuthUser { user, credential: Credential::StreamToken });
        Ok(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_until_they_expire_and_not_after_tampering() {
        let key = [9u8; 32];
        let user = UserId::new();
        let token = mint(&key, user, Millis(2_000));
        assert_eq!(verify(&key, &token, Millis(1_999)), Some(user));
        assert_eq!(verify(&key, &token, Millis(2_000)), None, "expired");
        assert_eq!(verify(&[8u8; 32], &token, Millis(0)), None, "another key");
        let mut forged = token.clone().into_bytes();
        let last = forged.len() - 10;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(verify(&key, std::str::from_utf8(&forged).unwrap(), Millis(0)), None, "tampered");
        assert_eq!(verify(&key, "eds_not-a-stream-token", Millis(0)), None);
        assert_eq!(verify(&key, "edst_!!!", Millis(0)), None);
    }
}
