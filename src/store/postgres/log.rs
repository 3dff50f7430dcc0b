//! The workspace log in Postgres: the write transaction that scopes itself, takes the
//! workspace's head row and records its events; the reads over the log and the snapshot.
//!
//! [`PgWrite`] is the only way tenant code writes. Taking the head row `FOR UPDATE` at the
//! start serialises the workspace's writers, so the ids it hands out (`sync_head + 1`)
//! commit in id order; a transaction that recorded nothing and was not exempted is refused.

use bytes::Bytes;
use deadpool_postgres::{Object, Transaction};
use futures::{StreamExt, pin_mut};
use serde::Serialize;
use tokio_postgres::IsolationLevel;
use tokio_postgres::types::ToSql;

use super::error;
use super::notes::SUMMARY_COLS;
use super::tenant::{COMMENT_COLS, LINK_COLS, TICKET_COLS, comment_from_row, link_from_row, ticket_from_row};
use super::types::{member_from_row, workspace_from_row};
use crate::store::bootstrap::{BootstrapSink, Encoder};
use crate::store::visibility::{self, Visibility};
use crate::store::{
    Advance, Audience, AuditQuery, BootstrapSummary, DeltaPage, Event, Millis, Page, StoreError, StoreResult, SyncEvent, UserId,
    WorkspaceId,
};

pub type Param<'a> = &'a (dyn ToSql + Sync);

/// Scopes the transaction to one workspace for row-level security (SET LOCAL semantics).
pub async fn scope(tx: &Transaction<'_>, workspace: WorkspaceId) -> StoreResult<()> {
    tx.execute("SELECT set_config('app.workspace_id', $1, true)", &[&workspace.to_string()]).await.map_err(error)?;
    Ok(())
}

/// A read-only transaction scoped to the workspace; `snapshot` makes it REPEATABLE READ so
/// that every statement sees the same state.
pub async fn read_tx(client: &mut Object, workspace: WorkspaceId, snapshot: bool) -> StoreResult<Transaction<'_>> {
    let mut builder = client.build_transaction().read_only(true);
    if snapshot {
        builder = builder.isolation_level(IsolationLevel::RepeatableRead);
    }
    let tx = builder.start().await.map_err(error)?;
    scope(&tx, workspace).await?;
    Ok(tx)
}

pub struct PgWrite<'a> {
    tx: Transaction<'a>,
    workspace: WorkspaceId,
    now: Millis,
    recorded: usize,
    /// The newest sync_id this transaction handed out.
    last: i64,
    exempt: Option<&'static str>,
}

impl<'a> PgWrite<'a> {
    /// Begins a write on an existing workspace, waiting for its writers ahead.
    pub async fn begin(client: &'a mut Object, workspace: WorkspaceId) -> StoreResult<Self> {
        let tx = client.transaction().await.map_err(error)?;
        scope(&tx, workspace).await?;
        Self::lock_head(tx, workspace).await
    }

    /// Begins a durable consumer's write: its watermark moves first (compare-and-set, see
    /// [`Advance`]), then the head row is taken for the events it records. Every consumer
    /// transaction locks in that order, so two instances racing on one page cannot deadlock:
    /// the second waits on the watermark row and then finds it moved (`Conflict`).
    pub async fn begin_consumer(client: &'a mut Object, workspace: WorkspaceId, advance: Advance) -> StoreResult<Self> {
        let tx = client.transaction().await.map_err(error)?;
        scope(&tx, workspace).await?;
        advance_watermark(&tx, workspace, advance, Millis::now()).await?;
        Self::lock_head(tx, workspace).await
    }

    async fn lock_head(tx: Transaction<'a>, workspace: WorkspaceId) -> StoreResult<Self> {
        let locked = tx.execute("SELECT 1 FROM workspace_heads WHERE workspace_id = $1 FOR UPDATE", &[&workspace]).await.map_err(error)?;
        if locked == 0 {
            return Err(StoreError::Internal(format!("workspace {workspace} has no log head")));
        }
        Ok(Self { tx, workspace, now: Millis::now(), recorded: 0, last: 0, exempt: None })
    }

    /// Begins the first write of a new workspace, creating its head row.
    pub async fn begin_new(client: &'a mut Object, workspace: WorkspaceId) -> StoreResult<Self> {
        let tx = client.transaction().await.map_err(error)?;
        scope(&tx, workspace).await?;
        tx.execute("INSERT INTO workspace_heads (workspace_id) VALUES ($1)", &[&workspace]).await.map_err(error)?;
        tx.execute("INSERT INTO log_heads (workspace_id, head, changed) VALUES ($1, 0, pg_current_xact_id())", &[&workspace])
            .await
            .map_err(error)?;
        Ok(Self { tx, workspace, now: Millis::now(), recorded: 0, last: 0, exempt: None })
    }

    pub fn tx(&self) -> &Transaction<'a> {
        &self.tx
    }

    pub fn now(&self) -> Millis {
        self.now
    }

    /// The workspace's next ticket number (sequential, gap-free).
    pub async fn next_ticket_number(&self) -> StoreResult<i64> {
        let row = self
            .tx
            .query_one(
                "UPDATE workspace_heads SET ticket_number = ticket_number + 1 WHERE workspace_id = $1 RETURNING ticket_number",
                &[&self.workspace],
            )
            .await
            .map_err(error)?;
        row.try_get(0).map_err(error)
    }

    /// Appends an event; returns its sync_id.
    pub async fn record<T: Serialize>(&mut self, actor: Option<UserId>, event: Event<'_, T>) -> StoreResult<i64> {
        let data = serde_json::to_value(event.data).map_err(StoreError::internal)?;
        let stmt = self
            .tx
            .prepare_cached(
                "WITH head AS (UPDATE workspace_heads SET sync_head = sync_head + 1 WHERE workspace_id = $1 RETURNING sync_head)
                 INSERT INTO sync_actions (workspace_id, sync_id, at, actor, kind, entity, entity_id, data, ticket_id, staff_only, recipient_id)
                 SELECT $1, head.sync_head, $2, $3, $4, $5, $6, $7, $8, $9, $10 FROM head RETURNING sync_id",
            )
            .await
            .map_err(error)?;
        let row = self
            .tx
            .query_one(
                &stmt,
                &[
                    &self.workspace,
                    &self.now,
                    &actor,
                    &event.kind,
                    &event.entity,
                    &event.entity_id,
                    &data,
                    &event.ticket,
                    &event.staff_only,
                    &event.recipient,
                ],
            )
            .await
            .map_err(error)?;
        self.recorded += 1;
        self.last = row.try_get(0).map_err(error)?;
        Ok(self.last)
    }

    pub fn exempt(&mut self, why: &'static str) {
        self.exempt = Some(why);
    }

    pub async fn commit(self) -> StoreResult<()> {
        if self.recorded == 0 && self.exempt.is_none() {
            // Rolled back on drop: a write that forgot its event must not land silently.
            return Err(StoreError::Internal("write transaction recorded no sync action".into()));
        }
        if self.recorded > 0 {
            // Under the head lock: the platform-level head moves in commit order too.
            publish_head(&self.tx, self.workspace, self.last).await?;
        }
        self.tx.commit().await.map_err(error)
    }
}

/// Sets the workspace's platform-level head (`log_heads`), stamped with this transaction,
/// so listeners find it among the heads that moved (see `feed.rs`).
pub async fn publish_head(tx: &Transaction<'_>, workspace: WorkspaceId, head: i64) -> StoreResult<()> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO log_heads (workspace_id, head, changed) VALUES ($1, $2, pg_current_xact_id())
             ON CONFLICT (workspace_id) DO UPDATE SET head = excluded.head, changed = excluded.changed",
        )
        .await
        .map_err(error)?;
    tx.execute(&stmt, &[&workspace, &head]).await.map_err(error)?;
    Ok(())
}

/// Moves a durable consumer's watermark from `advance.from` to `advance.to` (a consumer that
/// never ran is at 0); `Conflict` when it is elsewhere or stopped. Never takes the head lock.
pub async fn advance_watermark(tx: &Transaction<'_>, workspace: WorkspaceId, advance: Advance, now: Millis) -> StoreResult<()> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO consumer_watermarks AS w (workspace_id, consumer, position, updated_at)
             SELECT $1, $2, $4, $5 WHERE $3::bigint = 0
             ON CONFLICT (workspace_id, consumer) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at
             WHERE w.position = $3 AND w.stopped_at IS NULL",
        )
        .await
        .map_err(error)?;
    let mut moved = tx.execute(&stmt, &[&workspace, &advance.consumer, &advance.from, &advance.to, &now]).await.map_err(error)?;
    if moved == 0 {
        let stmt = tx
            .prepare_cached(
                "UPDATE consumer_watermarks SET position = $4, updated_at = $5
                 WHERE workspace_id = $1 AND consumer = $2 AND position = $3 AND stopped_at IS NULL",
            )
            .await
            .map_err(error)?;
        moved = tx.execute(&stmt, &[&workspace, &advance.consumer, &advance.from, &advance.to, &now]).await.map_err(error)?;
    }
    if moved == 0 {
        return Err(StoreError::Conflict(format!("consumer {} is no longer at {}", advance.consumer, advance.from)));
    }
    Ok(())
}

/// A bookkeeping transaction (consumer watermarks, schedules, subscriptions): scoped to the
/// workspace, but without the head lock, so it never queues behind user writes, and
/// recording no event. Like a [`PgWrite`] that records nothing, it must say why
/// ([`exempt`](Self::exempt)) or its commit is refused; the sync-action lint checks the same.
pub struct Bookkeeping<'a> {
    tx: Transaction<'a>,
    exempt: Option<&'static str>,
}

impl<'a> Bookkeeping<'a> {
    pub async fn begin(client: &'a mut Object, workspace: WorkspaceId) -> StoreResult<Self> {
        let tx = client.transaction().await.map_err(error)?;
        scope(&tx, workspace).await?;
        Ok(Self { tx, exempt: None })
    }

    pub fn tx(&self) -> &Transaction<'a> {
        &self.tx
    }

    pub fn exempt(&mut self, why: &'static str) {
        self.exempt = Some(why);
    }

    pub async fn commit(self) -> StoreResult<()> {
        if self.exempt.is_none() {
            return Err(StoreError::Internal("bookkeeping transaction without a reason".into()));
        }
        self.tx.commit().await.map_err(error)
    }
}

pub async fn head(tx: &Transaction<'_>, workspace: WorkspaceId) -> StoreResult<i64> {
    let row = tx.query_opt("SELECT sync_head FROM workspace_heads WHERE workspace_id = $1", &[&workspace]).await.map_err(error)?;
    row.map_or(Ok(0), |r| r.try_get(0).map_err(error))
}

pub const EVENT_COLS: &str = "s.sync_id, s.at, s.actor, s.kind, s.entity, s.entity_id, s.data";

pub fn event_from_row(row: &tokio_postgres::Row) -> StoreResult<SyncEvent> {
    Ok(SyncEvent {
        sync_id: row.try_get(0).map_err(error)?,
        at: row.try_get(1).map_err(error)?,
        actor: row.try_get(2).map_err(error)?,
        kind: row.try_get(3).map_err(error)?,
        entity: row.try_get(4).map_err(error)?,
        entity_id: row.try_get(5).map_err(error)?,
        data: row.try_get(6).map_err(error)?,
    })
}

pub async fn delta(tx: &Transaction<'_>, workspace: WorkspaceId, audience: Audience, after: i64, limit: usize) -> StoreResult<DeltaPage> {
    let head = head(tx, workspace).await?;
    let fetch = (limit + 1) as i64;
    let visible = visibility::sql(visibility::POSTGRES, audience.is_staff(), "$1");
    let rows = tx
        .query(
            &format!(
                "SELECT {EVENT_COLS} FROM sync_actions s WHERE s.workspace_id = $5 AND {visible}
                 AND s.sync_id > $2 AND s.sync_id <= $3 ORDER BY s.sync_id LIMIT $4"
            ),
            &[&audience.user(), &after, &head, &fetch, &workspace],
        )
        .await
        .map_err(error)?;
    let events = rows.iter().map(event_from_row).collect::<StoreResult<Vec<_>>>()?;
    Ok(DeltaPage::from_overfetch(events, limit, head, after))
}

/// The columns after [`EVENT_COLS`] that [`visibility_from_row`] reads. The requester is a
/// lookup per event: as a join, the planner may build a hash of the workspace's every
/// ticket to feed a page of a few events, which makes each read cost as much as the
/// workspace is big.
pub const VISIBILITY_COLS: &str = "s.ticket_id, s.staff_only, s.recipient_id,
    (SELECT t.requester_id FROM tickets t WHERE t.workspace_id = s.workspace_id AND t.id = s.ticket_id)";

pub fn visibility_from_row(row: &tokio_postgres::Row, at: usize) -> StoreResult<Visibility> {
    Ok(Visibility {
        ticket_id: row.try_get(at).map_err(error)?,
        staff_only: row.try_get(at + 1).map_err(error)?,
        recipient: row.try_get(at + 2).map_err(error)?,
        requester: row.try_get(at + 3).map_err(error)?,
    })
}

pub async fn feed(tx: &Transaction<'_>, workspace: WorkspaceId, after: i64, limit: usize) -> StoreResult<Page<crate::store::FeedEvent>> {
    let fetch = (limit + 1) as i64;
    let rows = tx
        .query(
            &format!(
                "SELECT {EVENT_COLS}, {VISIBILITY_COLS} FROM sync_actions s
                 WHERE s.workspace_id = $3 AND s.sync_id > $1 ORDER BY s.sync_id LIMIT $2"
            ),
            &[&after, &fetch, &workspace],
        )
        .await
        .map_err(error)?;
    let items = rows
        .iter()
        .map(|row| Ok(crate::store::FeedEvent { event: event_from_row(row)?, visibility: visibility_from_row(row, 7)? }))
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Page::from_overfetch(items, limit))
}

/// Owned query parameters for SQL built clause by clause.
#[derive(Default)]
pub struct Params {
    values: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Params {
    /// Adds a value; returns its placeholder (`$n`).
    pub fn push(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.values.push(Box::new(value));
        format!("${}", self.values.len())
    }

    pub fn refs(&self) -> Vec<Param<'_>> {
        self.values.iter().map(|v| v.as_ref() as Param<'_>).collect()
    }
}

pub async fn audit(tx: &Transaction<'_>, workspace: WorkspaceId, query: &AuditQuery) -> StoreResult<Page<SyncEvent>> {
    let mut params = Params::default();
    let mut sql = format!("SELECT {EVENT_COLS} FROM sync_actions s WHERE s.workspace_id = {}", params.push(workspace));
    if let Some(actor) = query.actor {
        sql.push_str(&format!(" AND s.actor = {}", params.push(actor)));
    }
    if let Some(entity) = &query.entity {
        sql.push_str(&format!(" AND s.entity = {}", params.push(entity.clone())));
    }
    if let Some(entity_id) = &query.entity_id {
        sql.push_str(&format!(" AND s.entity_id = {}", params.push(entity_id.clone())));
    }
    if let Some(kind) = &query.kind {
        sql.push_str(&format!(" AND s.kind = {}", params.push(kind.clone())));
    }
    if let Some(since) = query.since {
        sql.push_str(&format!(" AND s.at >= {}", params.push(since)));
    }
    if let Some(until) = query.until {
        sql.push_str(&format!(" AND s.at < {}", params.push(until)));
    }
    if let Some(before) = query.before {
        sql.push_str(&format!(" AND s.sync_id < {}", params.push(before)));
    }
    sql.push_str(&format!(" ORDER BY s.sync_id DESC LIMIT {}", query.limit + 1));
    let rows = tx.query(&sql, &params.refs()).await.map_err(error)?;
    let items = rows.iter().map(event_from_row).collect::<StoreResult<Vec<_>>>()?;
    Ok(Page::from_overfetch(items, query.limit))
}

/// Streams the snapshot from one REPEATABLE READ transaction; a slow reader slows the
/// producer, until the sink's deadline ends the snapshot.
pub async fn bootstrap(
    tx: &Transaction<'_>,
    workspace: WorkspaceId,
    audience: Audience,
    out: &BootstrapSink,
) -> StoreResult<BootstrapSummary> {
    let sync_id = head(tx, workspace).await?;
    let mut enc = Encoder::new(workspace, sync_id)?;
    async fn send(out: &BootstrapSink, chunk: Option<Bytes>) -> StoreResult<()> {
        out.send(chunk).await
    }
    let requester = audience.requester();
    if let Some(row) = tx
        .query_opt("SELECT workspace_id, name, created_at FROM workspace_info WHERE workspace_id = $1", &[&workspace])
        .await
        .map_err(error)?
    {
        let ws = workspace_from_row(&row)?;
        send(out, enc.row("workspace", &ws)?).await?;
    }
    if requester.is_none() {
        for row in tx
            .query("SELECT user_id, email, name, role, joined_at FROM members WHERE workspace_id = $1 ORDER BY user_id", &[&workspace])
            .await
            .map_err(error)?
        {
            let member = member_from_row(&row)?;
            send(out, enc.row("member", &member)?).await?;
        }
    }
    let params: [Param<'_>; 2] = [&requester, &workspace];
    let tickets = tx
        .query_raw(
            &format!(
                "SELECT {TICKET_COLS} FROM tickets t WHERE t.workspace_id = $2 AND t.deleted_at IS NULL
                 AND ($1::uuid IS NULL OR t.requester_id = $1) ORDER BY t.number"
            ),
            params.iter().copied(),
        )
        .await
        .map_err(error)?;
    pin_mut!(tickets);
    while let Some(row) = tickets.next().await {
        let ticket = ticket_from_row(&row.map_err(error)?)?;
        send(out, enc.row("ticket", &ticket)?).await?;
    }
    let comments = tx
        .query_raw(
            &format!(
                "SELECT {COMMENT_COLS} FROM comments c JOIN tickets t ON t.id = c.ticket_id AND t.workspace_id = c.workspace_id
                 WHERE c.workspace_id = $2 AND t.deleted_at IS NULL AND ($1::uuid IS NULL OR (t.requester_id = $1 AND NOT c.internal))
                 ORDER BY c.id"
            ),
            params.iter().copied(),
        )
        .await
        .map_err(error)?;
    pin_mut!(comments);
    while let Some(row) = comments.next().await {
        let comment = comment_from_row(&row.map_err(error)?)?;
        send(out, enc.row("comment", &comment)?).await?;
    }
    if requester.is_none() {
        let links = tx
            .query(
                &format!(
                    "SELECT {LINK_COLS} FROM ticket_links l
                     JOIN tickets s ON s.id = l.source_id AND s.workspace_id = l.workspace_id
                     JOIN tickets d ON d.id = l.target_id AND d.workspace_id = l.workspace_id
                     WHERE l.workspace_id = $1 AND s.deleted_at IS NULL AND d.deleted_at IS NULL ORDER BY l.id"
                ),
                &[&workspace],
            )
            .await
            .map_err(error)?;
        for row in links {
            send(out, enc.row("link", &link_from_row(&row)?)?).await?;
        }
    }
    if requester.is_none() {
        // Notes are staff-only, like internal notes; a deleted ticket's note goes with it.
        for row in tx
            .query(
                &format!(
                    "SELECT {SUMMARY_COLS} FROM notes n JOIN tickets t ON t.id = n.ticket_id AND t.workspace_id = n.workspace_id
                     WHERE n.workspace_id = $1 AND t.deleted_at IS NULL ORDER BY n.ticket_id"
                ),
                &[&workspace],
            )
            .await
            .map_err(error)?
        {
            send(out, enc.row("note", &super::notes::summary_from_row(&row)?)?).await?;
        }
    }
    // Attachments (their metadata): as the ticket or internal note they are on.
    for row in tx
        .query(
            &format!(
                "SELECT {} FROM attachments a
                 JOIN attachment_versions v ON v.workspace_id = a.workspace_id AND v.id = a.latest_version
                 JOIN tickets t ON t.workspace_id = a.workspace_id AND t.id = a.ticket_id
                 WHERE a.workspace_id = $2 AND a.deleted_at IS NULL AND t.deleted_at IS NULL
                 AND ($1::uuid IS NULL OR (t.requester_id = $1 AND NOT a.staff_only)) ORDER BY a.id",
                super::attachments::ATTACHMENT_COLS
            ),
            &[&requester, &workspace],
        )
        .await
        .map_err(error)?
    {
        send(out, enc.row("attachment", &super::attachments::attachment_from_row(&row)?)?).await?;
    }
    // The caller's own notifications, by the log's rule.
    let visible = visibility::sql(visibility::POSTGRES, requester.is_none(), "$1");
    let user = audience.user();
    let mine: [Param<'_>; 2] = [&user, &workspace];
    let notifications = tx
        .query_raw(
            &format!(
                "SELECT s.data, s.read_at FROM notifications s WHERE s.workspace_id = $2 AND s.recipient_id = $1 AND {visible}
                 ORDER BY s.source_sync_id"
            ),
            mine.iter().copied(),
        )
        .await
        .map_err(error)?;
    pin_mut!(notifications);
    while let Some(row) = notifications.next().await {
        let notification = super::notifications::notification_from_row(&row.map_err(error)?)?;
        send(out, enc.row("notification", &notification)?).await?;
    }
    let (last, summary) = enc.finish()?;
    send(out, Some(last)).await?;
    Ok(summary)
}
