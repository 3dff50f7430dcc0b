-- The change feed: every statement that appends to the log sends an empty notification.
-- Empty on purpose: a wakeup means "drain everything past your watermark", so listeners
-- never trust a payload, and one NOTIFY per statement (not per row) is enough. Postgres
-- delivers notifications only after COMMIT, and folds identical ones within a transaction.
CREATE FUNCTION edgedesk_notify_changes() RETURNS trigger
    LANGUAGE plpgsql
    AS $$ BEGIN PERFORM pg_notify('edgedesk_changes', ''); RETURN NULL; END $$;

CREATE TRIGGER sync_actions_notify
    AFTER INSERT ON sync_actions
    FOR EACH STATEMENT EXECUTE FUNCTION edgedesk_notify_changes();
