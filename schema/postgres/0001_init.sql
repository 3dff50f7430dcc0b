-- edgedesk on Postgres: one database, every workspace's rows side by side.
--
-- Ownership: this file runs as the OWNER role (EDGEDESK_ADMIN_DATABASE_URL), which owns
-- every table. The server runs as the APP role (EDGEDESK_DATABASE_URL), which owns
-- nothing, is neither superuser nor BYPASSRLS, and gets only the grants `edgedesk migrate`
-- gives it (src/store/postgres/migrate.rs). Because the app role does not own the tenant
-- tables and the policies are FORCEd, row-level security applies to every query it makes.
--
-- Times are bigint milliseconds since the Unix epoch (UTC), as in the SQLite files, so a
-- workspace moves between the backends unchanged.

-- Platform data: cross-tenant by nature, reached only through PlatformConn. No RLS.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL,
    email_norm    text NOT NULL UNIQUE,
    name          text NOT NULL,
    password_hash text NOT NULL,
    is_admin      boolean NOT NULL DEFAULT false,
    disabled      boolean NOT NULL DEFAULT false,
    created_at    bigint NOT NULL
);

CREATE TABLE sessions (
    id           uuid PRIMARY KEY,
    token_hash   text NOT NULL UNIQUE,
    user_id      uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at   bigint NOT NULL,
    expires_at   bigint NOT NULL,
    last_seen_at bigint NOT NULL,
    user_agent   text,
    ip           text
);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE INDEX sessions_expiry ON sessions(expires_at);

CREATE TABLE api_tokens (
    id           uuid PRIMARY KEY,
    token_hash   text NOT NULL UNIQUE,
    user_id      uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         text NOT NULL,
    created_at   bigint NOT NULL,
    expires_at   bigint,
    last_used_at bigint
);
CREATE INDEX api_tokens_user ON api_tokens(user_id);

CREATE TABLE workspaces (
    id         uuid PRIMARY KEY,
    name       text NOT NULL,
    created_by uuid NOT NULL REFERENCES users(id),
    created_at bigint NOT NULL
);

CREATE TABLE memberships (
    workspace_id uuid NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    user_id      uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role         text NOT NULL CHECK (role IN ('owner', 'admin', 'agent', 'requester')),
    created_at   bigint NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX memberships_user ON memberships(user_id, workspace_id);

-- The workspace a tenant transaction is scoped to: set with
-- `SELECT set_config('app.workspace_id', $1, true)` (SET LOCAL: it ends with the
-- transaction, so a pooled connection never carries it to the next user). Unset, or reset
-- to '' after an earlier transaction, it is NULL, and `workspace_id = NULL` matches no row:
-- the policies fail closed.
CREATE FUNCTION edgedesk_workspace() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('app.workspace_id', true), '')::uuid $$;

-- Tenant data: every table carries workspace_id and is under FORCE ROW LEVEL SECURITY.

-- The log's head: bumped (row-locked) by every write transaction of the workspace, so its
-- writers serialize and sync ids are handed out in commit order. A sequence would not do:
-- an earlier number can commit later, and `sync_id > watermark` would skip it.
CREATE TABLE workspace_heads (
    workspace_id  uuid PRIMARY KEY,
    sync_head     bigint NOT NULL DEFAULT 0,
    ticket_number bigint NOT NULL DEFAULT 0
);

CREATE TABLE workspace_info (
    workspace_id uuid PRIMARY KEY,
    name         text NOT NULL,
    created_at   bigint NOT NULL
);

CREATE TABLE members (
    workspace_id uuid NOT NULL,
    user_id      uuid NOT NULL,
    email        text NOT NULL,
    name         text NOT NULL,
    role         text NOT NULL CHECK (role IN ('owner', 'admin', 'agent', 'requester')),
    joined_at    bigint NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);

CREATE TABLE tickets (
    workspace_id uuid NOT NULL,
    id           uuid NOT NULL,
    number       bigint NOT NULL,
    title        text NOT NULL,
    status       text NOT NULL CHECK (status IN ('open', 'pending', 'resolved', 'closed')),
    priority     text NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    requester_id uuid NOT NULL,
    assignee_id  uuid,
    tags         text[] NOT NULL DEFAULT '{}',
    created_at   bigint NOT NULL,
    updated_at   bigint NOT NULL,
    deleted_at   bigint,
    version      bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (workspace_id, id),
    UNIQUE (workspace_id, number)
);
CREATE INDEX tickets_updated ON tickets(workspace_id, updated_at, id) WHERE deleted_at IS NULL;
CREATE INDEX tickets_created ON tickets(workspace_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX tickets_requester ON tickets(workspace_id, requester_id);
CREATE INDEX tickets_assignee ON tickets(workspace_id, assignee_id);
CREATE INDEX tickets_tags ON tickets USING gin (tags);

CREATE TABLE comments (
    workspace_id uuid NOT NULL,
    id           uuid NOT NULL,
    ticket_id    uuid NOT NULL,
    author_id    uuid NOT NULL,
    body         text NOT NULL,
    internal     boolean NOT NULL,
    created_at   bigint NOT NULL,
    PRIMARY KEY (workspace_id, id),
    FOREIGN KEY (workspace_id, ticket_id) REFERENCES tickets(workspace_id, id)
);
CREATE INDEX comments_ticket ON comments(workspace_id, ticket_id, id);

CREATE TABLE ticket_links (
    workspace_id uuid NOT NULL,
    id           uuid NOT NULL,
    source_id    uuid NOT NULL,
    target_id    uuid NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('relates_to', 'duplicates', 'blocks')),
    created_by   uuid NOT NULL,
    created_at   bigint NOT NULL,
    PRIMARY KEY (workspace_id, id),
    UNIQUE (workspace_id, source_id, target_id, kind),
    CHECK (source_id <> target_id),
    FOREIGN KEY (workspace_id, source_id) REFERENCES tickets(workspace_id, id),
    FOREIGN KEY (workspace_id, target_id) REFERENCES tickets(workspace_id, id)
);
CREATE INDEX ticket_links_target ON ticket_links(workspace_id, target_id);

CREATE TABLE sync_actions (
    workspace_id uuid NOT NULL,
    sync_id      bigint NOT NULL,
    at           bigint NOT NULL,
    actor        uuid,
    kind         text NOT NULL,
    entity       text NOT NULL,
    entity_id    text NOT NULL,
    data         jsonb NOT NULL,
    ticket_id    uuid,
    staff_only   boolean NOT NULL DEFAULT false,
    PRIMARY KEY (workspace_id, sync_id)
);
CREATE INDEX sync_actions_ticket ON sync_actions(workspace_id, ticket_id, sync_id);
CREATE INDEX sync_actions_actor ON sync_actions(workspace_id, actor, sync_id);
CREATE INDEX sync_actions_entity ON sync_actions(workspace_id, entity, entity_id, sync_id);
CREATE INDEX sync_actions_at ON sync_actions(workspace_id, at);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['workspace_heads', 'workspace_info', 'members', 'tickets', 'comments', 'ticket_links', 'sync_actions']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY workspace_isolation ON %I USING (workspace_id = edgedesk_workspace()) WITH CHECK (workspace_id = edgedesk_workspace())', t);
    END LOOP;
END
$$;
