-- Attachments (see the SQLite migration of the same name).

CREATE TABLE attachments (
    workspace_id   uuid NOT NULL,
    id             uuid NOT NULL,
    ticket_id      uuid NOT NULL,
    comment_id     uuid,
    name           text NOT NULL,
    staff_only     boolean NOT NULL,
    latest_version uuid NOT NULL,
    next_number    integer NOT NULL,
    created_by     uuid NOT NULL,
    created_at     bigint NOT NULL,
    deleted_at     bigint,
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX attachments_ticket ON attachments(workspace_id, ticket_id);

CREATE TABLE attachment_versions (
    workspace_id  uuid NOT NULL,
    id            uuid NOT NULL,
    attachment_id uuid NOT NULL,
    number        integer NOT NULL,
    size          bigint NOT NULL,
    sha256        text NOT NULL,
    content_type  text NOT NULL,
    encryption    jsonb,
    created_by    uuid NOT NULL,
    created_at    bigint NOT NULL,
    PRIMARY KEY (workspace_id, id),
    UNIQUE (workspace_id, attachment_id, number),
    FOREIGN KEY (workspace_id, attachment_id) REFERENCES attachments(workspace_id, id)
);

CREATE TABLE storage_quota (
    workspace_id uuid PRIMARY KEY,
    used         bigint NOT NULL,
    limit_bytes  bigint,
    max_versions integer NOT NULL
);

CREATE TABLE quota_reservations (
    workspace_id uuid NOT NULL,
    id           uuid NOT NULL,
    bytes        bigint NOT NULL,
    expires_at   bigint NOT NULL,
    PRIMARY KEY (workspace_id, id)
);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['attachments', 'attachment_versions', 'storage_quota', 'quota_reservations']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY workspace_isolation ON %I USING (workspace_id = edgedesk_workspace()) WITH CHECK (workspace_id = edgedesk_workspace())', t);
    END LOOP;
END
$$;
