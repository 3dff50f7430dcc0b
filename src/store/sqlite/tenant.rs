//! One workspace's data in its own SQLite file: tickets, comments, links, the member mirror.
//!
//! Every write function runs inside [`WriteTx`] and records its event(s) with `tx.record`,
//! or says why not with `tx.exempt`. `tests/sync_lint.rs` reads this file and fails when a
//! function that calls `self.write(` does neither.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::mpsc;

use super::executor::Executor;
use super::hints::LogHints;
use super::log::{self, WriteTx};
use super::pool::SqlitePool;
use super::writer::WriteQueue;
use super::{blocking, error};
use crate::store::*;

pub const TICKET_COLS: &str = "t.id, t.number, t.title, t.status, t.priority, t.requester_id, t.assignee_id, \
                               t.tags, t.created_at, t.updated_at, t.version";
pub const COMMENT_COLS: &str = "c.id, c.ticket_id, c.author_id, c.body, c.internal, c.created_at";
pub const LINK_COLS: &str = "l.id, l.source_id, l.target_id, l.kind, l.created_by, l.created_at";

pub fn ticket_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Ticket> {
    let tags: String = row.get(7)?;
    let tags =
        serde_json::from_str(&tags).map_err(|e| rusqlite::Error::FromSqlConversionFailure(7, rusqlite::types::Type::Text, Box::new(e)))?;
    Ok(Ticket {
        id: row.get(0)?,
        number: row.get(1)?,
        title: row.get(2)?,
        status: row.get(3)?,
        priority: row.get(4)?,
        requester_id: row.get(5)?,
        assignee_id: row.get(6)?,
        tags,
        created_at: row.get(8)?,
        updated_at: row.get(9)?,
        version: row.get(10)?,
    })
}

pub fn comment_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Comment> {
    Ok(Comment {
        id: row.get(0)?,
        ticket_id: row.get(1)?,
        author_id: row.get(2)?,
        body: row.get(3)?,
        internal: row.get(4)?,
        created_at: row.get(5)?,
    })
}

pub fn link_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TicketLink> {
    Ok(TicketLink {
        id: row.get(0)?,
        source_id: row.get(1)?,
        target_id: row.get(2)?,
        kind: row.get(3)?,
        created_by: row.get(4)?,
        created_at: row.get(5)?,
    })
}

/// Writes a new ticket and its `ticket.created` event inside `tx` (the one way tickets are
/// made: the route's, and mail's when a message opens one).
pub(super) fn insert_ticket(tx: &mut WriteTx<'_>, actor: UserId, new: NewTicket) -> StoreResult<Ticket> {
    let now = tx.now();
    let id = TicketId::new();
    tx.prepare_cached(
        "INSERT INTO tickets (id, title, status, priority, requester_id, assignee_id, tags, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            id,
            new.title,
            new.status,
            new.priority,
            new.requester_id,
            new.assignee_id,
            tags_json(&new.tags).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
            now
        ])
    })
    .map_err(error)?;
    let number = tx.last_insert_rowid();
    write_tags(tx, id, &new.tags, true)?;
    let ticket = new.into_ticket(id, number, now);
    tx.record(Some(actor), Event::ticket_created(&ticket))?;
    Ok(ticket)
}

/// Writes a comment and its `comment.created` event inside `tx` (the route's, and mail's).
pub(super) fn insert_comment(tx: &mut WriteTx<'_>, actor: UserId, ticket: TicketId, body: String, internal: bool) -> StoreResult<Comment> {
    let comment = Comment { id: CommentId::new(), ticket_id: ticket, author_id: actor, body, internal, created_at: tx.now() };
    tx.prepare_cached("INSERT INTO comments (id, ticket_id, author_id, body, internal, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
        .and_then(|mut stmt| {
            stmt.execute(params![comment.id, comment.ticket_id, comment.author_id, comment.body, comment.internal, comment.created_at])
        })
        .map_err(error)?;
    tx.record(Some(actor), Event::comment_created(&comment))?;
    Ok(comment)
}

/// A live ticket (not deleted), if `requester` is given only one they requested.
pub(super) fn visible_ticket(conn: &Connection, requester: Option<UserId>, id: TicketId) -> StoreResult<Option<Ticket>> {
    conn.prepare_cached(&format!(
        "SELECT {TICKET_COLS} FROM tickets t WHERE t.id = ?1 AND t.deleted_at IS NULL
         AND (?2 IS NULL OR t.requester_id = ?2)"
    ))
    .and_then(|mut stmt| stmt.query_row(params![id, requester], ticket_from_row).optional())
    .map_err(error)
}

fn tags_json(tags: &[String]) -> StoreResult<String> {
    serde_json::to_string(tags).map_err(StoreError::internal)
}

/// Replaces a ticket's tag index rows (`fresh`: the ticket is new and has none yet).
fn write_tags(conn: &Connection, ticket: TicketId, tags: &[String], fresh: bool) -> StoreResult<()> {
    if !fresh {
        conn.prepare_cached("DELETE FROM ticket_tags WHERE ticket_id = ?1")
            .and_then(|mut stmt| stmt.execute(params![ticket]))
            .map_err(error)?;
    }
    let mut insert = conn.prepare_cached("INSERT OR IGNORE INTO ticket_tags (tag, ticket_id) VALUES (?1, ?2)").map_err(error)?;
    for tag in tags {
        insert.execute(params![tag, ticket]).map_err(error)?;
    }
    Ok(())
}

pub struct SqliteTenant {
    workspace: WorkspaceId,
    pool: SqlitePool,
    exec: Arc<Executor>,
    /// This workspace's writes, committed in groups (see `writer.rs`).
    writes: Arc<WriteQueue>,
    /// Milliseconds of the last use, for the LRU and the idle sweeper.
    last_used: AtomicI64,
}

impl SqliteTenant {
    pub fn new(
        workspace: WorkspaceId,
        pool: SqlitePool,
        exec: Arc<Executor>,
        wakeups: tokio::sync::broadcast::Sender<Wakeup>,
        hints: Arc<LogHints>,
    ) -> Self {
        let writes = Arc::new(WriteQueue::new(workspace, wakeups, hints));
        Self { workspace, pool, exec, writes, last_used: AtomicI64::new(Millis::now().0) }
    }

    /// Drops the workspace's log hint if its head is still `head`, under its write lock.
    pub async fn clear_hint_if_at(&self, head: i64) -> StoreResult<bool> {
        let writes = self.writes.clone();
        self.write(move |tx| {
            tx.exempt("bookkeeping: drops the platform hint, changes nothing a client sees");
            writes.hint().clear_if_at(tx, head)
        })
        .await
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub fn touch(&self) {
        self.last_used.store(Millis::now().0, Ordering::Relaxed);
    }

    pub fn last_used(&self) -> i64 {
        self.last_used.load(Ordering::Relaxed)
    }

    pub(super) async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        self.touch();
        blocking(&self.exec, &self.pool, f).await
    }

    /// Runs `f` as one write (a savepoint in a group commit) that is kept only if it
    /// recorded its events; answers once it is durable.
    pub(super) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteTx<'_>) -> StoreResult<T> + Send + 'static,
    {
        self.touch();
        self.writes.submit(&self.exec, &self.pool, f).await
    }

    /// Writes the workspace row and its `workspace.created` event into a new tenant file.
    pub async fn init_workspace(&self, actor: UserId, workspace: Workspace) -> StoreResult<()> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO workspace (id, name, created_at) VALUES (?1, ?2, ?3)",
                params![workspace.id, workspace.name, workspace.created_at],
            )
            .map_err(error)?;
            tx.record(Some(actor), Event::workspace_created(&workspace))?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl TenantStore for SqliteTenant {
    fn workspace_id(&self) -> WorkspaceId {
        self.workspace
    }

    fn consumers(&self) -> &dyn ConsumerLog {
        self
    }

    fn notifications(&self) -> &dyn NotificationStore {
        self
    }

    fn notes(&self) -> &dyn NoteStore {
        self
    }

    fn attachments(&self) -> &dyn crate::store::attachments::AttachmentStore {
        self
    }

    fn mail(&self) -> &dyn crate::store::mail::MailStore {
        self
    }

    async fn mirror_member(&self, actor: Option<UserId>, user: UserId, member: Option<&Member>) -> StoreResult<()> {
        let wanted = member.cloned();
        self.write(move |tx| {
            let current = tx
                .prepare_cached("SELECT user_id, email, name, role, joined_at FROM members WHERE user_id = ?1")
                .and_then(|mut stmt| {
                    stmt.query_row(params![user], |r| {
                        Ok(Member { user_id: r.get(0)?, email: r.get(1)?, name: r.get(2)?, role: r.get(3)?, joined_at: r.get(4)? })
                    })
                    .optional()
                })
                .map_err(error)?;
            match mirror_write(current.as_ref(), wanted.as_ref()) {
                None => tx.exempt("the workspace's copy of this membership is already right"),
                Some(MirrorWrite::Upsert { member, added }) => {
                    tx.execute(
                        "INSERT INTO members (user_id, email, name, role, joined_at) VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, name = excluded.name, role = excluded.role",
                        params![member.user_id, member.email, member.name, member.role, member.joined_at],
                    )
                    .map_err(error)?;
                    tx.record(actor, Event::member(&member, added))?;
                }
                Some(MirrorWrite::Remove(user_id)) => {
                    tx.execute("DELETE FROM members WHERE user_id = ?1", params![user_id]).map_err(error)?;
                    tx.record(actor, Event::member_removed(&RemovedMember { user_id }))?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn create_ticket(&self, actor: UserId, new: NewTicket) -> StoreResult<Ticket> {
        self.write(move |tx| insert_ticket(tx, actor, new)).await
    }

    async fn list_tickets(&self, audience: Audience, query: &TicketQuery) -> StoreResult<Page<Ticket>> {
        let query = query.clone();
        self.read(move |conn| {
            use rusqlite::types::Value;
            let key = match query.sort {
                TicketSort::UpdatedAt => "t.updated_at",
                TicketSort::CreatedAt => "t.created_at",
            };
            let mut sql = format!("SELECT {TICKET_COLS} FROM tickets t WHERE t.deleted_at IS NULL");
            let mut args: Vec<Value> = Vec::new();
            // Anonymous `?` parameters bind in order of appearance.
            let mut clause = |sql_part: &str, values: Vec<Value>| {
                args.extend(values);
                sql.push_str(" AND ");
                sql.push_str(sql_part);
            };
            if let Audience::Requester(user) = audience {
                clause("t.requester_id = ?", vec![user.to_string().into()]);
            }
            if let Some(status) = query.status {
                clause("t.status = ?", vec![status.as_str().to_string().into()]);
            }
            if let Some(priority) = query.priority {
                clause("t.priority = ?", vec![priority.as_str().to_string().into()]);
            }
            match query.assignee {
                Some(AssigneeFilter::User(user)) => clause("t.assignee_id = ?", vec![user.to_string().into()]),
                Some(AssigneeFilter::Unassigned) => clause("t.assignee_id IS NULL", vec![]),
                None => {}
            }
            if let Some(requester) = query.requester {
                clause("t.requester_id = ?", vec![requester.to_string().into()]);
            }
            if let Some(tag) = &query.tag {
                clause("EXISTS (SELECT 1 FROM ticket_tags g WHERE g.tag = ? AND g.ticket_id = t.id)", vec![tag.clone().into()]);
            }
            let (cmp, dir) = match query.order {
                SortOrder::Desc => ("<", "DESC"),
                SortOrder::Asc => (">", "ASC"),
            };
            if let Some(cursor) = query.after {
                clause(&format!("({key}, t.id) {cmp} (?, ?)"), vec![cursor.key.into(), cursor.id.to_string().into()]);
            }
            sql.push_str(&format!(" ORDER BY {key} {dir}, t.id {dir} LIMIT {}", query.limit + 1));
            let mut stmt = conn.prepare_cached(&sql).map_err(error)?;
            let items = stmt
                .query_map(rusqlite::params_from_iter(args), ticket_from_row)
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(error)?;
            Ok(Page::from_overfetch(items, query.limit))
        })
        .await
    }

    async fn ticket(&self, audience: Audience, id: TicketId) -> StoreResult<Option<Ticket>> {
        self.read(move |conn| visible_ticket(conn, audience.requester(), id)).await
    }

    async fn update_ticket(&self, actor: UserId, audience: Audience, id: TicketId, patch: TicketPatch) -> StoreResult<Ticket> {
        self.write(move |tx| {
            let before = visible_ticket(tx, audience.requester(), id)?.ok_or(StoreError::NotFound)?;
            let tags_changed = patch.tags.as_ref().is_some_and(|tags| *tags != before.tags);
            let mut ticket = patch.applied_to(&before);
            if ticket == before {
                tx.exempt("the patch changes nothing: no new state, no event");
                return Ok(ticket);
            }
            ticket.version += 1;
            ticket.updated_at = tx.now().max(Millis(before.updated_at.0 + 1));
            tx.prepare_cached(
                "UPDATE tickets SET title = ?2, status = ?3, priority = ?4, assignee_id = ?5, tags = ?6,
                 updated_at = ?7, version = ?8 WHERE id = ?1",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    id,
                    ticket.title,
                    ticket.status,
                    ticket.priority,
                    ticket.assignee_id,
                    tags_json(&ticket.tags).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
                    ticket.updated_at,
                    ticket.version
                ])
            })
            .map_err(error)?;
            if tags_changed {
                write_tags(tx, id, &ticket.tags, false)?;
            }
            tx.record(Some(actor), Event::ticket_updated(&ticket))?;
            Ok(ticket)
        })
        .await
    }

    async fn delete_ticket(&self, actor: UserId, id: TicketId) -> StoreResult<()> {
        self.write(move |tx| {
            let now = tx.now();
            let changed =
                tx.execute("UPDATE tickets SET deleted_at = ?2 WHERE id = ?1 AND deleted_at IS NULL", params![id, now]).map_err(error)?;
            if changed == 0 {
                return Err(StoreError::NotFound);
            }
            tx.record(Some(actor), Event::ticket_deleted(&Removed { id }))?;
            Ok(())
        })
        .await
    }

    async fn add_comment(
        &self,
        actor: UserId,
        audience: Audience,
        ticket: TicketId,
        body: String,
        internal: bool,
        attachments: Vec<crate::store::blobs::AttachmentId>,
    ) -> StoreResult<Comment> {
        if internal && !audience.is_staff() {
            return Err(StoreError::invalid("internal", "only staff may write internal notes"));
        }
        self.write(move |tx| {
            visible_ticket(tx, audience.requester(), ticket)?.ok_or(StoreError::NotFound)?;
            let comment = insert_comment(tx, actor, ticket, body, internal)?;
            super::attachments::attach_to_comment(tx, actor, &comment, &attachments)?;
            Ok(comment)
        })
        .await
    }

    async fn list_comments(&self, audience: Audience, ticket: TicketId, query: &CommentQuery) -> StoreResult<Page<Comment>> {
        let query = query.clone();
        self.read(move |conn| {
            visible_ticket(conn, audience.requester(), ticket)?.ok_or(StoreError::NotFound)?;
            let staff = audience.is_staff();
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COMMENT_COLS} FROM comments c WHERE c.ticket_id = ?1 AND (?2 OR c.internal = 0)
                     AND (?3 IS NULL OR c.id > ?3) ORDER BY c.id LIMIT ?4"
                ))
                .map_err(error)?;
            let items = stmt
                .query_map(params![ticket, staff, query.after, (query.limit + 1) as i64], comment_from_row)
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(error)?;
            Ok(Page::from_overfetch(items, query.limit))
        })
        .await
    }

    async fn add_link(&self, actor: UserId, source: TicketId, target: TicketId, kind: LinkKind) -> StoreResult<TicketLink> {
        self.write(move |tx| {
            visible_ticket(tx, None, source)?.ok_or(StoreError::NotFound)?;
            if source == target {
                return Err(StoreError::invalid("target_id", "a ticket cannot be linked to itself"));
            }
            if visible_ticket(tx, None, target)?.is_none() {
                return Err(StoreError::Conflict("target_id: no such ticket in this workspace".into()));
            }
            let link =
                TicketLink { id: LinkId::new(), source_id: source, target_id: target, kind, created_by: actor, created_at: tx.now() };
            tx.execute(
                "INSERT INTO ticket_links (id, source_id, target_id, kind, created_by, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![link.id, link.source_id, link.target_id, link.kind, link.created_by, link.created_at],
            )
            .map_err(|e| match error(e) {
                StoreError::Conflict(_) => StoreError::Conflict("these tickets are already linked this way".into()),
                other => other,
            })?;
            tx.record(Some(actor), Event::link_created(&link))?;
            Ok(link)
        })
        .await
    }

    async fn list_links(&self, ticket: TicketId) -> StoreResult<Vec<TicketLink>> {
        self.read(move |conn| {
            visible_ticket(conn, None, ticket)?.ok_or(StoreError::NotFound)?;
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {LINK_COLS} FROM ticket_links l
                     JOIN tickets s ON s.id = l.source_id JOIN tickets d ON d.id = l.target_id
                     WHERE (l.source_id = ?1 OR l.target_id = ?1)
                     AND s.deleted_at IS NULL AND d.deleted_at IS NULL ORDER BY l.id"
                ))
                .map_err(error)?;
            stmt.query_map(params![ticket], link_from_row).and_then(|rows| rows.collect::<Result<Vec<_>, _>>()).map_err(error)
        })
        .await
    }

    async fn remove_link(&self, actor: UserId, ticket: TicketId, link: LinkId) -> StoreResult<()> {
        self.write(move |tx| {
            let changed = tx
                .execute("DELETE FROM ticket_links WHERE id = ?1 AND (source_id = ?2 OR target_id = ?2)", params![link, ticket])
                .map_err(error)?;
            if changed == 0 {
                return Err(StoreError::NotFound);
            }
            tx.record(Some(actor), Event::link_deleted(&Removed { id: link }, ticket))?;
            Ok(())
        })
        .await
    }

    async fn bootstrap(&self, audience: Audience, out: crate::store::bootstrap::BootstrapSink) -> StoreResult<BootstrapSummary> {
        let workspace = self.workspace;
        self.touch();
        // Not on the SQLite workers: a stream held open by a slow client would take one of
        // them for as long as it likes. A thread of its own instead.
        let pool = self.pool.clone();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get().map_err(|e| StoreError::Unavailable(e.to_string()))?;
            log::bootstrap(&mut conn, workspace, audience, &out, &runtime)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("bootstrap task failed: {e}")))?
    }

    async fn delta(&self, audience: Audience, after: i64, limit: usize) -> StoreResult<DeltaPage> {
        self.read(move |conn| log::delta(conn, audience, after, limit)).await
    }

    async fn audit(&self, query: &AuditQuery) -> StoreResult<Page<SyncEvent>> {
        let query = query.clone();
        self.read(move |conn| log::audit(conn, &query)).await
    }

    async fn head(&self) -> StoreResult<i64> {
        self.read(|conn| log::head(conn)).await
    }

    async fn feed(&self, after: i64, limit: usize) -> StoreResult<Page<FeedEvent>> {
        self.read(move |conn| log::feed(conn, after, limit)).await
    }

    async fn export(&self, out: mpsc::Sender<TenantRow>) -> StoreResult<u64> {
        // Like bootstrap: a long stream, on a thread of its own.
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get().map_err(|e| StoreError::Unavailable(e.to_string()))?;
            super::transfer::export(&mut conn, &out)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("export task failed: {e}")))?
    }
}
