//! Notifications in SQLite: each workspace's notifications, followers and the consumer's
//! ticket view in its `tenant.db`; preferences in `platform.db`.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::consumers::advance_watermark;
use super::error;
use super::log::{self, WriteTx};
use super::tenant::{SqliteTenant, visible_ticket};
use crate::store::notifications::*;
use crate::store::visibility::{self, SQLITE};
use crate::store::{Advance, Audience, Event, Page, StoreError, StoreResult, TicketId, UserId};

pub(super) fn notification_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Notification> {
    let data: String = row.get(0)?;
    let mut n: Notification =
        serde_json::from_str(&data).map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))?;
    n.read_at = row.get(1)?;
    Ok(n)
}

fn write_batch(tx: &mut WriteTx<'_>, batch: &NotificationBatch) -> StoreResult<()> {
    for t in &batch.tickets {
        tx.prepare_cached(
            "INSERT INTO notification_tickets (ticket_id, number, title, requester_id, assignee_id) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (ticket_id) DO UPDATE SET number = excluded.number, title = excluded.title,
             requester_id = excluded.requester_id, assignee_id = excluded.assignee_id",
        )
        .and_then(|mut stmt| stmt.execute(params![t.ticket_id, t.number, t.title, t.requester_id, t.assignee_id]))
        .map_err(error)?;
    }
    write_followers(tx, &batch.followers)?;
    for n in &batch.notifications {
        let data = serde_json::to_string(n).map_err(StoreError::internal)?;
        tx.prepare_cached(
            "INSERT INTO notifications (id, recipient_id, source_sync_id, kind, ticket_id, staff_only, data, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .and_then(|mut stmt| stmt.execute(params![n.id, n.recipient_id, n.seq, n.kind, n.ticket_id, n.internal, data, n.created_at]))
        .map_err(error)?;
        tx.record(n.actor_id, Event::notification_created(n))?;
    }
    Ok(())
}

/// Sets or removes followers.
fn write_followers(tx: &WriteTx<'_>, changes: &[FollowerChange]) -> StoreResult<()> {
    for change in changes {
        match change {
            FollowerChange::Set(f) => tx
                .prepare_cached(
                    "INSERT INTO ticket_followers (ticket_id, user_id, reason, since_sync_id) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (ticket_id, user_id) DO UPDATE SET reason = excluded.reason",
                )
                .and_then(|mut stmt| stmt.execute(params![f.ticket_id, f.user_id, f.reason, f.since_sync_id])),
            FollowerChange::Remove { ticket_id, user_id } => tx
                .prepare_cached("DELETE FROM ticket_followers WHERE ticket_id = ?1 AND user_id = ?2")
                .and_then(|mut stmt| stmt.execute(params![ticket_id, user_id])),
        }
        .map_err(error)?;
    }
    Ok(())
}

fn context(conn: &Connection, tickets: &[TicketId], members: bool) -> StoreResult<NotificationContext> {
    let mut out = NotificationContext::default();
    let mut view = conn
        .prepare_cached("SELECT ticket_id, number, title, requester_id, assignee_id FROM notification_tickets WHERE ticket_id = ?1")
        .map_err(error)?;
    let mut followers =
        conn.prepare_cached("SELECT user_id, reason, since_sync_id FROM ticket_followers WHERE ticket_id = ?1").map_err(error)?;
    for ticket in tickets {
        let found = view
            .query_row(params![ticket], |r| {
                Ok(TicketView {
                    ticket_id: r.get(0)?,
                    number: r.get(1)?,
                    title: r.get(2)?,
                    requester_id: r.get(3)?,
                    assignee_id: r.get(4)?,
                })
            })
            .optional()
            .map_err(error)?;
        out.tickets.extend(found);
        let rows = followers
            .query_map(params![ticket], |r| {
                Ok(Follower { ticket_id: *ticket, user_id: r.get(0)?, reason: r.get(1)?, since_sync_id: r.get(2)? })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(error)?;
        out.followers.extend(rows);
    }
    if members {
        let mut stmt = conn.prepare_cached("SELECT user_id, email, name, role FROM members").map_err(error)?;
        out.members = stmt
            .query_map([], |r| Ok(MemberView { user_id: r.get(0)?, email: r.get(1)?, name: r.get(2)?, role: r.get(3)? }))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(error)?;
    }
    Ok(out)
}

#[async_trait]
impl NotificationStore for SqliteTenant {
    async fn plan_and_apply(&self, advance: Advance, needs: ContextNeeds, plan: Planner) -> StoreResult<()> {
        // One trip: the context is read under the write lock the batch is written under.
        self.write(move |tx| {
            let batch = plan(context(tx, &needs.tickets, needs.members)?)?;
            if batch.notifications.is_empty() {
                tx.exempt("bookkeeping: the notifications consumer's own state and watermark");
            }
            advance_watermark(tx, advance)?;
            write_batch(tx, &batch)
        })
        .await
    }

    async fn list(&self, audience: Audience, query: &NotificationQuery) -> StoreResult<Page<Notification>> {
        let query = query.clone();
        self.read(move |conn| {
            let visible = visibility::sql(SQLITE, audience.is_staff(), "?1");
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT s.data, s.read_at FROM notifications s WHERE s.recipient_id = ?1 AND {visible}
                     AND (?2 IS NULL OR s.source_sync_id < ?2) AND (?3 = 0 OR s.read_at IS NULL)
                     ORDER BY s.source_sync_id DESC LIMIT ?4"
                ))
                .map_err(error)?;
            let items = stmt
                .query_map(params![audience.user(), query.before, query.unread_only, (query.limit + 1) as i64], notification_from_row)
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(error)?;
            Ok(Page::from_overfetch(items, query.limit))
        })
        .await
    }

    async fn unread_count(&self, audience: Audience) -> StoreResult<u64> {
        self.read(move |conn| {
            let visible = visibility::sql(SQLITE, audience.is_staff(), "?1");
            conn.prepare_cached(&format!(
                "SELECT count(*) FROM notifications s WHERE s.recipient_id = ?1 AND s.read_at IS NULL AND {visible}"
            ))
            .and_then(|mut stmt| stmt.query_row(params![audience.user()], |row| row.get::<_, i64>(0)))
            .map(|n| n.max(0) as u64)
            .map_err(error)
        })
        .await
    }

    async fn mark_read(&self, user: UserId, which: ReadSelection) -> StoreResult<Vec<NotificationId>> {
        self.write(move |tx| {
            let now = tx.now();
            let mut changed: Vec<Notification> = match which {
                ReadSelection::Ids(ids) => {
                    let mut stmt = tx
                        .prepare_cached(
                            "UPDATE notifications SET read_at = ?3 WHERE id = ?1 AND recipient_id = ?2 AND read_at IS NULL
                             RETURNING data, read_at",
                        )
                        .map_err(error)?;
                    let mut changed = Vec::new();
                    for id in ids {
                        changed.extend(stmt.query_row(params![id, user, now], notification_from_row).optional().map_err(error)?);
                    }
                    changed
                }
                ReadSelection::UpTo(id) => {
                    let seq: i64 = tx
                        .prepare_cached("SELECT source_sync_id FROM notifications WHERE id = ?1 AND recipient_id = ?2")
                        .and_then(|mut stmt| stmt.query_row(params![id, user], |r| r.get(0)).optional())
                        .map_err(error)?
                        .ok_or(StoreError::NotFound)?;
                    tx.prepare_cached(
                        "UPDATE notifications SET read_at = ?3
                         WHERE recipient_id = ?1 AND read_at IS NULL AND source_sync_id <= ?2 RETURNING data, read_at",
                    )
                    .and_then(|mut stmt| stmt.query_map(params![user, seq, now], notification_from_row)?.collect())
                    .map_err(error)?
                }
            };
            // One `notification.updated` per notification that became read, oldest first.
            if changed.is_empty() {
                tx.exempt("nothing became read: no new state, no event");
            }
            changed.sort_by_key(|n| n.seq);
            for n in &changed {
                tx.record(Some(user), Event::notification_updated(n))?;
            }
            Ok(changed.into_iter().map(|n| n.id).collect())
        })
        .await
    }

    async fn set_following(&self, user: UserId, audience: Audience, ticket: TicketId, follow: bool) -> StoreResult<()> {
        self.write(move |tx| {
            tx.exempt("a follow is the user's subscription, not a synced row: nothing a client syncs changes");
            visible_ticket(tx, audience.requester(), ticket)?.ok_or(StoreError::NotFound)?;
            let change = if follow {
                FollowerChange::Set(Follower {
                    ticket_id: ticket,
                    user_id: user,
                    reason: FollowReason::Manual,
                    since_sync_id: log::head(tx)?,
                })
            } else {
                FollowerChange::Remove { ticket_id: ticket, user_id: user }
            };
            write_followers(tx, &[change])
        })
        .await
    }

    async fn following(&self, user: UserId, ticket: TicketId) -> StoreResult<Option<FollowReason>> {
        self.read(move |conn| {
            conn.prepare_cached("SELECT reason FROM ticket_followers WHERE ticket_id = ?1 AND user_id = ?2")
                .and_then(|mut stmt| stmt.query_row(params![ticket, user], |r| r.get(0)).optional())
                .map_err(error)
        })
        .await
    }
}
