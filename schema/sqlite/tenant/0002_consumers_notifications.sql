-- Log consumers and notifications.

-- Events meant for one user alone (notifications): only that user's delta and live streams
-- carry them (src/store/visibility.rs).
ALTER TABLE sync_actions ADD COLUMN recipient_id TEXT;

-- Where each durable log consumer has got to in this workspace. It advances in the same
-- transaction as the consumer's output, so effects inside the database happen once.
-- Bookkeeping: changing it records no event.
CREATE TABLE consumer_watermarks (
    consumer   TEXT PRIMARY KEY,
    position   INTEGER NOT NULL,
    -- Set when one event kept failing: the consumer stands at `position` in this
    -- workspace until resumed (`edgedesk consumer resume`).
    stopped_at INTEGER,
    last_error TEXT,
    updated_at INTEGER NOT NULL
);
-- The notifications consumer starts where the log stands when this migration runs: an
-- existing workspace does not get notifications for its history. A new workspace's log is
-- empty here, so it starts from its first event.
INSERT INTO consumer_watermarks (consumer, position, updated_at)
    SELECT 'notifications', COALESCE(MAX(sync_id), 0), 0 FROM sync_actions;

-- The notifications consumer's own view of each ticket, kept from the log: what it needs
-- to tell an assignment from an edit and to word a notification.
CREATE TABLE notification_tickets (
    ticket_id    TEXT PRIMARY KEY,
    number       INTEGER NOT NULL,
    title        TEXT NOT NULL,
    requester_id TEXT NOT NULL,
    assignee_id  TEXT
);

-- Who follows which ticket, kept from the log by the notifications consumer: the requester
-- and the assignee automatically, anyone else by `PUT …/follow`.
CREATE TABLE ticket_followers (
    ticket_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    reason     TEXT NOT NULL CHECK (reason IN ('requester', 'assignee', 'manual')),
    -- The log position the follow counts from: events after it notify the follower, so
    -- a follow made while the consumer lags is not applied to what came before it.
    since_sync_id INTEGER NOT NULL,
    PRIMARY KEY (ticket_id, user_id)
) WITHOUT ROWID;
CREATE INDEX ticket_followers_user ON ticket_followers(user_id);

-- Existing tickets, as the consumer would have seen them: its view, and the requester and
-- assignee following.
INSERT INTO notification_tickets (ticket_id, number, title, requester_id, assignee_id)
    SELECT id, number, title, requester_id, assignee_id FROM tickets;
INSERT INTO ticket_followers (ticket_id, user_id, reason, since_sync_id) SELECT id, requester_id, 'requester', 0 FROM tickets;
INSERT OR IGNORE INTO ticket_followers (ticket_id, user_id, reason, since_sync_id)
    SELECT id, assignee_id, 'assignee', 0 FROM tickets WHERE assignee_id IS NOT NULL;

-- One row per (causing event, recipient): a replayed page can never double a notification.
-- `source_sync_id` is also each recipient's order (strictly increasing per recipient).
CREATE TABLE notifications (
    id             TEXT PRIMARY KEY,
    recipient_id   TEXT NOT NULL,
    source_sync_id INTEGER NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('assigned', 'reply', 'internal_note', 'mention')),
    ticket_id      TEXT NOT NULL,
    -- Internal-note notifications: what the requester rule of the log hides, hidden here too.
    staff_only     INTEGER NOT NULL CHECK (staff_only IN (0, 1)),
    data           TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    read_at        INTEGER,
    UNIQUE (recipient_id, source_sync_id)
);
CREATE INDEX notifications_unread ON notifications(recipient_id, source_sync_id) WHERE read_at IS NULL;
