-- Router One schema, SQLite flavour. Written to be mirrored for PostgreSQL line by line:
-- every integer is BIGINT (i64; money is a whole number of 10^-10 USD "units", never REAL or
-- TEXT), times are µs since the Unix epoch, flags are BOOLEAN, JSON is TEXT. The only
-- SQLite-specific line is `ledger_entries.id` (PostgreSQL: BIGINT GENERATED ALWAYS AS IDENTITY).
-- Metadata only: there is deliberately no column for a prompt or a completion (promise 2).

CREATE TABLE accounts (
    id              TEXT    PRIMARY KEY,
    email           TEXT    NOT NULL UNIQUE,
    -- Σ ledger_entries.amount_units of this account, kept in step in the same transactions.
    balance_units   BIGINT  NOT NULL,
    created_at_us   BIGINT  NOT NULL
);

CREATE TABLE management_keys (
    id              TEXT    PRIMARY KEY,
    account_id      TEXT    NOT NULL REFERENCES accounts (id),
    secret_hash     TEXT    NOT NULL UNIQUE,
    created_at_us   BIGINT  NOT NULL,
    revoked_at_us   BIGINT
);

CREATE INDEX management_keys_account ON management_keys (account_id);

CREATE TABLE api_keys (
    id              TEXT    PRIMARY KEY,
    account_id      TEXT    NOT NULL REFERENCES accounts (id),
    secret_hash     TEXT    NOT NULL UNIQUE,
    hint            TEXT    NOT NULL,
    name            TEXT,
    max_spend_units BIGINT,
    budget_period   TEXT    NOT NULL,
    rpm_limit       BIGINT,
    tpm_limit       BIGINT,
    max_concurrency BIGINT,
    -- JSON array of model ids; NULL allows every model.
    models          TEXT,
    expires_at_us   BIGINT,
    -- JSON object: the builder's own data.
    metadata        TEXT    NOT NULL,
    created_at_us   BIGINT  NOT NULL,
    revoked_at_us   BIGINT,
    -- Lifetime spend: Σ usage_records.cost_units of this key.
    spend_units     BIGINT  NOT NULL DEFAULT 0
);

CREATE INDEX api_keys_account ON api_keys (account_id, created_at_us);

-- No foreign keys here on purpose: a usage record must never be refused (promise 5), since
-- one refused row would make the batched writer retry its whole batch forever.
CREATE TABLE usage_records (
    -- Commit order, assigned by the single usage writer: the pagination cursor. A request id is
    -- taken when the request arrives but its record commits when it ends, so paging by request id
    -- would skip a long stream that finishes after the page was read; paging by seq cannot.
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id          TEXT    NOT NULL UNIQUE,
    account_id          TEXT    NOT NULL,
    key_id              TEXT    NOT NULL,
    created_at_us       BIGINT  NOT NULL,
    endpoint            TEXT    NOT NULL,
    requested_model     TEXT    NOT NULL,
    served_model        TEXT,
    provider            TEXT    NOT NULL,
    prompt_tokens       BIGINT  NOT NULL,
    cached_tokens       BIGINT  NOT NULL,
    completion_tokens   BIGINT  NOT NULL,
    reasoning_tokens    BIGINT  NOT NULL,
    cost_units          BIGINT  NOT NULL,
    latency_us          BIGINT  NOT NULL,
    upstream_sent_us    BIGINT,
    ttft_us             BIGINT,
    status              BIGINT  NOT NULL,
    error_code          TEXT,
    streamed            BOOLEAN NOT NULL
);

-- seq follows time closely (records commit within milliseconds of their end), so these also
-- serve time ranges; each insert maintains four B-trees, which is most of the writer's cost.
CREATE INDEX usage_records_account ON usage_records (account_id, seq);
CREATE INDEX usage_records_key ON usage_records (key_id, seq);

-- Append-only. kind: 'credit' (opening balance, top-up), 'usage' (one debit per account per
-- committed usage batch), more later. amount_units is signed: credits > 0, debits < 0.
CREATE TABLE ledger_entries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id      TEXT    NOT NULL REFERENCES accounts (id),
    created_at_us   BIGINT  NOT NULL,
    kind            TEXT    NOT NULL,
    amount_units    BIGINT  NOT NULL,
    reference       TEXT,
    reason          TEXT
);

CREATE INDEX ledger_entries_account ON ledger_entries (account_id, id);
