//! Moving a workspace in and out of Postgres, rows and log verbatim.
//!
//! Export reads one REPEATABLE READ snapshot scoped to the workspace. Import writes the
//! whole workspace in one transaction, keeping every id, ticket number and sync_id, and
//! sets the head row to the log's last id and the highest ticket number. It copies the
//! log rather than appending to it, so it writes `sync_actions` itself, not via `PgWrite`.

use deadpool_postgres::Transaction;
use futures::{StreamExt, pin_mut};
use tokio::sync::mpsc;

use super::attachments::{VERSION_COLS, version_from_row};
use super::error;
use super::log::{EVENT_COLS, Param, event_from_row, scope};
use super::mail::{CHANNEL_COLS, INBOUND_COLS, MAIL_COLS, channel_from_row, inbound_from_row, insert_inbound, mail_from_row};
use super::notes::{NOTE_COLS, note_record_from_row, update_from_row};
use super::tenant::{COMMENT_COLS, LINK_COLS, TICKET_COLS, comment_from_row, link_from_row, ticket_from_row};
use super::types::{member_from_row, workspace_from_row};
use crate::store::attachments::{AttachmentRecord, StorageRecord};
use crate::store::mail::OutboxRecord;
use crate::store::notes::{Base64Bytes, NoteUpdateRecord};
use crate::store::notifications::{Follower, Notification, TicketView};
use crate::store::*;

async fn send(out: &mpsc::Sender<TenantRow>, row: TenantRow) -> StoreResult<()> {
    out.send(row).await.map_err(|_| StoreError::Internal("export reader went away".into()))
}

pub async fn export(tx: &Transaction<'_>, workspace: WorkspaceId, out: &mpsc::Sender<TenantRow>) -> StoreResult<u64> {
    let mut count = 0u64;
    for row in
        tx.query("SELECT workspace_id, name, created_at FROM workspace_info WHERE workspace_id = $1", &[&workspace]).await.map_err(error)?
    {
        let ws = workspace_from_row(&row)?;
        send(out, TenantRow::Workspace(ws)).await?;
        count += 1;
    }
    for row in tx
        .query("SELECT user_id, email, name, role, joined_at FROM members WHERE workspace_id = $1 ORDER BY user_id", &[&workspace])
        .await
        .map_err(error)?
    {
        let member = member_from_row(&row)?;
        send(out, TenantRow::Member(member)).await?;
        count += 1;
    }
    let ws: [Param<'_>; 1] = [&workspace];
    let tickets = tx
        .query_raw(
            &format!("SELECT {TICKET_COLS}, t.deleted_at FROM tickets t WHERE t.workspace_id = $1 ORDER BY t.number"),
            ws.iter().copied(),
        )
        .await
        .map_err(error)?;
    pin_mut!(tickets);
    while let Some(row) = tickets.next().await {
        let row = row.map_err(error)?;
        send(out, TenantRow::Ticket(TicketRecord { ticket: ticket_from_row(&row)?, deleted_at: row.try_get(11).map_err(error)? })).await?;
        count += 1;
    }
    let comments = tx
        .query_raw(&format!("SELECT {COMMENT_COLS} FROM comments c WHERE c.workspace_id = $1 ORDER BY c.id"), ws.iter().copied())
        .await
        .map_err(error)?;
    pin_mut!(comments);
    while let Some(row) = comments.next().await {
        send(out, TenantRow::Comment(comment_from_row(&row.map_err(error)?)?)).await?;
        count += 1;
    }
    for row in tx
        .query(&format!("SELECT {LINK_COLS} FROM ticket_links l WHERE l.workspace_id = $1 ORDER BY l.id"), &[&workspace])
        .await
        .map_err(error)?
    {
        send(out, TenantRow::Link(link_from_row(&row)?)).await?;
        count += 1;
    }
    let events = tx
        .query_raw(
            &format!("SELECT {EVENT_COLS}, s.ticket_id, s.staff_only, s.recipient_id FROM sync_actions s WHERE s.workspace_id = $1 ORDER BY s.sync_id"),
            ws.iter().copied(),
        )
        .await
        .map_err(error)?;
    pin_mut!(events);
    while let Some(row) = events.next().await {
        let row = row.map_err(error)?;
        let record = EventRecord {
            event: event_from_row(&row)?,
            ticket_id: row.try_get(7).map_err(error)?,
            staff_only: row.try_get(8).map_err(error)?,
            recipient: row.try_get(9).map_err(error)?,
        };
        send(out, TenantRow::Event(record)).await?;
        count += 1;
    }
    count += export_consumers(tx, workspace, out).await?;
    count += export_notes(tx, workspace, out).await?;
    count += export_attachments(tx, workspace, out).await?;
    let channels = tx
        .query(&format!("SELECT {CHANNEL_COLS} FROM mail_channels WHERE workspace_id = $1 ORDER BY created_at, id"), &[&workspace])
        .await
        .map_err(error)?;
    for row in &channels {
        send(out, TenantRow::MailChannel(channel_from_row(row)?)).await?;
        count += 1;
    }
    let mails = tx
        .query(
            &format!(
                "SELECT {MAIL_COLS}, source_sync_id, mail_from, message, due_at FROM mail_outbox WHERE workspace_id = $1 ORDER BY created_at, id"
            ),
            &[&workspace],
        )
        .await
        .map_err(error)?;
    for row in &mails {
        let message: Vec<u8> = row.try_get(16).map_err(error)?;
        let record = OutboxRecord {
            mail: mail_from_row(row)?,
            source_sync_id: row.try_get(14).map_err(error)?,
            from: row.try_get(15).map_err(error)?,
            message: Base64Bytes(message.into()),
            due_at: row.try_get(17).map_err(error)?,
        };
        send(out, TenantRow::Mail(record)).await?;
        count += 1;
    }
    let inbound = tx
        .query(&format!("SELECT {INBOUND_COLS} FROM mail_inbound WHERE workspace_id = $1 ORDER BY received_at, dedupe_key"), &[&workspace])
        .await
        .map_err(error)?;
    for row in &inbound {
        send(out, TenantRow::Inbound(inbound_from_row(row)?)).await?;
        count += 1;
    }
    Ok(count)
}

/// The storage settings (a workspace that never stored a file has none), then each
/// attachment's row and its versions'.
async fn export_attachments(tx: &Transaction<'_>, workspace: WorkspaceId, out: &mpsc::Sender<TenantRow>) -> StoreResult<u64> {
    let mut count = 0;
    let quota = tx
        .query_opt("SELECT used, limit_bytes, max_versions FROM storage_quota WHERE workspace_id = $1", &[&workspace])
        .await
        .map_err(error)?;
    if let Some(r) = quota {
        let (used, limit, max_versions): (i64, Option<i64>, i32) =
            (r.try_get(0).map_err(error)?, r.try_get(1).map_err(error)?, r.try_get(2).map_err(error)?);
        let storage =
            StorageRecord { used: used.max(0) as u64, limit: limit.map(|l| l.max(0) as u64), max_versions: max_versions.max(1) as u32 };
        send(out, TenantRow::Storage(storage)).await?;
        count += 1;
    }
    let attachments = tx
        .query(
            "SELECT id, ticket_id, comment_id, name, staff_only, latest_version, next_number, created_by, created_at, deleted_at
             FROM attachments WHERE workspace_id = $1 ORDER BY created_at, id",
            &[&workspace],
        )
        .await
        .map_err(error)?;
    for r in attachments {
        let next_number: i32 = r.try_get(6).map_err(error)?;
        let attachment = AttachmentRecord {
            id: r.try_get(0).map_err(error)?,
            ticket_id: r.try_get(1).map_err(error)?,
            comment_id: r.try_get(2).map_err(error)?,
            name: r.try_get(3).map_err(error)?,
            staff_only: r.try_get(4).map_err(error)?,
            latest_version: r.try_get(5).map_err(error)?,
            next_number: next_number.max(0) as u32,
            created_by: r.try_get(7).map_err(error)?,
            created_at: r.try_get(8).map_err(error)?,
            deleted_at: r.try_get(9).map_err(error)?,
        };
        let id = attachment.id;
        send(out, TenantRow::Attachment(attachment)).await?;
        count += 1;
        let versions = tx
            .query(
                &format!(
                    "SELECT {VERSION_COLS} FROM attachment_versions v WHERE v.workspace_id = $1 AND v.attachment_id = $2 ORDER BY v.number"
                ),
                &[&workspace, &id],
            )
            .await
            .map_err(error)?;
        for row in versions {
            send(out, TenantRow::AttachmentVersion(version_from_row(&row, 0)?)).await?;
            count += 1;
        }
    }
    Ok(count)
}

/// Each note's row, then its updates.
async fn export_notes(tx: &Transaction<'_>, workspace: WorkspaceId, out: &mpsc::Sender<TenantRow>) -> StoreResult<u64> {
    let mut count = 0;
    let notes = tx
        .query(&format!("SELECT {NOTE_COLS} FROM notes n WHERE n.workspace_id = $1 ORDER BY n.ticket_id"), &[&workspace])
        .await
        .map_err(error)?;
    for row in notes {
        let note = note_record_from_row(&row)?;
        let (ticket, covered) = (note.ticket_id, note.snapshot_seq);
        send(out, TenantRow::Note(note)).await?;
        count += 1;
        let updates = tx
            .query(
                "SELECT seq, ticket_id, author_id, bytes FROM note_updates WHERE workspace_id = $1 AND ticket_id = $2 AND seq > $3
                 ORDER BY seq",
                &[&workspace, &ticket, &covered],
            )
            .await
            .map_err(error)?;
        for row in updates {
            let u = update_from_row(&row)?;
            let record = NoteUpdateRecord { seq: u.seq, ticket_id: u.ticket_id, author_id: u.author, bytes: Base64Bytes(u.bytes) };
            send(out, TenantRow::NoteUpdate(record)).await?;
            count += 1;
        }
    }
    Ok(count)
}

/// The log consumers' watermarks and the notifications consumer's state. The watermarks
/// table is readable across workspaces: the scope is named explicitly.
async fn export_consumers(tx: &Transaction<'_>, workspace: WorkspaceId, out: &mpsc::Sender<TenantRow>) -> StoreResult<u64> {
    let mut count = 0;
    let rows = tx
        .query(
            "SELECT consumer, position, stopped_at, last_error FROM consumer_watermarks WHERE workspace_id = $1 ORDER BY consumer",
            &[&workspace],
        )
        .await
        .map_err(error)?;
    for r in rows {
        let record = WatermarkRecord {
            consumer: r.try_get(0).map_err(error)?,
            position: r.try_get(1).map_err(error)?,
            stopped_at: r.try_get(2).map_err(error)?,
            last_error: r.try_get(3).map_err(error)?,
        };
        send(out, TenantRow::Watermark(record)).await?;
        count += 1;
    }
    let rows = tx
        .query("SELECT ticket_id, number, title, requester_id, assignee_id FROM notification_tickets WHERE workspace_id = $1 ORDER BY ticket_id", &[&workspace])
        .await
        .map_err(error)?;
    for r in rows {
        let view = TicketView {
            ticket_id: r.try_get(0).map_err(error)?,
            number: r.try_get(1).map_err(error)?,
            title: r.try_get(2).map_err(error)?,
            requester_id: r.try_get(3).map_err(error)?,
            assignee_id: r.try_get(4).map_err(error)?,
        };
        send(out, TenantRow::NotificationTicket(view)).await?;
        count += 1;
    }
    let rows = tx
        .query(
            "SELECT ticket_id, user_id, reason, since_sync_id FROM ticket_followers WHERE workspace_id = $1 ORDER BY ticket_id, user_id",
            &[&workspace],
        )
        .await
        .map_err(error)?;
    for r in rows {
        let record = Follower {
            ticket_id: r.try_get(0).map_err(error)?,
            user_id: r.try_get(1).map_err(error)?,
            reason: r.try_get(2).map_err(error)?,
            since_sync_id: r.try_get(3).map_err(error)?,
        };
        send(out, TenantRow::Follower(record)).await?;
        count += 1;
    }
    let rows = tx
        .query("SELECT data, read_at FROM notifications WHERE workspace_id = $1 ORDER BY source_sync_id, recipient_id", &[&workspace])
        .await
        .map_err(error)?;
    for r in rows {
        let data: serde_json::Value = r.try_get(0).map_err(error)?;
        let mut n: Notification = serde_json::from_value(data).map_err(StoreError::internal)?;
        n.read_at = r.try_get(1).map_err(error)?;
        send(out, TenantRow::Notification(n)).await?;
        count += 1;
    }
    Ok(count)
}

/// Writes every row of `rows` as a new workspace, in the caller's transaction.
pub async fn import(tx: &Transaction<'_>, workspace: &Workspace, rows: &mut mpsc::Receiver<TenantRow>) -> StoreResult<u64> {
    scope(tx, workspace.id).await?;
    let ws = workspace.id;
    tx.execute("INSERT INTO workspace_heads (workspace_id) VALUES ($1)", &[&ws]).await.map_err(|e| match error(e) {
        StoreError::Conflict(_) => StoreError::Conflict(format!("workspace {ws} already has storage here")),
        other => other,
    })?;
    let (mut count, mut head, mut number) = (0u64, 0i64, 0i64);
    while let Some(row) = rows.recv().await {
        match row {
            TenantRow::Workspace(w) => {
                if w.id != ws {
                    return Err(StoreError::invalid("workspace", "the export names a different workspace"));
                }
                tx.execute(
                    "INSERT INTO workspace_info (workspace_id, name, created_at) VALUES ($1, $2, $3)",
                    &[&ws, &w.name, &w.created_at],
                )
                .await
                .map_err(error)?;
            }
            TenantRow::Member(m) => {
                tx.execute(
                    "INSERT INTO members (workspace_id, user_id, email, name, role, joined_at) VALUES ($1, $2, $3, $4, $5, $6)",
                    &[&ws, &m.user_id, &m.email, &m.name, &m.role, &m.joined_at],
                )
                .await
                .map_err(error)?;
            }
            TenantRow::Ticket(TicketRecord { ticket: t, deleted_at }) => {
                number = number.max(t.number);
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO tickets (workspace_id, id, number, title, status, priority, requester_id, assignee_id, tags, created_at, updated_at, deleted_at, version)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                    )
                    .await
                    .map_err(error)?;
                tx.execute(
                    &stmt,
                    &[
                        &ws,
                        &t.id,
                        &t.number,
                        &t.title,
                        &t.status,
                        &t.priority,
                        &t.requester_id,
                        &t.assignee_id,
                        &t.tags,
                        &t.created_at,
                        &t.updated_at,
                        &deleted_at,
                        &t.version,
                    ],
                )
                .await
                .map_err(error)?;
            }
            TenantRow::Comment(c) => {
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO comments (workspace_id, id, ticket_id, author_id, body, internal, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .await
                    .map_err(error)?;
                tx.execute(&stmt, &[&ws, &c.id, &c.ticket_id, &c.author_id, &c.body, &c.internal, &c.created_at]).await.map_err(error)?;
            }
            TenantRow::Link(l) => {
                tx.execute(
                    "INSERT INTO ticket_links (workspace_id, id, source_id, target_id, kind, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[&ws, &l.id, &l.source_id, &l.target_id, &l.kind, &l.created_by, &l.created_at],
                )
                .await
                .map_err(error)?;
            }
            TenantRow::Event(EventRecord { event: e, ticket_id, staff_only, recipient }) => {
                head = head.max(e.sync_id);
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO sync_actions (workspace_id, sync_id, at, actor, kind, entity, entity_id, data, ticket_id, staff_only, recipient_id)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    )
                    .await
                    .map_err(error)?;
                tx.execute(
                    &stmt,
                    &[&ws, &e.sync_id, &e.at, &e.actor, &e.kind, &e.entity, &e.entity_id, &e.data, &ticket_id, &staff_only, &recipient],
                )
                .await
                .map_err(error)?;
            }
            TenantRow::Watermark(w) => {
                tx.execute(
                    "INSERT INTO consumer_watermarks (workspace_id, consumer, position, stopped_at, last_error, updated_at) VALUES ($1, $2, $3, $4, $5, 0)",
                    &[&ws, &w.consumer, &w.position, &w.stopped_at, &w.last_error],
                )
                .await
                .map_err(error)?;
            }
            TenantRow::NotificationTicket(t) => {
                tx.execute(
                    "INSERT INTO notification_tickets (workspace_id, ticket_id, number, title, requester_id, assignee_id) VALUES ($1, $2, $3, $4, $5, $6)",
                    &[&ws, &t.ticket_id, &t.number, &t.title, &t.requester_id, &t.assignee_id],
                )
                .await
                .map_err(error)?;
            }
            TenantRow::Follower(f) => {
                tx.execute(
                    "INSERT INTO ticket_followers (workspace_id, ticket_id, user_id, reason, since_sync_id) VALUES ($1, $2, $3, $4, $5)",
                    &[&ws, &f.ticket_id, &f.user_id, &f.reason, &f.since_sync_id],
                )
                .await
                .map_err(error)?;
            }
            TenantRow::Notification(n) => {
                let data = serde_json::to_value(Notification { read_at: None, ..n.clone() }).map_err(StoreError::internal)?;
                tx.execute(
                    "INSERT INTO notifications (workspace_id, id, recipient_id, source_sync_id, kind, ticket_id, staff_only, data, created_at, read_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    &[&ws, &n.id, &n.recipient_id, &n.seq, &n.kind, &n.ticket_id, &n.internal, &data, &n.created_at, &n.read_at],
                )
                .await
                .map_err(error)?;
            }
            TenantRow::Note(n) => {
                tx.execute(
                    "INSERT INTO notes (workspace_id, ticket_id, snapshot, snapshot_seq, text, size, pending_updates, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        &ws,
                        &n.ticket_id,
                        &n.snapshot.as_ref().map(|b| b.0.as_ref()),
                        &n.snapshot_seq,
                        &n.text,
                        &(n.size as i64),
                        &(n.pending_updates as i64),
                        &n.updated_at,
                    ],
                )
                .await
                .map_err(error)?;
            }
            TenantRow::NoteUpdate(u) => {
                tx.execute(
                    "INSERT INTO note_updates (workspace_id, seq, ticket_id, author_id, bytes) VALUES ($1, $2, $3, $4, $5)",
                    &[&ws, &u.seq, &u.ticket_id, &u.author_id, &u.bytes.0.as_ref()],
                )
                .await
                .map_err(error)?;
            }
            TenantRow::Storage(q) => {
                let (used, limit, max_versions) = (q.used as i64, q.limit.map(|l| l as i64), q.max_versions.min(i32::MAX as u32) as i32);
                tx.execute(
                    "INSERT INTO storage_quota (workspace_id, used, limit_bytes, max_versions) VALUES ($1, $2, $3, $4)",
                    &[&ws, &used, &limit, &max_versions],
                )
                .await
                .map_err(error)?;
            }
            TenantRow::Attachment(a) => {
                let next_number = a.next_number.min(i32::MAX as u32) as i32;
                tx.execute(
                    "INSERT INTO attachments (workspace_id, id, ticket_id, comment_id, name, staff_only, latest_version, next_number, created_by, created_at, deleted_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    &[&ws, &a.id, &a.ticket_id, &a.comment_id, &a.name, &a.staff_only, &a.latest_version, &next_number, &a.created_by, &a.created_at, &a.deleted_at],
                )
                .await
                .map_err(error)?;
            }
            TenantRow::AttachmentVersion(v) => {
                let encryption = v.encryption.as_ref().map(serde_json::to_value).transpose().map_err(StoreError::internal)?;
                let (number, size) = (v.number.min(i32::MAX as u32) as i32, v.size as i64);
                tx.execute(
                    "INSERT INTO attachment_versions (workspace_id, id, attachment_id, number, size, sha256, content_type, encryption, created_by, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    &[&ws, &v.id, &v.attachment_id, &number, &size, &v.sha256, &v.content_type, &encryption, &v.created_by, &v.created_at],
                )
                .await
                .map_err(error)?;
            }
            TenantRow::Inbound(r) => insert_inbound(tx, ws, &r).await?,
            TenantRow::Mail(r) => {
                let m = &r.mail;
                let attempts = m.attempts.min(i32::MAX as u32) as i32;
                tx.execute(
                    "INSERT INTO mail_outbox (workspace_id, id, ticket_id, comment_id, channel_id, source_sync_id, message_id, mail_from,
                        mail_to, subject, message, status, attempts, due_at, relay_answer, created_at, updated_at, sent_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
                    &[
                        &ws,
                        &m.id,
                        &m.ticket_id,
                        &m.comment_id,
                        &m.channel_id,
                        &r.source_sync_id,
                        &m.message_id,
                        &r.from,
                        &m.to,
                        &m.subject,
                        &r.message.0.as_ref(),
                        &m.status,
                        &attempts,
                        &r.due_at,
                        &m.relay_answer,
                        &m.created_at,
                        &m.updated_at,
                        &m.sent_at,
                    ],
                )
                .await
                .map_err(error)?;
            }
            TenantRow::MailChannel(c) => {
                let settings = serde_json::to_value(&c.settings).map_err(StoreError::internal)?;
                tx.execute(
                    "INSERT INTO mail_channels (workspace_id, id, address, settings, imap_password, smtp_password, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[&ws, &c.id, &c.settings.address_key(), &settings, &c.imap_password, &c.smtp_password, &c.created_at, &c.updated_at],
                )
                .await
                .map_err(error)?;
            }
        }
        count += 1;
    }
    tx.execute("UPDATE workspace_heads SET sync_head = $2, ticket_number = $3 WHERE workspace_id = $1", &[&ws, &head, &number])
        .await
        .map_err(error)?;
    super::log::publish_head(tx, ws, head).await?;
    Ok(count)
}
