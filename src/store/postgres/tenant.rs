//! One workspace's data in Postgres. Every method is one transaction scoped to the
//! workspace (row-level security); every write function begins with `self.write_tx` and
//! records its event(s), or says why not. `tests/api/sync_lint.rs` reads this file too.

use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{Object, Pool, Transaction};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Row;

use super::log::{self, Params, PgWrite};
use super::types::member_from_row;
use super::{error, pool_error};
use crate::store::*;

pub const TICKET_COLS: &str =
    "t.id, t.number, t.title, t.status, t.priority, t.requester_id, t.assignee_id, t.tags, t.created_at, t.updated_at, t.version";
pub const COMMENT_COLS: &str = "c.id, c.ticket_id, c.author_id, c.body, c.internal, c.created_at";
pub const LINK_COLS: &str = "l.id, l.source_id, l.target_id, l.kind, l.created_by, l.created_at";

pub fn ticket_from_row(row: &Row) -> StoreResult<Ticket> {
    Ok(Ticket {
        id: row.try_get(0).map_err(error)?,
        number: row.try_get(1).map_err(error)?,
        title: row.try_get(2).map_err(error)?,
        status: row.try_get(3).map_err(error)?,
        priority: row.try_get(4).map_err(error)?,
        requester_id: row.try_get(5).map_err(error)?,
        assignee_id: row.try_get(6).map_err(error)?,
        tags: row.try_get(7).map_err(error)?,
        created_at: row.try_get(8).map_err(error)?,
        updated_at: row.try_get(9).map_err(error)?,
        version: row.try_get(10).map_err(error)?,
    })
}

pub fn comment_from_row(row: &Row) -> StoreResult<Comment> {
    Ok(Comment {
        id: row.try_get(0).map_err(error)?,
        ticket_id: row.try_get(1).map_err(error)?,
        author_id: row.try_get(2).map_err(error)?,
        body: row.try_get(3).map_err(error)?,
        internal: row.try_get(4).map_err(error)?,
        created_at: row.try_get(5).map_err(error)?,
    })
}

pub fn link_from_row(row: &Row) -> StoreResult<TicketLink> {
    Ok(TicketLink {
        id: row.try_get(0).map_err(error)?,
        source_id: row.try_get(1).map_err(error)?,
        target_id: row.try_get(2).map_err(error)?,
        kind: row.try_get(3).map_err(error)?,
        created_by: row.try_get(4).map_err(error)?,
        created_at: row.try_get(5).map_err(error)?,
    })
}

/// Writes a new ticket and its `ticket.created` event inside `w` (the one way tickets are
/// made: the route's, and mail's when a message opens one).
pub(super) async fn insert_ticket(w: &mut PgWrite<'_>, ws: WorkspaceId, actor: UserId, new: NewTicket) -> StoreResult<Ticket> {
    let number = w.next_ticket_number().await?;
    let now = w.now();
    let ticket = new.into_ticket(TicketId::new(), number, now);
    let stmt = w
        .tx()
        .prepare_cached(
            "INSERT INTO tickets (workspace_id, id, number, title, status, priority, requester_id, assignee_id, tags, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        )
        .await
        .map_err(error)?;
    w.tx()
        .execute(
            &stmt,
            &[
                &ws,
                &ticket.id,
                &ticket.number,
                &ticket.title,
                &ticket.status,
                &ticket.priority,
                &ticket.requester_id,
                &ticket.assignee_id,
                &ticket.tags,
                &now,
            ],
        )
        .await
        .map_err(error)?;
    w.record(Some(actor), Event::ticket_created(&ticket)).await?;
    Ok(ticket)
}

/// Writes a comment and its `comment.created` event inside `w` (the route's, and mail's).
pub(super) async fn insert_comment(
    w: &mut PgWrite<'_>,
    ws: WorkspaceId,
    actor: UserId,
    ticket: TicketId,
    body: String,
    internal: bool,
) -> StoreResult<Comment> {
    let comment = Comment { id: CommentId::new(), ticket_id: ticket, author_id: actor, body, internal, created_at: w.now() };
    w.tx()
        .execute(
            "INSERT INTO comments (workspace_id, id, ticket_id, author_id, body, internal, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&ws, &comment.id, &comment.ticket_id, &comment.author_id, &comment.body, &comment.internal, &comment.created_at],
        )
        .await
        .map_err(error)?;
    w.record(Some(actor), Event::comment_created(&comment)).await?;
    Ok(comment)
}

/// A live ticket (not deleted), if `requester` is given only one they requested.
pub(super) async fn visible_ticket(
    tx: &Transaction<'_>,
    workspace: WorkspaceId,
    requester: Option<UserId>,
    id: TicketId,
) -> StoreResult<Option<Ticket>> {
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT {TICKET_COLS} FROM tickets t
             WHERE t.workspace_id = $3 AND t.id = $1 AND t.deleted_at IS NULL AND ($2::uuid IS NULL OR t.requester_id = $2)"
        ))
        .await
        .map_err(error)?;
    let row = tx.query_opt(&stmt, &[&id, &requester, &workspace]).await.map_err(error)?;
    row.as_ref().map(ticket_from_row).transpose()
}

/// Workspaces need no per-workspace resources here: a handle is the pool and an id.
pub struct PgTenants {
    pool: Pool,
    wakeups: tokio::sync::broadcast::Sender<Wakeup>,
    /// The LISTEN task; stopped with the store.
    listener: tokio::task::JoinHandle<()>,
}

impl PgTenants {
    pub fn new(pool: Pool, wakeups: tokio::sync::broadcast::Sender<Wakeup>, listener: tokio::task::JoinHandle<()>) -> Self {
        Self { pool, wakeups, listener }
    }

    pub(super) fn pool(&self) -> &Pool {
        &self.pool
    }
}

impl Drop for PgTenants {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

#[async_trait]
impl TenantStores for PgTenants {
    fn wakeups(&self) -> tokio::sync::broadcast::Receiver<Wakeup> {
        self.wakeups.subscribe()
    }

    async fn create(&self, workspace: &Workspace, actor: UserId) -> StoreResult<Arc<dyn TenantStore>> {
        let tenant = PgTenant { pool: self.pool.clone(), workspace: workspace.id };
        tenant.init_workspace(actor, workspace).await?;
        Ok(Arc::new(tenant))
    }

    async fn open(&self, workspace: WorkspaceId) -> StoreResult<Arc<dyn TenantStore>> {
        Ok(Arc::new(PgTenant { pool: self.pool.clone(), workspace }))
    }

    async fn import(&self, workspace: &Workspace, mut rows: mpsc::Receiver<TenantRow>, commit: oneshot::Receiver<()>) -> StoreResult<u64> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(error)?;
        let count = super::transfer::import(&tx, workspace, &mut rows).await?;
        commit.await.map_err(|_| StoreError::internal("the import was abandoned; nothing of it is kept"))?;
        tx.commit().await.map_err(error)?;
        Ok(count)
    }
}

impl StoreMetrics for PgTenants {
    fn render(&self) -> String {
        let status = self.pool.status();
        format!(
            "# HELP edgedesk_pg_pool_connections Postgres connections this instance holds.\n\
             # TYPE edgedesk_pg_pool_connections gauge\n\
             edgedesk_pg_pool_connections {}\n\
             # HELP edgedesk_pg_pool_available Pooled Postgres connections idle right now.\n\
             # TYPE edgedesk_pg_pool_available gauge\n\
             edgedesk_pg_pool_available {}\n",
            status.size, status.available
        )
    }
}

pub struct PgTenant {
    pool: Pool,
    workspace: WorkspaceId,
}

impl PgTenant {
    pub(super) async fn client(&self) -> StoreResult<Object> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Begins a write transaction on this workspace (see `PgWrite`).
    pub(super) async fn write_tx<'a>(&self, client: &'a mut Object) -> StoreResult<PgWrite<'a>> {
        PgWrite::begin(client, self.workspace).await
    }

    async fn init_workspace(&self, actor: UserId, workspace: &Workspace) -> StoreResult<()> {
        let mut client = self.client().await?;
        let mut w = PgWrite::begin_new(&mut client, self.workspace).await?;
        w.tx()
            .execute(
                "INSERT INTO workspace_info (workspace_id, name, created_at) VALUES ($1, $2, $3)",
                &[&workspace.id, &workspace.name, &workspace.created_at],
            )
            .await
            .map_err(error)?;
        w.record(Some(actor), Event::workspace_created(workspace)).await?;
        w.commit().await
    }
}

#[async_trait]
impl TenantStore for PgTenant {
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
        let mut client = self.client().await?;
        let mut w = self.write_tx(&mut client).await?;
        let current = w
            .tx()
            .query_opt(
                "SELECT user_id, email, name, role, joined_at FROM members WHERE workspace_id = $1 AND user_id = $2",
                &[&self.workspace, &user],
            )
            .await
            .map_err(error)?
            .map(|r| member_from_row(&r))
            .transpose()?;
        match mirror_write(current.as_ref(), member) {
            None => w.exempt("the workspace's copy of this membership is already right"),
            Some(MirrorWrite::Upsert { member, added }) => {
                w.tx()
                    .execute(
                        "INSERT INTO members (workspace_id, user_id, email, name, role, joined_at) VALUES ($1, $2, $3, $4, $5, $6)
                         ON CONFLICT (workspace_id, user_id) DO UPDATE SET email = excluded.email, name = excluded.name, role = excluded.role",
                        &[&self.workspace, &member.user_id, &member.email, &member.name, &member.role, &member.joined_at],
                    )
                    .await
                    .map_err(error)?;
                w.record(actor, Event::member(&member, added)).await?;
            }
            Some(MirrorWrite::Remove(user_id)) => {
                w.tx()
                    .execute("DELETE FROM members WHERE workspace_id = $1 AND user_id = $2", &[&self.workspace, &user_id])
                    .await
                    .map_err(error)?;
                w.record(actor, Event::member_removed(&RemovedMember { user_id })).await?;
            }
        }
        w.commit().await
    }

    async fn create_ticket(&self, actor: UserId, new: NewTicket) -> StoreResult<Ticket> {
        let mut client = self.client().await?;
        let mut w = self.write_tx(&mut client).await?;
        let ticket = insert_ticket(&mut w, self.workspace, actor, new).await?;
        w.commit().await?;
        Ok(ticket)
    }

    async fn list_tickets(&self, audience: Audience, query: &TicketQuery) -> StoreResult<Page<Ticket>> {
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, self.workspace, false).await?;
        let key = match query.sort {
            TicketSort::UpdatedAt => "t.updated_at",
            TicketSort::CreatedAt => "t.created_at",
        };
        let mut params = Params::default();
        let mut sql =
            format!("SELECT {TICKET_COLS} FROM tickets t WHERE t.workspace_id = {} AND t.deleted_at IS NULL", params.push(self.workspace));
        if let Audience::Requester(user) = audience {
            sql.push_str(&format!(" AND t.requester_id = {}", params.push(user)));
        }
        if let Some(status) = query.status {
            sql.push_str(&format!(" AND t.status = {}", params.push(status)));
        }
        if let Some(priority) = query.priority {
            sql.push_str(&format!(" AND t.priority = {}", params.push(priority)));
        }
        match query.assignee {
            Some(AssigneeFilter::User(user)) => sql.push_str(&format!(" AND t.assignee_id = {}", params.push(user))),
            Some(AssigneeFilter::Unassigned) => sql.push_str(" AND t.assignee_id IS NULL"),
            None => {}
        }
        if let Some(requester) = query.requester {
            sql.push_str(&format!(" AND t.requester_id = {}", params.push(requester)));
        }
        if let Some(tag) = &query.tag {
            sql.push_str(&format!(" AND t.tags @> ARRAY[{}::text]", params.push(tag.clone())));
        }
        let (cmp, dir) = match query.order {
            SortOrder::Desc => ("<", "DESC"),
            SortOrder::Asc => (">", "ASC"),
        };
        if let Some(cursor) = query.after {
            let (k, i) = (params.push(cursor.key), params.push(cursor.id));
            sql.push_str(&format!(" AND ({key}, t.id) {cmp} ({k}, {i})"));
        }
        sql.push_str(&format!(" ORDER BY {key} {dir}, t.id {dir} LIMIT {}", query.limit + 1));
        let rows = tx.query(&sql, &params.refs()).await.map_err(error)?;
        let items = rows.iter().map(ticket_from_row).collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, query.limit))
    }

    async fn ticket(&self, audience: Audience, id: TicketId) -> StoreResult<Option<Ticket>> {
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, self.workspace, false).await?;
        visible_ticket(&tx, self.workspace, audience.requester(), id).await
    }

    async fn update_ticket(&self, actor: UserId, audience: Audience, id: TicketId, patch: TicketPatch) -> StoreResult<Ticket> {
        let mut client = self.client().await?;
        let mut w = self.write_tx(&mut client).await?;
        let before = visible_ticket(w.tx(), self.workspace, audience.requester(), id).await?.ok_or(StoreError::NotFound)?;
        let mut ticket = patch.applied_to(&before);
        if ticket == before {
            w.exempt("the patch changes nothing: no new state, no event");
            w.commit().await?;
            return Ok(ticket);
        }
        ticket.version += 1;
        ticket.updated_at = w.now().max(Millis(before.updated_at.0 + 1));
        w.tx()
            .execute(
                "UPDATE tickets SET title = $3, status = $4, priority = $5, assignee_id = $6, tags = $7, updated_at = $8, version = $9
                 WHERE workspace_id = $1 AND id = $2",
                &[
                    &self.workspace,
                    &id,
                    &ticket.title,
                    &ticket.status,
                    &ticket.priority,
                    &ticket.assignee_id,
                    &ticket.tags,
                    &ticket.updated_at,
                    &ticket.version,
                ],
            )
            .await
            .map_err(error)?;
        w.record(Some(actor), Event::ticket_updated(&ticket)).await?;
        w.commit().await?;
        Ok(ticket)
    }

    async fn delete_ticket(&self, actor: UserId, id: TicketId) -> StoreResult<()> {
        let mut client = self.client().await?;
        let mut w = self.write_tx(&mut client).await?;
        let now = w.now();
        let changed = w
            .tx()
            .execute(
                "UPDATE tickets SET deleted_at = $3 WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL",
                &[&self.workspace, &id, &now],
            )
            .await
            .map_err(error)?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        w.record(Some(actor), Event::ticket_deleted(&Removed { id })).await?;
        w.commit().await
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
        let mut client = self.client().await?;
        let mut w = self.write_tx(&mut client).await?;
        visible_ticket(w.tx(), self.workspace, audience.requester(), ticket).await?.ok_or(StoreError::NotFound)?;
        let comment = insert_comment(&mut w, self.workspace, actor, ticket, body, internal).await?;
        super::attachments::attach_to_comment(&mut w, self.workspace, actor, &comment, &attachments).await?;
        w.commit().await?;
        Ok(comment)
    }

    async fn list_comments(&self, audience: Audience, ticket: TicketId, query: &CommentQuery) -> StoreResult<Page<Comment>> {
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, self.workspace, true).await?;
        visible_ticket(&tx, self.workspace, audience.requester(), ticket).await?.ok_or(StoreError::NotFound)?;
        let staff = audience.is_staff();
        let limit = (query.limit + 1) as i64;
        let rows = tx
            .query(
                &format!(
                    "SELECT {COMMENT_COLS} FROM comments c WHERE c.workspace_id = $5 AND c.ticket_id = $1 AND ($2 OR NOT c.internal)
                     AND ($3::uuid IS NULL OR c.id > $3) ORDER BY c.id LIMIT $4"
                ),
                &[&ticket, &staff, &query.after, &limit, &self.workspace],
            )
            .await
            .map_err(error)?;
        let items = rows.iter().map(comment_from_row).collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, query.limit))
    }

    async fn add_link(&self, actor: UserId, source: TicketId, target: TicketId, kind: LinkKind) -> StoreResult<TicketLink> {
        let mut client = self.client().await?;
        let mut w = self.write_tx(&mut client).await?;
        visible_ticket(w.tx(), self.workspace, None, source).await?.ok_or(StoreError::NotFound)?;
        if source == target {
            return Err(StoreError::invalid("target_id", "a ticket cannot be linked to itself"));
        }
        if visible_ticket(w.tx(), self.workspace, None, target).await?.is_none() {
            return Err(StoreError::Conflict("target_id: no such ticket in this workspace".into()));
        }
        let link = TicketLink { id: LinkId::new(), source_id: source, target_id: target, kind, created_by: actor, created_at: w.now() };
        // ON CONFLICT keeps the transaction usable; a duplicate is a conflict, not an error.
        let inserted = w
            .tx()
            .execute(
                "INSERT INTO ticket_links (workspace_id, id, source_id, target_id, kind, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (workspace_id, source_id, target_id, kind) DO NOTHING",
                &[&self.workspace, &link.id, &link.source_id, &link.target_id, &link.kind, &link.created_by, &link.created_at],
            )
            .await
            .map_err(error)?;
        if inserted == 0 {
            return Err(StoreError::Conflict("these tickets are already linked this way".into()));
        }
        w.record(Some(actor), Event::link_created(&link)).await?;
        w.commit().await?;
        Ok(link)
    }

    async fn list_links(&self, ticket: TicketId) -> StoreResult<Vec<TicketLink>> {
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, self.workspace, true).await?;
        visible_ticket(&tx, self.workspace, None, ticket).await?.ok_or(StoreError::NotFound)?;
        let rows = tx
            .query(
                &format!(
                    "SELECT {LINK_COLS} FROM ticket_links l
                     JOIN tickets s ON s.id = l.source_id AND s.workspace_id = l.workspace_id
                     JOIN tickets d ON d.id = l.target_id AND d.workspace_id = l.workspace_id
                     WHERE l.workspace_id = $2 AND (l.source_id = $1 OR l.target_id = $1) AND s.deleted_at IS NULL AND d.deleted_at IS NULL
                     ORDER BY l.id"
                ),
                &[&ticket, &self.workspace],
            )
            .await
            .map_err(error)?;
        rows.iter().map(link_from_row).collect()
    }

    async fn remove_link(&self, actor: UserId, ticket: TicketId, link: LinkId) -> StoreResult<()> {
        let mut client = self.client().await?;
        let mut w = self.write_tx(&mut client).await?;
        let changed = w
            .tx()
            .execute(
                "DELETE FROM ticket_links WHERE workspace_id = $1 AND id = $2 AND (source_id = $3 OR target_id = $3)",
                &[&self.workspace, &link, &ticket],
            )
            .await
            .map_err(error)?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        w.record(Some(actor), Event::link_deleted(&Removed { id: link }, ticket)).await?;
        w.commit().await
    }

    async fn bootstrap(&self, audience: Audience, out: crate::store::bootstrap::BootstrapSink) -> StoreResult<BootstrapSummary> {
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, self.workspace, true).await?;
        log::bootstrap(&tx, self.workspace, audience, &out).await
    }

    async fn delta(&self, audience: Audience, after: i64, limit: usize) -> StoreResult<DeltaPage> {
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, self.workspace, true).await?;
        log::delta(&tx, self.workspace, audience, after, limit).await
    }

    async fn audit(&self, query: &AuditQuery) -> StoreResult<Page<SyncEvent>> {
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, self.workspace, false).await?;
        log::audit(&tx, self.workspace, query).await
    }

    async fn head(&self) -> StoreResult<i64> {
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, self.workspace, false).await?;
        log::head(&tx, self.workspace).await
    }

    async fn feed(&self, after: i64, limit: usize) -> StoreResult<Page<FeedEvent>> {
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, self.workspace, false).await?;
        log::feed(&tx, self.workspace, after, limit).await
    }

    async fn export(&self, out: mpsc::Sender<TenantRow>) -> StoreResult<u64> {
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, self.workspace, true).await?;
        super::transfer::export(&tx, self.workspace, &out).await
    }
}
