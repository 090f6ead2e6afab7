-- Key changes every node must see within a second (issue 11, item 5): a revoked or edited
-- inference key, a revoked management key. A trigger writes the event in the transaction that
-- made the change, so no code path can forget it, and nodes poll `seq > cursor` every 250 ms.
--
-- Commit order: a sequence value is taken before its transaction commits, so a poller could
-- read event 8 and skip 7 committing later. Each trigger takes one advisory lock before it
-- draws `seq` and holds it to commit (key edits are rare), so events commit in `seq` order and
-- a cursor never skips one.
CREATE TABLE key_events (
    seq         BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- 'key' (an inference key: revoked, or its limits, models or expiry changed) or
    -- 'management_key' (revoked).
    kind        TEXT        NOT NULL CHECK (kind IN ('key', 'management_key')),
    id          TEXT        NOT NULL,
    account_id  TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- "R1KEYEV" as ASCII: recognisable in pg_locks.
CREATE FUNCTION key_events_record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(23154614564447574);
    INSERT INTO key_events (kind, id, account_id)
    VALUES (TG_ARGV[0], NEW.id, NEW.account_id);
    RETURN NULL;
END $$;

-- Not `spend_units`, which every usage batch moves: only what admission reads.
CREATE TRIGGER api_keys_changed AFTER UPDATE ON api_keys FOR EACH ROW
WHEN (OLD.revoked_at_us IS DISTINCT FROM NEW.revoked_at_us
   OR OLD.max_spend_units IS DISTINCT FROM NEW.max_spend_units
   OR OLD.budget_period IS DISTINCT FROM NEW.budget_period
   OR OLD.rpm_limit IS DISTINCT FROM NEW.rpm_limit
   OR OLD.tpm_limit IS DISTINCT FROM NEW.tpm_limit
   OR OLD.max_concurrency IS DISTINCT FROM NEW.max_concurrency
   OR OLD.models IS DISTINCT FROM NEW.models
   OR OLD.expires_at_us IS DISTINCT FROM NEW.expires_at_us)
EXECUTE FUNCTION key_events_record('key');

CREATE TRIGGER management_keys_revoked AFTER UPDATE ON management_keys FOR EACH ROW
WHEN (OLD.revoked_at_us IS DISTINCT FROM NEW.revoked_at_us)
EXECUTE FUNCTION key_events_record('management_key');
