//! Collaborative ticket notes at the storage boundary: each note is a Yjs document kept as
//! a snapshot plus the raw updates after it, every update in the same transaction as its
//! `note.updated` log event, so the log stays the single order and nothing acknowledged to
//! a client can be lost.
//!
//! - An update's bytes are stored in the backend's own notes table, keyed by the sync_id of
//!   its event; the event carries who and how large, never the bytes (the log and the live
//!   stream stay small; the relay between instances reads the bytes from here).
//! - A snapshot is the document's full encoded state as of a sync_id; compaction writes a
//!   new one and deletes the updates it covers, in one transaction, and changes no content.
//! - Loading a note is its latest snapshot and the updates after it, in log order.
//! - Notes are staff-only, as internal notes are: requesters never reach them, and a deleted
//!   ticket's note is gone with it.
//!
//! The Yjs semantics (applying, merging, the text projection) are not the store's: it keeps
//! opaque bytes in order. `notes/` (the feature) owns the documents, the y-websocket
//! protocol and the relay.

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Event, Millis, StoreResult, TicketId, UserId};

/// Stored presence states older than this are deleted (clients renew theirs every 15 s).
pub const PRESENCE_FORGOTTEN_MS: i64 = 120_000;

/// One Yjs client's presence (an awareness entry): its clock and its state as JSON, `null`
/// when it left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEntry {
    pub client: u64,
    pub clock: u32,
    pub state: String,
}

/// What other instances shared, and the store's clock when it was read.
#[derive(Debug, Clone, Default)]
pub struct SharedPresence {
    pub entries: Vec<PresenceEntry>,
    pub now: i64,
}

/// One update a client sent, validated by applying it, to be stored.
#[derive(Debug, Clone)]
pub struct NewNoteUpdate {
    pub author: UserId,
    pub bytes: Bytes,
}

/// One stored update: the bytes a client sent and where the log put them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteUpdate {
    pub ticket_id: TicketId,
    /// The sync_id of the update's `note.updated` event.
    pub seq: i64,
    pub author: Option<UserId>,
    pub bytes: Bytes,
}

/// A note as it stands in storage: its latest snapshot (if any) and the updates after it.
#[derive(Debug, Clone, Default)]
pub struct StoredNote {
    /// The encoded state as of `snapshot_seq`.
    pub snapshot: Option<Bytes>,
    pub snapshot_seq: i64,
    /// After the snapshot, in log order.
    pub updates: Vec<NoteUpdate>,
}

impl StoredNote {
    /// The newest sync_id this note's content reflects.
    pub fn through(&self) -> i64 {
        self.updates.last().map_or(self.snapshot_seq, |u| u.seq)
    }
}

/// What bootstrap and the plain-text route know of a note without loading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NoteSummary {
    pub ticket_id: TicketId,
    /// The note's plain text, as of its last projection (written within moments of an edit,
    /// and whenever the document closes or is compacted).
    pub text: String,
    /// Bytes the note takes in storage: its snapshot and the updates after it (what
    /// compaction shrinks).
    pub size: u64,
    pub updated_at: Millis,
}

/// A compaction to write: `snapshot` is the state that the note's snapshot as of
/// `base_seq` and its `covered` updates up to `through` produce.
#[derive(Debug, Clone)]
pub struct Compaction {
    pub ticket: TicketId,
    pub base_seq: i64,
    pub through: i64,
    pub covered: u64,
    pub snapshot: Bytes,
    pub text: String,
}

/// The `data` of a `note.updated` event: who changed the note and by how many bytes, never
/// the bytes themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NoteChange {
    pub ticket_id: TicketId,
    pub author_id: UserId,
    /// Size of the update, in bytes.
    pub bytes: u64,
}

impl<'a> Event<'a, NoteChange> {
    /// Notes are for staff only, like internal notes.
    pub fn note_updated(change: &'a NoteChange) -> Self {
        Event {
            kind: "note.updated",
            entity: "note",
            entity_id: change.ticket_id.to_string(),
            data: change,
            ticket: Some(change.ticket_id),
            staff_only: true,
            recipient: None,
        }
    }
}

/// The `data` of a `note.text_updated` event: the note's plain text (its projection, written
/// a moment after the edits that changed it) is now different; read it with
/// [`NoteStore::summary`]. What search indexes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NoteTextChange {
    pub ticket_id: TicketId,
    /// Length of the new text, in characters.
    pub chars: u64,
}

impl<'a> Event<'a, NoteTextChange> {
    /// Staff only, as the note is.
    pub fn note_text_updated(change: &'a NoteTextChange) -> Self {
        Event {
            kind: NOTE_TEXT_UPDATED,
            entity: "note",
            entity_id: change.ticket_id.to_string(),
            data: change,
            ticket: Some(change.ticket_id),
            staff_only: true,
            recipient: None,
        }
    }
}

/// The event kind of a changed text projection.
pub const NOTE_TEXT_UPDATED: &str = "note.text_updated";

/// The event kind the relay between instances reads.
pub const NOTE_UPDATED: &str = "note.updated";

/// One workspace's notes (reached through the workspace's store, as notifications are).
#[async_trait]
pub trait NoteStore: Send + Sync {
    /// Whether other instances may serve this workspace's notes, so presence must be shared
    /// through the store (Postgres); with one instance (SQLite) it never leaves the process.
    fn shares_presence(&self) -> bool;

    /// Records the presence states of clients connected to `instance` (a state of `null`:
    /// the client left), replacing older clocks; drops states nobody refreshed for
    /// [`PRESENCE_FORGOTTEN_MS`].
    async fn share_presence(&self, ticket: TicketId, instance: uuid::Uuid, entries: Vec<PresenceEntry>) -> StoreResult<()>;

    /// The states other instances recorded after `since` (the database's clock, Unix ms),
    /// and the database's clock now.
    async fn shared_presence(&self, ticket: TicketId, instance: uuid::Uuid, since: i64) -> StoreResult<SharedPresence>;

    /// Appends each update to the note of `ticket` with its own `note.updated` event, all in
    /// one transaction; returns their sync_ids in order. `NotFound` for a missing or deleted
    /// ticket.
    async fn append(&self, ticket: TicketId, updates: Vec<NewNoteUpdate>) -> StoreResult<Vec<i64>>;

    /// The note's latest snapshot and the updates after it (empty when never written).
    async fn load(&self, ticket: TicketId) -> StoreResult<StoredNote>;

    /// The updates with these sync_ids (the relay, reading what the log announced), in
    /// order; ones compacted away meanwhile are simply absent.
    async fn updates(&self, seqs: Vec<i64>) -> StoreResult<Vec<NoteUpdate>>;

    /// Makes `compaction.snapshot` (with its text) the note's snapshot, in one transaction
    /// with no log event (no content changes); the updates it covers are then deleted in
    /// short transactions (loading reads only what comes after the snapshot, so one left
    /// behind by a crash is never read, and goes with the next compaction). `false`,
    /// writing nothing, when the note is no longer where the compaction was planned
    /// (another compaction won, or the updates up to `through` are not the ones counted).
    async fn compact(&self, compaction: Compaction) -> StoreResult<bool>;

    /// Records the note's current plain text (a projection of its content) and, when it
    /// differs from what was recorded, a `note.text_updated` event in the same transaction.
    async fn set_text(&self, ticket: TicketId, text: String) -> StoreResult<()>;

    /// Notes of live tickets with at least `min_updates` updates after their snapshot.
    async fn needing_compaction(&self, min_updates: u64, limit: usize) -> StoreResult<Vec<TicketId>>;

    /// The note's summary, `None` when it has never been written.
    async fn summary(&self, ticket: TicketId) -> StoreResult<Option<NoteSummary>>;
}

/// Bytes in an export: base64 in JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base64Bytes(pub Bytes);

impl Serialize for Base64Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Base64Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text.as_bytes()).map(|b| Self(Bytes::from(b))).map_err(serde::de::Error::custom)
    }
}

/// A note's row as stored (export/import only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteRecord {
    pub ticket_id: TicketId,
    pub snapshot: Option<Base64Bytes>,
    pub snapshot_seq: i64,
    pub text: String,
    pub size: u64,
    pub pending_updates: u64,
    pub updated_at: Millis,
}

/// One stored update (export/import only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteUpdateRecord {
    pub seq: i64,
    pub ticket_id: TicketId,
    pub author_id: Option<UserId>,
    pub bytes: Base64Bytes,
}

/// The server's own Yjs client id for the note of `ticket` in `workspace`: a hash of the
/// two ids masked to 53 bits (what a JavaScript number holds exactly), the same on every
/// instance and across restarts, so the server's own edits to a document (compaction
/// writes none; a future server-side edit would) never collide with themselves.
pub fn server_client_id(workspace: super::WorkspaceId, ticket: TicketId) -> u64 {
    let mut input = [0u8; 32];
    input[..16].copy_from_slice(workspace.0.as_bytes());
    input[16..].copy_from_slice(ticket.0.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first) & ((1u64 << 53) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::WorkspaceId;

    #[test]
    fn the_servers_client_id_is_stable_and_fits_in_53_bits() {
        let ws: WorkspaceId = "01a23403-96e1-73d2-a3d1-10953e7fb5cb".parse().unwrap();
        let t: TicketId = "01a23403-95f0-7093-bc55-facd975fd424".parse().unwrap();
        let id = server_client_id(ws, t);
        // Fixed inputs, fixed answer: the same on any instance, after any restart.
        assert_eq!(id, server_client_id(ws, t));
        assert_eq!(id, EXPECTED);
        assert!(id < (1u64 << 53));
        assert_ne!(id, server_client_id(ws, TicketId::new()), "another note, another id");
        for _ in 0..1000 {
            assert!(server_client_id(WorkspaceId::new(), TicketId::new()) < (1u64 << 53));
        }
    }

    /// Recorded once (and computed independently: SHA-256 in Python over the same 32 bytes);
    /// a change here would change every document's server client id.
    const EXPECTED: u64 = 7_289_994_579_720_862;
}
