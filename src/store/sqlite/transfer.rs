//! Moving a workspace in and out of its SQLite file, rows and log verbatim.
//!
//! Export reads one snapshot. Import writes the whole workspace in one transaction on a new
//! file, keeping every id, ticket number and sync_id. It copies the log rather than
//! appending to it, which is why it writes `sync_actions` itself instead of going through
//! `WriteTx`: the events it writes are the source workspace's own.

use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::mpsc;

use super::attachments::{VERSION_COLS, version_from_row};
use super::error;
use super::log::{EVENT_COLS, event_from_row};
use super::mail::{CHANNEL_COLS, INBOUND_COLS, MAIL_COLS, channel_from_row, inbound_from_row, insert_inbound, mail_from_row};
use super::notes::{NOTE_COLS, note_record_from_row};
use super::tenant::{COMMENT_COLS, LINK_COLS, TICKET_COLS, comment_from_row, link_from_row, ticket_from_row};
use super::types::{member_from_row, workspace_from_row};
use crate::store::attachments::{AttachmentRecord, StorageRecord};
use crate::store::mail::OutboxRecord;
use crate::store::notes::{Base64Bytes, NoteUpdateRecord};
use crate::store::notifications::{Follower, Notification, TicketView};
use crate::store::*;

fn send(out: &mpsc::Sender<TenantRow>, row: TenantRow) -> StoreResult<()> {
    out.blocking_send(row).map_err(|_| StoreError::Internal("export reader went away".into()))
}

pub fn export(conn: &mut Connection, out: &mpsc::Sender<TenantRow>) -> StoreResult<u64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred).map_err(error)?;
    let mut count = 0u64;
    {
        let mut stmt = tx.prepare("SELECT id, name, created_at FROM workspace").map_err(error)?;
        let mut rows = stmt.query([]).map_err(error)?;
        while let Some(row) = rows.next().map_err(error)? {
            let ws = workspace_from_row(row).map_err(error)?;
            send(out, TenantRow::Workspace(ws))?;
            count += 1;
        }
    }
    {
        let mut stmt = tx.prepare("SELECT user_id, email, name, role, joined_at FROM members ORDER BY user_id").map_err(error)?;
        let mut rows = stmt.query([]).map_err(error)?;
        while let Some(row) = rows.next().map_err(error)? {
            let member = member_from_row(row).map_err(error)?;
            send(out, TenantRow::Member(member))?;
            count += 1;
        }
    }
    {
        let mut stmt = tx.prepare(&format!("SELECT {TICKET_COLS}, t.deleted_at FROM tickets t ORDER BY t.number")).map_err(error)?;
        let mut rows = stmt.query([]).map_err(error)?;
        while let Some(row) = rows.next().map_err(error)? {
            let record = TicketRecord { ticket: ticket_from_row(row).map_err(error)?, deleted_at: row.get(11).map_err(error)? };
            send(out, TenantRow::Ticket(record))?;
            count += 1;
        }
    }
    {
        let mut stmt = tx.prepare(&format!("SELECT {COMMENT_COLS} FROM comments c ORDER BY c.id")).map_err(error)?;
        let mut rows = stmt.query([]).map_err(error)?;
        while let Some(row) = rows.next().map_err(error)? {
            send(out, TenantRow::Comment(comment_from_row(row).map_err(error)?))?;
            count += 1;
        }
    }
    {
        let mut stmt = tx.prepare(&format!("SELECT {LINK_COLS} FROM ticket_links l ORDER BY l.id")).map_err(error)?;
        let mut rows = stmt.query([]).map_err(error)?;
        while let Some(row) = rows.next().map_err(error)? {
            send(out, TenantRow::Link(link_from_row(row).map_err(error)?))?;
            count += 1;
        }
    }
    {
        let mut stmt = tx
            .prepare(&format!("SELECT {EVENT_COLS}, s.ticket_id, s.staff_only, s.recipient_id FROM sync_actions s ORDER BY s.sync_id"))
            .map_err(error)?;
        let mut rows = stmt.query([]).map_err(error)?;
        while let Some(row) = rows.next().map_err(error)? {
            let event = event_from_row(row).map_err(error)?;
            let record = EventRecord {
                event,
                ticket_id: row.get(7).map_err(error)?,
                staff_only: row.get(8).map_err(error)?,
                recipient: row.get(9).map_err(error)?,
            };
            send(out, TenantRow::Event(record))?;
            count += 1;
        }
    }
    count += export_consumers(&tx, out)?;
    count += export_notes(&tx, out)?;
    count += export_attachments(&tx, out)?;
    {
        let mut stmt = tx.prepare(&format!("SELECT {CHANNEL_COLS} FROM mail_channels ORDER BY created_at, id")).map_err(error)?;
        let mut rows = stmt.query([]).map_err(error)?;
        while let Some(row) = rows.next().map_err(error)? {
            send(out, TenantRow::MailChannel(channel_from_row(row).map_err(error)?))?;
            count += 1;
        }
    }
    {
        let mut stmt = tx
            .prepare(&format!("SELECT {MAIL_COLS}, source_sync_id, mail_from, message, due_at FROM mail_outbox ORDER BY created_at, id"))
            .map_err(error)?;
        let mut rows = stmt.query([]).map_err(error)?;
        while let Some(row) = rows.next().map_err(error)? {
            let message: Vec<u8> = row.get(16).map_err(error)?;
            let record = OutboxRecord {
                mail: mail_from_row(row).map_err(error)?,
                source_sync_id: row.get(14).map_err(error)?,
                from: row.get(15).map_err(error)?,
                message: Base64Bytes(message.into()),
                due_at: row.get(17).map_err(error)?,
            };
            send(out, TenantRow::Mail(record))?;
            count += 1;
        }
    }
    {
        let mut stmt = tx.prepare(&format!("SELECT {INBOUND_COLS} FROM mail_inbound ORDER BY received_at, dedupe_key")).map_err(error)?;
        let mut rows = stmt.query([]).map_err(error)?;
        while let Some(row) = rows.next().map_err(error)? {
            send(out, TenantRow::Inbound(inbound_from_row(row).map_err(error)?))?;
            count += 1;
        }
    }
    Ok(count)
}

/// The storage settings, then each attachment's row and its versions'.
fn export_attachments(tx: &Connection, out: &mpsc::Sender<TenantRow>) -> StoreResult<u64> {
    let storage = tx
        .query_row("SELECT used, limit_bytes, max_versions FROM storage_quota WHERE id = 1", [], |r| {
            Ok(StorageRecord {
                used: r.get::<_, i64>(0)?.max(0) as u64,
                limit: r.get::<_, Option<i64>>(1)?.map(|l| l.max(0) as u64),
                max_versions: r.get(2)?,
            })
        })
        .map_err(error)?;
    send(out, TenantRow::Storage(storage))?;
    let mut count = 1;
    let mut attachments = tx
        .prepare(
            "SELECT id, ticket_id, comment_id, name, staff_only, latest_version, next_number, created_by, created_at, deleted_at
             FROM attachments ORDER BY created_at, id",
        )
        .map_err(error)?;
    let mut versions = tx
        .prepare(&format!("SELECT {VERSION_COLS} FROM attachment_versions v WHERE v.attachment_id = ?1 ORDER BY v.number"))
        .map_err(error)?;
    let rows = attachments
        .query_map([], |r| {
            Ok(AttachmentRecord {
                id: r.get(0)?,
                ticket_id: r.get(1)?,
                comment_id: r.get(2)?,
                name: r.get(3)?,
                staff_only: r.get(4)?,
                latest_version: r.get(5)?,
                next_number: r.get(6)?,
                created_by: r.get(7)?,
                created_at: r.get(8)?,
                deleted_at: r.get(9)?,
            })
        })
        .map_err(error)?;
    for attachment in rows {
        let attachment = attachment.map_err(error)?;
        let id = attachment.id;
        send(out, TenantRow::Attachment(attachment))?;
        count += 1;
        for version in versions.query_map(params![id], |r| version_from_row(r, 0)).map_err(error)? {
            send(out, TenantRow::AttachmentVersion(version.map_err(error)?))?;
            count += 1;
        }
    }
    Ok(count)
}

/// The log consumers' watermarks and the notifications consumer's state.
fn export_consumers(tx: &Connection, out: &mpsc::Sender<TenantRow>) -> StoreResult<u64> {
    let mut count = 0;
    let mut stmt =
        tx.prepare("SELECT consumer, position, stopped_at, last_error FROM consumer_watermarks ORDER BY consumer").map_err(error)?;
    let rows = stmt
        .query_map([], |r| Ok(WatermarkRecord { consumer: r.get(0)?, position: r.get(1)?, stopped_at: r.get(2)?, last_error: r.get(3)? }))
        .map_err(error)?;
    for row in rows {
        send(out, TenantRow::Watermark(row.map_err(error)?))?;
        count += 1;
    }
    let mut stmt = tx
        .prepare("SELECT ticket_id, number, title, requester_id, assignee_id FROM notification_tickets ORDER BY ticket_id")
        .map_err(error)?;
    let rows = stmt
        .query_map([], |r| {
            Ok(TicketView { ticket_id: r.get(0)?, number: r.get(1)?, title: r.get(2)?, requester_id: r.get(3)?, assignee_id: r.get(4)? })
        })
        .map_err(error)?;
    for row in rows {
        send(out, TenantRow::NotificationTicket(row.map_err(error)?))?;
        count += 1;
    }
    let mut stmt =
        tx.prepare("SELECT ticket_id, user_id, reason, since_sync_id FROM ticket_followers ORDER BY ticket_id, user_id").map_err(error)?;
    let rows = stmt
        .query_map([], |r| Ok(Follower { ticket_id: r.get(0)?, user_id: r.get(1)?, reason: r.get(2)?, since_sync_id: r.get(3)? }))
        .map_err(error)?;
    for row in rows {
        send(out, TenantRow::Follower(row.map_err(error)?))?;
        count += 1;
    }
    let mut stmt = tx.prepare("SELECT data, read_at FROM notifications ORDER BY source_sync_id, recipient_id").map_err(error)?;
    let rows = stmt
        .query_map([], |r| {
            let data: String = r.get(0)?;
            let mut n: Notification = serde_json::from_str(&data)
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))?;
            n.read_at = r.get(1)?;
            Ok(n)
        })
        .map_err(error)?;
    for row in rows {
        send(out, TenantRow::Notification(row.map_err(error)?))?;
        count += 1;
    }
    Ok(count)
}

/// Each note's row, then its updates.
fn export_notes(tx: &Connection, out: &mpsc::Sender<TenantRow>) -> StoreResult<u64> {
    let mut count = 0;
    let mut notes = tx.prepare(&format!("SELECT {NOTE_COLS} FROM notes n ORDER BY n.ticket_id")).map_err(error)?;
    let mut updates = tx
        .prepare("SELECT seq, ticket_id, author_id, bytes FROM note_updates WHERE ticket_id = ?1 AND seq > ?2 ORDER BY seq")
        .map_err(error)?;
    let rows = notes.query_map([], note_record_from_row).map_err(error)?;
    for note in rows {
        let note = note.map_err(error)?;
        let (ticket, covered) = (note.ticket_id, note.snapshot_seq);
        send(out, TenantRow::Note(note))?;
        count += 1;
        // Updates its snapshot covers (left by an interrupted compaction) stay behind.
        let rows = updates
            .query_map(params![ticket, covered], |r| {
                let bytes: Vec<u8> = r.get(3)?;
                Ok(NoteUpdateRecord { seq: r.get(0)?, ticket_id: r.get(1)?, author_id: r.get(2)?, bytes: Base64Bytes(bytes.into()) })
            })
            .map_err(error)?;
        for update in rows {
            send(out, TenantRow::NoteUpdate(update.map_err(error)?))?;
            count += 1;
        }
    }
    Ok(count)
}

/// Writes every row of `rows` into a new, empty tenant file, in one transaction that
/// commits once `commit` says so.
pub fn import(
    conn: &mut Connection,
    workspace: &Workspace,
    rows: &mut mpsc::Receiver<TenantRow>,
    commit: tokio::sync::oneshot::Receiver<()>,
) -> StoreResult<u64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(error)?;
    let existing: i64 =
        tx.query_row("SELECT (SELECT COUNT(*) FROM workspace) + (SELECT COUNT(*) FROM sync_actions)", [], |r| r.get(0)).map_err(error)?;
    if existing > 0 {
        return Err(StoreError::Conflict("this workspace already has data here".into()));
    }
    let mut count = 0u64;
    while let Some(row) = rows.blocking_recv() {
        match row {
            TenantRow::Workspace(ws) => {
                if ws.id != workspace.id {
                    return Err(StoreError::invalid("workspace", "the export names a different workspace"));
                }
                tx.execute("INSERT INTO workspace (id, name, created_at) VALUES (?1, ?2, ?3)", params![ws.id, ws.name, ws.created_at])
                    .map_err(error)?;
            }
            TenantRow::Member(m) => {
                tx.execute(
                    "INSERT INTO members (user_id, email, name, role, joined_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![m.user_id, m.email, m.name, m.role, m.joined_at],
                )
                .map_err(error)?;
            }
            TenantRow::Ticket(TicketRecord { ticket: t, deleted_at }) => {
                let tags = serde_json::to_string(&t.tags).map_err(StoreError::internal)?;
                tx.prepare_cached(
                    "INSERT INTO tickets (number, id, title, status, priority, requester_id, assignee_id, tags, created_at, updated_at, deleted_at, version)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        t.number,
                        t.id,
                        t.title,
                        t.status,
                        t.priority,
                        t.requester_id,
                        t.assignee_id,
                        tags,
                        t.created_at,
                        t.updated_at,
                        deleted_at,
                        t.version
                    ])
                })
                .map_err(error)?;
                let mut insert = tx.prepare_cached("INSERT OR IGNORE INTO ticket_tags (tag, ticket_id) VALUES (?1, ?2)").map_err(error)?;
                for tag in &t.tags {
                    insert.execute(params![tag, t.id]).map_err(error)?;
                }
            }
            TenantRow::Comment(c) => {
                tx.prepare_cached(
                    "INSERT INTO comments (id, ticket_id, author_id, body, internal, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut s| s.execute(params![c.id, c.ticket_id, c.author_id, c.body, c.internal, c.created_at]))
                .map_err(error)?;
            }
            TenantRow::Link(l) => {
                tx.execute(
                    "INSERT INTO ticket_links (id, source_id, target_id, kind, created_by, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![l.id, l.source_id, l.target_id, l.kind, l.created_by, l.created_at],
                )
                .map_err(error)?;
            }
            TenantRow::Event(EventRecord { event: e, ticket_id, staff_only, recipient }) => {
                let data = serde_json::to_string(&e.data).map_err(StoreError::internal)?;
                tx.prepare_cached(
                    "INSERT INTO sync_actions (sync_id, at, actor, kind, entity, entity_id, data, ticket_id, staff_only, recipient_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .and_then(|mut s| {
                    s.execute(params![e.sync_id, e.at, e.actor, e.kind, e.entity, e.entity_id, data, ticket_id, staff_only, recipient])
                })
                .map_err(error)?;
            }
            TenantRow::Watermark(w) => {
                // Replaces the row a new file's migration seeded.
                tx.execute(
                    "INSERT OR REPLACE INTO consumer_watermarks (consumer, position, stopped_at, last_error, updated_at) VALUES (?1, ?2, ?3, ?4, 0)",
                    params![w.consumer, w.position, w.stopped_at, w.last_error],
                )
                .map_err(error)?;
            }
            TenantRow::NotificationTicket(t) => {
                tx.execute(
                    "INSERT INTO notification_tickets (ticket_id, number, title, requester_id, assignee_id) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![t.ticket_id, t.number, t.title, t.requester_id, t.assignee_id],
                )
                .map_err(error)?;
            }
            TenantRow::Follower(f) => {
                tx.execute(
                    "INSERT INTO ticket_followers (ticket_id, user_id, reason, since_sync_id) VALUES (?1, ?2, ?3, ?4)",
                    params![f.ticket_id, f.user_id, f.reason, f.since_sync_id],
                )
                .map_err(error)?;
            }
            TenantRow::Notification(n) => {
                let data = serde_json::to_string(&Notification { read_at: None, ..n.clone() }).map_err(StoreError::internal)?;
                tx.execute(
                    "INSERT INTO notifications (id, recipient_id, source_sync_id, kind, ticket_id, staff_only, data, created_at, read_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![n.id, n.recipient_id, n.seq, n.kind, n.ticket_id, n.internal, data, n.created_at, n.read_at],
                )
                .map_err(error)?;
            }
            TenantRow::Note(n) => {
                tx.execute(
                    "INSERT INTO notes (ticket_id, snapshot, snapshot_seq, text, size, pending_updates, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        n.ticket_id,
                        n.snapshot.as_ref().map(|b| b.0.as_ref()),
                        n.snapshot_seq,
                        n.text,
                        n.size as i64,
                        n.pending_updates as i64,
                        n.updated_at
                    ],
                )
                .map_err(error)?;
            }
            TenantRow::NoteUpdate(u) => {
                tx.execute(
                    "INSERT INTO note_updates (seq, ticket_id, author_id, bytes) VALUES (?1, ?2, ?3, ?4)",
                    params![u.seq, u.ticket_id, u.author_id, u.bytes.0.as_ref()],
                )
                .map_err(error)?;
            }
            TenantRow::Storage(q) => {
                tx.execute(
                    "UPDATE storage_quota SET used = ?1, limit_bytes = ?2, max_versions = ?3 WHERE id = 1",
                    params![q.used as i64, q.limit.map(|l| l as i64), q.max_versions],
                )
                .map_err(error)?;
            }
            TenantRow::Attachment(a) => {
                tx.execute(
                    "INSERT INTO attachments (id, ticket_id, comment_id, name, staff_only, latest_version, next_number, created_by, created_at, deleted_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    params![a.id, a.ticket_id, a.comment_id, a.name, a.staff_only, a.latest_version, a.next_number, a.created_by, a.created_at, a.deleted_at],
                )
                .map_err(error)?;
            }
            TenantRow::AttachmentVersion(v) => {
                let encryption = v.encryption.as_ref().map(serde_json::to_string).transpose().map_err(StoreError::internal)?;
                tx.prepare_cached(
                    "INSERT INTO attachment_versions (id, attachment_id, number, size, sha256, content_type, encryption, created_by, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .and_then(|mut s| {
                    s.execute(params![v.id, v.attachment_id, v.number, v.size as i64, v.sha256, v.content_type, encryption, v.created_by, v.created_at])
                })
                .map_err(error)?;
            }
            TenantRow::Mail(r) => {
                let m = &r.mail;
                tx.execute(
                    "INSERT INTO mail_outbox (id, ticket_id, comment_id, channel_id, source_sync_id, message_id, mail_from, mail_to, subject,
                        message, status, attempts, due_at, relay_answer, created_at, updated_at, sent_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
                    params![
                        m.id,
                        m.ticket_id,
                        m.comment_id,
                        m.channel_id,
                        r.source_sync_id,
                        m.message_id,
                        r.from,
                        m.to,
                        m.subject,
                        r.message.0.as_ref(),
                        m.status,
                        m.attempts,
                        r.due_at,
                        m.relay_answer,
                        m.created_at,
                        m.updated_at,
                        m.sent_at
                    ],
                )
                .map_err(error)?;
            }
            TenantRow::Inbound(r) => insert_inbound(&tx, &r)?,
            TenantRow::MailChannel(c) => {
                let settings = serde_json::to_string(&c.settings).map_err(StoreError::internal)?;
                tx.execute(
                    "INSERT INTO mail_channels (id, address, settings, imap_password, smtp_password, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![c.id, c.settings.address_key(), settings, c.imap_password, c.smtp_password, c.created_at, c.updated_at],
                )
                .map_err(error)?;
            }
        }
        count += 1;
    }
    commit.blocking_recv().map_err(|_| StoreError::internal("the import was abandoned; nothing of it is kept"))?;
    tx.commit().map_err(error)?;
    Ok(count)
}
