-- Incoming mail (src/store/mail.rs): one row per message filed or set aside, keyed by its
-- dedupe key (its Message-ID, or a hash of its bytes), written in the same transaction as
-- the ticket or comment it made. A message fetched again (a crash before it was marked
-- seen, a server that forgot its flags) finds its row and is filed once.
CREATE TABLE mail_inbound (
    dedupe_key       TEXT PRIMARY KEY,
    channel_id       TEXT NOT NULL,
    message_id       TEXT,
    sender           TEXT NOT NULL,
    subject          TEXT NOT NULL,
    outcome          TEXT NOT NULL CHECK (outcome IN ('ticket', 'comment', 'ignored', 'bounce')),
    -- Why it was set aside (ignored, bounce).
    detail           TEXT,
    ticket_id        TEXT,
    comment_id       TEXT,
    -- Its attachments are stored (they are written after the comment, each its own upload).
    attachments_done INTEGER NOT NULL CHECK (attachments_done IN (0, 1)),
    received_at      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX mail_inbound_message ON mail_inbound(message_id) WHERE message_id IS NOT NULL;
CREATE INDEX mail_inbound_sender ON mail_inbound(sender, received_at);
-- A ticket's thread: its messages, newest or oldest first.
CREATE INDEX mail_inbound_ticket ON mail_inbound(ticket_id, received_at) WHERE ticket_id IS NOT NULL;
-- Threading looks replies up by the Message-IDs we sent.
CREATE INDEX mail_outbox_message ON mail_outbox(message_id);
