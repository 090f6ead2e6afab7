-- Issue 10: constraints that refuse what the code never writes, so no stored row can stop the
-- gateway from starting. SQLite adds CHECKs only by rebuilding a table, so `api_keys` and
-- `accounts` are rebuilt here, keeping every row. The store runs its migrations with foreign
-- keys off (SQLite's way to rebuild a referenced table) and checks them afterwards.
--
-- * Integers: `typeof(x) = 'integer'`. SQLite turns an integer sum that overflows into REAL
--   (`spend_units + $1` did, and the key could no longer be loaded); the code now adds in Rust
--   with checked arithmetic, and these checks refuse a REAL however it would arrive. REALs
--   already stored are CAST back (SQLite saturates at the i64 bounds).
-- * Signs: counts, limits, caps and spend are never negative.
-- * Sizes: `name` and `metadata` are bounded by the API (200 characters, 8 KiB); the columns
--   by a backstop above that (1,000 characters, 64 KiB), so a key written before the API
--   bounds existed keeps working. JSON columns must hold the JSON type the code reads.
--
-- A key that breaks a check and cannot be repaired (a 30 MB name, say) is moved to
-- `quarantined_api_keys` with all its columns, so the operator can inspect it; the gateway
-- logs such keys (ids only) at every start and never loads them.
--
-- `usage_records` is not rebuilt: its rows are only ever inserted with bound 64-bit integers
-- (no SQL arithmetic), and a check there could only refuse a usage record, which would stall
-- the batched writer; the writer makes every record valid instead.

CREATE TABLE accounts_new (
    id              TEXT    PRIMARY KEY,
    email           TEXT    NOT NULL UNIQUE,
    balance_units   BIGINT  NOT NULL CHECK (typeof(balance_units) = 'integer'),
    created_at_us   BIGINT  NOT NULL CHECK (typeof(created_at_us) = 'integer'),
    password_hash   TEXT,
    invite_code     TEXT,
    referred_by     TEXT    REFERENCES accounts (id)
);

INSERT INTO accounts_new (id, email, balance_units, created_at_us, password_hash, invite_code, referred_by)
SELECT id, email,
       CASE WHEN typeof(balance_units) = 'real' THEN CAST(balance_units AS INTEGER) ELSE balance_units END,
       created_at_us, password_hash, invite_code, referred_by
FROM accounts;

DROP TABLE accounts;
ALTER TABLE accounts_new RENAME TO accounts;
CREATE UNIQUE INDEX accounts_invite_code ON accounts (invite_code);
CREATE INDEX accounts_referred_by ON accounts (referred_by);

CREATE TABLE api_keys_new (
    id              TEXT    PRIMARY KEY,
    account_id      TEXT    NOT NULL REFERENCES accounts (id),
    secret_hash     TEXT    NOT NULL UNIQUE,
    hint            TEXT    NOT NULL CHECK (length(hint) <= 64),
    name            TEXT    CHECK (name IS NULL OR length(name) <= 1000),
    max_spend_units BIGINT  CHECK (max_spend_units IS NULL
                                   OR (typeof(max_spend_units) = 'integer' AND max_spend_units >= 0)),
    budget_period   TEXT    NOT NULL CHECK (budget_period IN ('none', 'daily', 'weekly', 'monthly')),
    rpm_limit       BIGINT  CHECK (rpm_limit IS NULL OR (typeof(rpm_limit) = 'integer' AND rpm_limit >= 0)),
    tpm_limit       BIGINT  CHECK (tpm_limit IS NULL OR (typeof(tpm_limit) = 'integer' AND tpm_limit >= 0)),
    max_concurrency BIGINT  CHECK (max_concurrency IS NULL
                                   OR (typeof(max_concurrency) = 'integer' AND max_concurrency >= 0)),
    -- JSON array of model ids; NULL allows every model.
    models          TEXT    CHECK (models IS NULL OR (length(CAST(models AS BLOB)) <= 65536
                                   AND json_valid(models) AND json_type(models) = 'array')),
    expires_at_us   BIGINT  CHECK (expires_at_us IS NULL OR typeof(expires_at_us) = 'integer'),
    -- JSON object: the builder's own data.
    metadata        TEXT    NOT NULL CHECK (length(CAST(metadata AS BLOB)) <= 65536
                                   AND json_valid(metadata) AND json_type(metadata) = 'object'),
    created_at_us   BIGINT  NOT NULL CHECK (typeof(created_at_us) = 'integer'),
    revoked_at_us   BIGINT  CHECK (revoked_at_us IS NULL OR typeof(revoked_at_us) = 'integer'),
    -- Lifetime spend: Σ usage_records.cost_units of this key.
    spend_units     BIGINT  NOT NULL DEFAULT 0 CHECK (typeof(spend_units) = 'integer' AND spend_units >= 0)
);

-- OR IGNORE skips exactly the rows that break a check; they are quarantined just below.
INSERT OR IGNORE INTO api_keys_new (id, account_id, secret_hash, hint, name, max_spend_units, budget_period,
    rpm_limit, tpm_limit, max_concurrency, models, expires_at_us, metadata, created_at_us, revoked_at_us,
    spend_units)
SELECT id, account_id, secret_hash, hint, name, max_spend_units, budget_period, rpm_limit, tpm_limit,
       max_concurrency, models, expires_at_us, metadata, created_at_us, revoked_at_us,
       CASE WHEN typeof(spend_units) = 'real' THEN CAST(spend_units AS INTEGER) ELSE spend_units END
FROM api_keys;

CREATE TABLE quarantined_api_keys AS
SELECT * FROM api_keys WHERE id NOT IN (SELECT id FROM api_keys_new);

DROP TABLE api_keys;
ALTER TABLE api_keys_new RENAME TO api_keys;
CREATE INDEX api_keys_account ON api_keys (account_id, created_at_us);
