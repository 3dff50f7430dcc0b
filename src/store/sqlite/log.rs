//! The workspace log in SQLite: the write transaction that must record its events, and the
//! reads over the log (delta, audit, head) and over a whole snapshot (bootstrap).
//!
//! [`WriteTx`] is the only way tenant code writes. It refuses to keep a write that
//! recorded no event unless the caller said why with [`WriteTx::exempt`]; the lint test
//! `tests/api/sync_lint.rs` checks the same statically for every write function.

use std::ops::Deref;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, Savepoint, Transaction, TransactionBehavior, params};
use serde::Serialize;

use super::attachments::{ATTACHMENT_COLS, attachment_from_row};
use super::error;
use super::notes::{SUMMARY_COLS, summary_from_row};
use super::tenant::{COMMENT_COLS, LINK_COLS, TICKET_COLS, comment_from_row, link_from_row, ticket_from_row};
use super::types::{member_from_row, workspace_from_row};
use crate::store::bootstrap::{BootstrapSink, Encoder};
use crate::store::visibility::{self, Visibility};
use crate::store::{
    Audience, AuditQuery, BootstrapSummary, DeltaPage, Event, FeedEvent, Millis, Page, StoreError, StoreResult, SyncEvent, UserId,
    Workspace, WorkspaceId,
};

/// One write inside a (possibly shared) transaction: a SAVEPOINT that is released only if
/// the write recorded its events, and rolled back otherwise (or when dropped on error).
pub struct WriteTx<'c> {
    sp: Savepoint<'c>,
    now: Millis,
    recorded: usize,
    exempt: Option<&'static str>,
}

impl<'c> WriteTx<'c> {
    pub fn begin(tx: &'c mut Transaction<'_>) -> StoreResult<Self> {
        let sp = tx.savepoint().map_err(error)?;
        Ok(Self { sp, now: Millis::now(), recorded: 0, exempt: None })
    }

    /// The write's timestamp: every row and event it writes carries this time.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// Appends an event; returns its sync_id.
    pub fn record<T: Serialize>(&mut self, actor: Option<UserId>, event: Event<'_, T>) -> StoreResult<i64> {
        let data = serde_json::to_string(event.data).map_err(StoreError::internal)?;
        self.sp
            .prepare_cached(
                "INSERT INTO sync_actions (at, actor, kind, entity, entity_id, data, ticket_id, staff_only, recipient_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    self.now,
                    actor,
                    event.kind,
                    event.entity,
                    event.entity_id,
                    data,
                    event.ticket,
                    event.staff_only,
                    event.recipient
                ])
            })
            .map_err(error)?;
        self.recorded += 1;
        Ok(self.sp.last_insert_rowid())
    }

    /// How many events this write has recorded so far.
    pub fn recorded(&self) -> usize {
        self.recorded
    }

    /// Declares that this write legitimately changes nothing a client may see.
    pub fn exempt(&mut self, why: &'static str) {
        self.exempt = Some(why);
    }

    /// Keeps the write (it becomes durable with the transaction's COMMIT).
    pub fn release(self) -> StoreResult<()> {
        if self.recorded == 0 && self.exempt.is_none() {
            // Rolled back on drop: a write that forgot its event must not land silently.
            return Err(StoreError::Internal("write transaction recorded no sync action".into()));
        }
        self.sp.commit().map_err(error)
    }
}

impl Deref for WriteTx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.sp
    }
}

pub fn head(conn: &Connection) -> StoreResult<i64> {
    conn.query_row("SELECT COALESCE(MAX(sync_id), 0) FROM sync_actions", [], |row| row.get(0)).map_err(error)
}

pub const EVENT_COLS: &str = "s.sync_id, s.at, s.actor, s.kind, s.entity, s.entity_id, s.data";

pub fn event_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SyncEvent> {
    let data: String = row.get(6)?;
    let data =
        serde_json::from_str(&data).map_err(|e| rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Text, Box::new(e)))?;
    Ok(SyncEvent {
        sync_id: row.get(0)?,
        at: row.get(1)?,
        actor: row.get(2)?,
        kind: row.get(3)?,
        entity: row.get(4)?,
        entity_id: row.get(5)?,
        data,
    })
}

pub fn delta(conn: &mut Connection, audience: Audience, after: i64, limit: usize) -> StoreResult<DeltaPage> {
    // One read transaction: the head and the page come from the same snapshot.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred).map_err(error)?;
    let head = head(&tx)?;
    let fetch = (limit + 1) as i64;
    let visible = visibility::sql(visibility::SQLITE, audience.is_staff(), "?1");
    let mut stmt = tx
        .prepare_cached(&format!(
            "SELECT {EVENT_COLS} FROM sync_actions s WHERE {visible}
             AND s.sync_id > ?2 AND s.sync_id <= ?3 ORDER BY s.sync_id LIMIT ?4"
        ))
        .map_err(error)?;
    let events = stmt
        .query_map(params![audience.user(), after, head, fetch], event_from_row)
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(error)?;
    drop(stmt);
    Ok(DeltaPage::from_overfetch(events, limit, head, after))
}

/// The columns after [`EVENT_COLS`] that [`visibility_from_row`] reads (with `tickets t`
/// joined on the event's ticket).
pub const VISIBILITY_COLS: &str = "s.ticket_id, s.staff_only, s.recipient_id, t.requester_id";

pub fn visibility_from_row(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Visibility> {
    Ok(Visibility { ticket_id: row.get(at)?, staff_only: row.get(at + 1)?, recipient: row.get(at + 2)?, requester: row.get(at + 3)? })
}

pub fn feed(conn: &Connection, after: i64, limit: usize) -> StoreResult<Page<FeedEvent>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLS}, {VISIBILITY_COLS} FROM sync_actions s
             LEFT JOIN tickets t ON t.id = s.ticket_id WHERE s.sync_id > ?1 ORDER BY s.sync_id LIMIT ?2"
        ))
        .map_err(error)?;
    let items = stmt
        .query_map(params![after, (limit + 1) as i64], |row| {
            Ok(FeedEvent { event: event_from_row(row)?, visibility: visibility_from_row(row, 7)? })
        })
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(error)?;
    Ok(Page::from_overfetch(items, limit))
}

pub fn audit(conn: &Connection, query: &AuditQuery) -> StoreResult<Page<SyncEvent>> {
    let mut sql = format!("SELECT {EVENT_COLS} FROM sync_actions s WHERE 1 = 1");
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let mut push = |clause: &str, value: rusqlite::types::Value| {
        args.push(value);
        sql.push_str(&format!(" AND {clause} ?{}", args.len()));
    };
    if let Some(actor) = query.actor {
        push("s.actor =", actor.to_string().into());
    }
    if let Some(entity) = &query.entity {
        push("s.entity =", entity.clone().into());
    }
    if let Some(entity_id) = &query.entity_id {
        push("s.entity_id =", entity_id.clone().into());
    }
    if let Some(kind) = &query.kind {
        push("s.kind =", kind.clone().into());
    }
    if let Some(since) = query.since {
        push("s.at >=", since.0.into());
    }
    if let Some(until) = query.until {
        push("s.at <", until.0.into());
    }
    if let Some(before) = query.before {
        push("s.sync_id <", before.into());
    }
    sql.push_str(&format!(" ORDER BY s.sync_id DESC LIMIT {}", query.limit + 1));
    let mut stmt = conn.prepare(&sql).map_err(error)?;
    let items = stmt
        .query_map(rusqlite::params_from_iter(args), event_from_row)
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(error)?;
    Ok(Page::from_overfetch(items, query.limit))
}

/// Streams the snapshot from one read transaction (this runs on a blocking thread): when
/// the reader is slow this thread waits, until the sink's deadline ends the snapshot.
pub fn bootstrap(
    conn: &mut Connection,
    workspace: WorkspaceId,
    audience: Audience,
    out: &BootstrapSink,
    runtime: &tokio::runtime::Handle,
) -> StoreResult<BootstrapSummary> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred).map_err(error)?;
    // The first read fixes the WAL snapshot; everything after sees the same state.
    let sync_id = head(&tx)?;
    let mut enc = Encoder::new(workspace, sync_id)?;
    let send = |chunk: Option<Bytes>| -> StoreResult<()> { out.send_blocking(runtime, chunk) };

    let ws: Option<Workspace> =
        tx.query_row("SELECT id, name, created_at FROM workspace", [], workspace_from_row).optional().map_err(error)?;
    if let Some(ws) = ws {
        send(enc.row("workspace", &ws)?)?;
    }

    let staff = audience.is_staff();
    let requester = audience.requester();
    if staff {
        let mut stmt = tx.prepare("SELECT user_id, email, name, role, joined_at FROM members ORDER BY user_id").map_err(error)?;
        let mut rows = stmt.query([]).map_err(error)?;
        while let Some(row) = rows.next().map_err(error)? {
            let member = member_from_row(row).map_err(error)?;
            send(enc.row("member", &member)?)?;
        }
    }

    {
        let mut stmt = tx
            .prepare(&format!(
                "SELECT {TICKET_COLS} FROM tickets t WHERE t.deleted_at IS NULL
                 AND (?1 IS NULL OR t.requester_id = ?1) ORDER BY t.number"
            ))
            .map_err(error)?;
        let mut rows = stmt.query(params![requester]).map_err(error)?;
        while let Some(row) = rows.next().map_err(error)? {
            let ticket = ticket_from_row(row).map_err(error)?;
            send(enc.row("ticket", &ticket)?)?;
        }
    }

    {
        let mut stmt = tx
            .prepare(&format!(
                "SELECT {COMMENT_COLS} FROM comments c JOIN tickets t ON t.id = c.ticket_id
                 WHERE t.deleted_at IS NULL AND (?1 IS NULL OR (t.requester_id = ?1 AND c.internal = 0))
                 ORDER BY c.id"
            ))
            .map_err(error)?;
        let mut rows = stmt.query(params![requester]).map_err(error)?;
        while let Some(row) = rows.next().map_err(error)? {
            let comment = comment_from_row(row).map_err(error)?;
            send(enc.row("comment", &comment)?)?;
        }
    }

    if staff {
        let mut stmt = tx
            .prepare(&format!(
                "SELECT {LINK_COLS} FROM ticket_links l
                 JOIN tickets s ON s.id = l.source_id JOIN tickets d ON d.id = l.target_id
                 WHERE s.deleted_at IS NULL AND d.deleted_at IS NULL ORDER BY l.id"
            ))
            .map_err(error)?;
        let mut rows = stmt.query([]).map_err(error)?;
        while let Some(row) = rows.next().map_err(error)? {
            let link = link_from_row(row).map_err(error)?;
            send(enc.row("link", &link)?)?;
        }
    }

    if staff {
        // Notes are staff-only, like internal notes; a deleted ticket's note goes with it.
        let mut stmt = tx
            .prepare(&format!(
                "SELECT {SUMMARY_COLS} FROM notes n JOIN tickets t ON t.id = n.ticket_id WHERE t.deleted_at IS NULL ORDER BY n.ticket_id"
            ))
            .map_err(error)?;
        let mut rows = stmt.query([]).map_err(error)?;
        while let Some(row) = rows.next().map_err(error)? {
            let note = summary_from_row(row).map_err(error)?;
            send(enc.row("note", &note)?)?;
        }
    }

    {
        // Attachments (their metadata): as the ticket or internal note they are on.
        let mut stmt = tx
            .prepare(&format!(
                "SELECT {ATTACHMENT_COLS} FROM attachments a JOIN attachment_versions v ON v.id = a.latest_version
                 JOIN tickets t ON t.id = a.ticket_id WHERE a.deleted_at IS NULL AND t.deleted_at IS NULL
                 AND (?1 IS NULL OR (t.requester_id = ?1 AND a.staff_only = 0)) ORDER BY a.id"
            ))
            .map_err(error)?;
        let mut rows = stmt.query(params![requester]).map_err(error)?;
        while let Some(row) = rows.next().map_err(error)? {
            let attachment = attachment_from_row(row).map_err(error)?;
            send(enc.row("attachment", &attachment)?)?;
        }
    }

    {
        // The caller's own notifications, by the log's rule.
        let visible = visibility::sql(visibility::SQLITE, staff, "?1");
        let mut stmt = tx
            .prepare(&format!(
                "SELECT s.data, s.read_at FROM notifications s WHERE s.recipient_id = ?1 AND {visible} ORDER BY s.source_sync_id"
            ))
            .map_err(error)?;
        let mut rows = stmt.query(params![audience.user()]).map_err(error)?;
        while let Some(row) = rows.next().map_err(error)? {
            let notification = super::notifications::notification_from_row(row).map_err(error)?;
            send(enc.row("notification", &notification)?)?;
        }
    }

    let (last, summary) = enc.finish()?;
    send(Some(last))?;
    Ok(summary)
}
