//! Attachments: versioned files on tickets and comments, quota-checked, in local files or
//! an S3-compatible bucket, optionally encrypted in the browser.
//!
//! How it fits together (the design this feature is built to):
//! - **Routes.** `POST /api/workspaces/{ws}/tickets/{id}/attachments` (a new attachment, on
//!   the ticket or one of its comments), `POST …/attachments/{att}/versions`,
//!   `GET …/attachments/{att}/versions`, `GET …/attachments/{att}` (the latest version's
//!   bytes) and `…/versions/{ver}`, `DELETE …/attachments/{att}`. Bytes stream in and out
//!   (`store::blobs::BlobStore`), never whole in memory; downloads carry `ETag` (the
//!   version's SHA-256), `Range` (206), `Content-Disposition: attachment` with a cleaned
//!   name and `X-Content-Type-Options: nosniff`.
//! - **An upload, in order.** The caller may see the ticket (and the comment: requesters
//!   only their own tickets, never internal notes) → the projected size is reserved
//!   against the quota (413 with `used`, `limit`, `requested` when it would cross it) →
//!   the object is written under the server's own key, its bytes counted, hashed and
//!   refused past the upload limit or the declared length → the version's row is written
//!   with its event and its usage → if that fails, the object is deleted again (logged
//!   loudly if that fails too) and the reservation released. Versions beyond
//!   `max_versions` are pruned after the response; a periodic sweep deletes objects that
//!   have no row (a crash between the object and the row).
//! - **Content types.** The declared type is checked against the file's magic bytes; a
//!   type a browser would run (HTML, SVG, JavaScript, XML…) is served as
//!   `application/octet-stream`. Encrypted versions are never sniffed.
//! - **Keys.** `GET|PUT /api/me/keys` (the caller's key bundle, versioned: a PUT carries the
//!   next version or gets 409) and `GET /api/workspaces/{ws}/members/{user}/keys` (another
//!   member's public keys only). The server stores and returns key material; it never
//!   holds a plaintext key.

pub mod content;
mod routes;

use std::sync::Arc;

pub use routes::routes;

use crate::store::TenantStore;
use crate::store::blobs::{AttachmentId, BlobKey, BlobStore};

/// What the attachment routes need from the application.
#[derive(Clone)]
pub struct AttachmentsState {
    pub blobs: Arc<dyn BlobStore>,
    /// The largest upload, in bytes (`EDGEDESK_UPLOAD_LIMIT_BYTES`).
    pub upload_limit: u64,
}

impl AttachmentsState {
    /// Deletes an object whose row was never written; a failure is logged loudly (the
    /// orphan sweep will find it).
    pub async fn discard(&self, key: &BlobKey) {
        if let Err(err) = self.blobs.delete(key).await {
            tracing::error!(key = %key.relative(), error = %err, "cannot delete an upload that has no row; the orphan sweep will");
        }
    }
}

/// Prunes `attachment` to the workspace's `max_versions` after the response: rows first
/// (usage drops with them), then their objects.
pub fn prune_later(store: Arc<dyn TenantStore>, blobs: Arc<dyn BlobStore>, attachment: AttachmentId) {
    tokio::spawn(async move {
        let keep = match store.attachments().usage().await {
            Ok(usage) => usage.max_versions,
            Err(err) => return tracing::warn!(error = %err, "cannot read the version limit; pruning waits for the next upload"),
        };
        let pruned = match store.attachments().prune(attachment, keep).await {
            Ok(pruned) => pruned,
            Err(err) => return tracing::warn!(error = %err, "cannot prune old versions; the next upload tries again"),
        };
        for version in pruned {
            let key = BlobKey { workspace: store.workspace_id(), attachment, version };
            if let Err(err) = blobs.delete(&key).await {
                tracing::error!(key = %key.relative(), error = %err, "cannot delete a pruned version's object; the orphan sweep will");
            }
        }
    });
}
