//! Attachment metadata and the storage quota, at the storage boundary. The bytes are a
//! [`BlobStore`](super::blobs::BlobStore)'s; everything about them that a client syncs or a
//! rule decides is here, in the workspace's own store (reached through the workspace, as
//! notes and notifications are), so tenant scoping and the log hold for attachments too.
//!
//! - An attachment belongs to a ticket, or to a comment of that ticket, and is seen by
//!   whoever sees that: requesters only on their own tickets and never on internal notes
//!   (the one visibility rule, `store::visibility`). Each version is one object.
//! - Every version's row is written with its `attachment.created` / `attachment.versioned`
//!   event and its bytes counted into the workspace's usage, in one transaction: usage is
//!   exact, and recounting from the objects (`edgedesk attachments recount`) agrees.
//! - An upload first reserves its projected size against the quota (used + reserved +
//!   requested ≤ limit, in one write transaction), so concurrent uploads can never
//!   together cross it; recording the version turns the reservation into usage, and a
//!   failed upload releases it. A reservation a crash left behind expires.
//! - Versions beyond the workspace's `max_versions` are pruned: their rows go (usage drops
//!   in the same transaction) and the objects are deleted after.
//! - Soft delete: a deleted attachment (or one on a deleted ticket) is gone for everyone
//!   but the audit trail.
//!
//! Encrypted uploads carry a header per version (the wrapped file key and what unwraps it)
//! that is stored and returned byte for byte, never interpreted.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::blobs::{AttachmentId, VersionId};
use super::{CommentId, Millis, TicketId, UserId};

crate::store::model::id_type!(/// A quota reservation held by an upload in flight.
    ReservationId);

/// A client-side encrypted version's key material: opaque to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EncryptionHeader {
    /// The uploader's ephemeral classical public key (base64).
    #[schema(min_length = 1, max_length = 1024, pattern = r"^[A-Za-z0-9+/_-]+={0,2}$")]
    pub eph_classical_public: String,
    /// The post-quantum KEM ciphertext (base64).
    #[schema(min_length = 1, max_length = 8192, pattern = r"^[A-Za-z0-9+/_-]+={0,2}$")]
    pub eph_pq_ciphertext: String,
    /// The file's data key, wrapped (base64).
    #[schema(min_length = 1, max_length = 1024, pattern = r"^[A-Za-z0-9+/_-]+={0,2}$")]
    pub wrapped_dek: String,
    /// Which of the recipient's key bundles it was wrapped for.
    #[schema(minimum = 1, maximum = 2147483647)]
    pub key_version: u32,
}

impl EncryptionHeader {
    /// The longest each base64 field may be (they travel in an upload's query string: a
    /// KEM ciphertext of ML-KEM-1024 is 2,092 characters).
    pub const MAX_KEY_CHARS: usize = 1024;
    pub const MAX_CIPHERTEXT_CHARS: usize = 8192;
}

/// One stored version of an attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AttachmentVersion {
    pub id: VersionId,
    pub attachment_id: AttachmentId,
    /// 1 for the first upload, then 2, 3, … (kept when older ones are pruned).
    pub number: u32,
    pub size: u64,
    pub sha256: String,
    /// As checked against the file's magic bytes (`application/octet-stream` for an
    /// encrypted version).
    pub content_type: String,
    pub created_by: UserId,
    pub created_at: Millis,
    pub encryption: Option<EncryptionHeader>,
}

/// An attachment as clients sync it: its latest version inline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Attachment {
    pub id: AttachmentId,
    pub ticket_id: TicketId,
    pub comment_id: Option<CommentId>,
    /// The client's file name, cleaned (shown, and offered on download; never a key).
    pub name: String,
    pub latest: AttachmentVersion,
    pub created_at: Millis,
}

/// A workspace's storage: what it uses, holds for uploads in flight, and may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub used: u64,
    pub reserved: u64,
    /// `None`: no limit.
    pub limit: Option<u64>,
    /// Versions kept per attachment; older ones are pruned.
    pub max_versions: u32,
}

impl Usage {
    /// Whether `bytes` more fit: what is used and held for uploads in flight, plus them,
    /// within the limit. The one quota rule, for both backends.
    pub fn admit(&self, bytes: u64) -> StoreResult<()> {
        let Some(limit) = self.limit else { return Ok(()) };
        let taken = self.used + self.reserved;
        if taken.saturating_add(bytes) > limit {
            return Err(super::StoreError::QuotaExceeded { used: taken, limit, requested: bytes });
        }
        Ok(())
    }
}

/// An attachment's row as stored, deleted ones included (export/import only). Its
/// versions follow as [`AttachmentVersion`] rows, their objects at the end of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    pub id: AttachmentId,
    pub ticket_id: TicketId,
    pub comment_id: Option<CommentId>,
    pub name: String,
    pub staff_only: bool,
    pub latest_version: VersionId,
    pub next_number: u32,
    pub created_by: UserId,
    pub created_at: Millis,
    pub deleted_at: Option<Millis>,
}

/// The workspace's storage as stored (export/import only): usage moves with the versions
/// it counts; reservations of uploads in flight do not move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageRecord {
    pub used: u64,
    pub limit: Option<u64>,
    pub max_versions: u32,
}

/// A version to record: its object is written (`version` is its key), its reservation held.
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// The attachment (its id is in the object's key, so the caller picks a new one's).
    pub attachment: AttachmentId,
    /// A new attachment, named `name`, on `ticket` (and `comment`); otherwise a new
    /// version of an existing one.
    pub new: bool,
    pub version: VersionId,
    pub ticket: TicketId,
    pub comment: Option<CommentId>,
    pub name: String,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
    pub encryption: Option<EncryptionHeader>,
    /// Turned into usage by the same transaction.
    pub reservation: ReservationId,
}

/// Where an upload may go, as the store judged it for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// An internal note's attachment: staff only.
    pub staff_only: bool,
}

/// One workspace's attachments and storage quota (reached through the workspace's store).
#[async_trait::async_trait]
pub trait AttachmentStore: Send + Sync {
    /// Whether `audience` may attach to `ticket` (and `comment`, which must be on it):
    /// `NotFound` for a ticket or comment they may not see (requesters: only their own
    /// tickets, never internal notes), and for an existing `attachment` not on them.
    async fn target(
        &self,
        audience: Audience,
        ticket: TicketId,
        comment: Option<CommentId>,
        attachment: Option<AttachmentId>,
    ) -> StoreResult<Target>;

    /// Holds `bytes` of the quota for an upload in flight, until it is recorded, released,
    /// or `expires`. `QuotaExceeded` when used + held + `bytes` would pass the limit.
    async fn reserve(&self, bytes: u64, expires: Millis) -> StoreResult<ReservationId>;

    /// Gives a reservation back (an upload that failed). Releasing one that is gone is fine.
    async fn release(&self, reservation: ReservationId) -> StoreResult<()>;

    /// Writes the version's row (and the attachment's, for a new one) with its
    /// `attachment.created` or `attachment.versioned` event, counts its size into usage and
    /// drops its reservation, in one transaction. `NotFound` when the ticket, comment or
    /// attachment went away meanwhile.
    async fn record(&self, actor: UserId, version: NewVersion) -> StoreResult<Attachment>;

    /// The ticket's live attachments that `audience` may see.
    async fn list(&self, audience: Audience, ticket: TicketId) -> StoreResult<Vec<Attachment>>;
    async fn get(&self, audience: Audience, ticket: TicketId, attachment: AttachmentId) -> StoreResult<Option<Attachment>>;
    /// Newest first.
    async fn versions(&self, audience: Audience, ticket: TicketId, attachment: AttachmentId) -> StoreResult<Vec<AttachmentVersion>>;

    /// Soft delete, with its `attachment.deleted` event.
    async fn delete(&self, actor: UserId, audience: Audience, ticket: TicketId, attachment: AttachmentId) -> StoreResult<()>;

    /// Removes the rows of the attachment's versions beyond the newest `keep`, taking their
    /// bytes off the usage in the same transaction; returns them (their objects go next).
    async fn prune(&self, attachment: AttachmentId, keep: u32) -> StoreResult<Vec<VersionId>>;

    /// Every version that has a row (deleted attachments' included): objects without one are
    /// orphans.
    async fn known_versions(&self) -> StoreResult<Vec<(AttachmentId, VersionId)>>;

    async fn usage(&self) -> StoreResult<Usage>;
    /// Sets the limit (`None`: none) and the versions kept; recorded as `workspace.storage`.
    async fn set_limits(&self, actor: UserId, limit: Option<u64>, max_versions: u32) -> StoreResult<Usage>;
    /// Sets usage to the sum of the versions' sizes (what `edgedesk attachments recount`
    /// writes after checking it against the objects); returns it.
    async fn recount(&self) -> StoreResult<u64>;
}

use super::{Audience, StoreResult};

/// The `data` of `attachment.deleted`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttachmentRemoved {
    pub id: AttachmentId,
    pub ticket_id: TicketId,
}

impl<'a> super::Event<'a, Attachment> {
    /// Visible as what it is attached to: an internal note's attachment is staff-only.
    pub fn attachment_created(attachment: &'a Attachment, staff_only: bool) -> Self {
        super::Event {
            kind: "attachment.created",
            entity: "attachment",
            entity_id: attachment.id.to_string(),
            data: attachment,
            ticket: Some(attachment.ticket_id),
            staff_only,
            recipient: None,
        }
    }

    pub fn attachment_versioned(attachment: &'a Attachment, staff_only: bool) -> Self {
        super::Event { kind: "attachment.versioned", ..Self::attachment_created(attachment, staff_only) }
    }

    /// `attachment.updated`: a file uploaded to the ticket was put on a reply (its
    /// `comment_id` is set; its visibility is unchanged: a public reply's files are public).
    pub fn attachment_updated(attachment: &'a Attachment, staff_only: bool) -> Self {
        super::Event { kind: "attachment.updated", ..Self::attachment_created(attachment, staff_only) }
    }

    /// `attachment.created` for a new attachment's first version, `attachment.versioned` after.
    pub fn attachment_recorded(attachment: &'a Attachment, staff_only: bool, new: bool) -> Self {
        if new { Self::attachment_created(attachment, staff_only) } else { Self::attachment_versioned(attachment, staff_only) }
    }
}

/// One file to store as an attachment version: where it goes, what it is called and what
/// its sender says it is. The caller has checked that its actor may put it there.
pub struct Upload {
    pub ticket: TicketId,
    pub comment: Option<CommentId>,
    /// A new version of this attachment; `None`: a new attachment named `name`.
    pub existing: Option<AttachmentId>,
    pub name: String,
    pub declared_type: Option<String>,
    /// The length the sender declared (checked against the bytes), if any.
    pub declared_length: Option<u64>,
    pub encryption: Option<EncryptionHeader>,
}

/// Why a file could not be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    /// Too large, or past the workspace's quota: the file is refused, nothing is kept.
    #[error("refused: {0}")]
    Refused(String),
    /// The store or the blob store failed; try again.
    #[error("{0}")]
    Failed(String),
}

/// The upload path, for features other than attachments (incoming mail): reserve against
/// the quota, write the object, write the version's row with its event, undo on failure.
/// The name is cleaned as a browser's upload's is. Implemented by the attachments feature.
#[async_trait::async_trait]
pub trait Uploads: Send + Sync {
    async fn upload(
        &self,
        tenant: &std::sync::Arc<dyn super::TenantStore>,
        actor: UserId,
        upload: Upload,
        body: super::blobs::ByteStream,
    ) -> Result<Attachment, UploadError>;
}

/// How many uploaded files a reply may carry.
pub const MAX_ON_REPLY: usize = 20;

/// Why a reply cannot carry a file (`attachments`, 409: the file is not in a state to go on it).
pub const NOT_ATTACHABLE: &str = "is not a file you uploaded to this ticket that is on no comment yet";

impl<'a> super::Event<'a, AttachmentRemoved> {
    pub fn attachment_deleted(removed: &'a AttachmentRemoved, staff_only: bool) -> Self {
        super::Event {
            kind: "attachment.deleted",
            entity: "attachment",
            entity_id: removed.id.to_string(),
            data: removed,
            ticket: Some(removed.ticket_id),
            staff_only,
            recipient: None,
        }
    }
}

impl<'a> super::Event<'a, Usage> {
    /// Storage settings are for staff (owners and admins set them).
    pub fn storage_changed(usage: &'a Usage) -> Self {
        super::Event {
            kind: "workspace.storage",
            entity: "workspace",
            entity_id: "storage".into(),
            data: usage,
            ticket: None,
            staff_only: true,
            recipient: None,
        }
    }
}

/// Versions kept per attachment unless the workspace says otherwise.
pub const DEFAULT_MAX_VERSIONS: u32 = 10;
