-- Collaborative notes: one Yjs document per ticket, kept as a snapshot plus the raw updates
-- after it (src/store/notes.rs).

-- One row per note that has ever been written: its latest snapshot (the encoded state as of
-- `snapshot_seq`), the text projection, and what compaction needs to know without reading
-- the updates.
CREATE TABLE notes (
    ticket_id       TEXT PRIMARY KEY,
    snapshot        BLOB,
    snapshot_seq    INTEGER NOT NULL DEFAULT 0,
    -- The note's plain text, as of the last projection (written by the notes feature).
    text            TEXT NOT NULL DEFAULT '',
    -- Bytes stored for the note: the snapshot and every update after it.
    size            INTEGER NOT NULL DEFAULT 0,
    pending_updates INTEGER NOT NULL DEFAULT 0,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX notes_pending ON notes(pending_updates);

-- Each update a client sent, keyed by the sync_id of its `note.updated` event: the log
-- stays the single order, and the event carries who and how large, not the bytes.
CREATE TABLE note_updates (
    seq       INTEGER PRIMARY KEY,
    ticket_id TEXT NOT NULL,
    author_id TEXT,
    bytes     BLOB NOT NULL
);
CREATE INDEX note_updates_ticket ON note_updates(ticket_id, seq);
