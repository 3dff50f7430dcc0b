//! Short-lived, single-purpose tokens for the routes browsers open without headers
//! (EventSource, WebSocket): `POST /api/auth/stream-token`, then `?access_token=` on them.
//!
//! A token is bound to what it opens and to what minted it:
//! `edst_` + base64url(purpose ‖ credential kind ‖ credential id ‖ user id ‖ workspace id ‖
//! ticket id or nil ‖ expiry ms ‖ HMAC-SHA256 over all of it), keyed by a key derived from
//! the master key for this purpose only.
//! - It opens only a route of its purpose ([`Purpose`]), only in its workspace, and, when it
//!   names a ticket, only that ticket's stream.
//! - It is stateless (every instance sharing the master key accepts it, nothing is stored)
//!   and it dies with its parent: each use checks, uncached, that the session or API token
//!   that minted it is still live and its user enabled. It lives at most [`TTL`].
//! - It is accepted only where the [`StreamToken`] extractor stands, so it cannot stand in
//!   for a session anywhere else; the stream it opens is the parent credential's, and
//!   closes when that credential is revoked (see `live::access`).

use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts, RawPathParams, State};
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{AuthState, AuthUser};
use crate::crypto::{mac, mac_ok};
use crate::error::{AppError, AppResult, Problem};
use crate::http::extract::ApiJson;
use crate::store::{Credential, Millis, SessionId, TicketId, TokenId, UserId, WorkspaceId};

pub const PREFIX: &str = "edst_";
/// Long enough to open a stream after asking; too short to be worth stealing.
pub const TTL: Duration = Duration::from_secs(60);
const BODY: usize = 1 + 1 + 16 * 4 + 8;
const LEN: usize = BODY + 32;

/// Which kind of route a token opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// `GET /api/workspaces/{ws}/events` (narrowed to `?ticket=` when the token names one).
    #[default]
    Events,
    /// `GET /api/workspaces/{ws}/tickets/{id}/note` (the collaborative note's WebSocket):
    /// the token must name the ticket.
    Note,
}

impl Purpose {
    fn byte(self) -> u8 {
        match self {
            Purpose::Events => 1,
            Purpose::Note => 2,
        }
    }
}

/// Which route a [`StreamToken`] stands on: its purpose, and the ticket a request opens.
pub trait StreamRoute: Send + Sync + 'static {
    const PURPOSE: Purpose;
    /// The ticket the request opens, if it names one.
    fn ticket(parts: &Parts, path: &RawPathParams) -> Option<TicketId>;
}

/// The events stream: the ticket is `?ticket=`.
pub struct EventsRoute;

impl StreamRoute for EventsRoute {
    const PURPOSE: Purpose = Purpose::Events;
    fn ticket(parts: &Parts, _path: &RawPathParams) -> Option<TicketId> {
        query_param(parts, "ticket").and_then(|t| t.parse().ok())
    }
}

/// A ticket's note: the ticket is the path's `{id}`.
pub struct NoteRoute;

impl StreamRoute for NoteRoute {
    const PURPOSE: Purpose = Purpose::Note;
    fn ticket(_parts: &Parts, path: &RawPathParams) -> Option<TicketId> {
        path.iter().find_map(|(name, value)| (name == "id").then(|| value.parse().ok())).flatten()
    }
}

/// What a token carries, all of it signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    pub purpose: Purpose,
    /// The session or API token that minted it.
    pub parent: Credential,
    pub user: UserId,
    pub workspace: WorkspaceId,
    pub ticket: Option<TicketId>,
    pub expires: Millis,
}

pub fn mint(key: &[u8; 32], claims: &Claims) -> String {
    let (kind, parent) = match claims.parent {
        Credential::Session(id) => (1u8, id.0),
        Credential::ApiToken(id) => (2u8, id.0),
    };
    let mut body = Vec::with_capacity(LEN);
    body.push(claims.purpose.byte());
    body.push(kind);
    body.extend_from_slice(parent.as_bytes());
    body.extend_from_slice(claims.user.0.as_bytes());
    body.extend_from_slice(claims.workspace.0.as_bytes());
    body.extend_from_slice(claims.ticket.map(|t| t.0).unwrap_or_default().as_bytes());
    body.extend_from_slice(&claims.expires.0.to_be_bytes());
    let tag = mac(key, &body);
    body.extend_from_slice(&tag);
    format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(body))
}

/// The claims of a token for `purpose`, if it is genuine and unexpired at `now`.
pub fn verify(key: &[u8; 32], token: &str, purpose: Purpose, now: Millis) -> Option<Claims> {
    let bytes = URL_SAFE_NO_PAD.decode(token.strip_prefix(PREFIX)?).ok()?;
    if bytes.len() != LEN || !mac_ok(key, &bytes[..BODY], &bytes[BODY..]) || bytes[0] != purpose.byte() {
        return None;
    }
    let uuid_at = |at: usize| uuid::Uuid::from_slice(&bytes[at..at + 16]).ok();
    let parent = match (bytes[1], uuid_at(2)?) {
        (1, id) => Credential::Session(SessionId(id)),
        (2, id) => Credential::ApiToken(TokenId(id)),
        _ => return None,
    };
    let ticket = Some(uuid_at(50)?).filter(|t| !t.is_nil()).map(TicketId);
    let expires = Millis(i64::from_be_bytes(bytes[66..74].try_into().ok()?));
    let claims = Claims { purpose, parent, user: UserId(uuid_at(18)?), workspace: WorkspaceId(uuid_at(34)?), ticket, expires };
    (now < claims.expires).then_some(claims)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamTokenRequest {
    /// The workspace whose stream the token opens.
    pub workspace_id: WorkspaceId,
    /// Only this ticket's stream.
    pub ticket_id: Option<TicketId>,
    #[serde(default)]
    pub purpose: Purpose,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StreamTokenResponse {
    /// Pass as `?access_token=` to the route it was minted for.
    pub token: String,
    pub expires_at: Millis,
}

/// A token for opening one kind of live stream of one workspace (and, optionally, one
/// ticket) from a browser: valid 60 s, on that route only, and only while the session or
/// API token that asked for it lives. 404 for a workspace the caller is not a member of.
#[utoipa::path(post, path = "/api/auth/stream-token", tag = "auth", request_body = StreamTokenRequest,
    responses((status = 200, body = StreamTokenResponse), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub async fn stream_token(
    State(auth): State<AuthState>,
    caller: AuthUser,
    ApiJson(request): ApiJson<StreamTokenRequest>,
) -> AppResult<axum::Json<StreamTokenResponse>> {
    auth.platform.member_role(request.workspace_id, caller.user.id).await?.ok_or(AppError::NotFound)?;
    if request.purpose == Purpose::Note && request.ticket_id.is_none() {
        return Err(AppError::invalid("ticket_id", "a note token opens one ticket's note: name the ticket"));
    }
    let claims = Claims {
        purpose: request.purpose,
        parent: caller.credential,
        user: caller.user.id,
        workspace: request.workspace_id,
        ticket: request.ticket_id,
        expires: Millis::now().plus(TTL),
    };
    Ok(axum::Json(StreamTokenResponse { token: mint(&auth.stream_key, &claims), expires_at: claims.expires }))
}

/// On a stream route `R`: when the request carries `?access_token=` and no other
/// credential, verifies it against the route (its purpose, its workspace, its ticket) and
/// its parent credential, and makes the parent's user the request's caller (for
/// `TenantConn` after it), with the parent as the credential. Anything amiss: 401.
pub struct StreamToken<R: StreamRoute = EventsRoute>(std::marker::PhantomData<R>);

fn query_param(parts: &Parts, name: &str) -> Option<String> {
    parts.uri.query()?.split('&').find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
}

impl<S, R> FromRequestParts<S> for StreamToken<R>
where
    AuthState: FromRef<S>,
    S: Send + Sync,
    R: StreamRoute,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let this = Self(std::marker::PhantomData);
        let Some(token) = query_param(parts, "access_token") else { return Ok(this) };
        if super::extract::presented_token(parts).is_some() {
            return Ok(this);
        }
        let auth = AuthState::from_ref(state);
        let claims = verify(&auth.stream_key, &token, R::PURPOSE, Millis::now()).ok_or(AppError::Unauthorized)?;
        let raw = RawPathParams::from_request_parts(parts, state).await.map_err(|_| AppError::Unauthorized)?;
        let workspace = raw.iter().find_map(|(name, value)| (name == "ws").then(|| value.parse::<WorkspaceId>().ok())).flatten();
        if workspace != Some(claims.workspace) {
            return Err(AppError::Unauthorized);
        }
        let opens = R::ticket(parts, &raw);
        let fits = match claims.ticket {
            Some(ticket) => opens == Some(ticket),
            // A token for a whole workspace's events; a note token always names its ticket.
            None => R::PURPOSE == Purpose::Events,
        };
        if !fits {
            return Err(AppError::Unauthorized);
        }
        let user = auth
            .access
            .credential_user(claims.parent, Millis::now())
            .await?
            .filter(|u| u.id == claims.user)
            .ok_or(AppError::Unauthorized)?;
        parts.extensions.insert(AuthUser { user, credential: claims.parent });
        Ok(this)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(expires: i64) -> Claims {
        Claims {
            purpose: Purpose::Events,
            parent: Credential::Session(SessionId::new()),
            user: UserId::new(),
            workspace: WorkspaceId::new(),
            ticket: Some(TicketId::new()),
            expires: Millis(expires),
        }
    }

    #[test]
    fn tokens_carry_their_claims_until_they_expire_and_not_after_tampering() {
        let key = [9u8; 32];
        let c = claims(2_000);
        let token = mint(&key, &c);
        assert_eq!(verify(&key, &token, Purpose::Events, Millis(1_999)), Some(c));
        assert_eq!(verify(&key, &token, Purpose::Events, Millis(2_000)), None, "expired");
        assert_eq!(verify(&[8u8; 32], &token, Purpose::Events, Millis(0)), None, "another key");
        let mut forged = token.clone().into_bytes();
        let last = forged.len() - 10;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(verify(&key, std::str::from_utf8(&forged).unwrap(), Purpose::Events, Millis(0)), None, "tampered");
        assert_eq!(verify(&key, "eds_not-a-stream-token", Purpose::Events, Millis(0)), None);
        assert_eq!(verify(&key, &token, Purpose::Note, Millis(0)), None, "another purpose");
        let note = Claims { purpose: Purpose::Note, ..c };
        assert_eq!(verify(&key, &mint(&key, &note), Purpose::Note, Millis(0)), Some(note));
        assert_eq!(verify(&key, &mint(&key, &note), Purpose::Events, Millis(0)), None);
        assert_eq!(verify(&key, "edst_!!!", Purpose::Events, Millis(0)), None);
        let whole = Claims { ticket: None, parent: Credential::ApiToken(TokenId::new()), ..c };
        assert_eq!(verify(&key, &mint(&key, &whole), Purpose::Events, Millis(0)), Some(whole), "no ticket, an API token");
    }
}
