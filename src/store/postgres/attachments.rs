//! Attachment metadata and the storage quota in Postgres, under row-level security. The
//! workspace's `storage_quota` row is made on first use and locked (`FOR UPDATE`) by every
//! reservation and every recorded version: concurrent uploads on several instances queue on
//! it, so together they can never pass the limit.

use async_trait::async_trait;
use deadpool_postgres::Transaction;

use super::error;
use super::log::{self, Bookkeeping, PgWrite};
use super::tenant::{PgTenant, visible_ticket};
use crate::store::attachments::*;
use crate::store::blobs::{AttachmentId, VersionId};
use crate::store::{Audience, Comment, CommentId, Event, Millis, StoreError, StoreResult, TenantStore, TicketId, UserId, WorkspaceId};

pub(super) const ATTACHMENT_COLS: &str = "a.id, a.ticket_id, a.comment_id, a.name, a.created_at, \
     v.id, v.attachment_id, v.number, v.size, v.sha256, v.content_type, v.created_by, v.created_at, v.encryption";
pub(super) const VERSION_COLS: &str =
    "v.id, v.attachment_id, v.number, v.size, v.sha256, v.content_type, v.created_by, v.created_at, v.encryption";
/// Live attachments of live tickets that `$1` (a requester, or NULL for staff) may see.
const VISIBLE: &str = "a.deleted_at IS NULL AND t.deleted_at IS NULL AND ($1::uuid IS NULL OR (t.requester_id = $1 AND NOT a.staff_only))";

pub(super) fn version_from_row(row: &tokio_postgres::Row, at: usize) -> StoreResult<AttachmentVersion> {
    let number: i32 = row.try_get(at + 2).map_err(error)?;
    let size: i64 = row.try_get(at + 3).map_err(error)?;
    let encryption: Option<serde_json::Value> = row.try_get(at + 8).map_err(error)?;
    Ok(AttachmentVersion {
        id: row.try_get(at).map_err(error)?,
        attachment_id: row.try_get(at + 1).map_err(error)?,
        number: number.max(0) as u32,
        size: size.max(0) as u64,
        sha256: row.try_get(at + 4).map_err(error)?,
        content_type: row.try_get(at + 5).map_err(error)?,
        created_by: row.try_get(at + 6).map_err(error)?,
        created_at: row.try_get(at + 7).map_err(error)?,
        encryption: encryption.map(serde_json::from_value).transpose().map_err(StoreError::internal)?,
    })
}

pub(super) fn attachment_from_row(row: &tokio_postgres::Row) -> StoreResult<Attachment> {
    Ok(Attachment {
        id: row.try_get(0).map_err(error)?,
        ticket_id: row.try_get(1).map_err(error)?,
        comment_id: row.try_get(2).map_err(error)?,
        name: row.try_get(3).map_err(error)?,
        created_at: row.try_get(4).map_err(error)?,
        latest: version_from_row(row, 5)?,
    })
}

/// Puts `actor`'s own files, uploaded to the ticket and on no comment yet, on their new
/// public `comment`, each with its `attachment.updated` event, inside the comment's
/// transaction. `Conflict` (naming `attachments`) when one is not such a file.
pub(super) async fn attach_to_comment(
    w: &mut PgWrite<'_>,
    ws: WorkspaceId,
    actor: UserId,
    comment: &Comment,
    ids: &[AttachmentId],
) -> StoreResult<()> {
    for id in ids {
        let changed = w
            .tx()
            .execute(
                "UPDATE attachments SET comment_id = $1
                 WHERE workspace_id = $2 AND id = $3 AND ticket_id = $4 AND comment_id IS NULL AND deleted_at IS NULL
                   AND created_by = $5 AND NOT staff_only",
                &[&comment.id, &ws, id, &comment.ticket_id, &actor],
            )
            .await
            .map_err(error)?;
        if changed != 1 {
            return Err(StoreError::Conflict(format!("attachments: {id} {NOT_ATTACHABLE}")));
        }
        let attachment = attachments(w.tx(), ws, None, comment.ticket_id, Some(*id)).await?.pop().ok_or(StoreError::NotFound)?;
        w.record(Some(actor), Event::attachment_updated(&attachment, false)).await?;
    }
    Ok(())
}

async fn attachments(
    tx: &Transaction<'_>,
    ws: WorkspaceId,
    requester: Option<UserId>,
    ticket: TicketId,
    one: Option<AttachmentId>,
) -> StoreResult<Vec<Attachment>> {
    // Two statements, not `($4 IS NULL OR a.id = $4)`: a generic plan for the OR reads
    // every attachment of the ticket to find one.
    let which = if one.is_some() { "a.id = $4" } else { "$4::uuid IS NULL" };
    tx.query(
        &format!(
            "SELECT {ATTACHMENT_COLS} FROM attachments a
             JOIN attachment_versions v ON v.workspace_id = a.workspace_id AND v.id = a.latest_version
             JOIN tickets t ON t.workspace_id = a.workspace_id AND t.id = a.ticket_id
             WHERE a.workspace_id = $2 AND {VISIBLE} AND a.ticket_id = $3 AND {which} ORDER BY a.id"
        ),
        &[&requester, &ws, &ticket, &one],
    )
    .await
    .map_err(error)?
    .iter()
    .map(attachment_from_row)
    .collect()
}

async fn target(
    tx: &Transaction<'_>,
    ws: WorkspaceId,
    requester: Option<UserId>,
    ticket: TicketId,
    comment: Option<CommentId>,
    attachment: Option<AttachmentId>,
) -> StoreResult<Target> {
    visible_ticket(tx, ws, requester, ticket).await?.ok_or(StoreError::NotFound)?;
    let mut staff_only = false;
    if let Some(comment) = comment {
        let row = tx
            .query_opt("SELECT internal FROM comments WHERE workspace_id = $1 AND id = $2 AND ticket_id = $3", &[&ws, &comment, &ticket])
            .await
            .map_err(error)?
            .ok_or(StoreError::NotFound)?;
        let internal: bool = row.try_get(0).map_err(error)?;
        if internal && requester.is_some() {
            return Err(StoreError::NotFound);
        }
        staff_only = internal;
    }
    if let Some(attachment) = attachment {
        let row = tx
            .query_opt(
                "SELECT staff_only FROM attachments WHERE workspace_id = $1 AND id = $2 AND ticket_id = $3 AND deleted_at IS NULL",
                &[&ws, &attachment, &ticket],
            )
            .await
            .map_err(error)?
            .ok_or(StoreError::NotFound)?;
        let on: bool = row.try_get(0).map_err(error)?;
        if on && requester.is_some() {
            return Err(StoreError::NotFound);
        }
        staff_only = on;
    }
    Ok(Target { staff_only })
}

/// The workspace's quota row, made on first use; `lock` holds it to the transaction's end.
async fn usage(tx: &Transaction<'_>, ws: WorkspaceId, now: Millis, lock: bool) -> StoreResult<Usage> {
    if lock {
        tx.execute(
            "INSERT INTO storage_quota (workspace_id, used, limit_bytes, max_versions) VALUES ($1, 0, NULL, $2) ON CONFLICT DO NOTHING",
            &[&ws, &(DEFAULT_MAX_VERSIONS as i32)],
        )
        .await
        .map_err(error)?;
    }
    let sql = if lock {
        "SELECT used, limit_bytes, max_versions FROM storage_quota WHERE workspace_id = $1 FOR UPDATE"
    } else {
        "SELECT used, limit_bytes, max_versions FROM storage_quota WHERE workspace_id = $1"
    };
    let (used, limit, max_versions) = match tx.query_opt(sql, &[&ws]).await.map_err(error)? {
        Some(row) => {
            let used: i64 = row.try_get(0).map_err(error)?;
            let limit: Option<i64> = row.try_get(1).map_err(error)?;
            let max: i32 = row.try_get(2).map_err(error)?;
            (used, limit, max)
        }
        None => (0, None, DEFAULT_MAX_VERSIONS as i32),
    };
    let reserved: i64 = tx
        .query_one(
            "SELECT COALESCE(SUM(bytes), 0)::bigint FROM quota_reservations WHERE workspace_id = $1 AND expires_at > $2",
            &[&ws, &now],
        )
        .await
        .map_err(error)?
        .try_get(0)
        .map_err(error)?;
    Ok(Usage {
        used: used.max(0) as u64,
        reserved: reserved.max(0) as u64,
        limit: limit.map(|l| l.max(0) as u64),
        max_versions: max_versions.max(1) as u32,
    })
}

#[async_trait]
impl AttachmentStore for PgTenant {
    async fn target(
        &self,
        audience: Audience,
        ticket: TicketId,
        comment: Option<CommentId>,
        attachment: Option<AttachmentId>,
    ) -> StoreResult<Target> {
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, self.workspace_id(), false).await?;
        target(&tx, self.workspace_id(), audience.requester(), ticket, comment, attachment).await
    }

    async fn reserve(&self, bytes: u64, expires: Millis) -> StoreResult<ReservationId> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let mut b = Bookkeeping::begin(&mut client, ws).await?;
        b.exempt("quota bookkeeping: a hold for an upload in flight, nothing a client syncs");
        let now = Millis::now();
        let usage = usage(b.tx(), ws, now, true).await?;
        b.tx().execute("DELETE FROM quota_reservations WHERE workspace_id = $1 AND expires_at <= $2", &[&ws, &now]).await.map_err(error)?;
        usage.admit(bytes)?;
        let id = ReservationId::new();
        b.tx()
            .execute(
                "INSERT INTO quota_reservations (workspace_id, id, bytes, expires_at) VALUES ($1, $2, $3, $4)",
                &[&ws, &id, &(bytes as i64), &expires],
            )
            .await
            .map_err(error)?;
        b.commit().await?;
        Ok(id)
    }

    async fn release(&self, reservation: ReservationId) -> StoreResult<()> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let mut b = Bookkeeping::begin(&mut client, ws).await?;
        b.exempt("quota bookkeeping: an upload in flight gave its hold back");
        b.tx().execute("DELETE FROM quota_reservations WHERE workspace_id = $1 AND id = $2", &[&ws, &reservation]).await.map_err(error)?;
        b.commit().await
    }

    async fn record(&self, actor: UserId, v: NewVersion) -> StoreResult<Attachment> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let mut w = self.write_tx(&mut client).await?;
        let now = w.now();
        usage(w.tx(), ws, now, true).await?;
        let Target { staff_only } = target(w.tx(), ws, None, v.ticket, v.comment, (!v.new).then_some(v.attachment)).await?;
        let (attachment, number, created) = match v.new {
            true => {
                let id = v.attachment;
                w.tx()
                    .execute(
                        "INSERT INTO attachments (workspace_id, id, ticket_id, comment_id, name, staff_only, latest_version, next_number, created_by, created_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, 2, $8, $9)",
                        &[&ws, &id, &v.ticket, &v.comment, &v.name, &staff_only, &v.version, &actor, &now],
                    )
                    .await
                    .map_err(error)?;
                (id, 1i32, true)
            }
            false => {
                let id = v.attachment;
                let number: i32 = w
                    .tx()
                    .query_one(
                        "UPDATE attachments SET latest_version = $3, next_number = next_number + 1 WHERE workspace_id = $1 AND id = $2
                         RETURNING next_number - 1",
                        &[&ws, &id, &v.version],
                    )
                    .await
                    .map_err(error)?
                    .try_get(0)
                    .map_err(error)?;
                (id, number, false)
            }
        };
        let encryption = v.encryption.as_ref().map(serde_json::to_value).transpose().map_err(StoreError::internal)?;
        w.tx()
            .execute(
                "INSERT INTO attachment_versions (workspace_id, id, attachment_id, number, size, sha256, content_type, encryption, created_by, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[&ws, &v.version, &attachment, &number, &(v.size as i64), &v.sha256, &v.content_type, &encryption, &actor, &now],
            )
            .await
            .map_err(error)?;
        w.tx()
            .execute("UPDATE storage_quota SET used = used + $2 WHERE workspace_id = $1", &[&ws, &(v.size as i64)])
            .await
            .map_err(error)?;
        w.tx()
            .execute("DELETE FROM quota_reservations WHERE workspace_id = $1 AND id = $2", &[&ws, &v.reservation])
            .await
            .map_err(error)?;
        let row = attachments(w.tx(), ws, None, v.ticket, Some(attachment)).await?.pop().ok_or(StoreError::NotFound)?;
        let event = Event::attachment_recorded(&row, staff_only, created);
        w.record(Some(actor), event).await?;
        w.commit().await?;
        Ok(row)
    }

    async fn list(&self, audience: Audience, ticket: TicketId) -> StoreResult<Vec<Attachment>> {
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, self.workspace_id(), false).await?;
        attachments(&tx, self.workspace_id(), audience.requester(), ticket, None).await
    }

    async fn get(&self, audience: Audience, ticket: TicketId, attachment: AttachmentId) -> StoreResult<Option<Attachment>> {
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, self.workspace_id(), false).await?;
        Ok(attachments(&tx, self.workspace_id(), audience.requester(), ticket, Some(attachment)).await?.pop())
    }

    async fn versions(&self, audience: Audience, ticket: TicketId, attachment: AttachmentId) -> StoreResult<Vec<AttachmentVersion>> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, ws, false).await?;
        tx.query(
            &format!(
                "SELECT {VERSION_COLS} FROM attachment_versions v
                 JOIN attachments a ON a.workspace_id = v.workspace_id AND a.id = v.attachment_id
                 JOIN tickets t ON t.workspace_id = a.workspace_id AND t.id = a.ticket_id
                 WHERE v.workspace_id = $2 AND {VISIBLE} AND a.ticket_id = $3 AND a.id = $4 ORDER BY v.number DESC"
            ),
            &[&audience.requester(), &ws, &ticket, &attachment],
        )
        .await
        .map_err(error)?
        .iter()
        .map(|r| version_from_row(r, 0))
        .collect()
    }

    async fn delete(&self, actor: UserId, audience: Audience, ticket: TicketId, attachment: AttachmentId) -> StoreResult<()> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let mut w = self.write_tx(&mut client).await?;
        let Target { staff_only } = target(w.tx(), ws, audience.requester(), ticket, None, Some(attachment)).await?;
        let creator: UserId = w
            .tx()
            .query_one("SELECT created_by FROM attachments WHERE workspace_id = $1 AND id = $2", &[&ws, &attachment])
            .await
            .map_err(error)?
            .try_get(0)
            .map_err(error)?;
        // Staff delete any attachment; a requester only what they uploaded.
        if !audience.is_staff() && creator != actor {
            return Err(StoreError::NotFound);
        }
        let now = w.now();
        w.tx()
            .execute("UPDATE attachments SET deleted_at = $3 WHERE workspace_id = $1 AND id = $2", &[&ws, &attachment, &now])
            .await
            .map_err(error)?;
        w.record(Some(actor), Event::attachment_deleted(&AttachmentRemoved { id: attachment, ticket_id: ticket }, staff_only)).await?;
        w.commit().await
    }

    async fn prune(&self, attachment: AttachmentId, keep: u32) -> StoreResult<Vec<VersionId>> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let mut b = Bookkeeping::begin(&mut client, ws).await?;
        b.exempt("old versions are not synced rows: the attachment and its latest version are unchanged");
        usage(b.tx(), ws, Millis::now(), true).await?;
        let rows = b
            .tx()
            .query(
                "DELETE FROM attachment_versions WHERE workspace_id = $1 AND id IN
                 (SELECT id FROM attachment_versions WHERE workspace_id = $1 AND attachment_id = $2 ORDER BY number DESC OFFSET $3)
                 RETURNING id, size",
                &[&ws, &attachment, &(keep.max(1) as i64)],
            )
            .await
            .map_err(error)?;
        let mut freed = 0i64;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(row.try_get(0).map_err(error)?);
            freed += row.try_get::<_, i64>(1).map_err(error)?;
        }
        b.tx()
            .execute("UPDATE storage_quota SET used = GREATEST(used - $2, 0) WHERE workspace_id = $1", &[&ws, &freed])
            .await
            .map_err(error)?;
        b.commit().await?;
        Ok(out)
    }

    async fn known_versions(&self) -> StoreResult<Vec<(AttachmentId, VersionId)>> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, ws, false).await?;
        tx.query("SELECT attachment_id, id FROM attachment_versions WHERE workspace_id = $1", &[&ws])
            .await
            .map_err(error)?
            .iter()
            .map(|r| Ok((r.try_get(0).map_err(error)?, r.try_get(1).map_err(error)?)))
            .collect()
    }

    async fn usage(&self) -> StoreResult<Usage> {
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, self.workspace_id(), false).await?;
        usage(&tx, self.workspace_id(), Millis::now(), false).await
    }

    async fn set_limits(&self, actor: UserId, limit: Option<u64>, max_versions: u32) -> StoreResult<Usage> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let mut w = self.write_tx(&mut client).await?;
        let now = w.now();
        usage(w.tx(), ws, now, true).await?;
        w.tx()
            .execute(
                "UPDATE storage_quota SET limit_bytes = $2, max_versions = $3 WHERE workspace_id = $1",
                &[&ws, &limit.map(|l| l as i64), &(max_versions.max(1) as i32)],
            )
            .await
            .map_err(error)?;
        let usage = usage(w.tx(), ws, now, false).await?;
        w.record(Some(actor), Event::storage_changed(&usage)).await?;
        w.commit().await?;
        Ok(usage)
    }

    async fn recount(&self) -> StoreResult<u64> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let mut b = Bookkeeping::begin(&mut client, ws).await?;
        b.exempt("quota bookkeeping: usage recomputed from the versions' rows");
        usage(b.tx(), ws, Millis::now(), true).await?;
        let used: i64 = b
            .tx()
            .query_one(
                "UPDATE storage_quota SET used = (SELECT COALESCE(SUM(size), 0) FROM attachment_versions WHERE workspace_id = $1)
                 WHERE workspace_id = $1 RETURNING used",
                &[&ws],
            )
            .await
            .map_err(error)?
            .try_get(0)
            .map_err(error)?;
        b.commit().await?;
        Ok(used.max(0) as u64)
    }
}
