-- The mail outbox (see the SQLite migration of the same name).

CREATE TABLE mail_outbox (
    workspace_id    uuid NOT NULL,
    id              uuid NOT NULL,
    ticket_id       uuid NOT NULL,
    comment_id      uuid,
    channel_id      uuid NOT NULL,
    source_sync_id  bigint NOT NULL,
    message_id      text NOT NULL,
    mail_from       text NOT NULL,
    mail_to         text NOT NULL,
    subject         text NOT NULL,
    message         bytea NOT NULL,
    status          text NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'retrying', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    due_at          bigint,
    lease_owner     text,
    relay_answer    text,
    created_at      bigint NOT NULL,
    updated_at      bigint NOT NULL,
    sent_at         bigint,
    PRIMARY KEY (workspace_id, id),
    UNIQUE (workspace_id, source_sync_id)
);
CREATE INDEX mail_outbox_due ON mail_outbox(workspace_id, due_at) WHERE due_at IS NOT NULL;
CREATE INDEX mail_outbox_ticket ON mail_outbox(workspace_id, ticket_id, created_at);

ALTER TABLE mail_outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE mail_outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY workspace_isolation ON mail_outbox
    USING (workspace_id = edgedesk_workspace()) WITH CHECK (workspace_id = edgedesk_workspace());
