-- The mail channels whose mailboxes are read (src/store/mail.rs, `Mailboxes`), kept where
-- finding them opens no tenant file, and who reads each: an instance holds a channel's
-- reader lease while its IMAP session runs, so one mailbox is read by one session.
CREATE TABLE mailboxes (
    workspace_id TEXT NOT NULL,
    channel_id   TEXT NOT NULL,
    -- The channel's updated_at: a session started for an older one restarts.
    changed_at   INTEGER NOT NULL,
    reader       TEXT,
    reader_until INTEGER,
    PRIMARY KEY (workspace_id, channel_id)
) WITHOUT ROWID;
