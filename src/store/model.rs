//! The backend-neutral data model: ids, timestamps, platform rows and tenant rows.
//!
//! These types are what both backends read and write and what the HTTP layer serialises,
//! so a ticket has one JSON shape everywhere: in a list, in a bootstrap row and in the
//! `data` of a `ticket.updated` event.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
        #[serde(transparent)]
        #[schema(value_type = String, format = Uuid)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// A new time-ordered (v7) id: ids sort roughly by creation, which keeps
            /// B-tree inserts local and cursors meaningful.
            pub fn new() -> Self {
                Self(uuid::Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                uuid::Uuid::parse_str(s).map(Self)
            }
        }
    };
}

pub(crate) use id_type;

id_type!(/// A platform user.
    UserId);
id_type!(/// A workspace (tenant).
    WorkspaceId);
id_type!(/// A ticket, unique within its workspace (and in practice globally).
    TicketId);
id_type!(/// A comment on a ticket.
    CommentId);
id_type!(/// A link between two tickets.
    LinkId);
id_type!(/// A login session.
    SessionId);
id_type!(/// An API token.
    TokenId);

/// Milliseconds since the Unix epoch, UTC. Stored as an integer, sent as RFC 3339.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ToSchema)]
#[schema(value_type = String, format = DateTime)]
pub struct Millis(pub i64);

impl Millis {
    pub fn now() -> Self {
        Self((time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64)
    }

    pub fn plus(self, duration: std::time::Duration) -> Self {
        Self(self.0.saturating_add(duration.as_millis().min(i64::MAX as u128) as i64))
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`: fixed width, so lexical order equals time order.
    pub fn to_rfc3339(self) -> String {
        String::from_utf8_lossy(&self.rfc3339_bytes()).into_owned()
    }

    /// The RFC 3339 form without allocating. Every row of a bootstrap carries two of these,
    /// so this is arithmetic (days → civil date, after Howard Hinnant's `civil_from_days`)
    /// rather than a general-purpose formatter. Years outside 0..=9999 are clamped.
    pub fn rfc3339_bytes(self) -> [u8; 24] {
        const MIN: i64 = -62_167_219_200_000; // 0000-01-01T00:00:00Z
        const MAX: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
        let ms = self.0.clamp(MIN, MAX);
        let days = ms.div_euclid(86_400_000);
        let in_day = ms.rem_euclid(86_400_000);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let (h, m, sec, milli) = (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1000 % 60, in_day % 1000);
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut value: i64| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, h);
        put(14, 2, m);
        put(17, 2, sec);
        put(20, 3, milli);
        out
    }

    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
        Some(Self((at.unix_timestamp_nanos() / 1_000_000) as i64))
    }
}

impl Serialize for Millis {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes = self.rfc3339_bytes();
        // Always ASCII digits and punctuation, so this cannot fail.
        serializer.serialize_str(std::str::from_utf8(&bytes).unwrap_or_default())
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse_rfc3339(&text).ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 timestamp"))
    }
}

/// A member's role in one workspace, from most to least powerful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Admin,
    Agent,
    Requester,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Agent => "agent",
            Self::Requester => "requester",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "owner" => Some(Self::Owner),
            "admin" => Some(Self::Admin),
            "agent" => Some(Self::Agent),
            "requester" => Some(Self::Requester),
            _ => None,
        }
    }

    /// Owners, admins and agents work tickets; requesters only raise and follow their own.
    pub fn is_staff(self) -> bool {
        !matches!(self, Self::Requester)
    }

    /// Owners and admins manage members and read the audit trail.
    pub fn is_admin(self) -> bool {
        matches!(self, Self::Owner | Self::Admin)
    }
}

/// Who is looking: decides which tickets, comments and log events a query returns.
/// Built by the domain from the caller's role; the store applies it in SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Everything in the workspace, internal notes included (and this user's own
    /// notifications, nobody else's).
    Staff(UserId),
    /// Only tickets this user requested, public comments only, no members or links.
    Requester(UserId),
}

impl Audience {
    pub fn for_role(user: UserId, role: Role) -> Self {
        if role.is_staff() { Self::Staff(user) } else { Self::Requester(user) }
    }

    /// The user looking.
    pub fn user(self) -> UserId {
        match self {
            Self::Staff(user) | Self::Requester(user) => user,
        }
    }

    pub fn is_staff(self) -> bool {
        matches!(self, Self::Staff(_))
    }

    /// The requester whose tickets bound this audience; `None` for staff.
    pub fn requester(self) -> Option<UserId> {
        match self {
            Self::Requester(user) => Some(user),
            Self::Staff(_) => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Platform rows

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub name: String,
    /// A platform administrator may create users; it grants nothing inside workspaces.
    pub is_admin: bool,
    pub disabled: bool,
    pub created_at: Millis,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub is_admin: bool,
}

#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    pub name: Option<String>,
    pub disabled: Option<bool>,
    pub is_admin: Option<bool>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionInfo {
    pub id: SessionId,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub last_seen_at: Millis,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewSession {
    pub token_hash: String,
    pub user_id: UserId,
    pub expires_at: Millis,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

impl NewSession {
    /// The session as it stands once created at `now`, under a fresh id.
    pub fn started_at(&self, now: Millis) -> SessionInfo {
        SessionInfo {
            id: SessionId::new(),
            created_at: now,
            expires_at: self.expires_at,
            last_seen_at: now,
            user_agent: self.user_agent.clone(),
            ip: self.ip.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiTokenInfo {
    pub id: TokenId,
    pub name: String,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
    pub last_used_at: Option<Millis>,
}

#[derive(Debug, Clone)]
pub struct NewApiToken {
    pub token_hash: String,
    pub user_id: UserId,
    pub name: String,
    pub expires_at: Option<Millis>,
}

/// How a request authenticated: which credential, so logout and revocation know what to drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Credential {
    Session(SessionId),
    ApiToken(TokenId),
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Workspace {
    pub id: WorkspaceId,
    pub name: String,
    pub created_at: Millis,
}

/// A membership as the platform knows it: who may enter which workspace in which role.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Member {
    pub user_id: UserId,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub joined_at: Millis,
}

/// What a membership change did: the role before, and the membership after (`None`:
/// removed). `mirror` identifies the pending mirror the change left (see
/// [`crate::store::PlatformStore::pending_mirrors`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberChange {
    pub before: Option<Role>,
    pub after: Option<Member>,
    pub mirror: PendingMirror,
}

/// A membership change whose mirror in the workspace may not be written yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingMirror {
    pub workspace: WorkspaceId,
    pub user: UserId,
    pub actor: Option<UserId>,
    pub seq: i64,
}

// ---------------------------------------------------------------------------------------
// Tenant rows

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Open,
    Pending,
    Resolved,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    Normal,
    High,
    Urgent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    RelatesTo,
    Duplicates,
    Blocks,
}

macro_rules! text_enum {
    ($ty:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some(Self::$variant),)+ _ => None }
            }
        }
    };
}

pub(crate) use text_enum;

text_enum!(Status { Open = "open", Pending = "pending", Resolved = "resolved", Closed = "closed" });
text_enum!(Priority { Low = "low", Normal = "normal", High = "high", Urgent = "urgent" });
text_enum!(LinkKind { RelatesTo = "relates_to", Duplicates = "duplicates", Blocks = "blocks" });

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Ticket {
    pub id: TicketId,
    /// Human-facing number, sequential per workspace (#1, #2, …).
    pub number: i64,
    pub title: String,
    pub status: Status,
    pub priority: Priority,
    pub requester_id: UserId,
    pub assignee_id: Option<UserId>,
    pub tags: Vec<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Incremented on every change; lets clients discard stale copies.
    pub version: i64,
}

#[derive(Debug, Clone)]
pub struct NewTicket {
    pub title: String,
    pub status: Status,
    pub priority: Priority,
    pub requester_id: UserId,
    pub assignee_id: Option<UserId>,
    pub tags: Vec<String>,
}

impl NewTicket {
    /// A ticket as its requester opens it (by mail): open, normal priority, unassigned.
    pub fn opened_by(requester: UserId, title: String) -> Self {
        Self { title, status: Status::Open, priority: Priority::Normal, requester_id: requester, assignee_id: None, tags: Vec::new() }
    }

    /// The ticket as first stored: version 1, created and updated at `now`.
    pub fn into_ticket(self, id: TicketId, number: i64, now: Millis) -> Ticket {
        Ticket {
            id,
            number,
            title: self.title,
            status: self.status,
            priority: self.priority,
            requester_id: self.requester_id,
            assignee_id: self.assignee_id,
            tags: self.tags,
            created_at: now,
            updated_at: now,
            version: 1,
        }
    }
}

/// A validated change to a ticket; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TicketPatch {
    pub title: Option<String>,
    pub status: Option<Status>,
    pub priority: Option<Priority>,
    /// `Some(None)` unassigns.
    pub assignee_id: Option<Option<UserId>>,
    pub tags: Option<Vec<String>>,
}

impl TicketPatch {
    /// `ticket` with the patch applied (version and times untouched: the store sets them).
    pub fn applied_to(self, ticket: &Ticket) -> Ticket {
        let mut out = ticket.clone();
        if let Some(title) = self.title {
            out.title = title;
        }
        if let Some(status) = self.status {
            out.status = status;
        }
        if let Some(priority) = self.priority {
            out.priority = priority;
        }
        if let Some(assignee) = self.assignee_id {
            out.assignee_id = assignee;
        }
        if let Some(tags) = self.tags {
            out.tags = tags;
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.title.is_none() && self.status.is_none() && self.priority.is_none() && self.assignee_id.is_none() && self.tags.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Comment {
    pub id: CommentId,
    pub ticket_id: TicketId,
    pub author_id: UserId,
    pub body: String,
    /// An internal note: visible to staff only, never to requesters.
    pub internal: bool,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TicketLink {
    pub id: LinkId,
    pub source_id: TicketId,
    pub target_id: TicketId,
    pub kind: LinkKind,
    pub created_by: UserId,
    pub created_at: Millis,
}

/// One row of the workspace's log. `data` is the entity as it is after the change
/// (the same JSON as a bootstrap row of that entity), or `{ "id": … }` for removals.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SyncEvent {
    pub sync_id: i64,
    pub at: Millis,
    pub actor: Option<UserId>,
    /// `ticket.created`, `comment.created`, `member.added`, …
    pub kind: String,
    pub entity: String,
    pub entity_id: String,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

// ---------------------------------------------------------------------------------------
// Queries

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TicketSort {
    #[default]
    UpdatedAt,
    CreatedAt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    #[default]
    Desc,
    Asc,
}

/// Filter on the assignee: a user, or explicitly nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssigneeFilter {
    User(UserId),
    Unassigned,
}

/// The ticket list's filters, which search applies too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TicketFilter {
    pub status: Option<Status>,
    pub priority: Option<Priority>,
    pub assignee: Option<AssigneeFilter>,
    pub requester: Option<UserId>,
    pub tag: Option<String>,
}

/// A position in a ticket list: the sort key and id of the last row returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketCursor {
    pub key: i64,
    pub id: TicketId,
}

#[derive(Debug, Clone, Default)]
pub struct TicketQuery {
    pub status: Option<Status>,
    pub priority: Option<Priority>,
    pub assignee: Option<AssigneeFilter>,
    pub requester: Option<UserId>,
    pub tag: Option<String>,
    pub sort: TicketSort,
    pub order: SortOrder,
    pub after: Option<TicketCursor>,
    pub limit: usize,
}

#[derive(Debug, Clone, Default)]
pub struct CommentQuery {
    pub after: Option<CommentId>,
    pub limit: usize,
}

/// A filter over the log for the audit view.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor: Option<UserId>,
    pub entity: Option<String>,
    pub entity_id: Option<String>,
    pub kind: Option<String>,
    pub since: Option<Millis>,
    pub until: Option<Millis>,
    /// Newest first: events with `sync_id < before`.
    pub before: Option<i64>,
    pub limit: usize,
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_more: bool,
}

impl<T> Page<T> {
    /// A page from rows fetched with `LIMIT limit + 1`: the extra row only says there is more.
    pub fn from_overfetch(mut items: Vec<T>, limit: usize) -> Self {
        let has_more = items.len() > limit;
        items.truncate(limit);
        Self { items, has_more }
    }
}

/// A log event with what decides who may see it, for the live bus and the consumers.
#[derive(Debug, Clone)]
pub struct FeedEvent {
    pub event: SyncEvent,
    pub visibility: crate::store::visibility::Visibility,
}

impl FeedEvent {
    /// The same rule as the store's delta for `audience`.
    pub fn visible_to(&self, audience: Audience) -> bool {
        self.visibility.admits(audience)
    }

    /// The ticket the event is about, if any.
    pub fn ticket_id(&self) -> Option<TicketId> {
        self.visibility.ticket_id
    }
}

#[derive(Debug, Clone)]
pub struct DeltaPage {
    pub events: Vec<SyncEvent>,
    /// Where the next `after=` should start: past filtered-out events too.
    pub last_sync_id: i64,
    pub has_more: bool,
}

impl DeltaPage {
    /// A page from the events visible after `after`, fetched with `LIMIT limit + 1`, in a
    /// log whose head is `head`.
    pub fn from_overfetch(events: Vec<SyncEvent>, limit: usize, head: i64, after: i64) -> Self {
        let Page { items: events, has_more } = Page::from_overfetch(events, limit);
        let last_sync_id = match (has_more, events.last()) {
            (true, Some(last)) => last.sync_id,
            // Nothing more is visible up to the head: the client may skip to it.
            _ => head.max(after),
        };
        Self { events, last_sync_id, has_more }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(ms: i64) -> String {
        let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
        let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
        at.format(&format).unwrap()
    }

    #[test]
    fn rfc3339_matches_a_general_formatter_across_the_range() {
        let mut samples = vec![0, 1, 999, 1000, 86_399_999, 86_400_000, -1, -86_400_001, 951_782_400_000, 4_107_542_399_999];
        // Leap days, century years, and a spread of instants from 0001 to 9999.
        let mut x: i64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            samples.push(x.rem_euclid(253_402_300_799_999 + 62_135_596_800_000) - 62_135_596_800_000);
        }
        for ms in samples {
            assert_eq!(Millis(ms).to_rfc3339(), reference(ms), "{ms}");
            assert_eq!(Millis::parse_rfc3339(&Millis(ms).to_rfc3339()), Some(Millis(ms)));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Moving a workspace between backends

/// A ticket as stored, deleted ones included (export/import only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketRecord {
    #[serde(flatten)]
    pub ticket: Ticket,
    pub deleted_at: Option<Millis>,
}

/// A log row as stored, with its visibility columns (export/import only).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRecord {
    #[serde(flatten)]
    pub event: SyncEvent,
    pub ticket_id: Option<TicketId>,
    pub staff_only: bool,
    /// Set on events for one user only (notifications). Absent in older exports.
    #[serde(default)]
    pub recipient: Option<UserId>,
}

/// A durable log consumer's watermark (export/import only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkRecord {
    pub consumer: String,
    pub position: i64,
    pub stopped_at: Option<i64>,
    pub last_error: Option<String>,
}

/// One row of a workspace's storage, in the order an export writes and an import reads:
/// the workspace, members, tickets, comments, links, the log, then what the log consumers
/// derived from it (their watermarks and state), so that an imported workspace's consumers
/// go on where they stood instead of handling its history again, then the notes (each
/// note's snapshot row, then the updates after it, keyed by the sync_ids of their events),
/// then the storage settings and the attachments (each one's row, then its versions').
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TenantRow {
    Workspace(Workspace),
    Member(Member),
    Ticket(TicketRecord),
    Comment(Comment),
    Link(TicketLink),
    Event(EventRecord),
    Watermark(WatermarkRecord),
    NotificationTicket(crate::store::notifications::TicketView),
    Follower(crate::store::notifications::Follower),
    Notification(crate::store::notifications::Notification),
    Note(crate::store::notes::NoteRecord),
    NoteUpdate(crate::store::notes::NoteUpdateRecord),
    Storage(crate::store::attachments::StorageRecord),
    Attachment(crate::store::attachments::AttachmentRecord),
    AttachmentVersion(crate::store::attachments::AttachmentVersion),
    MailChannel(crate::store::mail::ChannelRecord),
    Mail(crate::store::mail::OutboxRecord),
    /// An incoming message's record (its dedupe key, and the ticket it went to).
    Inbound(crate::store::mail::InboundRecord),
}
