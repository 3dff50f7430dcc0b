//! Mail channels in Postgres (row-level security scopes every statement to the workspace).

use async_trait::async_trait;
use tokio_postgres::{Row, Transaction};

use super::error;
use super::log::{self, PgWrite};
use super::tenant::{PgTenant, TICKET_COLS, insert_comment, insert_ticket, ticket_from_row, visible_ticket};
use crate::store::mail::*;
use crate::store::{Advance, Event, Millis, NewTicket, Role, StoreError, StoreResult, TenantStore, Ticket, TicketId, UserId, WorkspaceId};

pub(super) const CHANNEL_COLS: &str = "id, settings, imap_password, smtp_password, created_at, updated_at";

pub(super) fn channel_from_row(row: &Row) -> StoreResult<ChannelRecord> {
    let settings: serde_json::Value = row.try_get(1).map_err(error)?;
    Ok(ChannelRecord {
        id: row.try_get(0).map_err(error)?,
        settings: serde_json::from_value(settings).map_err(|e| StoreError::internal(format!("a mail channel's settings: {e}")))?,
        imap_password: row.try_get(2).map_err(error)?,
        smtp_password: row.try_get(3).map_err(error)?,
        created_at: row.try_get(4).map_err(error)?,
        updated_at: row.try_get(5).map_err(error)?,
    })
}

async fn channel(tx: &Transaction<'_>, ws: WorkspaceId, id: ChannelId) -> StoreResult<Option<ChannelRecord>> {
    let row = tx
        .query_opt(&format!("SELECT {CHANNEL_COLS} FROM mail_channels WHERE workspace_id = $1 AND id = $2"), &[&ws, &id])
        .await
        .map_err(error)?;
    row.as_ref().map(channel_from_row).transpose()
}

pub(super) const INBOUND_COLS: &str =
    "dedupe_key, channel_id, message_id, sender, subject, outcome, detail, ticket_id, comment_id, attachments_done, received_at";

pub(super) fn inbound_from_row(row: &Row) -> StoreResult<InboundRecord> {
    Ok(InboundRecord {
        dedupe_key: row.try_get(0).map_err(error)?,
        channel_id: row.try_get(1).map_err(error)?,
        message_id: row.try_get(2).map_err(error)?,
        sender: row.try_get(3).map_err(error)?,
        subject: row.try_get(4).map_err(error)?,
        outcome: row.try_get(5).map_err(error)?,
        detail: row.try_get(6).map_err(error)?,
        ticket_id: row.try_get(7).map_err(error)?,
        comment_id: row.try_get(8).map_err(error)?,
        attachments_done: row.try_get(9).map_err(error)?,
        received_at: row.try_get(10).map_err(error)?,
    })
}

/// Writes an incoming message's record (filed now, or moved with its workspace).
pub(super) async fn insert_inbound(tx: &Transaction<'_>, ws: WorkspaceId, r: &InboundRecord) -> StoreResult<()> {
    tx.execute(
        &format!("INSERT INTO mail_inbound (workspace_id, {INBOUND_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"),
        &[
            &ws,
            &r.dedupe_key,
            &r.channel_id,
            &r.message_id,
            &r.sender,
            &r.subject,
            &r.outcome,
            &r.detail,
            &r.ticket_id,
            &r.comment_id,
            &r.attachments_done,
            &r.received_at,
        ],
    )
    .await
    .map_err(error)?;
    Ok(())
}

/// Fails the outbox mail a bounce returns (if it is ours and not failed already).
async fn fail_returned(w: &mut PgWrite<'_>, ws: WorkspaceId, message_id: &str, answer: &str) -> StoreResult<Option<OutboxMail>> {
    let now = w.now();
    let row = w
        .tx()
        .query_opt(
            &format!(
                "UPDATE mail_outbox SET status = 'failed', due_at = NULL, lease_owner = NULL, relay_answer = $3, updated_at = $4
                 WHERE workspace_id = $1 AND message_id = $2 AND status <> 'failed' RETURNING {MAIL_COLS}"
            ),
            &[&ws, &message_id, &answer, &now],
        )
        .await
        .map_err(error)?;
    let Some(row) = row else { return Ok(None) };
    let mail = mail_from_row(&row)?;
    w.record(None, Event::mail(&mail)).await?;
    Ok(Some(mail))
}

/// The store's error for a write, with a unique address named as such.
fn address_taken(err: tokio_postgres::Error) -> StoreError {
    match error(err) {
        StoreError::Conflict(_) => StoreError::Conflict(ADDRESS_TAKEN.into()),
        other => other,
    }
}

async fn write_channel(w: &mut PgWrite<'_>, ws: WorkspaceId, actor: UserId, c: &ChannelRecord, created: bool) -> StoreResult<()> {
    let settings = serde_json::to_value(&c.settings).map_err(StoreError::internal)?;
    let address = c.settings.address_key();
    let changed = if created {
        w.tx()
            .execute(
                "INSERT INTO mail_channels (workspace_id, id, address, settings, imap_password, smtp_password, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[&ws, &c.id, &address, &settings, &c.imap_password, &c.smtp_password, &c.created_at, &c.updated_at],
            )
            .await
    } else {
        w.tx()
            .execute(
                "UPDATE mail_channels SET address = $3, settings = $4, imap_password = $5, smtp_password = $6, updated_at = $7
                 WHERE workspace_id = $1 AND id = $2",
                &[&ws, &c.id, &address, &settings, &c.imap_password, &c.smtp_password, &c.updated_at],
            )
            .await
    }
    .map_err(address_taken)?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    w.record(Some(actor), Event::mail_channel(&MailChannel::from(c), created)).await?;
    Ok(())
}

pub(super) const MAIL_COLS: &str = "id, ticket_id, comment_id, channel_id, message_id, mail_to, subject, status, attempts, due_at, \
     relay_answer, created_at, updated_at, sent_at";

pub(super) fn mail_from_row(row: &Row) -> StoreResult<OutboxMail> {
    let status: MailStatus = row.try_get(7).map_err(error)?;
    let due: Option<Millis> = row.try_get(9).map_err(error)?;
    Ok(OutboxMail {
        id: row.try_get(0).map_err(error)?,
        ticket_id: row.try_get(1).map_err(error)?,
        comment_id: row.try_get(2).map_err(error)?,
        channel_id: row.try_get(3).map_err(error)?,
        message_id: row.try_get(4).map_err(error)?,
        to: row.try_get(5).map_err(error)?,
        subject: row.try_get(6).map_err(error)?,
        status,
        attempts: row.try_get::<_, i32>(8).map_err(error)?.max(0) as u32,
        // A sending mail's due time is its lease's end, not a next attempt.
        next_attempt_at: if matches!(status, MailStatus::Queued | MailStatus::Retrying) { due } else { None },
        relay_answer: row.try_get(10).map_err(error)?,
        created_at: row.try_get(11).map_err(error)?,
        updated_at: row.try_get(12).map_err(error)?,
        sent_at: row.try_get(13).map_err(error)?,
    })
}

async fn mail(tx: &Transaction<'_>, ws: WorkspaceId, id: MailId) -> StoreResult<OutboxMail> {
    let row = tx
        .query_one(&format!("SELECT {MAIL_COLS} FROM mail_outbox WHERE workspace_id = $1 AND id = $2"), &[&ws, &id])
        .await
        .map_err(error)?;
    mail_from_row(&row)
}

/// The `Message-ID`s of the ticket's thread with its requester (our reply mails and the
/// messages filed on it), oldest first.
async fn thread(tx: &Transaction<'_>, ws: WorkspaceId, ticket: TicketId) -> StoreResult<Vec<String>> {
    let mut ends = Vec::new();
    for (order, limit) in [("ASC", 1i64), ("DESC", THREAD_REFERENCES as i64 - 1)] {
        let rows = tx
            .query(
                &format!(
                    "SELECT message_id FROM (
                        (SELECT message_id, created_at AS at, source_sync_id AS n FROM mail_outbox
                         WHERE workspace_id = $1 AND ticket_id = $2 AND comment_id IS NOT NULL
                         ORDER BY created_at {order}, source_sync_id {order} LIMIT $3)
                        UNION ALL
                        (SELECT message_id, received_at, 0 FROM mail_inbound
                         WHERE workspace_id = $1 AND ticket_id = $2 AND comment_id IS NOT NULL AND message_id IS NOT NULL
                         ORDER BY received_at {order} LIMIT $3)) m
                     ORDER BY at {order}, n {order} LIMIT $3"
                ),
                &[&ws, &ticket, &limit],
            )
            .await
            .map_err(error)?;
        ends.push(rows.iter().map(|r| r.try_get(0).map_err(error)).collect::<StoreResult<Vec<String>>>()?);
    }
    let latest = ends.pop().unwrap_or_default();
    Ok(trimmed_thread(ends.pop().unwrap_or_default(), latest))
}

async fn member(tx: &Transaction<'_>, ws: WorkspaceId, user: Option<UserId>) -> StoreResult<Option<MailMember>> {
    let Some(user) = user else { return Ok(None) };
    let row = tx
        .query_opt("SELECT email, name, role FROM members WHERE workspace_id = $1 AND user_id = $2", &[&ws, &user])
        .await
        .map_err(error)?;
    row.map(|r| {
        let role: Role = r.try_get(2).map_err(error)?;
        Ok(MailMember { email: r.try_get(0).map_err(error)?, name: r.try_get(1).map_err(error)?, staff: role != Role::Requester })
    })
    .transpose()
}

/// What an item's mail is composed from, read inside the write.
async fn mail_context(
    tx: &Transaction<'_>,
    ws: WorkspaceId,
    sync_id: i64,
    outgoing: Outgoing,
    channel: &Option<ChannelRecord>,
) -> StoreResult<Option<MailContext>> {
    let ticket = tx
        .query_opt(
            "SELECT number, title, requester_id FROM tickets WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL",
            &[&ws, &outgoing.ticket()],
        )
        .await
        .map_err(error)?;
    let Some(ticket) = ticket else { return Ok(None) };
    let (ticket_number, ticket_title, requester): (i64, String, UserId) =
        (ticket.try_get(0).map_err(error)?, ticket.try_get(1).map_err(error)?, ticket.try_get(2).map_err(error)?);
    Ok(Some(MailContext {
        sync_id,
        ticket_number,
        ticket_title,
        recipient: member(tx, ws, Some(outgoing.recipient(requester))).await?,
        actor: member(tx, ws, outgoing.actor()).await?,
        channel: channel.clone(),
        thread: thread(tx, ws, outgoing.ticket()).await?,
        outgoing,
    }))
}

#[async_trait]
impl MailStore for PgTenant {
    async fn channels(&self) -> StoreResult<Vec<ChannelRecord>> {
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, self.workspace_id(), false).await?;
        let rows = tx
            .query(
                &format!("SELECT {CHANNEL_COLS} FROM mail_channels WHERE workspace_id = $1 ORDER BY created_at, id"),
                &[&self.workspace_id()],
            )
            .await
            .map_err(error)?;
        rows.iter().map(channel_from_row).collect()
    }

    async fn channel(&self, id: ChannelId) -> StoreResult<Option<ChannelRecord>> {
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, self.workspace_id(), false).await?;
        channel(&tx, self.workspace_id(), id).await
    }

    async fn create_channel(&self, actor: UserId, channel: &ChannelRecord) -> StoreResult<()> {
        let mut client = self.client().await?;
        let mut w = self.write_tx(&mut client).await?;
        write_channel(&mut w, self.workspace_id(), actor, channel, true).await?;
        w.commit().await
    }

    async fn update_channel(&self, actor: UserId, channel: &ChannelRecord) -> StoreResult<()> {
        let mut client = self.client().await?;
        let mut w = self.write_tx(&mut client).await?;
        write_channel(&mut w, self.workspace_id(), actor, channel, false).await?;
        w.commit().await
    }

    async fn delete_channel(&self, actor: UserId, id: ChannelId) -> StoreResult<()> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let mut w = self.write_tx(&mut client).await?;
        let removed = channel(w.tx(), ws, id).await?.ok_or(StoreError::NotFound)?;
        w.tx().execute("DELETE FROM mail_channels WHERE workspace_id = $1 AND id = $2", &[&ws, &id]).await.map_err(error)?;
        w.record(Some(actor), Event::mail_channel_deleted(&ChannelRemoved { id, address: removed.settings.address })).await?;
        w.commit().await
    }

    async fn enqueue(&self, advance: Advance, items: Vec<(i64, Outgoing)>, mut compose: Composer) -> StoreResult<usize> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let mut w = PgWrite::begin_consumer(&mut client, ws, advance).await?;
        let channels = w
            .tx()
            .query(&format!("SELECT {CHANNEL_COLS} FROM mail_channels WHERE workspace_id = $1 ORDER BY created_at, id"), &[&ws])
            .await
            .map_err(error)?;
        let channel = channels.iter().map(channel_from_row).collect::<StoreResult<Vec<_>>>()?.into_iter().find(|c| c.settings.enabled);
        let mut queued = 0;
        for (sync_id, outgoing) in items {
            let done: bool = w
                .tx()
                .query_one("SELECT EXISTS (SELECT 1 FROM mail_outbox WHERE workspace_id = $1 AND source_sync_id = $2)", &[&ws, &sync_id])
                .await
                .map_err(error)?
                .try_get(0)
                .map_err(error)?;
            if done {
                continue;
            }
            let Some(context) = mail_context(w.tx(), ws, sync_id, outgoing, &channel).await? else { continue };
            let Some(new) = compose(&context).map_err(|e| StoreError::invalid("mail", e))? else { continue };
            let now = w.now();
            w.tx()
                .execute(
                    "INSERT INTO mail_outbox (workspace_id, id, ticket_id, comment_id, channel_id, source_sync_id, message_id, mail_from,
                        mail_to, subject, message, status, attempts, due_at, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'queued', 0, $12, $12, $12)",
                    &[
                        &ws,
                        &new.id,
                        &new.ticket_id,
                        &new.comment_id,
                        &new.channel_id,
                        &new.source_sync_id,
                        &new.message_id,
                        &new.from,
                        &new.to,
                        &new.subject,
                        &new.message,
                        &now,
                    ],
                )
                .await
                .map_err(error)?;
            let row = mail(w.tx(), ws, new.id).await?;
            w.record(None, Event::mail(&row)).await?;
            queued += 1;
        }
        if queued == 0 {
            w.exempt("bookkeeping: the mail consumer's watermark, for a page that sends nothing");
        }
        w.commit().await?;
        Ok(queued)
    }

    async fn claim(&self, owner: &str, now: Millis, lease_until: Millis, limit: usize) -> StoreResult<Vec<ClaimedMail>> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let mut w = self.write_tx(&mut client).await?;
        // SKIP LOCKED: a mail another worker is claiming right now is left to it.
        let rows = w
            .tx()
            .query(
                &format!(
                    "UPDATE mail_outbox SET status = 'sending', due_at = $3, lease_owner = $4, updated_at = $5
                     WHERE workspace_id = $1 AND id IN (
                        SELECT id FROM mail_outbox WHERE workspace_id = $1 AND due_at IS NOT NULL AND due_at <= $2
                        ORDER BY due_at LIMIT $6 FOR UPDATE SKIP LOCKED)
                     RETURNING {MAIL_COLS}, mail_from, message"
                ),
                &[&ws, &now, &lease_until, &owner, &w.now(), &(limit as i64)],
            )
            .await
            .map_err(error)?;
        if rows.is_empty() {
            w.exempt("nothing was due: no mail changed");
        }
        let mut claimed = Vec::new();
        for row in rows {
            let mail = mail_from_row(&row)?;
            w.record(None, Event::mail(&mail)).await?;
            claimed.push(ClaimedMail { mail, from: row.try_get(14).map_err(error)?, message: row.try_get(15).map_err(error)? });
        }
        w.commit().await?;
        Ok(claimed)
    }

    async fn settle(&self, owner: &str, outcomes: Vec<(MailId, Delivered)>) -> StoreResult<Vec<OutboxMail>> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let mut w = self.write_tx(&mut client).await?;
        let now = w.now();
        let mut settled = Vec::new();
        for (id, outcome) in outcomes {
            let s = outcome.settled(now);
            let tried = s.tried.min(i32::MAX as u32) as i32;
            let changed = w
                .tx()
                .execute(
                    "UPDATE mail_outbox SET status = $4, due_at = $5, relay_answer = $6, attempts = attempts + $7, sent_at = $8,
                        lease_owner = NULL, updated_at = $9
                     WHERE workspace_id = $1 AND id = $2 AND status = 'sending' AND lease_owner = $3",
                    &[&ws, &id, &owner, &s.status, &s.due_at, &s.answer, &tried, &s.sent_at, &now],
                )
                .await
                .map_err(error)?;
            if changed == 1 {
                let row = mail(w.tx(), ws, id).await?;
                w.record(None, Event::mail(&row)).await?;
                settled.push(row);
            }
        }
        if settled.is_empty() {
            w.exempt("every lease had passed to another worker: nothing changed");
        }
        w.commit().await?;
        Ok(settled)
    }

    async fn next_due(&self) -> StoreResult<Option<Millis>> {
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, self.workspace_id(), false).await?;
        let row = tx
            .query_one("SELECT MIN(due_at) FROM mail_outbox WHERE workspace_id = $1 AND due_at IS NOT NULL", &[&self.workspace_id()])
            .await
            .map_err(error)?;
        row.try_get(0).map_err(error)
    }

    async fn ticket_mail(&self, ticket: TicketId) -> StoreResult<Vec<OutboxMail>> {
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, self.workspace_id(), false).await?;
        let rows = tx
            .query(
                &format!(
                    "SELECT {MAIL_COLS} FROM mail_outbox WHERE workspace_id = $1 AND ticket_id = $2 ORDER BY created_at, source_sync_id"
                ),
                &[&self.workspace_id(), &ticket],
            )
            .await
            .map_err(error)?;
        rows.iter().map(mail_from_row).collect()
    }

    async fn threads(&self, message_ids: Vec<String>) -> StoreResult<Vec<(String, TicketId)>> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, ws, false).await?;
        let rows = tx
            .query(
                "SELECT m.id, (SELECT t.id FROM tickets t WHERE t.workspace_id = $1 AND t.deleted_at IS NULL AND t.id IN (
                        SELECT ticket_id FROM mail_outbox WHERE workspace_id = $1 AND message_id = m.id
                        UNION SELECT ticket_id FROM mail_inbound WHERE workspace_id = $1 AND message_id = m.id AND ticket_id IS NOT NULL)
                     LIMIT 1)
                 FROM unnest($2::text[]) WITH ORDINALITY AS m(id, n) ORDER BY m.n",
                &[&ws, &message_ids],
            )
            .await
            .map_err(error)?;
        let mut found = Vec::new();
        for row in rows {
            let ticket: Option<TicketId> = row.try_get(1).map_err(error)?;
            if let Some(ticket) = ticket {
                found.push((row.try_get(0).map_err(error)?, ticket));
            }
        }
        Ok(found)
    }

    async fn ticket_by_number(&self, number: i64) -> StoreResult<Option<Ticket>> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, ws, false).await?;
        let row = tx
            .query_opt(
                &format!("SELECT {TICKET_COLS} FROM tickets t WHERE t.workspace_id = $1 AND t.number = $2 AND t.deleted_at IS NULL"),
                &[&ws, &number],
            )
            .await
            .map_err(error)?;
        row.as_ref().map(ticket_from_row).transpose()
    }

    async fn received(&self, dedupe_key: &str) -> StoreResult<Option<InboundRecord>> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, ws, false).await?;
        let row = tx
            .query_opt(&format!("SELECT {INBOUND_COLS} FROM mail_inbound WHERE workspace_id = $1 AND dedupe_key = $2"), &[&ws, &dedupe_key])
            .await
            .map_err(error)?;
        row.as_ref().map(inbound_from_row).transpose()
    }

    async fn file(&self, message: InboundMessage) -> StoreResult<Filed> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let mut w = self.write_tx(&mut client).await?;
        let earlier = w
            .tx()
            .query_opt(
                &format!("SELECT {INBOUND_COLS} FROM mail_inbound WHERE workspace_id = $1 AND dedupe_key = $2"),
                &[&ws, &message.dedupe_key],
            )
            .await
            .map_err(error)?;
        if let Some(row) = earlier {
            let record = inbound_from_row(&row)?;
            w.exempt("a message filed before: nothing is written again");
            w.commit().await?;
            return Ok(Filed { record, new: false });
        }
        let (filing, unfiled) = message.split();
        let (outcome, detail, ticket_id, comment_id) = match filing {
            Filing::NewTicket { requester, title, body } => {
                let ticket = insert_ticket(&mut w, ws, requester, NewTicket::opened_by(requester, title)).await?;
                let comment = insert_comment(&mut w, ws, requester, ticket.id, body, false).await?;
                (InboundOutcome::Ticket, None, Some(ticket.id), Some(comment.id))
            }
            Filing::Comment { ticket, author, body } => {
                visible_ticket(w.tx(), ws, None, ticket).await?.ok_or(StoreError::NotFound)?;
                let comment = insert_comment(&mut w, ws, author, ticket, body, false).await?;
                (InboundOutcome::Comment, None, Some(ticket), Some(comment.id))
            }
            Filing::Ignored { why } => (InboundOutcome::Ignored, Some(why), None, None),
            Filing::Bounce { returned, answer } => {
                let failed = match returned {
                    Some(id) => fail_returned(&mut w, ws, &id, &answer).await?,
                    None => None,
                };
                (InboundOutcome::Bounce, Some(answer), failed.map(|m| m.ticket_id), None)
            }
        };
        let record = unfiled.filed(outcome, detail, ticket_id, comment_id, w.now());
        insert_inbound(w.tx(), ws, &record).await?;
        if comment_id.is_none() {
            w.record(None, Event::inbound(&record)).await?;
        }
        w.commit().await?;
        Ok(Filed { record, new: true })
    }

    async fn attachments_filed(&self, dedupe_key: &str) -> StoreResult<()> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let mut w = self.write_tx(&mut client).await?;
        w.exempt("bookkeeping: an incoming message's attachments are stored (their own events say so)");
        w.tx()
            .execute("UPDATE mail_inbound SET attachments_done = true WHERE workspace_id = $1 AND dedupe_key = $2", &[&ws, &dedupe_key])
            .await
            .map_err(error)?;
        w.commit().await
    }

    async fn received_from(&self, sender: &str, since: Millis) -> StoreResult<u64> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, ws, false).await?;
        let row = tx
            .query_one(
                "SELECT COUNT(*) FROM mail_inbound WHERE workspace_id = $1 AND sender = $2 AND received_at >= $3",
                &[&ws, &sender, &since],
            )
            .await
            .map_err(error)?;
        Ok(row.try_get::<_, i64>(0).map_err(error)? as u64)
    }
}
