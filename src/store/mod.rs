//! The storage boundary: backend-neutral traits and models; `sqlite/` (and `postgres/`) implement them.
//!
//! Two kinds of data, two traits. [`PlatformStore`] holds what spans workspaces: users,
//! credentials, sessions, API tokens, the workspace registry and memberships.
//! [`TenantStore`] is one workspace's data, reached through [`TenantStores::open`]; every
//! write on it appends its event(s) to the workspace log in the same transaction, and
//! nothing in its signatures assumes a file per tenant.
//!
//! This module never imports axum, rusqlite or tokio-postgres.

pub mod access;
pub mod attachments;
pub mod blobs;
pub mod bootstrap;
pub mod consumers;
pub mod keys;
pub mod mail;
pub mod model;
pub mod notes;
pub mod notifications;
pub mod postgres;
pub mod sqlite;
pub mod visibility;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

pub use consumers::{Advance, ConsumerIndex, ConsumerLog, ConsumerState, Wake};
pub use model::*;
pub use notes::NoteStore;
pub use notifications::{NotificationPreferences, NotificationStore};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness or state conflict (duplicate email, link already present, …).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A value the store refuses (a reference to a member that does not exist, …).
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    /// The database could not be reached or stayed locked past its busy timeout.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal: {0}")]
    Internal(String),
    /// Storage: this many bytes more would pass the workspace's limit.
    #[error("storage quota: {used} of {limit} bytes used, {requested} more requested")]
    QuotaExceeded { used: u64, limit: u64, requested: u64 },
}

impl StoreError {
    pub fn internal(err: impl std::fmt::Display) -> Self {
        Self::Internal(err.to_string())
    }
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid { field: field.to_string(), message: message.into() }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// `<data>/tenants/<ws>/`: the folder that holds one workspace on a single box (its
/// database, files and search index), so that copying it copies the workspace.
pub fn workspace_folder(data_dir: &std::path::Path, workspace: WorkspaceId) -> std::path::PathBuf {
    data_dir.join("tenants").join(workspace.to_string())
}

/// One business event, as a backend appends it to the log.
pub struct Event<'a, T: serde::Serialize> {
    /// `ticket.created`, `comment.created`, …
    pub kind: &'static str,
    pub entity: &'static str,
    pub entity_id: String,
    /// The entity after the change (or `{ "id": … }` for removals).
    pub data: &'a T,
    /// The ticket the event is about: requesters see events of their own tickets.
    pub ticket: Option<TicketId>,
    /// Internal notes, members, links: never shown to requesters.
    pub staff_only: bool,
    /// An event for one user alone (a notification); see `visibility.rs`.
    pub recipient: Option<UserId>,
}

/// The `data` of a removal event: just the removed entity's id.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Removed<I: serde::Serialize> {
    pub id: I,
}

/// Every business event, defined once for both backends, with its visibility: who may see
/// an event must not depend on where the workspace is stored.
impl<'a> Event<'a, Workspace> {
    pub fn workspace_created(workspace: &'a Workspace) -> Self {
        Event {
            kind: "workspace.created",
            entity: "workspace",
            entity_id: workspace.id.to_string(),
            data: workspace,
            ticket: None,
            staff_only: false,
            recipient: None,
        }
    }
}

impl<'a> Event<'a, Member> {
    pub fn member(member: &'a Member, added: bool) -> Self {
        let kind = if added { "member.added" } else { "member.updated" };
        Event {
            kind,
            entity: "member",
            entity_id: member.user_id.to_string(),
            data: member,
            ticket: None,
            staff_only: true,
            recipient: None,
        }
    }
}

/// The last-owner rule, for both backends: a change from `before` to `after` is refused
/// when it takes away the only owner (`owners` counted under the same lock as the change).
pub fn check_owners(before: Option<Role>, after: Option<Role>, owners: i64) -> StoreResult<()> {
    if before == Some(Role::Owner) && after != Some(Role::Owner) && owners <= 1 {
        return Err(StoreError::Conflict("a workspace keeps at least one owner".into()));
    }
    if before.is_none() && after.is_none() {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// The data of a `member.removed` event.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct RemovedMember {
    pub user_id: UserId,
}

impl<'a> Event<'a, RemovedMember> {
    pub fn member_removed(removed: &'a RemovedMember) -> Self {
        Event {
            kind: "member.removed",
            entity: "member",
            entity_id: removed.user_id.to_string(),
            data: removed,
            ticket: None,
            staff_only: true,
            recipient: None,
        }
    }
}

/// What bringing a workspace's copy of a membership from `current` to `wanted` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorWrite {
    /// Insert or update the row and record `member.added` (`added`) or `member.updated`.
    Upsert { member: Member, added: bool },
    /// Delete the row and record `member.removed`.
    Remove(UserId),
}

/// The one rule for mirroring a membership, for both backends: `None` when the copy is
/// already right (so replaying a mirror records nothing twice).
pub fn mirror_write(current: Option<&Member>, wanted: Option<&Member>) -> Option<MirrorWrite> {
    match (current, wanted) {
        (None, None) => None,
        (Some(c), None) => Some(MirrorWrite::Remove(c.user_id)),
        (None, Some(w)) => Some(MirrorWrite::Upsert { member: w.clone(), added: true }),
        (Some(c), Some(w)) => {
            let same = c.role == w.role && c.email == w.email && c.name == w.name;
            (!same).then(|| MirrorWrite::Upsert { member: w.clone(), added: false })
        }
    }
}

impl<'a> Event<'a, Ticket> {
    pub fn ticket_created(ticket: &'a Ticket) -> Self {
        Event {
            kind: "ticket.created",
            entity: "ticket",
            entity_id: ticket.id.to_string(),
            data: ticket,
            ticket: Some(ticket.id),
            staff_only: false,
            recipient: None,
        }
    }

    pub fn ticket_updated(ticket: &'a Ticket) -> Self {
        Event { kind: "ticket.updated", ..Self::ticket_created(ticket) }
    }
}

impl<'a> Event<'a, Removed<TicketId>> {
    pub fn ticket_deleted(removed: &'a Removed<TicketId>) -> Self {
        Event {
            kind: "ticket.deleted",
            entity: "ticket",
            entity_id: removed.id.to_string(),
            data: removed,
            ticket: Some(removed.id),
            staff_only: false,
            recipient: None,
        }
    }
}

impl<'a> Event<'a, Comment> {
    /// Internal notes are for staff only.
    pub fn comment_created(comment: &'a Comment) -> Self {
        Event {
            kind: "comment.created",
            entity: "comment",
            entity_id: comment.id.to_string(),
            data: comment,
            ticket: Some(comment.ticket_id),
            staff_only: comment.internal,
            recipient: None,
        }
    }
}

impl<'a> Event<'a, TicketLink> {
    /// Links can name other people's tickets: staff only.
    pub fn link_created(link: &'a TicketLink) -> Self {
        Event {
            kind: "link.created",
            entity: "link",
            entity_id: link.id.to_string(),
            data: link,
            ticket: Some(link.source_id),
            staff_only: true,
            recipient: None,
        }
    }
}

impl<'a> Event<'a, Removed<LinkId>> {
    pub fn link_deleted(removed: &'a Removed<LinkId>, ticket: TicketId) -> Self {
        Event {
            kind: "link.deleted",
            entity: "link",
            entity_id: removed.id.to_string(),
            data: removed,
            ticket: Some(ticket),
            staff_only: true,
            recipient: None,
        }
    }
}

/// The whole store: platform data, the way into each workspace, and the cross-workspace
/// parts of features that have them.
#[derive(Clone)]
pub struct Store {
    pub platform: Arc<dyn PlatformStore>,
    /// Whether access granted earlier still holds (long-lived connections, stream tokens).
    pub access: Arc<dyn access::AccessChecks>,
    pub tenants: Arc<dyn TenantStores>,
    /// The log consumers' cross-workspace bookkeeping (the runner's only).
    pub consumers: Arc<dyn ConsumerIndex>,
    /// The mailboxes that are read, and their reader leases (mail's only).
    pub mailboxes: Arc<dyn mail::Mailboxes>,
    pub notification_preferences: Arc<dyn NotificationPreferences>,
    /// Users' key bundles for client-side encryption.
    pub keys: Arc<dyn keys::KeyStore>,
    pub metrics: Arc<dyn StoreMetrics>,
}

/// Data that spans workspaces. Reached by handlers only through `PlatformConn`.
#[async_trait]
pub trait PlatformStore: Send + Sync + 'static {
    /// Cheap reachability check for `/ready`.
    async fn ping(&self) -> StoreResult<()>;

    async fn user_count(&self) -> StoreResult<u64>;
    /// Creates the first user as platform admin; `Conflict` once any user exists,
    /// decided atomically so two racing setups cannot both win.
    async fn create_first_admin(&self, user: NewUser) -> StoreResult<User>;
    /// `Conflict` when the email (case-insensitively) is taken.
    async fn create_user(&self, user: NewUser) -> StoreResult<User>;
    async fn user(&self, id: UserId) -> StoreResult<Option<User>>;
    /// The user and their password hash, by email (case-insensitive).
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<(User, String)>>;
    async fn list_users(&self) -> StoreResult<Vec<User>>;
    async fn update_user(&self, id: UserId, patch: UserPatch) -> StoreResult<User>;
    /// Replaces the password hash and ends every session of the user.
    async fn set_password(&self, id: UserId, password_hash: String) -> StoreResult<()>;

    async fn create_session(&self, session: NewSession) -> StoreResult<SessionInfo>;
    /// Resolves a bearer token's hash to its (enabled) user and credential, if it is a live
    /// session or API token at `now`.
    async fn authenticate(&self, token_hash: &str, now: Millis) -> StoreResult<Option<(User, Credential)>>;
    async fn list_sessions(&self, user: UserId, now: Millis) -> StoreResult<Vec<SessionInfo>>;
    /// `false` when the session does not exist or is not the user's.
    async fn revoke_session(&self, user: UserId, session: SessionId) -> StoreResult<bool>;

    async fn create_api_token(&self, token: NewApiToken) -> StoreResult<ApiTokenInfo>;
    async fn list_api_tokens(&self, user: UserId) -> StoreResult<Vec<ApiTokenInfo>>;
    async fn revoke_api_token(&self, user: UserId, token: TokenId) -> StoreResult<bool>;

    /// Registers the workspace and makes `owner` its owner, in one transaction, leaving the
    /// owner's membership as a pending mirror.
    async fn create_workspace(&self, workspace: &Workspace, owner: UserId) -> StoreResult<MemberChange>;
    async fn workspace(&self, id: WorkspaceId) -> StoreResult<Option<Workspace>>;
    async fn list_workspaces(&self) -> StoreResult<Vec<Workspace>>;
    /// The workspaces `user` belongs to, with their role in each.
    async fn workspaces_of(&self, user: UserId) -> StoreResult<Vec<(Workspace, Role)>>;
    /// The caller's role in the workspace; `None` when not a member or no such workspace.
    async fn member_role(&self, workspace: WorkspaceId, user: UserId) -> StoreResult<Option<Role>>;
    /// Adds a member, changes a member's role, or (`None`) removes them, by `actor`, in one
    /// transaction that also leaves the change as a pending mirror. Atomically refuses
    /// (`Conflict`) a change that would leave the workspace without an owner, however many
    /// changes race; `NotFound` when removing someone who is not a member.
    async fn set_member(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        role: Option<Role>,
        actor: Option<UserId>,
    ) -> StoreResult<MemberChange>;
    async fn list_members(&self, workspace: WorkspaceId) -> StoreResult<Vec<Member>>;
    async fn member(&self, workspace: WorkspaceId, user: UserId) -> StoreResult<Option<Member>>;
    /// Membership changes whose mirror may not be written (oldest first, at most `limit`).
    async fn pending_mirrors(&self, limit: usize) -> StoreResult<Vec<PendingMirror>>;
    /// The mirror of `pending` is written: forget it, unless a newer change of the same
    /// membership came since.
    async fn mirror_done(&self, pending: PendingMirror) -> StoreResult<()>;

    /// A user with their password hash, for moving a workspace's people with it.
    async fn user_secret(&self, id: UserId) -> StoreResult<Option<(User, String)>>;
    /// Inserts a user moved from another installation, keeping their id and password hash,
    /// never as a platform administrator (`is_admin` is ignored).
    /// `false` when that id is already here (nothing changes); `Conflict` when the email is
    /// taken by someone else.
    async fn import_user(&self, user: &User, password_hash: &str) -> StoreResult<bool>;
}

/// A change-feed wakeup. It carries no events and no payload: it means "drain everything
/// past your watermark" (for one workspace, or for every workspace you follow). Wakeups may
/// repeat and may be spurious; consumers coalesce them and trust only the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wakeup {
    /// Something was committed in this workspace.
    Workspace(WorkspaceId),
    /// Something was committed somewhere, or wakeups may have been missed (a reconnect, a
    /// lagging receiver): check every watermark.
    Any,
}

/// The way into individual workspaces' data.
#[async_trait]
pub trait TenantStores: Send + Sync + 'static {
    /// Wakeups for commits made anywhere: by this process, by another process on the same
    /// files (SQLite), or by another instance on the same database (Postgres).
    fn wakeups(&self) -> tokio::sync::broadcast::Receiver<Wakeup>;
    /// Creates the workspace's storage and records `workspace.created` as its first event.
    async fn create(&self, workspace: &Workspace, actor: UserId) -> StoreResult<Arc<dyn TenantStore>>;
    /// A handle on one workspace's data. Cheap when the workspace is already open.
    async fn open(&self, workspace: WorkspaceId) -> StoreResult<Arc<dyn TenantStore>>;
    /// Creates a workspace's storage from an export, rows and log verbatim (original ids,
    /// sync ids and ticket numbers), in one transaction. `Conflict` if it exists already.
    /// After the last row the transaction waits for `commit`: it commits when told, and
    /// rolls back, leaving nothing, when the sender is dropped (the rest of the import,
    /// its attachments' bytes, failed).
    async fn import(
        &self,
        workspace: &Workspace,
        rows: mpsc::Receiver<TenantRow>,
        commit: tokio::sync::oneshot::Receiver<()>,
    ) -> StoreResult<u64>;
}

/// A backend's own gauges and counters for `/metrics` (open tenant files for SQLite, the
/// connection pool for Postgres), in Prometheus' text format.
pub trait StoreMetrics: Send + Sync + 'static {
    fn render(&self) -> String;
}

/// Summary of a finished bootstrap stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapSummary {
    pub sync_id: i64,
    pub count: u64,
    pub checksum: String,
}

/// One workspace's data. Every method is one transaction. Write methods take the acting
/// user (recorded in the log); read methods take the [`Audience`] they answer for.
#[async_trait]
pub trait TenantStore: Send + Sync + 'static {
    fn workspace_id(&self) -> WorkspaceId;

    /// The workspace's log-consumer watermarks (their own trait: see `consumers.rs`).
    fn consumers(&self) -> &dyn ConsumerLog;
    /// The workspace's notifications and followers (their own trait: see `notifications.rs`).
    fn notifications(&self) -> &dyn NotificationStore;
    /// The workspace's collaborative notes (their own trait: see `notes.rs`).
    fn notes(&self) -> &dyn NoteStore;
    /// The workspace's attachments and storage quota (their own trait: see `attachments.rs`).
    fn attachments(&self) -> &dyn attachments::AttachmentStore;
    /// The workspace's mail channels (their own trait: see `mail.rs`).
    fn mail(&self) -> &dyn mail::MailStore;

    /// Makes the workspace's copy of `user`'s membership (for bootstrap and the log) equal to
    /// `member` (`None`: not a member), recording `member.added`, `member.updated` or
    /// `member.removed` as [`mirror_write`] decides; nothing when it already is.
    async fn mirror_member(&self, actor: Option<UserId>, user: UserId, member: Option<&Member>) -> StoreResult<()>;

    async fn create_ticket(&self, actor: UserId, ticket: NewTicket) -> StoreResult<Ticket>;
    async fn list_tickets(&self, audience: Audience, query: &TicketQuery) -> StoreResult<Page<Ticket>>;
    async fn ticket(&self, audience: Audience, id: TicketId) -> StoreResult<Option<Ticket>>;
    /// `NotFound` when the ticket is absent, deleted, or not visible to `audience`.
    async fn update_ticket(&self, actor: UserId, audience: Audience, id: TicketId, patch: TicketPatch) -> StoreResult<Ticket>;
    /// Soft delete: the ticket disappears from lists, bootstrap and lookups.
    async fn delete_ticket(&self, actor: UserId, id: TicketId) -> StoreResult<()>;

    /// `attachments`: files the actor uploaded to the ticket, put on this (public) comment
    /// in the same transaction (each `attachment.updated`); `Conflict` if one is not such a file.
    async fn add_comment(
        &self,
        actor: UserId,
        audience: Audience,
        ticket: TicketId,
        body: String,
        internal: bool,
        attachments: Vec<crate::store::blobs::AttachmentId>,
    ) -> StoreResult<Comment>;
    async fn list_comments(&self, audience: Audience, ticket: TicketId, query: &CommentQuery) -> StoreResult<Page<Comment>>;

    async fn add_link(&self, actor: UserId, source: TicketId, target: TicketId, kind: LinkKind) -> StoreResult<TicketLink>;
    async fn list_links(&self, ticket: TicketId) -> StoreResult<Vec<TicketLink>>;
    async fn remove_link(&self, actor: UserId, ticket: TicketId, link: LinkId) -> StoreResult<()>;

    /// Streams everything `audience` may see as NDJSON chunks into `out`, from ONE read
    /// transaction. `out` is bounded: a slow reader slows the producer, nothing buffers.
    async fn bootstrap(&self, audience: Audience, out: bootstrap::BootstrapSink) -> StoreResult<BootstrapSummary>;
    /// Events after `after` that `audience` may see, at most `limit`.
    async fn delta(&self, audience: Audience, after: i64, limit: usize) -> StoreResult<DeltaPage>;
    async fn audit(&self, query: &AuditQuery) -> StoreResult<Page<SyncEvent>>;
    /// Every event after `after` (at most `limit`), with its visibility, for the live bus.
    async fn feed(&self, after: i64, limit: usize) -> StoreResult<Page<FeedEvent>>;
    /// The newest sync_id (0 for an empty log).
    async fn head(&self) -> StoreResult<i64>;

    /// Every row of the workspace, deleted tickets and the whole log included, in
    /// [`TenantRow`] order, from one consistent snapshot. Returns the row count.
    async fn export(&self, out: mpsc::Sender<TenantRow>) -> StoreResult<u64>;
}
