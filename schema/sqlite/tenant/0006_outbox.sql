-- The mail outbox (src/store/mail.rs): one row per outgoing mail, written by the mail
-- consumer with its watermark, claimed by delivery workers under a lease.

CREATE TABLE mail_outbox (
    id              TEXT PRIMARY KEY,
    ticket_id       TEXT NOT NULL,
    comment_id      TEXT,
    channel_id      TEXT NOT NULL,
    -- The log event it was made for: at most one mail per event.
    source_sync_id  INTEGER NOT NULL UNIQUE,
    message_id      TEXT NOT NULL,
    mail_from       TEXT NOT NULL,
    mail_to         TEXT NOT NULL,
    subject         TEXT NOT NULL,
    -- The whole RFC 5322 message, the same bytes on every try.
    message         BLOB NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'retrying', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- When it is due (queued, retrying) or when its lease ends (sending); NULL once done.
    due_at          INTEGER,
    lease_owner     TEXT,
    relay_answer    TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    sent_at         INTEGER
);
CREATE INDEX mail_outbox_due ON mail_outbox(due_at) WHERE due_at IS NOT NULL;
CREATE INDEX mail_outbox_ticket ON mail_outbox(ticket_id, created_at);
