-- A ticket's thread of reply mails, in the order threading reads it (oldest and newest
-- first, ties by their log event) and with the Message-ID in the index itself: building a
-- reply's References reads a few index entries, not every mail of the ticket queued in the
-- same millisecond nor their rows.
CREATE INDEX mail_outbox_thread ON mail_outbox(ticket_id, created_at, source_sync_id, message_id) WHERE comment_id IS NOT NULL;
