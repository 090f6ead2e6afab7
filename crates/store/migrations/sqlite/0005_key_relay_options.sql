-- Per-key options for relays (issue 12, items 3 and 4): what a `max_tokens` that cannot be paid
-- for gets ('clamp' or 'refuse'), whether streams always end with the usage chunk, and whether
-- responses carry the `x-router-one-*` headers. Every existing key keeps today's behaviour
-- except the oversized `max_tokens`, which is clamped instead of refused with a 402.
ALTER TABLE api_keys ADD COLUMN on_oversized_max_tokens TEXT NOT NULL DEFAULT 'clamp'
    CHECK (on_oversized_max_tokens IN ('clamp', 'refuse'));
ALTER TABLE api_keys ADD COLUMN always_include_usage BOOLEAN NOT NULL DEFAULT 0
    CHECK (always_include_usage IN (0, 1));
ALTER TABLE api_keys ADD COLUMN router_headers BOOLEAN NOT NULL DEFAULT 1
    CHECK (router_headers IN (0, 1));
