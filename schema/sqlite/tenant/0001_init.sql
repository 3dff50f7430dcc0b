-- One workspace's data: data/tenants/<workspace_id>/tenant.db.
-- Times are integer milliseconds since the Unix epoch (UTC); ids are UUID text.

-- The workspace as its members see it (mirrored from the platform registry).
CREATE TABLE workspace (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- Members as mirrored from the platform's memberships, for bootstrap and the log.
-- Access control reads the platform table, never this one.
CREATE TABLE members (
    user_id   TEXT PRIMARY KEY,
    email     TEXT NOT NULL,
    name      TEXT NOT NULL,
    role      TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'agent', 'requester')),
    joined_at INTEGER NOT NULL
);

-- `number` is the rowid: tickets are stored, scanned and bootstrapped in number order.
CREATE TABLE tickets (
    number       INTEGER PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    title        TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('open', 'pending', 'resolved', 'closed')),
    priority     TEXT NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    requester_id TEXT NOT NULL,
    assignee_id  TEXT,
    -- JSON array of strings; ticket_tags below is its index for filtering.
    tags         TEXT NOT NULL DEFAULT '[]',
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    deleted_at   INTEGER,
    version      INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX tickets_updated ON tickets(updated_at, id) WHERE deleted_at IS NULL;
CREATE INDEX tickets_created ON tickets(created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX tickets_requester ON tickets(requester_id);
CREATE INDEX tickets_assignee ON tickets(assignee_id);

CREATE TABLE ticket_tags (
    tag       TEXT NOT NULL,
    ticket_id TEXT NOT NULL REFERENCES tickets(id),
    PRIMARY KEY (tag, ticket_id)
) WITHOUT ROWID;
CREATE INDEX ticket_tags_ticket ON ticket_tags(ticket_id);

CREATE TABLE comments (
    id         TEXT PRIMARY KEY,
    ticket_id  TEXT NOT NULL REFERENCES tickets(id),
    author_id  TEXT NOT NULL,
    body       TEXT NOT NULL,
    internal   INTEGER NOT NULL CHECK (internal IN (0, 1)),
    created_at INTEGER NOT NULL
);
CREATE INDEX comments_ticket ON comments(ticket_id, id);

CREATE TABLE ticket_links (
    id         TEXT PRIMARY KEY,
    source_id  TEXT NOT NULL REFERENCES tickets(id),
    target_id  TEXT NOT NULL REFERENCES tickets(id),
    kind       TEXT NOT NULL CHECK (kind IN ('relates_to', 'duplicates', 'blocks')),
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (source_id, target_id, kind),
    CHECK (source_id <> target_id)
);
CREATE INDEX ticket_links_target ON ticket_links(target_id);

-- The log. One row per business event, appended in the transaction of the write.
-- AUTOINCREMENT: ids are never reused, even if the newest rows were ever removed.
-- With one writer at a time (BEGIN IMMEDIATE) commit order equals id order.
CREATE TABLE sync_actions (
    sync_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    actor      TEXT,
    kind       TEXT NOT NULL,
    entity     TEXT NOT NULL,
    entity_id  TEXT NOT NULL,
    data       TEXT NOT NULL,
    -- Visibility: the ticket the event concerns (requesters see events of their own
    -- tickets) and whether it is for staff only (internal notes, members, links).
    ticket_id  TEXT,
    staff_only INTEGER NOT NULL DEFAULT 0 CHECK (staff_only IN (0, 1))
);
CREATE INDEX sync_actions_ticket ON sync_actions(ticket_id, sync_id);
CREATE INDEX sync_actions_actor ON sync_actions(actor, sync_id);
CREATE INDEX sync_actions_entity ON sync_actions(entity, entity_id, sync_id);
CREATE INDEX sync_actions_at ON sync_actions(at);
