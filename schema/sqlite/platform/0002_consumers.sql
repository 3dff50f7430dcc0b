-- What the log consumers need across workspaces, kept where finding it opens no tenant file.

-- "This workspace may have events a durable consumer has not consumed yet." Written before
-- the first commit that leaves a consumer behind (under the tenant's write lock) and
-- dropped once every durable consumer has caught up, so a restart finds the workspaces to
-- catch up without opening the others.
CREATE TABLE log_hints (
    workspace_id TEXT PRIMARY KEY,
    marked_at    INTEGER NOT NULL
) WITHOUT ROWID;

-- Durable "wake consumer C for workspace W at T" (a retry, a scheduled send). The earliest
-- request per (workspace, consumer) is kept; every instance finds what is due with one
-- indexed query.
CREATE TABLE consumer_wakes (
    workspace_id TEXT NOT NULL,
    consumer     TEXT NOT NULL,
    wake_at      INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, consumer)
) WITHOUT ROWID;
CREATE INDEX consumer_wakes_due ON consumer_wakes(wake_at);

-- Per user and kind of notification: whether it appears in the app, and whether it is
-- mailed (stored now; the mail consumer reads it). No row: both on.
CREATE TABLE notification_preferences (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind    TEXT NOT NULL CHECK (kind IN ('assigned', 'reply', 'internal_note', 'mention')),
    in_app  INTEGER NOT NULL CHECK (in_app IN (0, 1)),
    email   INTEGER NOT NULL CHECK (email IN (0, 1)),
    PRIMARY KEY (user_id, kind)
) WITHOUT ROWID;
