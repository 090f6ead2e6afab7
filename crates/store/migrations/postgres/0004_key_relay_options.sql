-- Per-key options for relays (issue 12, items 3 and 4): what a `max_tokens` that cannot be paid
-- for gets ('clamp' or 'refuse'), whether streams always end with the usage chunk, and whether
-- responses carry the `x-router-one-*` headers. SQLite has the same three columns.
ALTER TABLE api_keys
    ADD COLUMN on_oversized_max_tokens TEXT NOT NULL DEFAULT 'clamp'
        CHECK (on_oversized_max_tokens IN ('clamp', 'refuse')),
    ADD COLUMN always_include_usage BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN router_headers BOOLEAN NOT NULL DEFAULT true;

-- Admission and responses read the three, so every node must hear of an edit (0003's trigger,
-- with them added).
DROP TRIGGER api_keys_changed ON api_keys;
CREATE TRIGGER api_keys_changed AFTER UPDATE ON api_keys FOR EACH ROW
WHEN (OLD.revoked_at_us IS DISTINCT FROM NEW.revoked_at_us
   OR OLD.max_spend_units IS DISTINCT FROM NEW.max_spend_units
   OR OLD.budget_period IS DISTINCT FROM NEW.budget_period
   OR OLD.rpm_limit IS DISTINCT FROM NEW.rpm_limit
   OR OLD.tpm_limit IS DISTINCT FROM NEW.tpm_limit
   OR OLD.max_concurrency IS DISTINCT FROM NEW.max_concurrency
   OR OLD.models IS DISTINCT FROM NEW.models
   OR OLD.expires_at_us IS DISTINCT FROM NEW.expires_at_us
   OR OLD.on_oversized_max_tokens IS DISTINCT FROM NEW.on_oversized_max_tokens
   OR OLD.always_include_usage IS DISTINCT FROM NEW.always_include_usage
   OR OLD.router_headers IS DISTINCT FROM NEW.router_headers)
EXECUTE FUNCTION key_events_record('key');
