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
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Millis, StoreResult, TicketId, UserId};

/// One stored update: the bytes a client sent (validated by applying them) and where the
/// log put them.
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

/// What bootstrap, the plain-text route and the compaction sweep know of a note without
/// loading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NoteSummary {
    pub ticket_id: TicketId,
    /// The note's text (its shared type's plain text), as of the last projection.
    pub text: String,
    /// Bytes of the encoded document.
    pub size: u64,
    pub updated_at: Millis,
    /// Updates stored after the snapshot: what compaction would fold in.
    #[serde(skip)]
    pub pending_updates: u64,
}

/// One workspace's notes (reached through the workspace's store, as notifications are).
#[async_trait]
pub trait NoteStore: Send + Sync {
    /// Appends `bytes` (already validated) to the note of `ticket`, with its `note.updated`
    /// event, in one transaction; returns the update's sync_id. `NotFound` for a missing or
    /// deleted ticket.
    async fn append_update(&self, author: UserId, ticket: TicketId, bytes: Bytes) -> StoreResult<i64>;

    /// The note's latest snapshot and the updates after it.
    async fn load(&self, ticket: TicketId) -> StoreResult<StoredNote>;

    /// The updates with sync_ids in `seqs` (the relay, reading what the log announced).
    async fn updates(&self, seqs: &[i64]) -> StoreResult<Vec<NoteUpdate>>;

    /// Replaces the updates up to `through` with `snapshot` (the state they produce), and
    /// records the projection `text`: one transaction, no log event (no content changes).
    async fn compact(&self, ticket: TicketId, through: i64, snapshot: Bytes, text: String) -> StoreResult<()>;

    /// Notes with at least `min_updates` updates after their snapshot, for compaction.
    async fn needing_compaction(&self, min_updates: u64, limit: usize) -> StoreResult<Vec<NoteSummary>>;

    /// The note's summary, `None` when it has never been written.
    async fn summary(&self, ticket: TicketId) -> StoreResult<Option<NoteSummary>>;
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
