-- Attachments (src/store/attachments.rs): metadata and the storage quota. The bytes are
-- objects in a blob store, one per version, keyed by the ids here.

CREATE TABLE attachments (
    id             TEXT PRIMARY KEY,
    ticket_id      TEXT NOT NULL,
    comment_id     TEXT,
    name           TEXT NOT NULL,
    -- On an internal note: staff only, as the note is.
    staff_only     INTEGER NOT NULL CHECK (staff_only IN (0, 1)),
    latest_version TEXT NOT NULL,
    -- The number the next version gets (numbers stay when old versions are pruned).
    next_number    INTEGER NOT NULL,
    created_by     TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    deleted_at     INTEGER
);
CREATE INDEX attachments_ticket ON attachments(ticket_id);

CREATE TABLE attachment_versions (
    id            TEXT PRIMARY KEY,
    attachment_id TEXT NOT NULL REFERENCES attachments(id),
    number        INTEGER NOT NULL,
    size          INTEGER NOT NULL,
    sha256        TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    -- A client-side encrypted version's key material (JSON), stored as given.
    encryption    TEXT,
    created_by    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    UNIQUE (attachment_id, number)
);

-- The workspace's storage: bytes in versions with a row, the limit (NULL: none), and how
-- many versions each attachment keeps.
CREATE TABLE storage_quota (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    used         INTEGER NOT NULL,
    limit_bytes  INTEGER,
    max_versions INTEGER NOT NULL
);
INSERT INTO storage_quota (id, used, limit_bytes, max_versions) VALUES (1, 0, NULL, 10);

-- Bytes held for uploads in flight; expired ones (a crash) no longer count.
CREATE TABLE quota_reservations (
    id         TEXT PRIMARY KEY,
    bytes      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
