-- Log consumers and notifications (see the SQLite migrations of the same name).

ALTER TABLE sync_actions ADD COLUMN recipient_id uuid;

-- Platform-level, readable by every instance without a workspace scope, and holding no
-- tenant content (ids and positions only): each workspace's log head and the transaction
-- that last moved it. The listener asks "which heads moved since my horizon" with one
-- indexed query (`changed >= horizon`, the horizon being the oldest transaction still
-- running when it last looked), so a commit costs every instance work in proportion to
-- what moved, not to how many workspaces it follows. Rows are written only inside a write
-- transaction scoped to their own workspace (the policies below).
CREATE TABLE log_heads (
    workspace_id uuid PRIMARY KEY,
    head         bigint NOT NULL,
    changed      xid8 NOT NULL
);
CREATE INDEX log_heads_changed ON log_heads(changed);

-- Each durable consumer's watermark per workspace. Readable across workspaces (start-up
-- finds the workspaces whose head is past a watermark with one join), writable only in a
-- transaction scoped to the row's workspace. Bookkeeping: it never takes the head lock.
CREATE TABLE consumer_watermarks (
    workspace_id uuid NOT NULL,
    consumer     text NOT NULL,
    position     bigint NOT NULL,
    stopped_at   bigint,
    last_error   text,
    updated_at   bigint NOT NULL,
    PRIMARY KEY (workspace_id, consumer)
);

CREATE TABLE consumer_wakes (
    workspace_id uuid NOT NULL,
    consumer     text NOT NULL,
    wake_at      bigint NOT NULL,
    PRIMARY KEY (workspace_id, consumer)
);
CREATE INDEX consumer_wakes_due ON consumer_wakes(wake_at);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['log_heads', 'consumer_watermarks', 'consumer_wakes']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY readable ON %I FOR SELECT USING (true)', t);
        EXECUTE format('CREATE POLICY own_insert ON %I FOR INSERT WITH CHECK (workspace_id = edgedesk_workspace())', t);
        EXECUTE format('CREATE POLICY own_update ON %I FOR UPDATE USING (workspace_id = edgedesk_workspace()) WITH CHECK (workspace_id = edgedesk_workspace())', t);
        EXECUTE format('CREATE POLICY own_delete ON %I FOR DELETE USING (workspace_id = edgedesk_workspace())', t);
    END LOOP;
END
$$;

CREATE TABLE notification_tickets (
    workspace_id uuid NOT NULL,
    ticket_id    uuid NOT NULL,
    number       bigint NOT NULL,
    title        text NOT NULL,
    requester_id uuid NOT NULL,
    assignee_id  uuid,
    PRIMARY KEY (workspace_id, ticket_id)
);

CREATE TABLE ticket_followers (
    workspace_id uuid NOT NULL,
    ticket_id    uuid NOT NULL,
    user_id      uuid NOT NULL,
    reason       text NOT NULL CHECK (reason IN ('requester', 'assignee', 'manual')),
    since_sync_id bigint NOT NULL,
    PRIMARY KEY (workspace_id, ticket_id, user_id)
);
CREATE INDEX ticket_followers_user ON ticket_followers(workspace_id, user_id);

CREATE TABLE notifications (
    workspace_id   uuid NOT NULL,
    id             uuid NOT NULL,
    recipient_id   uuid NOT NULL,
    source_sync_id bigint NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('assigned', 'reply', 'internal_note', 'mention')),
    ticket_id      uuid NOT NULL,
    staff_only     boolean NOT NULL,
    data           jsonb NOT NULL,
    created_at     bigint NOT NULL,
    read_at        bigint,
    PRIMARY KEY (workspace_id, id),
    UNIQUE (workspace_id, recipient_id, source_sync_id)
);
CREATE INDEX notifications_unread ON notifications(workspace_id, recipient_id, source_sync_id) WHERE read_at IS NULL;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['notification_tickets', 'ticket_followers', 'notifications']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY workspace_isolation ON %I USING (workspace_id = edgedesk_workspace()) WITH CHECK (workspace_id = edgedesk_workspace())', t);
    END LOOP;
END
$$;

-- Platform data: per user and kind, in the app and by mail. No row: both on.
CREATE TABLE notification_preferences (
    user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind    text NOT NULL CHECK (kind IN ('assigned', 'reply', 'internal_note', 'mention')),
    in_app  boolean NOT NULL,
    email   boolean NOT NULL,
    PRIMARY KEY (user_id, kind)
);

-- Existing workspaces: their heads, and the notifications consumer starting where each log
-- stands now (no notifications for history). The owner is bound by FORCEd row-level
-- security too, so it lifts FORCE for the length of this transaction.
-- Existing tickets get the consumer's view and their requester and assignee as followers.
DO $$
DECLARE t text;
DECLARE tables text[] := ARRAY['workspace_heads', 'log_heads', 'consumer_watermarks', 'tickets', 'notification_tickets', 'ticket_followers'];
BEGIN
    FOREACH t IN ARRAY tables LOOP
        EXECUTE format('ALTER TABLE %I NO FORCE ROW LEVEL SECURITY', t);
    END LOOP;
    INSERT INTO log_heads (workspace_id, head, changed) SELECT workspace_id, sync_head, pg_current_xact_id() FROM workspace_heads;
    INSERT INTO consumer_watermarks (workspace_id, consumer, position, updated_at)
        SELECT workspace_id, 'notifications', sync_head, 0 FROM workspace_heads;
    INSERT INTO notification_tickets (workspace_id, ticket_id, number, title, requester_id, assignee_id)
        SELECT workspace_id, id, number, title, requester_id, assignee_id FROM tickets;
    INSERT INTO ticket_followers (workspace_id, ticket_id, user_id, reason, since_sync_id)
        SELECT workspace_id, id, requester_id, 'requester', 0 FROM tickets;
    INSERT INTO ticket_followers (workspace_id, ticket_id, user_id, reason, since_sync_id)
        SELECT workspace_id, id, assignee_id, 'assignee', 0 FROM tickets WHERE assignee_id IS NOT NULL
        ON CONFLICT DO NOTHING;
    FOREACH t IN ARRAY tables LOOP
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    END LOOP;
END
$$;
