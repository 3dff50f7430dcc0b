//! Whether access granted earlier still holds: for connections that outlive the request
//! that authorised them (SSE streams, note WebSockets) and for stream tokens, which name
//! the credential that minted them.
//!
//! Asked without any cache in between, so the answer is what the platform data says now,
//! on every instance alike.

use async_trait::async_trait;

use super::{Credential, Millis, Role, StoreResult, User, UserId, WorkspaceId};

/// What a long-lived connection was opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Grant {
    /// A session or an API token (never a stream token: that names its own credential).
    pub credential: Credential,
    pub user: UserId,
    pub workspace: WorkspaceId,
}

#[async_trait]
pub trait AccessChecks: Send + Sync {
    /// For each of `grants`, in order: the user's role in the workspace now, or `None` when
    /// the grant no longer holds (the credential was revoked or expired, the user was
    /// disabled, or is no longer a member). One round trip for the whole slice.
    async fn roles_now(&self, grants: &[Grant], now: Millis) -> StoreResult<Vec<Option<Role>>>;

    /// The enabled user whose session or API token `credential` still is at `now`.
    async fn credential_user(&self, credential: Credential, now: Millis) -> StoreResult<Option<User>>;
}
