-- Prompt tokens written to the provider's prompt cache (Anthropic's cache_creation_input_tokens),
-- billed at the model's cache-write rate; a part of prompt_tokens. Earlier records wrote none
-- apart (their writes were billed at the input rate, as their cost says). SQLite has the same
-- column.
ALTER TABLE usage_records ADD COLUMN cache_write_tokens BIGINT NOT NULL DEFAULT 0
    CHECK (cache_write_tokens >= 0);
