//! What notifications keep in the store, behind their own traits: a workspace's
//! notifications, followers and the consumer's view of its tickets ([`NotificationStore`],
//! reached through [`TenantStore::notifications`](super::TenantStore::notifications)), and
//! each user's preferences ([`NotificationPreferences`], platform data).
//!
//! The ticket view is the notifications consumer's own state, derived from the log and
//! written only in its transactions (with its watermark), so replaying a page after a crash
//! finds exactly the state the page was first planned against. Followers are a user's
//! subscriptions: the consumer adds and drops the automatic ones (requester, assignee) in
//! its transactions, a user's own follow or unfollow writes them directly. They are not
//! synced rows and record no event: following is "from now on", read when a page is
//! planned.
//!
//! Notifications are synced rows: a recipient's bootstrap carries theirs, and each one's
//! creation and every later change (read) is an event with the row as its data.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::consumers::Advance;
use super::{Audience, CommentId, Event, Millis, Page, Role, StoreResult, TicketId, UserId, WorkspaceId};

crate::store::model::id_type!(/// A notification.
    NotificationId);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// A ticket was assigned to you.
    Assigned,
    /// A public reply on a ticket you follow (or requested).
    Reply,
    /// An internal note on a ticket you follow (staff only).
    InternalNote,
    /// Someone mentioned you with `@` in a comment you may see.
    Mention,
}

crate::store::model::text_enum!(NotificationKind {
    Assigned = "assigned",
    Reply = "reply",
    InternalNote = "internal_note",
    Mention = "mention",
});

impl NotificationKind {
    pub const ALL: [Self; 4] = [Self::Assigned, Self::Reply, Self::InternalNote, Self::Mention];
}

/// One notification, as its recipient reads it (and as the `data` of its
/// `notification.created` event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Notification {
    pub id: NotificationId,
    pub kind: NotificationKind,
    pub recipient_id: UserId,
    pub ticket_id: TicketId,
    pub ticket_number: i64,
    pub ticket_title: String,
    /// Who did what this is about.
    pub actor_id: Option<UserId>,
    pub comment_id: Option<CommentId>,
    /// The start of the comment, for a reply, note or mention.
    pub excerpt: Option<String>,
    /// About an internal note: staff only.
    pub internal: bool,
    /// The sync_id of the event that caused it: the order of a user's notifications, and
    /// the position `read` with `up_to` compares against.
    pub seq: i64,
    pub created_at: Millis,
    pub read_at: Option<Millis>,
}

impl<'a> Event<'a, Notification> {
    /// Seen by its recipient alone; about an internal note, by a staff recipient alone.
    pub fn notification_created(n: &'a Notification) -> Self {
        Event {
            kind: "notification.created",
            entity: "notification",
            entity_id: n.id.to_string(),
            data: n,
            ticket: Some(n.ticket_id),
            staff_only: n.internal,
            recipient: Some(n.recipient_id),
        }
    }
}

impl<'a> Event<'a, Notification> {
    /// A notification after a change (it was read): the same row, for its recipient alone.
    pub fn notification_updated(n: &'a Notification) -> Self {
        Event { kind: "notification.updated", ..Self::notification_created(n) }
    }
}

/// Why someone follows a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FollowReason {
    Requester,
    Assignee,
    Manual,
}

crate::store::model::text_enum!(FollowReason { Requester = "requester", Assignee = "assignee", Manual = "manual" });

/// The consumer's view of a ticket, kept from the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketView {
    pub ticket_id: TicketId,
    pub number: i64,
    pub title: String,
    pub requester_id: UserId,
    pub assignee_id: Option<UserId>,
}

/// A member as the rules need them: to match a mention and to know who is staff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub user_id: UserId,
    pub email: String,
    pub name: String,
    pub role: Role,
}

/// Someone following a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Follower {
    pub ticket_id: TicketId,
    pub user_id: UserId,
    pub reason: FollowReason,
    /// The log position the follow counts from: only later events notify the follower.
    pub since_sync_id: i64,
}

/// A change to a ticket's followers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowerChange {
    /// Follows (or changes why); a follower already there keeps their `since_sync_id`.
    Set(Follower),
    Remove {
        ticket_id: TicketId,
        user_id: UserId,
    },
}

/// What a page's plan needs to read: its tickets' views and followers, and (when a comment
/// may mention someone) the workspace's members.
#[derive(Debug, Clone, Default)]
pub struct ContextNeeds {
    pub tickets: Vec<TicketId>,
    pub members: bool,
}

/// Plans a page from the [`NotificationContext`] its [`ContextNeeds`] read. Pure: it may run
/// on the store's own threads, inside the write's transaction.
pub type Planner = Box<dyn FnOnce(NotificationContext) -> StoreResult<NotificationBatch> + Send>;

/// What the rules read before planning a page: the views and followers of the page's
/// tickets, and (when a comment may mention someone) the workspace's members.
#[derive(Debug, Clone, Default)]
pub struct NotificationContext {
    pub tickets: Vec<TicketView>,
    pub followers: Vec<Follower>,
    pub members: Vec<MemberView>,
}

/// What the consumer writes for one page, in one transaction with its [`Advance`].
#[derive(Debug, Clone, Default)]
pub struct NotificationBatch {
    pub tickets: Vec<TicketView>,
    pub followers: Vec<FollowerChange>,
    /// Each is stored and recorded as a `notification.created` event for its recipient.
    pub notifications: Vec<Notification>,
}

impl NotificationBatch {
    pub fn is_empty(&self) -> bool {
        self.tickets.is_empty() && self.followers.is_empty() && self.notifications.is_empty()
    }
}

#[derive(Debug, Clone, Default)]
pub struct NotificationQuery {
    pub unread_only: bool,
    /// Newest first: notifications with `seq < before`.
    pub before: Option<i64>,
    pub limit: usize,
}

/// Which notifications `read` marks.
#[derive(Debug, Clone)]
pub enum ReadSelection {
    Ids(Vec<NotificationId>),
    /// This one and every older one.
    UpTo(NotificationId),
}

/// One workspace's notifications.
#[async_trait]
pub trait NotificationStore: Send + Sync {
    /// Reads what `needs` names, runs `plan` on it, writes the batch it returns and moves the
    /// consumer's watermark: the write and the advance in one transaction (SQLite reads the
    /// context in that transaction too; Postgres reads it just before, so that planning
    /// does not hold the workspace's head lock; the advance's compare-and-set keeps both
    /// exact). A plan that fails writes nothing.
    async fn plan_and_apply(&self, advance: Advance, needs: ContextNeeds, plan: Planner) -> StoreResult<()>;

    /// `audience`'s own notifications, newest first. A requester's never include those about
    /// internal notes (the log's rule, applied here too).
    async fn list(&self, audience: Audience, query: &NotificationQuery) -> StoreResult<Page<Notification>>;
    async fn unread_count(&self, audience: Audience) -> StoreResult<u64>;
    /// Marks the user's unread notifications in `which` read, recording a
    /// `notification.updated` event for each it changed. Returns those, oldest first.
    async fn mark_read(&self, user: UserId, which: ReadSelection) -> StoreResult<Vec<NotificationId>>;
    /// Follows (as `manual`) or unfollows `ticket` for `user`, if `audience` may see it
    /// (`NotFound` otherwise).
    async fn set_following(&self, user: UserId, audience: Audience, ticket: TicketId, follow: bool) -> StoreResult<()>;
    /// Why `user` follows `ticket`, as the consumer has applied it so far.
    async fn following(&self, user: UserId, ticket: TicketId) -> StoreResult<Option<FollowReason>>;
}

/// One kind's channels for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Preference {
    pub kind: NotificationKind,
    /// Shown in the app (and pushed live).
    pub in_app: bool,
    /// Mailed, once the workspace has mail set up.
    pub email: bool,
}

/// Per-user preferences (platform data). Without a stored row a kind is on everywhere.
#[async_trait]
pub trait NotificationPreferences: Send + Sync {
    /// Every kind, stored or default.
    async fn preferences(&self, user: UserId) -> StoreResult<Vec<Preference>>;
    async fn set_preferences(&self, user: UserId, preferences: &[Preference]) -> StoreResult<()>;
    /// The (user, kind) pairs switched off in the app by members of `workspace`: one read
    /// for a whole page, whoever it turns out to notify.
    async fn muted_in_app(&self, workspace: WorkspaceId) -> StoreResult<Vec<(UserId, NotificationKind)>>;
}

/// Every kind with its stored setting or the default (on).
pub fn complete_preferences(stored: &[Preference]) -> Vec<Preference> {
    NotificationKind::ALL
        .iter()
        .map(|kind| stored.iter().find(|p| p.kind == *kind).copied().unwrap_or(Preference { kind: *kind, in_app: true, email: true }))
        .collect()
}
