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
//!   only their own tickets, never internal notes), and the projected size is reserved
//!   against the quota (413 with `used`, `limit`, `requested` when it would cross it): the
//!   two checks run side by side, and one who may not see the ticket gets 404 whatever the
//!   quota says, the reservation given back →
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

use crate::error::{AppError, AppResult};
use crate::store::attachments::{Attachment, NewVersion, Upload, UploadError, Uploads};
use crate::store::blobs::{AttachmentId, BlobError, BlobKey, BlobStore, ByteStream, VersionId};
use crate::store::{Audience, Millis, TenantStore, UserId};

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

/// How long a reservation holds its bytes if its upload never ends (a crash).
const RESERVATION_TTL_MS: i64 = 60 * 60 * 1000;

/// Stores `body` as `upload`, in the order the module header gives: check that `audience`
/// may see where it goes and reserve against the quota, write the object (counted, hashed,
/// cut at the limit), write the row with its event, and undo the object and the
/// reservation if a later step fails. The one upload path: the routes', and other
/// features' through [`Uploads`].
pub async fn store_file(
    store: &Arc<dyn TenantStore>,
    state: &AttachmentsState,
    audience: Audience,
    actor: UserId,
    upload: Upload,
    body: ByteStream,
) -> AppResult<Attachment> {
    let attachments = store.attachments();
    let limit = upload.declared_length.unwrap_or(state.upload_limit).min(state.upload_limit);
    // Both before a byte is stored, one beside the other. What is refused, in this order: a
    // destination the caller may not see (404, whatever the limits say), a declared length
    // past the upload limit, then the quota; a reservation made meanwhile is given back.
    let (seen, reserved) = tokio::join!(
        attachments.target(audience, upload.ticket, upload.comment, upload.existing),
        attachments.reserve(limit, Millis(Millis::now().0 + RESERVATION_TTL_MS)),
    );
    let refused = match seen {
        Err(err) => Some(AppError::from(err)),
        Ok(_) if upload.declared_length.is_some_and(|d| d > state.upload_limit) => Some(AppError::PayloadTooLarge),
        Ok(_) => None,
    };
    if let Some(err) = refused {
        if let Ok(reservation) = reserved {
            let _ = attachments.release(reservation).await;
        }
        return Err(err);
    }
    let reservation = reserved?;
    let workspace = store.workspace_id();
    let key = BlobKey { workspace, attachment: upload.existing.unwrap_or_default(), version: VersionId::new() };
    let written = match state.blobs.put(&key, body, limit).await {
        Ok(written) => written,
        Err(err) => {
            let _ = attachments.release(reservation).await;
            return Err(blob_error(err));
        }
    };
    if upload.declared_length.is_some_and(|d| d != written.size) {
        state.discard(&key).await;
        let _ = attachments.release(reservation).await;
        return Err(AppError::BadRequest("the body is shorter than its Content-Length".into()));
    }
    let version = NewVersion {
        attachment: key.attachment,
        new: upload.existing.is_none(),
        version: key.version,
        ticket: upload.ticket,
        comment: upload.comment,
        name: upload.name,
        content_type: match upload.encryption {
            // Ciphertext: whatever the client calls it, it is bytes to the server.
            Some(_) => content::OCTETS.to_string(),
            None => content::stored_type(upload.declared_type.as_deref(), &written.head),
        },
        size: written.size,
        sha256: written.sha256,
        encryption: upload.encryption,
        reservation,
    };
    match attachments.record(actor, version).await {
        Ok(attachment) => {
            prune_later(store.clone(), state.blobs.clone(), attachment.id, attachment.latest.number);
            Ok(attachment)
        }
        Err(err) => {
            // No row: the object must not stay either.
            state.discard(&key).await;
            let _ = attachments.release(reservation).await;
            Err(err.into())
        }
    }
}

/// Other features (incoming mail) store files through this, without importing this feature:
/// the application hands them the attachments' state as an [`Uploads`].
#[async_trait::async_trait]
impl Uploads for AttachmentsState {
    async fn upload(
        &self,
        tenant: &Arc<dyn TenantStore>,
        actor: UserId,
        mut upload: Upload,
        body: ByteStream,
    ) -> Result<Attachment, UploadError> {
        if upload.existing.is_none() {
            upload.name = content::clean_name(&upload.name).unwrap_or_else(|| "attachment".into());
        }
        // Incoming mail files on the ticket it was threaded to, which it sees whole.
        store_file(tenant, self, Audience::Staff(actor), actor, upload, body).await.map_err(|err| match err {
            AppError::PayloadTooLarge | AppError::QuotaExceeded { .. } => UploadError::Refused(err.to_string()),
            other => UploadError::Failed(other.to_string()),
        })
    }
}

pub(crate) fn blob_error(err: BlobError) -> AppError {
    match err {
        BlobError::NotFound => AppError::NotFound,
        BlobError::TooLarge { .. } => AppError::PayloadTooLarge,
        BlobError::Cut(why) => AppError::BadRequest(format!("the upload was cut off: {why}")),
        BlobError::BadRange => AppError::BadRequest("range not satisfiable".into()),
        BlobError::Unavailable(why) => {
            tracing::warn!(error = %why, "blob store unavailable");
            AppError::Unavailable
        }
        BlobError::Internal(why) => AppError::Internal(why),
    }
}

/// Prunes `attachment`, whose newest version is number `latest`, to the workspace's
/// `max_versions` after the response: rows first (usage drops with them), then their
/// objects. Numbers only grow, so with `latest` within the limit there is nothing to prune
/// and nothing is written.
pub fn prune_later(store: Arc<dyn TenantStore>, blobs: Arc<dyn BlobStore>, attachment: AttachmentId, latest: u32) {
    if latest <= 1 {
        return;
    }
    tokio::spawn(async move {
        let keep = match store.attachments().usage().await {
            Ok(usage) => usage.max_versions,
            Err(err) => return tracing::warn!(error = %err, "cannot read the version limit; pruning waits for the next upload"),
        };
        if latest <= keep {
            return;
        }
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

/// Objects younger than this are never swept: their upload may still be writing its row.
pub const ORPHAN_GRACE_MS: i64 = 60 * 60 * 1000;

/// Deletes the objects of `store`'s workspace that have no version row and are older than
/// `grace_ms` (a crash between the object and its row leaves one). Returns how many.
pub async fn sweep_orphans(store: &Arc<dyn TenantStore>, blobs: &Arc<dyn BlobStore>, grace_ms: i64) -> crate::store::StoreResult<usize> {
    use crate::store::StoreError;
    // Listed first, rows read after: an object whose row lands in between is seen with it.
    let listed = blobs.list(store.workspace_id()).await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let known: std::collections::HashSet<_> = store.attachments().known_versions().await?.into_iter().collect();
    let cutoff = crate::store::Millis::now().0 - grace_ms;
    let mut swept = 0;
    for object in listed {
        if known.contains(&(object.key.attachment, object.key.version)) || object.modified.0 > cutoff {
            continue;
        }
        match blobs.delete(&object.key).await {
            Ok(()) => {
                tracing::info!(key = %object.key.relative(), size = object.size, "removed an object that has no row");
                swept += 1;
            }
            Err(err) => tracing::warn!(key = %object.key.relative(), error = %err, "cannot remove an orphaned object"),
        }
    }
    Ok(swept)
}

/// How often the orphan sweep runs, and how many workspaces it looks at each time (it goes
/// round all of them in turn: 10,000 workspaces in about a week and a half).
pub const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);
pub const SWEEP_SLICE: usize = 50;

/// The orphan sweep, until `stop`: each round, the next slice of workspaces.
pub async fn sweep_forever(store: crate::store::Store, blobs: Arc<dyn BlobStore>, stop: tokio_util::sync::CancellationToken) {
    // Not at start: a restart must not open a slice of workspaces before serving.
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + SWEEP_EVERY, SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next = 0usize;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let workspaces = match store.platform.list_workspaces().await {
            Ok(all) => all,
            Err(err) => {
                tracing::warn!(error = %err, "orphan sweep: cannot list workspaces; next round");
                continue;
            }
        };
        if workspaces.is_empty() {
            continue;
        }
        for i in 0..SWEEP_SLICE.min(workspaces.len()) {
            let workspace = workspaces[(next + i) % workspaces.len()].id;
            let swept = match store.tenants.open(workspace).await {
                Ok(tenant) => sweep_orphans(&tenant, &blobs, ORPHAN_GRACE_MS).await,
                Err(err) => Err(err),
            };
            if let Err(err) = swept {
                tracing::warn!(%workspace, error = %err, "orphan sweep failed for a workspace; it comes round again");
            }
        }
        next = (next + SWEEP_SLICE) % workspaces.len();
    }
}
