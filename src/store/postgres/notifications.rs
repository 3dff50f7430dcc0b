//! Notifications in Postgres: notifications, followers and the consumer's ticket view under
//! row-level security like all tenant data; preferences as platform data.

use async_trait::async_trait;
use deadpool_postgres::Transaction;

use super::error;
use super::log::{self, Bookkeeping, PgWrite, advance_watermark};
use super::tenant::{PgTenant, visible_ticket};
use crate::store::notifications::*;
use crate::store::visibility::{self, POSTGRES};
use crate::store::{Advance, Audience, Event, Millis, Page, StoreError, StoreResult, TenantStore, TicketId, UserId, WorkspaceId};

pub(super) fn notification_from_row(row: &tokio_postgres::Row) -> StoreResult<Notification> {
    let data: serde_json::Value = row.try_get(0).map_err(error)?;
    let mut n: Notification = serde_json::from_value(data).map_err(StoreError::internal)?;
    n.read_at = row.try_get(1).map_err(error)?;
    Ok(n)
}

/// The consumer's own state: ticket views and followers.
async fn write_state(tx: &Transaction<'_>, ws: WorkspaceId, batch: &NotificationBatch) -> StoreResult<()> {
    for t in &batch.tickets {
        tx.execute(
            "INSERT INTO notification_tickets (workspace_id, ticket_id, number, title, requester_id, assignee_id) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (workspace_id, ticket_id) DO UPDATE SET number = excluded.number, title = excluded.title,
             requester_id = excluded.requester_id, assignee_id = excluded.assignee_id",
            &[&ws, &t.ticket_id, &t.number, &t.title, &t.requester_id, &t.assignee_id],
        )
        .await
        .map_err(error)?;
    }
    write_followers(tx, ws, &batch.followers).await
}

/// Sets or removes followers.
async fn write_followers(tx: &Transaction<'_>, ws: WorkspaceId, changes: &[FollowerChange]) -> StoreResult<()> {
    for change in changes {
        match change {
            FollowerChange::Set(f) => {
                tx.execute(
                    "INSERT INTO ticket_followers (workspace_id, ticket_id, user_id, reason, since_sync_id) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (workspace_id, ticket_id, user_id) DO UPDATE SET reason = excluded.reason",
                    &[&ws, &f.ticket_id, &f.user_id, &f.reason, &f.since_sync_id],
                )
                .await
            }
            FollowerChange::Remove { ticket_id, user_id } => {
                tx.execute(
                    "DELETE FROM ticket_followers WHERE workspace_id = $1 AND ticket_id = $2 AND user_id = $3",
                    &[&ws, ticket_id, user_id],
                )
                .await
            }
        }
        .map_err(error)?;
    }
    Ok(())
}

impl PgTenant {
    /// The state the rules plan against, in one read transaction.
    async fn context(&self, needs: ContextNeeds) -> StoreResult<NotificationContext> {
        let ContextNeeds { tickets, members } = needs;
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, self.workspace_id(), true).await?;
        let mut out = NotificationContext::default();
        for row in tx
            .query(
                "SELECT ticket_id, number, title, requester_id, assignee_id FROM notification_tickets
                 WHERE workspace_id = $1 AND ticket_id = ANY($2)",
                &[&self.workspace_id(), &tickets],
            )
            .await
            .map_err(error)?
        {
            out.tickets.push(TicketView {
                ticket_id: row.try_get(0).map_err(error)?,
                number: row.try_get(1).map_err(error)?,
                title: row.try_get(2).map_err(error)?,
                requester_id: row.try_get(3).map_err(error)?,
                assignee_id: row.try_get(4).map_err(error)?,
            });
        }
        for row in tx
            .query(
                "SELECT ticket_id, user_id, reason, since_sync_id FROM ticket_followers WHERE workspace_id = $1 AND ticket_id = ANY($2)",
                &[&self.workspace_id(), &tickets],
            )
            .await
            .map_err(error)?
        {
            out.followers.push(Follower {
                ticket_id: row.try_get(0).map_err(error)?,
                user_id: row.try_get(1).map_err(error)?,
                reason: row.try_get(2).map_err(error)?,
                since_sync_id: row.try_get(3).map_err(error)?,
            });
        }
        if members {
            for row in tx
                .query("SELECT user_id, email, name, role FROM members WHERE workspace_id = $1", &[&self.workspace_id()])
                .await
                .map_err(error)?
            {
                out.members.push(MemberView {
                    user_id: row.try_get(0).map_err(error)?,
                    email: row.try_get(1).map_err(error)?,
                    name: row.try_get(2).map_err(error)?,
                    role: row.try_get(3).map_err(error)?,
                });
            }
        }
        Ok(out)
    }

    /// Writes `batch` and moves the watermark, in one transaction: a bookkeeping one (no
    /// head lock) when it notifies nobody.
    async fn apply(&self, advance: Advance, batch: NotificationBatch) -> StoreResult<()> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        if batch.notifications.is_empty() {
            // Bookkeeping only: no event, so no head lock.
            let mut b = Bookkeeping::begin(&mut client, ws).await?;
            b.exempt("bookkeeping: the notifications consumer's own state and watermark");
            advance_watermark(b.tx(), ws, advance, Millis::now()).await?;
            write_state(b.tx(), ws, &batch).await?;
            return b.commit().await;
        }
        let mut w = PgWrite::begin_consumer(&mut client, ws, advance).await?;
        write_state(w.tx(), ws, &batch).await?;
        for n in &batch.notifications {
            let data = serde_json::to_value(n).map_err(StoreError::internal)?;
            w.tx()
                .execute(
                    "INSERT INTO notifications (workspace_id, id, recipient_id, source_sync_id, kind, ticket_id, staff_only, data, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    &[&ws, &n.id, &n.recipient_id, &n.seq, &n.kind, &n.ticket_id, &n.internal, &data, &n.created_at],
                )
                .await
                .map_err(error)?;
            w.record(n.actor_id, Event::notification_created(n)).await?;
        }
        w.commit().await
    }
}

#[async_trait]
impl NotificationStore for PgTenant {
    async fn plan_and_apply(&self, advance: Advance, needs: ContextNeeds, plan: Planner) -> StoreResult<()> {
        let context = self.context(needs).await?;
        self.apply(advance, plan(context)?).await
    }

    async fn list(&self, audience: Audience, query: &NotificationQuery) -> StoreResult<Page<Notification>> {
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, self.workspace_id(), false).await?;
        let visible = visibility::sql(POSTGRES, audience.is_staff(), "$1");
        let rows = tx
            .query(
                &format!(
                    "SELECT s.data, s.read_at FROM notifications s WHERE s.workspace_id = $5 AND s.recipient_id = $1 AND {visible}
                     AND ($2::bigint IS NULL OR s.source_sync_id < $2) AND (NOT $3 OR s.read_at IS NULL)
                     ORDER BY s.source_sync_id DESC LIMIT $4"
                ),
                &[&audience.user(), &query.before, &query.unread_only, &((query.limit + 1) as i64), &self.workspace_id()],
            )
            .await
            .map_err(error)?;
        let items = rows.iter().map(notification_from_row).collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, query.limit))
    }

    async fn unread_count(&self, audience: Audience) -> StoreResult<u64> {
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, self.workspace_id(), false).await?;
        let visible = visibility::sql(POSTGRES, audience.is_staff(), "$1");
        let row = tx
            .query_one(
                &format!(
                    "SELECT count(*) FROM notifications s WHERE s.workspace_id = $2 AND s.recipient_id = $1 AND s.read_at IS NULL AND {visible}"
                ),
                &[&audience.user(), &self.workspace_id()],
            )
            .await
            .map_err(error)?;
        let n: i64 = row.try_get(0).map_err(error)?;
        Ok(n.max(0) as u64)
    }

    async fn mark_read(&self, user: UserId, which: ReadSelection) -> StoreResult<Vec<NotificationId>> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let mut w = self.write_tx(&mut client).await?;
        let now = w.now();
        let rows = match which {
            ReadSelection::Ids(ids) => w
                .tx()
                .query(
                    "UPDATE notifications SET read_at = $4 WHERE workspace_id = $1 AND recipient_id = $2 AND id = ANY($3) AND read_at IS NULL
                     RETURNING data, read_at",
                    &[&ws, &user, &ids, &now],
                )
                .await
                .map_err(error)?,
            ReadSelection::UpTo(id) => {
                let seq: i64 = w
                    .tx()
                    .query_opt("SELECT source_sync_id FROM notifications WHERE workspace_id = $1 AND recipient_id = $2 AND id = $3", &[&ws, &user, &id])
                    .await
                    .map_err(error)?
                    .ok_or(StoreError::NotFound)?
                    .try_get(0)
                    .map_err(error)?;
                w.tx()
                    .query(
                        "UPDATE notifications SET read_at = $4
                         WHERE workspace_id = $1 AND recipient_id = $2 AND read_at IS NULL AND source_sync_id <= $3 RETURNING data, read_at",
                        &[&ws, &user, &seq, &now],
                    )
                    .await
                    .map_err(error)?
            }
        };
        let mut changed = rows.iter().map(notification_from_row).collect::<StoreResult<Vec<_>>>()?;
        if changed.is_empty() {
            w.exempt("nothing became read: no new state, no event");
        }
        changed.sort_by_key(|n| n.seq);
        for n in &changed {
            w.record(Some(user), Event::notification_updated(n)).await?;
        }
        w.commit().await?;
        Ok(changed.into_iter().map(|n| n.id).collect())
    }

    async fn set_following(&self, user: UserId, audience: Audience, ticket: TicketId, follow: bool) -> StoreResult<()> {
        let mut client = self.client().await?;
        let mut b = Bookkeeping::begin(&mut client, self.workspace_id()).await?;
        b.exempt("a follow is the user's subscription, not a synced row: nothing a client syncs changes");
        visible_ticket(b.tx(), self.workspace_id(), audience.requester(), ticket).await?.ok_or(StoreError::NotFound)?;
        let change = if follow {
            let since_sync_id = log::head(b.tx(), self.workspace_id()).await?;
            FollowerChange::Set(Follower { ticket_id: ticket, user_id: user, reason: FollowReason::Manual, since_sync_id })
        } else {
            FollowerChange::Remove { ticket_id: ticket, user_id: user }
        };
        write_followers(b.tx(), self.workspace_id(), &[change]).await?;
        b.commit().await
    }

    async fn following(&self, user: UserId, ticket: TicketId) -> StoreResult<Option<FollowReason>> {
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, self.workspace_id(), false).await?;
        let row = tx
            .query_opt(
                "SELECT reason FROM ticket_followers WHERE workspace_id = $1 AND ticket_id = $2 AND user_id = $3",
                &[&self.workspace_id(), &ticket, &user],
            )
            .await
            .map_err(error)?;
        row.map(|r| r.try_get(0).map_err(error)).transpose()
    }
}
