//! Attachment metadata and the storage quota in the workspace's `tenant.db`. Writes are
//! serialised by SQLite's one writer, so a reservation's check and insert cannot race.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::error;
use super::log::WriteTx;
use super::tenant::{SqliteTenant, visible_ticket};
use crate::store::attachments::*;
use crate::store::blobs::{AttachmentId, VersionId};
use crate::store::{Audience, Comment, CommentId, Event, Millis, StoreError, StoreResult, TicketId, UserId};

pub(super) const ATTACHMENT_COLS: &str = "a.id, a.ticket_id, a.comment_id, a.name, a.created_at, \
     v.id, v.attachment_id, v.number, v.size, v.sha256, v.content_type, v.created_by, v.created_at, v.encryption";
pub(super) const VERSION_COLS: &str =
    "v.id, v.attachment_id, v.number, v.size, v.sha256, v.content_type, v.created_by, v.created_at, v.encryption";

fn json_error(at: usize, e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(at, rusqlite::types::Type::Text, Box::new(e))
}

pub(super) fn version_from_row(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<AttachmentVersion> {
    let encryption: Option<String> = row.get(at + 8)?;
    Ok(AttachmentVersion {
        id: row.get(at)?,
        attachment_id: row.get(at + 1)?,
        number: row.get(at + 2)?,
        size: row.get::<_, i64>(at + 3)?.max(0) as u64,
        sha256: row.get(at + 4)?,
        content_type: row.get(at + 5)?,
        created_by: row.get(at + 6)?,
        created_at: row.get(at + 7)?,
        encryption: encryption.map(|e| serde_json::from_str(&e)).transpose().map_err(|e| json_error(at + 8, e))?,
    })
}

pub(super) fn attachment_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Attachment> {
    Ok(Attachment {
        id: row.get(0)?,
        ticket_id: row.get(1)?,
        comment_id: row.get(2)?,
        name: row.get(3)?,
        created_at: row.get(4)?,
        latest: version_from_row(row, 5)?,
    })
}

/// The live attachments of live tickets that `requester` (if given) may see.
/// Puts `actor`'s own files, uploaded to the ticket and on no comment yet, on their new
/// public `comment`, each with its `attachment.updated` event, inside the comment's
/// transaction. `Conflict` (naming `attachments`) when one is not such a file.
pub(super) fn attach_to_comment(tx: &mut WriteTx<'_>, actor: UserId, comment: &Comment, ids: &[AttachmentId]) -> StoreResult<()> {
    for id in ids {
        let changed = tx
            .prepare_cached(
                "UPDATE attachments SET comment_id = ?1
                 WHERE id = ?2 AND ticket_id = ?3 AND comment_id IS NULL AND deleted_at IS NULL AND created_by = ?4 AND staff_only = 0",
            )
            .and_then(|mut stmt| stmt.execute(params![comment.id, id, comment.ticket_id, actor]))
            .map_err(error)?;
        if changed != 1 {
            return Err(StoreError::Conflict(format!("attachments: {id} {NOT_ATTACHABLE}")));
        }
        let attachment = attachments(tx, None, comment.ticket_id, Some(*id))?.pop().ok_or(StoreError::NotFound)?;
        tx.record(Some(actor), Event::attachment_updated(&attachment, false))?;
    }
    Ok(())
}

fn visible(requester: Option<UserId>) -> (&'static str, Option<UserId>) {
    ("a.deleted_at IS NULL AND t.deleted_at IS NULL AND (?1 IS NULL OR (t.requester_id = ?1 AND a.staff_only = 0))", requester)
}

fn attachments(conn: &Connection, requester: Option<UserId>, ticket: TicketId, one: Option<AttachmentId>) -> StoreResult<Vec<Attachment>> {
    let (rule, requester) = visible(requester);
    // Two statements, not `(?3 IS NULL OR a.id = ?3)`: with the OR, SQLite reads every
    // attachment of the ticket to find one.
    let which = if one.is_some() { "a.id = ?3" } else { "?3 IS NULL" };
    conn.prepare_cached(&format!(
        "SELECT {ATTACHMENT_COLS} FROM attachments a JOIN attachment_versions v ON v.id = a.latest_version
         JOIN tickets t ON t.id = a.ticket_id WHERE {rule} AND a.ticket_id = ?2 AND {which} ORDER BY a.id"
    ))
    .and_then(|mut stmt| stmt.query_map(params![requester, ticket, one], attachment_from_row)?.collect::<Result<Vec<_>, _>>())
    .map_err(error)
}

/// Where `requester` (staff when `None`) may attach, or what an attachment is on.
fn target(
    conn: &Connection,
    requester: Option<UserId>,
    ticket: TicketId,
    comment: Option<CommentId>,
    attachment: Option<AttachmentId>,
) -> StoreResult<Target> {
    visible_ticket(conn, requester, ticket)?.ok_or(StoreError::NotFound)?;
    let mut staff_only = false;
    if let Some(comment) = comment {
        let internal: bool = conn
            .prepare_cached("SELECT internal FROM comments WHERE id = ?1 AND ticket_id = ?2")
            .and_then(|mut stmt| stmt.query_row(params![comment, ticket], |r| r.get(0)).optional())
            .map_err(error)?
            .ok_or(StoreError::NotFound)?;
        if internal && requester.is_some() {
            return Err(StoreError::NotFound);
        }
        staff_only = internal;
    }
    if let Some(attachment) = attachment {
        let on: bool = conn
            .prepare_cached("SELECT staff_only FROM attachments WHERE id = ?1 AND ticket_id = ?2 AND deleted_at IS NULL")
            .and_then(|mut stmt| stmt.query_row(params![attachment, ticket], |r| r.get(0)).optional())
            .map_err(error)?
            .ok_or(StoreError::NotFound)?;
        if on && requester.is_some() {
            return Err(StoreError::NotFound);
        }
        staff_only = on;
    }
    Ok(Target { staff_only })
}

fn usage(conn: &Connection, now: Millis) -> StoreResult<Usage> {
    let (used, limit, max_versions): (i64, Option<i64>, u32) = conn
        .query_row("SELECT used, limit_bytes, max_versions FROM storage_quota WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(error)?;
    let reserved: i64 = conn
        .prepare_cached("SELECT COALESCE(SUM(bytes), 0) FROM quota_reservations WHERE expires_at > ?1")
        .and_then(|mut stmt| stmt.query_row(params![now], |r| r.get(0)))
        .map_err(error)?;
    Ok(Usage { used: used.max(0) as u64, reserved: reserved.max(0) as u64, limit: limit.map(|l| l.max(0) as u64), max_versions })
}

fn record(tx: &mut WriteTx<'_>, actor: UserId, v: NewVersion) -> StoreResult<Attachment> {
    let now = tx.now();
    let Target { staff_only } = target(tx, None, v.ticket, v.comment, (!v.new).then_some(v.attachment))?;
    let (attachment, number, created) = match v.new {
        true => {
            let id = v.attachment;
            tx.prepare_cached(
                "INSERT INTO attachments (id, ticket_id, comment_id, name, staff_only, latest_version, next_number, created_by, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 2, ?7, ?8)",
            )
            .and_then(|mut stmt| stmt.execute(params![id, v.ticket, v.comment, v.name, staff_only, v.version, actor, now]))
            .map_err(error)?;
            (id, 1u32, true)
        }
        false => {
            let id = v.attachment;
            let number: u32 = tx
                .prepare_cached(
                    "UPDATE attachments SET latest_version = ?2, next_number = next_number + 1 WHERE id = ?1 RETURNING next_number - 1",
                )
                .and_then(|mut stmt| stmt.query_row(params![id, v.version], |r| r.get(0)))
                .map_err(error)?;
            (id, number, false)
        }
    };
    let encryption = v.encryption.as_ref().map(serde_json::to_string).transpose().map_err(StoreError::internal)?;
    tx.prepare_cached(
        "INSERT INTO attachment_versions (id, attachment_id, number, size, sha256, content_type, encryption, created_by, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![v.version, attachment, number, v.size as i64, v.sha256, v.content_type, encryption, actor, now])
    })
    .map_err(error)?;
    tx.prepare_cached("UPDATE storage_quota SET used = used + ?1 WHERE id = 1")
        .and_then(|mut stmt| stmt.execute(params![v.size as i64]))
        .map_err(error)?;
    tx.prepare_cached("DELETE FROM quota_reservations WHERE id = ?1")
        .and_then(|mut stmt| stmt.execute(params![v.reservation]))
        .map_err(error)?;
    let row = attachments(tx, None, v.ticket, Some(attachment))?.pop().ok_or(StoreError::NotFound)?;
    let event = Event::attachment_recorded(&row, staff_only, created);
    tx.record(Some(actor), event)?;
    Ok(row)
}

#[async_trait]
impl AttachmentStore for SqliteTenant {
    async fn target(
        &self,
        audience: Audience,
        ticket: TicketId,
        comment: Option<CommentId>,
        attachment: Option<AttachmentId>,
    ) -> StoreResult<Target> {
        self.read(move |conn| target(conn, audience.requester(), ticket, comment, attachment)).await
    }

    async fn reserve(&self, bytes: u64, expires: Millis) -> StoreResult<ReservationId> {
        self.write(move |tx| {
            tx.exempt("quota bookkeeping: a hold for an upload in flight, nothing a client syncs");
            let now = tx.now();
            tx.prepare_cached("DELETE FROM quota_reservations WHERE expires_at <= ?1")
                .and_then(|mut stmt| stmt.execute(params![now]))
                .map_err(error)?;
            let usage = usage(tx, now)?;
            usage.admit(bytes)?;
            let id = ReservationId::new();
            tx.prepare_cached("INSERT INTO quota_reservations (id, bytes, expires_at) VALUES (?1, ?2, ?3)")
                .and_then(|mut stmt| stmt.execute(params![id, bytes as i64, expires]))
                .map_err(error)?;
            Ok(id)
        })
        .await
    }

    async fn release(&self, reservation: ReservationId) -> StoreResult<()> {
        self.write(move |tx| {
            tx.exempt("quota bookkeeping: an upload in flight gave its hold back");
            tx.prepare_cached("DELETE FROM quota_reservations WHERE id = ?1")
                .and_then(|mut stmt| stmt.execute(params![reservation]))
                .map_err(error)?;
            Ok(())
        })
        .await
    }

    async fn record(&self, actor: UserId, version: NewVersion) -> StoreResult<Attachment> {
        self.write(move |tx| record(tx, actor, version)).await
    }

    async fn list(&self, audience: Audience, ticket: TicketId) -> StoreResult<Vec<Attachment>> {
        self.read(move |conn| attachments(conn, audience.requester(), ticket, None)).await
    }

    async fn get(&self, audience: Audience, ticket: TicketId, attachment: AttachmentId) -> StoreResult<Option<Attachment>> {
        self.read(move |conn| Ok(attachments(conn, audience.requester(), ticket, Some(attachment))?.pop())).await
    }

    async fn versions(&self, audience: Audience, ticket: TicketId, attachment: AttachmentId) -> StoreResult<Vec<AttachmentVersion>> {
        self.read(move |conn| {
            let (rule, requester) = visible(audience.requester());
            conn.prepare_cached(&format!(
                "SELECT {VERSION_COLS} FROM attachment_versions v JOIN attachments a ON a.id = v.attachment_id
                 JOIN tickets t ON t.id = a.ticket_id WHERE {rule} AND a.ticket_id = ?2 AND a.id = ?3 ORDER BY v.number DESC"
            ))
            .and_then(|mut stmt| {
                stmt.query_map(params![requester, ticket, attachment], |r| version_from_row(r, 0))?.collect::<Result<Vec<_>, _>>()
            })
            .map_err(error)
        })
        .await
    }

    async fn delete(&self, actor: UserId, audience: Audience, ticket: TicketId, attachment: AttachmentId) -> StoreResult<()> {
        self.write(move |tx| {
            let Target { staff_only } = target(tx, audience.requester(), ticket, None, Some(attachment))?;
            let creator: UserId = tx
                .prepare_cached("SELECT created_by FROM attachments WHERE id = ?1")
                .and_then(|mut stmt| stmt.query_row(params![attachment], |r| r.get(0)))
                .map_err(error)?;
            // Staff delete any attachment; a requester only what they uploaded.
            if !audience.is_staff() && creator != actor {
                return Err(StoreError::NotFound);
            }
            let now = tx.now();
            tx.prepare_cached("UPDATE attachments SET deleted_at = ?2 WHERE id = ?1")
                .and_then(|mut stmt| stmt.execute(params![attachment, now]))
                .map_err(error)?;
            tx.record(Some(actor), Event::attachment_deleted(&AttachmentRemoved { id: attachment, ticket_id: ticket }, staff_only))?;
            Ok(())
        })
        .await
    }

    async fn prune(&self, attachment: AttachmentId, keep: u32) -> StoreResult<Vec<VersionId>> {
        self.write(move |tx| {
            tx.exempt("old versions are not synced rows: the attachment and its latest version are unchanged");
            let old: Vec<(VersionId, i64)> = tx
                .prepare_cached("SELECT id, size FROM attachment_versions WHERE attachment_id = ?1 ORDER BY number DESC LIMIT -1 OFFSET ?2")
                .and_then(|mut stmt| {
                    stmt.query_map(params![attachment, keep.max(1)], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<Vec<_>, _>>()
                })
                .map_err(error)?;
            let mut freed = 0i64;
            for (id, size) in &old {
                tx.prepare_cached("DELETE FROM attachment_versions WHERE id = ?1")
                    .and_then(|mut stmt| stmt.execute(params![id]))
                    .map_err(error)?;
                freed += size;
            }
            tx.prepare_cached("UPDATE storage_quota SET used = MAX(used - ?1, 0) WHERE id = 1")
                .and_then(|mut stmt| stmt.execute(params![freed]))
                .map_err(error)?;
            Ok(old.into_iter().map(|(id, _)| id).collect())
        })
        .await
    }

    async fn known_versions(&self) -> StoreResult<Vec<(AttachmentId, VersionId)>> {
        self.read(move |conn| {
            conn.prepare_cached("SELECT attachment_id, id FROM attachment_versions")
                .and_then(|mut stmt| stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<Vec<_>, _>>())
                .map_err(error)
        })
        .await
    }

    async fn usage(&self) -> StoreResult<Usage> {
        self.read(move |conn| usage(conn, Millis::now())).await
    }

    async fn set_limits(&self, actor: UserId, limit: Option<u64>, max_versions: u32) -> StoreResult<Usage> {
        self.write(move |tx| {
            tx.prepare_cached("UPDATE storage_quota SET limit_bytes = ?1, max_versions = ?2 WHERE id = 1")
                .and_then(|mut stmt| stmt.execute(params![limit.map(|l| l as i64), max_versions.max(1)]))
                .map_err(error)?;
            let now = tx.now();
            let usage = usage(tx, now)?;
            tx.record(Some(actor), Event::storage_changed(&usage))?;
            Ok(usage)
        })
        .await
    }

    async fn recount(&self) -> StoreResult<u64> {
        self.write(move |tx| {
            tx.exempt("quota bookkeeping: usage recomputed from the versions' rows");
            tx.execute("UPDATE storage_quota SET used = (SELECT COALESCE(SUM(size), 0) FROM attachment_versions) WHERE id = 1", [])
                .map_err(error)?;
            let used: i64 = tx.query_row("SELECT used FROM storage_quota WHERE id = 1", [], |r| r.get(0)).map_err(error)?;
            Ok(used.max(0) as u64)
        })
        .await
    }
}
