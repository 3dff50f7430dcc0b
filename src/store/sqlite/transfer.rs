//! Moving a workspace in and out of its SQLite file, rows and log verbatim.
//!
//! Export reads one snapshot. Import writes the whole workspace in one transaction on a new
//! file, keeping every id, ticket number and sync_id. It copies the log rather than
//! appending to it, which is why it writes `sync_actions` itself instead of going through
//! `WriteTx`: the events it writes are the source workspace's own.

use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::mpsc;

use super::error;
use super::log::{EVENT_COLS, event_from_row};
use super::tenant::{COMMENT_COLS, LINK_COLS, TICKET_COLS, comment_from_row, link_from_row, ticket_from_row};
use super::types::{member_from_row, workspace_from_row};
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
    Ok(count)
}

/// Writes every row of `rows` into a new, empty tenant file, in one transaction.
pub fn import(conn: &mut Connection, workspace: &Workspace, rows: &mut mpsc::Receiver<TenantRow>) -> StoreResult<u64> {
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
        }
        count += 1;
    }
    tx.commit().map_err(error)?;
    Ok(count)
}
