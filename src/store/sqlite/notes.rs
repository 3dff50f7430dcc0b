//! Collaborative notes in SQLite: `notes` (snapshot, text, counters) and `note_updates`
//! (each update's bytes under the sync_id of its event) in the workspace's `tenant.db`.

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};

use super::error;
use super::tenant::{SqliteTenant, visible_ticket};
use crate::store::notes::*;
use crate::store::{Event, StoreError, StoreResult, TicketId};

fn update_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<NoteUpdate> {
    let bytes: Vec<u8> = row.get(3)?;
    Ok(NoteUpdate { seq: row.get(0)?, ticket_id: row.get(1)?, author: row.get(2)?, bytes: Bytes::from(bytes) })
}

pub(super) const NOTE_COLS: &str = "n.ticket_id, n.snapshot, n.snapshot_seq, n.text, n.size, n.pending_updates, n.updated_at";

pub(super) fn note_record_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<NoteRecord> {
    let snapshot: Option<Vec<u8>> = row.get(1)?;
    Ok(NoteRecord {
        ticket_id: row.get(0)?,
        snapshot: snapshot.map(|b| Base64Bytes(Bytes::from(b))),
        snapshot_seq: row.get(2)?,
        text: row.get(3)?,
        size: row.get::<_, i64>(4)?.max(0) as u64,
        pending_updates: row.get::<_, i64>(5)?.max(0) as u64,
        updated_at: row.get(6)?,
    })
}

pub(super) fn summary_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<NoteSummary> {
    Ok(NoteSummary { ticket_id: row.get(0)?, text: row.get(1)?, size: row.get::<_, i64>(2)?.max(0) as u64, updated_at: row.get(3)? })
}

pub(super) const SUMMARY_COLS: &str = "n.ticket_id, n.text, n.size, n.updated_at";

fn load(conn: &mut Connection, ticket: TicketId) -> StoreResult<StoredNote> {
    // One snapshot of the file: the snapshot row and the updates after it agree.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred).map_err(error)?;
    let head: Option<(Option<Vec<u8>>, i64)> = tx
        .prepare_cached("SELECT snapshot, snapshot_seq FROM notes WHERE ticket_id = ?1")
        .and_then(|mut stmt| stmt.query_row(params![ticket], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(error)?;
    let Some((snapshot, snapshot_seq)) = head else { return Ok(StoredNote::default()) };
    let updates = tx
        .prepare_cached("SELECT seq, ticket_id, author_id, bytes FROM note_updates WHERE ticket_id = ?1 AND seq > ?2 ORDER BY seq")
        .and_then(|mut stmt| stmt.query_map(params![ticket, snapshot_seq], update_from_row)?.collect::<Result<Vec<_>, _>>())
        .map_err(error)?;
    Ok(StoredNote { snapshot: snapshot.map(Bytes::from), snapshot_seq, updates })
}

/// Updates deleted per transaction after a compaction.
const COMPACT_CHUNK: usize = 2_000;

/// Deletes up to [`COMPACT_CHUNK`] of the updates a snapshot as of `through` covers.
fn delete_covered(tx: &mut super::log::WriteTx<'_>, ticket: TicketId, through: i64) -> StoreResult<usize> {
    tx.exempt("compaction: removes updates its snapshot already holds");
    tx.prepare_cached(
        "DELETE FROM note_updates WHERE seq IN (SELECT seq FROM note_updates WHERE ticket_id = ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3)",
    )
    .and_then(|mut stmt| stmt.execute(params![ticket, through, COMPACT_CHUNK as i64]))
    .map_err(error)
}

#[async_trait]
impl NoteStore for SqliteTenant {
    /// One instance serves a SQLite data directory: presence stays in its process.
    fn shares_presence(&self) -> bool {
        false
    }

    async fn share_presence(&self, _ticket: TicketId, _instance: uuid::Uuid, _entries: Vec<PresenceEntry>) -> StoreResult<()> {
        Ok(())
    }

    async fn shared_presence(&self, _ticket: TicketId, _instance: uuid::Uuid, _since: i64) -> StoreResult<SharedPresence> {
        Ok(SharedPresence::default())
    }

    async fn append(&self, ticket: TicketId, updates: Vec<NewNoteUpdate>) -> StoreResult<Vec<i64>> {
        self.write(move |tx| {
            visible_ticket(tx, None, ticket)?.ok_or(StoreError::NotFound)?;
            let now = tx.now();
            let mut seqs = Vec::with_capacity(updates.len());
            let mut added = 0i64;
            for update in &updates {
                let change = NoteChange { ticket_id: ticket, author_id: update.author, bytes: update.bytes.len() as u64 };
                let seq = tx.record(Some(update.author), Event::note_updated(&change))?;
                tx.prepare_cached("INSERT INTO note_updates (seq, ticket_id, author_id, bytes) VALUES (?1, ?2, ?3, ?4)")
                    .and_then(|mut stmt| stmt.execute(params![seq, ticket, update.author, update.bytes.as_ref()]))
                    .map_err(error)?;
                added += update.bytes.len() as i64;
                seqs.push(seq);
            }
            tx.prepare_cached(
                "INSERT INTO notes (ticket_id, size, pending_updates, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (ticket_id) DO UPDATE SET size = size + excluded.size,
                 pending_updates = pending_updates + excluded.pending_updates, updated_at = excluded.updated_at",
            )
            .and_then(|mut stmt| stmt.execute(params![ticket, added, updates.len() as i64, now]))
            .map_err(error)?;
            Ok(seqs)
        })
        .await
    }

    async fn load(&self, ticket: TicketId) -> StoreResult<StoredNote> {
        self.read(move |conn| load(conn, ticket)).await
    }

    async fn updates(&self, seqs: Vec<i64>) -> StoreResult<Vec<NoteUpdate>> {
        self.read(move |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT seq, ticket_id, author_id, bytes FROM note_updates WHERE seq = ?1").map_err(error)?;
            let mut out = Vec::with_capacity(seqs.len());
            for seq in seqs {
                out.extend(stmt.query_row(params![seq], update_from_row).optional().map_err(error)?);
            }
            out.sort_by_key(|u| u.seq);
            Ok(out)
        })
        .await
    }

    async fn compact(&self, c: Compaction) -> StoreResult<bool> {
        let ticket = c.ticket;
        let through = c.through;
        let written = self
            .write(move |tx| {
                tx.exempt("compaction: the same content in fewer bytes, nothing a client sees changes");
                let base: Option<i64> = tx
                    .prepare_cached("SELECT snapshot_seq FROM notes WHERE ticket_id = ?1")
                    .and_then(|mut stmt| stmt.query_row(params![c.ticket], |r| r.get(0)).optional())
                    .map_err(error)?;
                let covered: i64 = tx
                    .prepare_cached("SELECT count(*) FROM note_updates WHERE ticket_id = ?1 AND seq > ?2 AND seq <= ?3")
                    .and_then(|mut stmt| stmt.query_row(params![c.ticket, c.base_seq, c.through], |r| r.get(0)))
                    .map_err(error)?;
                if base != Some(c.base_seq) || covered != c.covered as i64 {
                    return Ok(false);
                }
                let (pending, rest): (i64, i64) = tx
                    .prepare_cached("SELECT count(*), COALESCE(SUM(length(bytes)), 0) FROM note_updates WHERE ticket_id = ?1 AND seq > ?2")
                    .and_then(|mut stmt| stmt.query_row(params![c.ticket, c.through], |r| Ok((r.get(0)?, r.get(1)?))))
                    .map_err(error)?;
                tx.prepare_cached(
                    "UPDATE notes SET snapshot = ?2, snapshot_seq = ?3, text = ?4, size = ?5, pending_updates = ?6 WHERE ticket_id = ?1",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![c.ticket, c.snapshot.as_ref(), c.through, c.text, c.snapshot.len() as i64 + rest, pending])
                })
                .map_err(error)?;
                Ok(true)
            })
            .await?;
        if written {
            // The snapshot covers them now (loading reads only what comes after it): they go
            // in short transactions, so that the workspace's writes never wait long behind.
            while self.write(move |tx| delete_covered(tx, ticket, through)).await? == COMPACT_CHUNK {}
        }
        Ok(written)
    }

    async fn set_text(&self, ticket: TicketId, text: String) -> StoreResult<()> {
        self.write(move |tx| {
            let changed = tx
                .prepare_cached("UPDATE notes SET text = ?2 WHERE ticket_id = ?1 AND text <> ?2")
                .and_then(|mut stmt| stmt.execute(params![ticket, text]))
                .map_err(error)?;
            if changed > 0 {
                let change = NoteTextChange { ticket_id: ticket, chars: text.chars().count() as u64 };
                tx.record(None, Event::note_text_updated(&change))?;
            } else {
                // An edit that left the plain text as it was (formatting, say).
                tx.exempt("the note's text was already stored: nothing changed");
            }
            Ok(())
        })
        .await
    }

    async fn needing_compaction(&self, min_updates: u64, limit: usize) -> StoreResult<Vec<TicketId>> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT n.ticket_id FROM notes n JOIN tickets t ON t.id = n.ticket_id
                 WHERE n.pending_updates >= ?1 AND t.deleted_at IS NULL ORDER BY n.pending_updates DESC LIMIT ?2",
            )
            .and_then(|mut stmt| stmt.query_map(params![min_updates as i64, limit as i64], |r| r.get(0))?.collect::<Result<Vec<_>, _>>())
            .map_err(error)
        })
        .await
    }

    async fn summary(&self, ticket: TicketId) -> StoreResult<Option<NoteSummary>> {
        self.read(move |conn| {
            conn.prepare_cached(&format!("SELECT {SUMMARY_COLS} FROM notes n WHERE n.ticket_id = ?1"))
                .and_then(|mut stmt| stmt.query_row(params![ticket], summary_from_row).optional())
                .map_err(error)
        })
        .await
    }
}
