-- Incoming mail and the mailboxes that are read (see the SQLite migrations 0007_inbound
-- (tenant) and 0005_mailboxes (platform)).

CREATE TABLE mail_inbound (
    workspace_id     uuid NOT NULL,
    dedupe_key       text NOT NULL,
    channel_id       uuid NOT NULL,
    message_id       text,
    sender           text NOT NULL,
    subject          text NOT NULL,
    outcome          text NOT NULL CHECK (outcome IN ('ticket', 'comment', 'ignored', 'bounce')),
    detail           text,
    ticket_id        uuid,
    comment_id       uuid,
    attachments_done boolean NOT NULL,
    received_at      bigint NOT NULL,
    PRIMARY KEY (workspace_id, dedupe_key)
);
CREATE INDEX mail_inbound_message ON mail_inbound(workspace_id, message_id) WHERE message_id IS NOT NULL;
CREATE INDEX mail_inbound_sender ON mail_inbound(workspace_id, sender, received_at);
CREATE INDEX mail_inbound_ticket ON mail_inbound(workspace_id, ticket_id, received_at) WHERE ticket_id IS NOT NULL;
CREATE INDEX mail_outbox_message ON mail_outbox(workspace_id, message_id);

ALTER TABLE mail_inbound ENABLE ROW LEVEL SECURITY;
ALTER TABLE mail_inbound FORCE ROW LEVEL SECURITY;
CREATE POLICY workspace_isolation ON mail_inbound
    USING (workspace_id = edgedesk_workspace()) WITH CHECK (workspace_id = edgedesk_workspace());

-- Read across workspaces (every instance looks for channels to read), written only in a
-- transaction scoped to the row's workspace.
CREATE TABLE mailboxes (
    workspace_id uuid NOT NULL,
    channel_id   uuid NOT NULL,
    changed_at   bigint NOT NULL,
    reader       text,
    reader_until bigint,
    PRIMARY KEY (workspace_id, channel_id)
);
ALTER TABLE mailboxes ENABLE ROW LEVEL SECURITY;
ALTER TABLE mailboxes FORCE ROW LEVEL SECURITY;
CREATE POLICY readable ON mailboxes FOR SELECT USING (true);
CREATE POLICY own_insert ON mailboxes FOR INSERT WITH CHECK (workspace_id = edgedesk_workspace());
CREATE POLICY own_update ON mailboxes FOR UPDATE USING (workspace_id = edgedesk_workspace()) WITH CHECK (workspace_id = edgedesk_workspace());
CREATE POLICY own_delete ON mailboxes FOR DELETE USING (workspace_id = edgedesk_workspace());
