-- Router One schema, PostgreSQL flavour: the meaning of SQLite's 0001–0004 in one file. Same
-- conventions: every integer is BIGINT (money a whole number of 10^-10 USD "units", never
-- REAL, NUMERIC or TEXT), times are µs since the Unix epoch, flags are BOOLEAN, JSON is TEXT
-- (so the row conversions are shared with SQLite). Metadata only: there is deliberately no
-- column for a prompt or a completion (promise 2).
--
-- Differences, and why:
-- * The CHECKs of SQLite's 0003 keep their meaning; `typeof(x) = 'integer'` needs no check
--   here (a BIGINT column holds nothing else, and an overflowing BIGINT sum is an error, never
--   a float), and JSON validity is checked by casting to jsonb.
-- * No `quarantined_api_keys`: it holds rows an older SQLite release could write and 0003
--   could not repair; a PostgreSQL database is created by this schema with every check in
--   force, so no such row can exist.
-- * `usage_records` is partitioned by month and pages by transaction id: see its comment.

CREATE TABLE accounts (
    id              TEXT    PRIMARY KEY,
    email           TEXT    NOT NULL UNIQUE,
    -- Σ ledger_entries.amount_units of this account, kept in step in the same transactions.
    balance_units   BIGINT  NOT NULL,
    created_at_us   BIGINT  NOT NULL,
    -- argon2id PHC string; NULL for accounts made by the operator CLI (no password login).
    password_hash   TEXT,
    invite_code     TEXT    NOT NULL UNIQUE,
    -- The inviter, forever (set at sign-up, or once before the first top-up).
    referred_by     TEXT    REFERENCES accounts (id)
);

CREATE INDEX accounts_referred_by ON accounts (referred_by);

CREATE TABLE management_keys (
    id              TEXT    PRIMARY KEY,
    account_id      TEXT    NOT NULL REFERENCES accounts (id),
    secret_hash     TEXT    NOT NULL UNIQUE,
    created_at_us   BIGINT  NOT NULL,
    revoked_at_us   BIGINT,
    hint            TEXT    NOT NULL DEFAULT 'sk-rm-…',
    name            TEXT
);

CREATE INDEX management_keys_account ON management_keys (account_id);

CREATE TABLE api_keys (
    id              TEXT    PRIMARY KEY,
    account_id      TEXT    NOT NULL REFERENCES accounts (id),
    secret_hash     TEXT    NOT NULL UNIQUE,
    hint            TEXT    NOT NULL CHECK (char_length(hint) <= 64),
    name            TEXT    CHECK (name IS NULL OR char_length(name) <= 1000),
    max_spend_units BIGINT  CHECK (max_spend_units IS NULL OR max_spend_units >= 0),
    budget_period   TEXT    NOT NULL CHECK (budget_period IN ('none', 'daily', 'weekly', 'monthly')),
    rpm_limit       BIGINT  CHECK (rpm_limit IS NULL OR rpm_limit >= 0),
    tpm_limit       BIGINT  CHECK (tpm_limit IS NULL OR tpm_limit >= 0),
    max_concurrency BIGINT  CHECK (max_concurrency IS NULL OR max_concurrency >= 0),
    -- JSON array of model ids; NULL allows every model.
    models          TEXT    CHECK (models IS NULL OR (octet_length(models) <= 65536
                                   AND jsonb_typeof(models::jsonb) = 'array')),
    expires_at_us   BIGINT,
    -- JSON object: the builder's own data.
    metadata        TEXT    NOT NULL CHECK (octet_length(metadata) <= 65536
                                   AND jsonb_typeof(metadata::jsonb) = 'object'),
    created_at_us   BIGINT  NOT NULL,
    revoked_at_us   BIGINT,
    -- Lifetime spend: Σ usage_records.cost_units of this key (saturated in Rust, never summed
    -- in SQL).
    spend_units     BIGINT  NOT NULL DEFAULT 0 CHECK (spend_units >= 0)
);

CREATE INDEX api_keys_account ON api_keys (account_id, created_at_us);

-- The numbering of usage records within their transaction (the cursor's tiebreak). A plain
-- sequence, not an identity column: PostgreSQL 15 allows no identity on a partitioned table.
CREATE SEQUENCE usage_records_seq AS BIGINT;

-- No foreign keys here on purpose: a usage record must never be refused (promise 5), since
-- one refused row would make the batched writer retry its whole batch forever.
--
-- One partition per UTC month (`usage_records_YYYYMM`, created ahead by the store) and a
-- DEFAULT partition for anything else, so no record is ever refused for its time. A unique
-- key of a partitioned table must include the partition key: the primary key is (request_id,
-- created_at_us), which is as good as request_id alone because created_at_us is fixed when
-- the request arrives and journaled with it, so a replayed record hits the same row.
--
-- Paging ("records committed after this one"): a sequence value is taken before commit, so
-- paging by seq could skip a batch that drew a smaller seq and committed after the reader
-- passed it. Each row keeps the id of the transaction that wrote it (`txid`); a reader shows
-- only rows whose txid is below its snapshot's xmin (every transaction below xmin has ended,
-- so no row can ever appear below that line) and pages by (txid, seq).
CREATE TABLE usage_records (
    request_id          TEXT    NOT NULL,
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
    streamed            BOOLEAN NOT NULL,
    txid                BIGINT  NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    seq                 BIGINT  NOT NULL DEFAULT nextval('usage_records_seq'),
    PRIMARY KEY (request_id, created_at_us)
) PARTITION BY RANGE (created_at_us);

CREATE TABLE usage_records_default PARTITION OF usage_records DEFAULT;

CREATE INDEX usage_records_account ON usage_records (account_id, txid, seq);
CREATE INDEX usage_records_key ON usage_records (key_id, txid, seq);

-- Append-only. kind: 'topup', 'usage' (one debit per account per committed usage batch),
-- 'commission', 'refund', 'chargeback', 'commission_reversal', 'adjustment'. amount_units is
-- signed: credits > 0, debits < 0. Every non-usage entry is inserted under one advisory lock
-- (see `postgres::accounts`), so those commit in id order and the follower may page by id.
CREATE TABLE ledger_entries (
    id              BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id      TEXT    NOT NULL REFERENCES accounts (id),
    created_at_us   BIGINT  NOT NULL,
    kind            TEXT    NOT NULL,
    amount_units    BIGINT  NOT NULL,
    reference       TEXT,
    reason          TEXT
);

CREATE INDEX ledger_entries_account ON ledger_entries (account_id, id);
CREATE INDEX ledger_entries_followed ON ledger_entries (id) WHERE kind <> 'usage';
CREATE INDEX ledger_entries_account_followed ON ledger_entries (account_id, id) WHERE kind <> 'usage';

CREATE TABLE checkout_sessions (
    id                  TEXT    PRIMARY KEY,
    account_id          TEXT    NOT NULL REFERENCES accounts (id),
    provider            TEXT    NOT NULL,
    provider_session_id TEXT    NOT NULL,
    payment_url         TEXT    NOT NULL,
    -- The quote as JSON (decimal strings): what the builder accepted.
    quote               TEXT    NOT NULL,
    token_line_units    BIGINT  NOT NULL,
    currency            TEXT    NOT NULL,
    -- The total to charge, a decimal string in major units of currency.
    total               TEXT    NOT NULL,
    status              TEXT    NOT NULL,
    payment_id          TEXT,
    created_at_us       BIGINT  NOT NULL
);

CREATE INDEX checkout_sessions_account ON checkout_sessions (account_id, created_at_us);

-- One row per confirmed payment: the primary key is what makes a webhook retry a no-op.
CREATE TABLE payments (
    provider                  TEXT    NOT NULL,
    payment_id                TEXT    NOT NULL,
    session_id                TEXT    NOT NULL UNIQUE REFERENCES checkout_sessions (id),
    account_id                TEXT    NOT NULL REFERENCES accounts (id),
    credited_units            BIGINT  NOT NULL,
    referrer_id               TEXT    REFERENCES accounts (id),
    commission_units          BIGINT  NOT NULL,
    status                    TEXT    NOT NULL,
    reversed_units            BIGINT  NOT NULL DEFAULT 0,
    commission_reversed_units BIGINT  NOT NULL DEFAULT 0,
    created_at_us             BIGINT  NOT NULL,
    reversed_at_us            BIGINT,
    PRIMARY KEY (provider, payment_id)
);

CREATE INDEX payments_referrer ON payments (referrer_id);
CREATE INDEX payments_account ON payments (account_id);

-- FX rates set by the operator CLI; they override the config file's.
CREATE TABLE fx_rates (
    currency        TEXT    PRIMARY KEY,
    -- The FxRate as JSON (decimal strings).
    rate            TEXT    NOT NULL,
    updated_at_us   BIGINT  NOT NULL
);
