-- Presence in collaborative notes (Yjs awareness: who is here and where their cursor is),
-- shared between instances so that editors on different instances see each other. It is
-- ephemeral: never in the log, UNLOGGED (a crash empties it, and clients resend their state
-- every 15 s), one row per Yjs client, written by the instance its connection is on.
-- `updated_at` is the database's clock in Unix milliseconds, so readers on any instance
-- compare against one clock.

CREATE UNLOGGED TABLE note_presence (
    workspace_id uuid NOT NULL,
    ticket_id    uuid NOT NULL,
    client_id    bigint NOT NULL,
    instance_id  uuid NOT NULL,
    clock        bigint NOT NULL,
    state        text NOT NULL,
    updated_at   bigint NOT NULL,
    PRIMARY KEY (workspace_id, ticket_id, client_id)
);
CREATE INDEX note_presence_recent ON note_presence(workspace_id, ticket_id, updated_at);

ALTER TABLE note_presence ENABLE ROW LEVEL SECURITY;
ALTER TABLE note_presence FORCE ROW LEVEL SECURITY;
CREATE POLICY workspace_isolation ON note_presence
    USING (workspace_id = edgedesk_workspace()) WITH CHECK (workspace_id = edgedesk_workspace());
