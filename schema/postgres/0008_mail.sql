-- Mail channels (see the SQLite migration of the same name).

CREATE TABLE mail_channels (
    workspace_id  uuid NOT NULL,
    id            uuid NOT NULL,
    address       text NOT NULL,
    settings      jsonb NOT NULL,
    imap_password bytea,
    smtp_password bytea,
    created_at    bigint NOT NULL,
    updated_at    bigint NOT NULL,
    PRIMARY KEY (workspace_id, id),
    UNIQUE (workspace_id, address)
);

ALTER TABLE mail_channels ENABLE ROW LEVEL SECURITY;
ALTER TABLE mail_channels FORCE ROW LEVEL SECURITY;
CREATE POLICY workspace_isolation ON mail_channels
    USING (workspace_id = edgedesk_workspace()) WITH CHECK (workspace_id = edgedesk_workspace());
