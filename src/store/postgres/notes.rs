//! Collaborative notes in Postgres: `notes` and `note_updates` under row-level security like
//! all tenant data, each update under the sync_id of its event.

use async_trait::async_trait;
use bytes::Bytes;

use super::error;
use super::log::{self, Bookkeeping};
use super::tenant::{PgTenant, visible_ticket};
use crate::store::notes::*;
use crate::store::{Event, StoreError, StoreResult, TenantStore, TicketId};

pub const SUMMARY_COLS: &str = "n.ticket_id, n.text, n.size, n.updated_at";
pub const NOTE_COLS: &str = "n.ticket_id, n.snapshot, n.snapshot_seq, n.text, n.size, n.pending_updates, n.updated_at";
const UPDATE_COLS: &str = "seq, ticket_id, author_id, bytes";
/// Updates deleted per transaction after a compaction.
const COMPACT_CHUNK: i64 = 2_000;

pub(super) fn summary_from_row(row: &tokio_postgres::Row) -> StoreResult<NoteSummary> {
    let size: i64 = row.try_get(2).map_err(error)?;
    Ok(NoteSummary {
        ticket_id: row.try_get(0).map_err(error)?,
        text: row.try_get(1).map_err(error)?,
        size: size.max(0) as u64,
        updated_at: row.try_get(3).map_err(error)?,
    })
}

pub(super) fn note_record_from_row(row: &tokio_postgres::Row) -> StoreResult<NoteRecord> {
    let snapshot: Option<Vec<u8>> = row.try_get(1).map_err(error)?;
    let size: i64 = row.try_get(4).map_err(error)?;
    let pending: i64 = row.try_get(5).map_err(error)?;
    Ok(NoteRecord {
        ticket_id: row.try_get(0).map_err(error)?,
        snapshot: snapshot.map(|b| Base64Bytes(Bytes::from(b))),
        snapshot_seq: row.try_get(2).map_err(error)?,
        text: row.try_get(3).map_err(error)?,
        size: size.max(0) as u64,
        pending_updates: pending.max(0) as u64,
        updated_at: row.try_get(6).map_err(error)?,
    })
}

pub(super) fn update_from_row(row: &tokio_postgres::Row) -> StoreResult<NoteUpdate> {
    let bytes: Vec<u8> = row.try_get(3).map_err(error)?;
    Ok(NoteUpdate {
        seq: row.try_get(0).map_err(error)?,
        ticket_id: row.try_get(1).map_err(error)?,
        author: row.try_get(2).map_err(error)?,
        bytes: Bytes::from(bytes),
    })
}

/// The database's clock in Unix milliseconds (every instance compares against it).
const DB_NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

#[async_trait]
impl NoteStore for PgTenant {
    /// Several instances may serve a workspace: presence goes through `note_presence`.
    fn shares_presence(&self) -> bool {
        true
    }

    async fn share_presence(&self, ticket: TicketId, instance: uuid::Uuid, entries: Vec<PresenceEntry>) -> StoreResult<()> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        // Not a log write: no head lock, nothing any client syncs.
        let mut b = Bookkeeping::begin(&mut client, ws).await?;
        b.exempt("presence is ephemeral: shared between instances, never in the log");
        let tx = b.tx();
        let clients: Vec<i64> = entries.iter().map(|e| e.client as i64).collect();
        let clocks: Vec<i64> = entries.iter().map(|e| i64::from(e.clock)).collect();
        let states: Vec<&str> = entries.iter().map(|e| e.state.as_str()).collect();
        tx.execute(
            &format!(
                "INSERT INTO note_presence (workspace_id, ticket_id, client_id, instance_id, clock, state, updated_at)
                 SELECT $1, $2, c, $3, k, s, {DB_NOW_MS} FROM unnest($4::bigint[], $5::bigint[], $6::text[]) AS u(c, k, s)
                 ON CONFLICT (workspace_id, ticket_id, client_id) DO UPDATE
                   SET instance_id = EXCLUDED.instance_id, clock = EXCLUDED.clock, state = EXCLUDED.state, updated_at = EXCLUDED.updated_at
                   WHERE note_presence.clock <= EXCLUDED.clock"
            ),
            &[&ws, &ticket, &instance, &clients, &clocks, &states],
        )
        .await
        .map_err(error)?;
        tx.execute(
            &format!("DELETE FROM note_presence WHERE workspace_id = $1 AND ticket_id = $2 AND updated_at < {DB_NOW_MS} - $3"),
            &[&ws, &ticket, &PRESENCE_FORGOTTEN_MS],
        )
        .await
        .map_err(error)?;
        b.commit().await
    }

    async fn shared_presence(&self, ticket: TicketId, instance: uuid::Uuid, since: i64) -> StoreResult<SharedPresence> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, ws, false).await?;
        let now: i64 = tx.query_one(&format!("SELECT {DB_NOW_MS}"), &[]).await.map_err(error)?.try_get(0).map_err(error)?;
        let rows = tx
            .query(
                "SELECT client_id, clock, state FROM note_presence
                 WHERE workspace_id = $1 AND ticket_id = $2 AND updated_at > $3 AND instance_id <> $4",
                &[&ws, &ticket, &since, &instance],
            )
            .await
            .map_err(error)?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            let (client, clock, state): (i64, i64, String) =
                (row.try_get(0).map_err(error)?, row.try_get(1).map_err(error)?, row.try_get(2).map_err(error)?);
            entries.push(PresenceEntry { client: client as u64, clock: u32::try_from(clock).unwrap_or(u32::MAX), state });
        }
        Ok(SharedPresence { entries, now })
    }

    async fn append(&self, ticket: TicketId, updates: Vec<NewNoteUpdate>) -> StoreResult<Vec<i64>> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let mut w = self.write_tx(&mut client).await?;
        visible_ticket(w.tx(), ws, None, ticket).await?.ok_or(StoreError::NotFound)?;
        let mut seqs = Vec::with_capacity(updates.len());
        let mut added = 0i64;
        for update in &updates {
            let change = NoteChange { ticket_id: ticket, author_id: update.author, bytes: update.bytes.len() as u64 };
            let seq = w.record(Some(update.author), Event::note_updated(&change)).await?;
            w.tx()
                .execute(
                    "INSERT INTO note_updates (workspace_id, seq, ticket_id, author_id, bytes) VALUES ($1, $2, $3, $4, $5)",
                    &[&ws, &seq, &ticket, &update.author, &update.bytes.as_ref()],
                )
                .await
                .map_err(error)?;
            added += update.bytes.len() as i64;
            seqs.push(seq);
        }
        let now = w.now();
        w.tx()
            .execute(
                "INSERT INTO notes (workspace_id, ticket_id, size, pending_updates, updated_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (workspace_id, ticket_id) DO UPDATE SET size = notes.size + excluded.size,
                 pending_updates = notes.pending_updates + excluded.pending_updates, updated_at = excluded.updated_at",
                &[&ws, &ticket, &added, &(updates.len() as i64), &now],
            )
            .await
            .map_err(error)?;
        w.commit().await?;
        Ok(seqs)
    }

    async fn load(&self, ticket: TicketId) -> StoreResult<StoredNote> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        // One snapshot: the snapshot row and the updates after it agree.
        let tx = log::read_tx(&mut client, ws, true).await?;
        let Some(head) = tx
            .query_opt("SELECT snapshot, snapshot_seq FROM notes WHERE workspace_id = $1 AND ticket_id = $2", &[&ws, &ticket])
            .await
            .map_err(error)?
        else {
            return Ok(StoredNote::default());
        };
        let snapshot: Option<Vec<u8>> = head.try_get(0).map_err(error)?;
        let snapshot_seq: i64 = head.try_get(1).map_err(error)?;
        let updates = tx
            .query(
                &format!("SELECT {UPDATE_COLS} FROM note_updates WHERE workspace_id = $1 AND ticket_id = $2 AND seq > $3 ORDER BY seq"),
                &[&ws, &ticket, &snapshot_seq],
            )
            .await
            .map_err(error)?
            .iter()
            .map(update_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(StoredNote { snapshot: snapshot.map(Bytes::from), snapshot_seq, updates })
    }

    async fn updates(&self, seqs: Vec<i64>) -> StoreResult<Vec<NoteUpdate>> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, ws, false).await?;
        tx.query(&format!("SELECT {UPDATE_COLS} FROM note_updates WHERE workspace_id = $1 AND seq = ANY($2) ORDER BY seq"), &[&ws, &seqs])
            .await
            .map_err(error)?
            .iter()
            .map(update_from_row)
            .collect()
    }

    async fn compact(&self, c: Compaction) -> StoreResult<bool> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let mut b = Bookkeeping::begin(&mut client, ws).await?;
        b.exempt("compaction: the same content in fewer bytes, nothing a client sees changes");
        // The note row's lock orders this against appends and other compactions of it.
        let base: Option<i64> = b
            .tx()
            .query_opt("SELECT snapshot_seq FROM notes WHERE workspace_id = $1 AND ticket_id = $2 FOR UPDATE", &[&ws, &c.ticket])
            .await
            .map_err(error)?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(error)?;
        let covered: i64 = b
            .tx()
            .query_one(
                "SELECT count(*) FROM note_updates WHERE workspace_id = $1 AND ticket_id = $2 AND seq > $3 AND seq <= $4",
                &[&ws, &c.ticket, &c.base_seq, &c.through],
            )
            .await
            .map_err(error)?
            .try_get(0)
            .map_err(error)?;
        if base != Some(c.base_seq) || covered != c.covered as i64 {
            return Ok(false);
        }
        let rest = b
            .tx()
            .query_one(
                "SELECT count(*), COALESCE(SUM(length(bytes)), 0)::bigint FROM note_updates
                 WHERE workspace_id = $1 AND ticket_id = $2 AND seq > $3",
                &[&ws, &c.ticket, &c.through],
            )
            .await
            .map_err(error)?;
        let pending: i64 = rest.try_get(0).map_err(error)?;
        let rest_bytes: i64 = rest.try_get(1).map_err(error)?;
        b.tx()
            .execute(
                "UPDATE notes SET snapshot = $3, snapshot_seq = $4, text = $5, size = $6, pending_updates = $7
                 WHERE workspace_id = $1 AND ticket_id = $2",
                &[&ws, &c.ticket, &c.snapshot.as_ref(), &c.through, &c.text, &(c.snapshot.len() as i64 + rest_bytes), &pending],
            )
            .await
            .map_err(error)?;
        b.commit().await?;
        // The snapshot covers them now (loading reads only what comes after it): they go in
        // short transactions, so that nothing waits long behind them.
        loop {
            let mut b = Bookkeeping::begin(&mut client, ws).await?;
            b.exempt("compaction: removes updates its snapshot already holds");
            let deleted = b
                .tx()
                .execute(
                    "DELETE FROM note_updates WHERE workspace_id = $1 AND seq IN
                     (SELECT seq FROM note_updates WHERE workspace_id = $1 AND ticket_id = $2 AND seq <= $3 ORDER BY seq LIMIT $4)",
                    &[&ws, &c.ticket, &c.through, &COMPACT_CHUNK],
                )
                .await
                .map_err(error)?;
            b.commit().await?;
            if deleted < COMPACT_CHUNK as u64 {
                break;
            }
        }
        Ok(true)
    }

    async fn set_text(&self, ticket: TicketId, text: String) -> StoreResult<()> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let mut w = self.write_tx(&mut client).await?;
        let changed = w
            .tx()
            .execute("UPDATE notes SET text = $3 WHERE workspace_id = $1 AND ticket_id = $2 AND text <> $3", &[&ws, &ticket, &text])
            .await
            .map_err(error)?;
        if changed > 0 {
            let change = NoteTextChange { ticket_id: ticket, chars: text.chars().count() as u64 };
            w.record(None, Event::note_text_updated(&change)).await?;
        } else {
            // Another instance (holding the same document) stored this text first.
            w.exempt("the note's text was already stored: nothing changed");
        }
        w.commit().await
    }

    async fn needing_compaction(&self, min_updates: u64, limit: usize) -> StoreResult<Vec<TicketId>> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, ws, false).await?;
        tx.query(
            "SELECT n.ticket_id FROM notes n JOIN tickets t ON t.id = n.ticket_id AND t.workspace_id = n.workspace_id
             WHERE n.workspace_id = $1 AND n.pending_updates >= $2 AND t.deleted_at IS NULL ORDER BY n.pending_updates DESC LIMIT $3",
            &[&ws, &(min_updates as i64), &(limit as i64)],
        )
        .await
        .map_err(error)?
        .iter()
        .map(|r| r.try_get(0).map_err(error))
        .collect()
    }

    async fn summary(&self, ticket: TicketId) -> StoreResult<Option<NoteSummary>> {
        let ws = self.workspace_id();
        let mut client = self.client().await?;
        let tx = log::read_tx(&mut client, ws, false).await?;
        tx.query_opt(&format!("SELECT {SUMMARY_COLS} FROM notes n WHERE n.workspace_id = $1 AND n.ticket_id = $2"), &[&ws, &ticket])
            .await
            .map_err(error)?
            .as_ref()
            .map(summary_from_row)
            .transpose()
    }
}
