//! Mail channels in the workspace's `tenant.db`.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::consumers::advance_watermark;
use super::error;
use super::log::WriteTx;
use super::tenant::{SqliteTenant, TICKET_COLS, insert_comment, insert_ticket, ticket_from_row, visible_ticket};
use crate::store::mail::*;
use crate::store::{Advance, Event, Millis, NewTicket, Role, StoreError, StoreResult, Ticket, TicketId, UserId};

pub(super) const CHANNEL_COLS: &str = "id, settings, imap_password, smtp_password, created_at, updated_at";

pub(super) fn channel_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ChannelRecord> {
    let settings: String = row.get(1)?;
    Ok(ChannelRecord {
        id: row.get(0)?,
        settings: serde_json::from_str(&settings)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e)))?,
        imap_password: row.get(2)?,
        smtp_password: row.get(3)?,
        created_at: row.get(4)?,
        updated_at: row.get(5)?,
    })
}

fn channel(conn: &Connection, id: ChannelId) -> StoreResult<Option<ChannelRecord>> {
    conn.prepare_cached(&format!("SELECT {CHANNEL_COLS} FROM mail_channels WHERE id = ?1"))
        .and_then(|mut stmt| stmt.query_row(params![id], channel_from_row).optional())
        .map_err(error)
}

pub(super) const INBOUND_COLS: &str =
    "dedupe_key, channel_id, message_id, sender, subject, outcome, detail, ticket_id, comment_id, attachments_done, received_at";

pub(super) fn inbound_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<InboundRecord> {
    Ok(InboundRecord {
        dedupe_key: row.get(0)?,
        channel_id: row.get(1)?,
        message_id: row.get(2)?,
        sender: row.get(3)?,
        subject: row.get(4)?,
        outcome: row.get(5)?,
        detail: row.get(6)?,
        ticket_id: row.get(7)?,
        comment_id: row.get(8)?,
        attachments_done: row.get(9)?,
        received_at: row.get(10)?,
    })
}

fn inbound(conn: &Connection, dedupe_key: &str) -> StoreResult<Option<InboundRecord>> {
    conn.prepare_cached(&format!("SELECT {INBOUND_COLS} FROM mail_inbound WHERE dedupe_key = ?1"))
        .and_then(|mut stmt| stmt.query_row(params![dedupe_key], inbound_from_row).optional())
        .map_err(error)
}

/// Writes an incoming message's record (filed now, or moved with its workspace).
pub(super) fn insert_inbound(conn: &Connection, r: &InboundRecord) -> StoreResult<()> {
    conn.prepare_cached(&format!("INSERT INTO mail_inbound ({INBOUND_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"))
        .and_then(|mut stmt| {
            stmt.execute(params![
                r.dedupe_key,
                r.channel_id,
                r.message_id,
                r.sender,
                r.subject,
                r.outcome,
                r.detail,
                r.ticket_id,
                r.comment_id,
                r.attachments_done,
                r.received_at
            ])
        })
        .map_err(error)?;
    Ok(())
}

/// Fails the outbox mail a bounce returns (if it is ours and not failed already).
fn fail_returned(tx: &mut WriteTx<'_>, message_id: &str, answer: &str) -> StoreResult<Option<OutboxMail>> {
    let now = tx.now();
    let id: Option<MailId> = tx
        .prepare_cached(
            "UPDATE mail_outbox SET status = 'failed', due_at = NULL, lease_owner = NULL, relay_answer = ?2, updated_at = ?3
             WHERE message_id = ?1 AND status <> 'failed' RETURNING id",
        )
        .and_then(|mut stmt| stmt.query_row(params![message_id, answer, now], |r| r.get(0)).optional())
        .map_err(error)?;
    let Some(id) = id else { return Ok(None) };
    let row = mail(tx, id)?;
    tx.record(None, Event::mail(&row))?;
    Ok(Some(row))
}

/// The store's error for a write, with a unique address named as such.
fn address_taken(err: rusqlite::Error) -> StoreError {
    match error(err) {
        StoreError::Conflict(_) => StoreError::Conflict(ADDRESS_TAKEN.into()),
        other => other,
    }
}

fn write_channel(tx: &mut WriteTx<'_>, actor: UserId, c: &ChannelRecord, created: bool) -> StoreResult<()> {
    let settings = serde_json::to_string(&c.settings).map_err(StoreError::internal)?;
    let address = c.settings.address_key();
    let changed = if created {
        tx.prepare_cached(
            "INSERT INTO mail_channels (id, address, settings, imap_password, smtp_password, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut stmt| stmt.execute(params![c.id, address, settings, c.imap_password, c.smtp_password, c.created_at, c.updated_at]))
    } else {
        tx.prepare_cached(
            "UPDATE mail_channels SET address = ?2, settings = ?3, imap_password = ?4, smtp_password = ?5, updated_at = ?6
             WHERE id = ?1",
        )
        .and_then(|mut stmt| stmt.execute(params![c.id, address, settings, c.imap_password, c.smtp_password, c.updated_at]))
    }
    .map_err(address_taken)?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    tx.record(Some(actor), Event::mail_channel(&MailChannel::from(c), created))?;
    Ok(())
}

pub(super) const MAIL_COLS: &str = "id, ticket_id, comment_id, channel_id, message_id, mail_to, subject, status, attempts, due_at, \
     relay_answer, created_at, updated_at, sent_at";

pub(super) fn mail_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxMail> {
    let status: MailStatus = row.get(7)?;
    let due: Option<Millis> = row.get(9)?;
    Ok(OutboxMail {
        id: row.get(0)?,
        ticket_id: row.get(1)?,
        comment_id: row.get(2)?,
        channel_id: row.get(3)?,
        message_id: row.get(4)?,
        to: row.get(5)?,
        subject: row.get(6)?,
        status,
        attempts: row.get::<_, i64>(8)?.clamp(0, u32::MAX as i64) as u32,
        // A sending mail's due time is its lease's end, not a next attempt.
        next_attempt_at: if matches!(status, MailStatus::Queued | MailStatus::Retrying) { due } else { None },
        relay_answer: row.get(10)?,
        created_at: row.get(11)?,
        updated_at: row.get(12)?,
        sent_at: row.get(13)?,
    })
}

fn mail(conn: &Connection, id: MailId) -> StoreResult<OutboxMail> {
    conn.prepare_cached(&format!("SELECT {MAIL_COLS} FROM mail_outbox WHERE id = ?1"))
        .and_then(|mut stmt| stmt.query_row(params![id], mail_from_row))
        .map_err(error)
}

/// What an item's mail is composed from, read inside the write.
fn mail_context(conn: &Connection, sync_id: i64, outgoing: Outgoing, channel: &Option<ChannelRecord>) -> StoreResult<Option<MailContext>> {
    let ticket: Option<(i64, String, UserId)> = conn
        .prepare_cached("SELECT number, title, requester_id FROM tickets WHERE id = ?1 AND deleted_at IS NULL")
        .and_then(|mut stmt| stmt.query_row(params![outgoing.ticket()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional())
        .map_err(error)?;
    let Some((ticket_number, ticket_title, requester)) = ticket else { return Ok(None) };
    let member = |user: Option<UserId>| -> StoreResult<Option<MailMember>> {
        let Some(user) = user else { return Ok(None) };
        conn.prepare_cached("SELECT email, name, role FROM members WHERE user_id = ?1")
            .and_then(|mut stmt| {
                stmt.query_row(params![user], |r| {
                    Ok(MailMember { email: r.get(0)?, name: r.get(1)?, staff: r.get::<_, Role>(2)? != Role::Requester })
                })
                .optional()
            })
            .map_err(error)
    };
    Ok(Some(MailContext {
        sync_id,
        ticket_number,
        ticket_title,
        recipient: member(Some(outgoing.recipient(requester)))?,
        actor: member(outgoing.actor())?,
        channel: channel.clone(),
        thread: thread(conn, outgoing.ticket())?,
        outgoing,
    }))
}

/// The `Message-ID`s of the ticket's thread with its requester (our reply mails and the
/// messages filed on it), oldest first.
fn thread(conn: &Connection, ticket: TicketId) -> StoreResult<Vec<String>> {
    let ids = |order: &str, limit: usize| -> StoreResult<Vec<String>> {
        conn.prepare_cached(&format!(
            "SELECT message_id FROM (
                SELECT * FROM (SELECT message_id, created_at AS at, source_sync_id AS n FROM mail_outbox
                    WHERE ticket_id = ?1 AND comment_id IS NOT NULL ORDER BY created_at {order}, source_sync_id {order} LIMIT ?2)
                UNION ALL
                SELECT * FROM (SELECT message_id, received_at, 0 FROM mail_inbound
                    WHERE ticket_id = ?1 AND comment_id IS NOT NULL AND message_id IS NOT NULL ORDER BY received_at {order} LIMIT ?2))
             ORDER BY at {order}, n {order} LIMIT ?2"
        ))
        .and_then(|mut stmt| stmt.query_map(params![ticket, limit as i64], |r| r.get(0))?.collect::<Result<Vec<String>, _>>())
        .map_err(error)
    };
    Ok(trimmed_thread(ids("ASC", 1)?, ids("DESC", THREAD_REFERENCES - 1)?))
}

/// The channel replies go out through: the first enabled one.
fn sending_channel(conn: &Connection) -> StoreResult<Option<ChannelRecord>> {
    let channels = conn
        .prepare_cached(&format!("SELECT {CHANNEL_COLS} FROM mail_channels ORDER BY created_at, id"))
        .and_then(|mut stmt| stmt.query_map([], channel_from_row)?.collect::<Result<Vec<_>, _>>())
        .map_err(error)?;
    Ok(channels.into_iter().find(|c| c.settings.enabled))
}

#[async_trait]
impl MailStore for SqliteTenant {
    async fn channels(&self) -> StoreResult<Vec<ChannelRecord>> {
        self.read(|conn| {
            conn.prepare_cached(&format!("SELECT {CHANNEL_COLS} FROM mail_channels ORDER BY created_at, id"))
                .and_then(|mut stmt| stmt.query_map([], channel_from_row)?.collect::<Result<Vec<_>, _>>())
                .map_err(error)
        })
        .await
    }

    async fn channel(&self, id: ChannelId) -> StoreResult<Option<ChannelRecord>> {
        self.read(move |conn| channel(conn, id)).await
    }

    async fn create_channel(&self, actor: UserId, channel: &ChannelRecord) -> StoreResult<()> {
        let channel = channel.clone();
        self.write(move |tx| write_channel(tx, actor, &channel, true)).await
    }

    async fn update_channel(&self, actor: UserId, channel: &ChannelRecord) -> StoreResult<()> {
        let channel = channel.clone();
        self.write(move |tx| write_channel(tx, actor, &channel, false)).await
    }

    async fn delete_channel(&self, actor: UserId, id: ChannelId) -> StoreResult<()> {
        self.write(move |tx| {
            let removed = channel(tx, id)?.ok_or(StoreError::NotFound)?;
            tx.prepare_cached("DELETE FROM mail_channels WHERE id = ?1").and_then(|mut stmt| stmt.execute(params![id])).map_err(error)?;
            tx.record(Some(actor), Event::mail_channel_deleted(&ChannelRemoved { id, address: removed.settings.address }))?;
            Ok(())
        })
        .await
    }

    async fn enqueue(&self, advance: Advance, items: Vec<(i64, Outgoing)>, mut compose: Composer) -> StoreResult<usize> {
        self.write(move |tx| {
            let channel = sending_channel(tx)?;
            let mut queued = 0;
            for (sync_id, outgoing) in items {
                let done: bool = tx
                    .prepare_cached("SELECT EXISTS (SELECT 1 FROM mail_outbox WHERE source_sync_id = ?1)")
                    .and_then(|mut stmt| stmt.query_row(params![sync_id], |r| r.get(0)))
                    .map_err(error)?;
                if done {
                    continue;
                }
                let Some(context) = mail_context(tx, sync_id, outgoing, &channel)? else { continue };
                let Some(new) = compose(&context).map_err(|e| StoreError::invalid("mail", e))? else { continue };
                let now = tx.now();
                tx.prepare_cached(
                    "INSERT INTO mail_outbox (id, ticket_id, comment_id, channel_id, source_sync_id, message_id, mail_from, mail_to,
                        subject, message, status, attempts, due_at, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'queued', 0, ?11, ?11, ?11)",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        new.id,
                        new.ticket_id,
                        new.comment_id,
                        new.channel_id,
                        new.source_sync_id,
                        new.message_id,
                        new.from,
                        new.to,
                        new.subject,
                        new.message,
                        now
                    ])
                })
                .map_err(error)?;
                let row = mail(tx, new.id)?;
                tx.record(None, Event::mail(&row))?;
                queued += 1;
            }
            if queued == 0 {
                tx.exempt("bookkeeping: the mail consumer's watermark, for a page that sends nothing");
            }
            advance_watermark(tx, advance)?;
            Ok(queued)
        })
        .await
    }

    async fn claim(&self, owner: &str, now: Millis, lease_until: Millis, limit: usize) -> StoreResult<Vec<ClaimedMail>> {
        let owner = owner.to_string();
        // Inside the one write transaction (BEGIN IMMEDIATE): no other claim runs between
        // the read and the update.
        self.write(move |tx| {
            let due: Vec<MailId> = tx
                .prepare_cached("SELECT id FROM mail_outbox WHERE due_at IS NOT NULL AND due_at <= ?1 ORDER BY due_at LIMIT ?2")
                .and_then(|mut stmt| stmt.query_map(params![now, limit as i64], |r| r.get(0))?.collect::<Result<Vec<_>, _>>())
                .map_err(error)?;
            if due.is_empty() {
                tx.exempt("nothing was due: no mail changed");
            }
            let mut claimed = Vec::new();
            for id in due {
                tx.prepare_cached(
                    "UPDATE mail_outbox SET status = 'sending', due_at = ?2, lease_owner = ?3, updated_at = ?4 WHERE id = ?1",
                )
                .and_then(|mut stmt| stmt.execute(params![id, lease_until, owner, tx.now()]))
                .map_err(error)?;
                let row = mail(tx, id)?;
                let (from, message): (String, Vec<u8>) = tx
                    .prepare_cached("SELECT mail_from, message FROM mail_outbox WHERE id = ?1")
                    .and_then(|mut stmt| stmt.query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?))))
                    .map_err(error)?;
                tx.record(None, Event::mail(&row))?;
                claimed.push(ClaimedMail { mail: row, from, message });
            }
            Ok(claimed)
        })
        .await
    }

    async fn settle(&self, owner: &str, outcomes: Vec<(MailId, Delivered)>) -> StoreResult<Vec<OutboxMail>> {
        let owner = owner.to_string();
        self.write(move |tx| {
            let now = tx.now();
            let mut settled = Vec::new();
            for (id, outcome) in outcomes {
                let s = outcome.settled(now);
                let changed = tx
                    .prepare_cached(
                        "UPDATE mail_outbox SET status = ?3, due_at = ?4, relay_answer = ?5, attempts = attempts + ?6, sent_at = ?7,
                            lease_owner = NULL, updated_at = ?8
                         WHERE id = ?1 AND status = 'sending' AND lease_owner = ?2",
                    )
                    .and_then(|mut stmt| stmt.execute(params![id, owner, s.status, s.due_at, s.answer, s.tried, s.sent_at, now]))
                    .map_err(error)?;
                if changed == 1 {
                    let row = mail(tx, id)?;
                    tx.record(None, Event::mail(&row))?;
                    settled.push(row);
                }
            }
            if settled.is_empty() {
                tx.exempt("every lease had passed to another worker: nothing changed");
            }
            Ok(settled)
        })
        .await
    }

    async fn next_due(&self) -> StoreResult<Option<Millis>> {
        self.read(|conn| {
            conn.prepare_cached("SELECT MIN(due_at) FROM mail_outbox WHERE due_at IS NOT NULL")
                .and_then(|mut stmt| stmt.query_row([], |r| r.get(0)))
                .map_err(error)
        })
        .await
    }

    async fn ticket_mail(&self, ticket: TicketId) -> StoreResult<Vec<OutboxMail>> {
        self.read(move |conn| {
            conn.prepare_cached(&format!("SELECT {MAIL_COLS} FROM mail_outbox WHERE ticket_id = ?1 ORDER BY created_at, source_sync_id"))
                .and_then(|mut stmt| stmt.query_map(params![ticket], mail_from_row)?.collect::<Result<Vec<_>, _>>())
                .map_err(error)
        })
        .await
    }

    async fn threads(&self, message_ids: Vec<String>) -> StoreResult<Vec<(String, TicketId)>> {
        self.read(move |conn| {
            let mut found = Vec::new();
            for id in message_ids {
                let ticket: Option<TicketId> = conn
                    .prepare_cached(
                        "SELECT t.id FROM tickets t WHERE t.deleted_at IS NULL AND t.id IN (
                            SELECT ticket_id FROM mail_outbox WHERE message_id = ?1
                            UNION SELECT ticket_id FROM mail_inbound WHERE message_id = ?1 AND ticket_id IS NOT NULL)
                         LIMIT 1",
                    )
                    .and_then(|mut stmt| stmt.query_row(params![id], |r| r.get(0)).optional())
                    .map_err(error)?;
                if let Some(ticket) = ticket {
                    found.push((id, ticket));
                }
            }
            Ok(found)
        })
        .await
    }

    async fn ticket_by_number(&self, number: i64) -> StoreResult<Option<Ticket>> {
        self.read(move |conn| {
            conn.prepare_cached(&format!("SELECT {TICKET_COLS} FROM tickets t WHERE t.number = ?1 AND t.deleted_at IS NULL"))
                .and_then(|mut stmt| stmt.query_row(params![number], ticket_from_row).optional())
                .map_err(error)
        })
        .await
    }

    async fn received(&self, dedupe_key: &str) -> StoreResult<Option<InboundRecord>> {
        let key = dedupe_key.to_string();
        self.read(move |conn| inbound(conn, &key)).await
    }

    async fn file(&self, message: InboundMessage) -> StoreResult<Filed> {
        self.write(move |tx| {
            if let Some(record) = inbound(tx, &message.dedupe_key)? {
                tx.exempt("a message filed before: nothing is written again");
                return Ok(Filed { record, new: false });
            }
            let (filing, unfiled) = message.split();
            let (outcome, detail, ticket_id, comment_id) = match filing {
                Filing::NewTicket { requester, title, body } => {
                    let ticket = insert_ticket(tx, requester, NewTicket::opened_by(requester, title))?;
                    let comment = insert_comment(tx, requester, ticket.id, body, false)?;
                    (InboundOutcome::Ticket, None, Some(ticket.id), Some(comment.id))
                }
                Filing::Comment { ticket, author, body } => {
                    visible_ticket(tx, None, ticket)?.ok_or(StoreError::NotFound)?;
                    let comment = insert_comment(tx, author, ticket, body, false)?;
                    (InboundOutcome::Comment, None, Some(ticket), Some(comment.id))
                }
                Filing::Ignored { why } => (InboundOutcome::Ignored, Some(why), None, None),
                Filing::Bounce { returned, answer } => {
                    let failed = match returned {
                        Some(id) => fail_returned(tx, &id, &answer)?,
                        None => None,
                    };
                    (InboundOutcome::Bounce, Some(answer), failed.map(|m| m.ticket_id), None)
                }
            };
            let record = unfiled.filed(outcome, detail, ticket_id, comment_id, tx.now());
            insert_inbound(tx, &record)?;
            if comment_id.is_none() {
                tx.record(None, Event::inbound(&record))?;
            }
            Ok(Filed { record, new: true })
        })
        .await
    }

    async fn attachments_filed(&self, dedupe_key: &str) -> StoreResult<()> {
        let key = dedupe_key.to_string();
        self.write(move |tx| {
            tx.exempt("bookkeeping: an incoming message's attachments are stored (their own events say so)");
            tx.execute("UPDATE mail_inbound SET attachments_done = 1 WHERE dedupe_key = ?1", params![key]).map_err(error)?;
            Ok(())
        })
        .await
    }

    async fn received_from(&self, sender: &str, since: Millis) -> StoreResult<u64> {
        let sender = sender.to_string();
        self.read(move |conn| {
            conn.prepare_cached("SELECT COUNT(*) FROM mail_inbound WHERE sender = ?1 AND received_at >= ?2")
                .and_then(|mut stmt| stmt.query_row(params![sender, since], |r| r.get::<_, i64>(0)))
                .map(|n| n as u64)
                .map_err(error)
        })
        .await
    }
}
