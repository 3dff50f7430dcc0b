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
    pub eph_classical_public: String,
    /// The post-quantum KEM ciphertext (base64).
    pub eph_pq_ciphertext: String,
    /// The file's data key, wrapped (base64).
    pub wrapped_dek: String,
    /// Which of the recipient's key bundles it was wrapped for.
    pub key_version: u32,
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
