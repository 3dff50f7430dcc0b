-- Membership changes whose mirror in the workspace (its `members` table and the log's
-- member.* event) may not have been written yet. Inserted in the same transaction as the
-- change, deleted once the mirror matches; whatever is left after a crash is replayed at
-- start. `seq` tells a newer change of the same membership from the one being finished.
CREATE TABLE member_mirrors (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL,
    actor_id     TEXT,
    seq          INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
) WITHOUT ROWID;
