-- Collaborative notes (see the SQLite migration of the same name).

CREATE TABLE notes (
    workspace_id    uuid NOT NULL,
    ticket_id       uuid NOT NULL,
    snapshot        bytea,
    snapshot_seq    bigint NOT NULL DEFAULT 0,
    text            text NOT NULL DEFAULT '',
    size            bigint NOT NULL DEFAULT 0,
    pending_updates bigint NOT NULL DEFAULT 0,
    updated_at      bigint NOT NULL,
    PRIMARY KEY (workspace_id, ticket_id)
);
CREATE INDEX notes_pending ON notes(workspace_id, pending_updates);

CREATE TABLE note_updates (
    workspace_id uuid NOT NULL,
    seq          bigint NOT NULL,
    ticket_id    uuid NOT NULL,
    author_id    uuid,
    bytes        bytea NOT NULL,
    PRIMARY KEY (workspace_id, seq)
);
CREATE INDEX note_updates_ticket ON note_updates(workspace_id, ticket_id, seq);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['notes', 'note_updates']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY workspace_isolation ON %I USING (workspace_id = edgedesk_workspace()) WITH CHECK (workspace_id = edgedesk_workspace())', t);
    END LOOP;
END
$$;
