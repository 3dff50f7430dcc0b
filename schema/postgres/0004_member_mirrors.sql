-- Membership changes whose mirror in the workspace (`members` and the log's member.*
-- event) may not have been written yet: inserted with the change, deleted once the mirror
-- matches, replayed at start after a crash (platform data, like memberships).
CREATE TABLE member_mirrors (
    workspace_id uuid NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    user_id      uuid NOT NULL,
    actor_id     uuid,
    seq          bigint NOT NULL,
    created_at   bigint NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);
