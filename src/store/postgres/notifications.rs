//! Notifications in Postgres: notifications, followers and the consumer's ticket view under
//! row-level security like all tenant data; preferences as platform data.

use async_trait::async_trait;
use deadpool_postgres::Transaction;

use super::log::{self, PgWrite, advance_watermark, bookkeeping_tx};
use super::platform::PgPlatform;
use super::tenant::{PgTenant, visible_ticket};
use super::{error, pool_error};
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
async fn write_state(tx: &Transaction<'_>, ws: WorkspaceId, batch: &NotificationBatch, now: Millis) -> StoreResult<()> {
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
    write_followers(tx, ws, &batch.followers, now).await
}

/// Sets (`Some(reason)`) or removes followers.
async fn write_followers(
    tx: &Transaction<'_>,
    ws: WorkspaceId,
    followers: &[(TicketId, UserId, Option<FollowReason>)],
    now: Millis,
) -> StoreResult<()> {
    for (ticket, user, reason) in followers {
        match reason {
            Some(reason) => {
                tx.execute(
                    "INSERT INTO ticket_followers (workspace_id, ticket_id, user_id, reason, since) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (workspace_id, ticket_id, user_id) DO UPDATE SET reason = excluded.reason",
                    &[&ws, ticket, user, reason, &now],
                )
                .await
            }
            None => {
                tx.execute("DELETE FROM ticket_followers WHERE workspace_id = $1 AND ticket_id = $2 AND user_id = $3", &[&ws, ticket, user])
                    .await
            }
        }
        .map_err(error)?;
    }
    Ok(())
}

#[async_trait]
impl NotificationStore for PgTenant {
    async fn context(&self, tickets: Vec<TicketId>, members: bool) -> StoreResult<NotificationContext> {
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
                "SELECT ticket_id, user_id, reason FROM ticket_followers WHERE workspace_id = $1 AND ticket_id = ANY($2)",
                &[&self.workspace_id(), &tickets],
            )
            .await
            .map_err(error)?
        {
            out.followers.push((row.try_get(0).map_err(error)?, row.try_get(1).map_err(error)?, row.try_get(2).map_err(error)?));
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

    async fn apply(&self, advance: Advance, batch: NotificationBatch) -> StoreResult<()> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        if batch.notifications.is_empty() {
            // Bookkeeping only: no event, so no head lock.
            let tx = bookkeeping_tx(&mut client, ws).await?;
            advance_watermark(&tx, ws, advance, Millis::now()).await?;
            write_state(&tx, ws, &batch, Millis::now()).await?;
            return tx.commit().await.map_err(error);
        }
        let mut w = PgWrite::begin_consumer(&mut client, ws, advance).await?;
        let now = w.now();
        write_state(w.tx(), ws, &batch, now).await?;
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
        let mut w = self.write_tx(&mut client).await?;
        w.exempt("a follow is the user's subscription, not a synced row: nothing a client syncs changes");
        visible_ticket(w.tx(), audience.requester(), ticket).await?.ok_or(StoreError::NotFound)?;
        write_followers(w.tx(), self.workspace_id(), &[(ticket, user, follow.then_some(FollowReason::Manual))], w.now()).await?;
        w.commit().await
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

#[async_trait]
impl NotificationPreferences for PgPlatform {
    async fn preferences(&self, user: UserId) -> StoreResult<Vec<Preference>> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows =
            client.query("SELECT kind, in_app, email FROM notification_preferences WHERE user_id = $1", &[&user]).await.map_err(error)?;
        let stored = rows
            .iter()
            .map(|r| {
                Ok(Preference {
                    kind: r.try_get(0).map_err(error)?,
                    in_app: r.try_get(1).map_err(error)?,
                    email: r.try_get(2).map_err(error)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(complete_preferences(&stored))
    }

    async fn set_preferences(&self, user: UserId, preferences: &[Preference]) -> StoreResult<()> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(error)?;
        for p in preferences {
            tx.execute(
                "INSERT INTO notification_preferences (user_id, kind, in_app, email) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (user_id, kind) DO UPDATE SET in_app = excluded.in_app, email = excluded.email",
                &[&user, &p.kind, &p.in_app, &p.email],
            )
            .await
            .map_err(|e| match e.code() {
                Some(code) if *code == tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION => StoreError::NotFound,
                _ => error(e),
            })?;
        }
        tx.commit().await.map_err(error)
    }

    async fn muted_in_app(&self, users: &[UserId]) -> StoreResult<Vec<(UserId, NotificationKind)>> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let users = users.to_vec();
        let rows = client
            .query("SELECT user_id, kind FROM notification_preferences WHERE user_id = ANY($1) AND NOT in_app", &[&users])
            .await
            .map_err(error)?;
        rows.iter().map(|r| Ok((r.try_get(0).map_err(error)?, r.try_get(1).map_err(error)?))).collect()
    }
}
