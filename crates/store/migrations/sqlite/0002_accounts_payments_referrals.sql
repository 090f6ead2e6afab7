-- Issue 5: logins, invite codes and referrals, named management keys, checkout sessions,
-- payments (exactly once per provider payment id) and operator FX rates. Same conventions as
-- 0001: money in BIGINT units of 10^-10 USD, times in µs, no prompt or completion anywhere.

-- argon2id PHC string; NULL for accounts made by the operator CLI (no password login).
ALTER TABLE accounts ADD COLUMN password_hash TEXT;
-- Existing accounts get a code derived from their id (its last 8 characters, or the whole id
-- should two accounts share those; upper case, as typed codes are upper-cased before matching);
-- new ones a random 8-character code. Every writer sets it, so it is never NULL although SQLite
-- cannot add NOT NULL to an existing table.
ALTER TABLE accounts ADD COLUMN invite_code TEXT;
UPDATE accounts SET invite_code = CASE
    WHEN (SELECT COUNT(*) FROM accounts b WHERE upper(substr(b.id, -8)) = upper(substr(accounts.id, -8))) = 1
    THEN upper(substr(id, -8))
    ELSE upper(id)
END WHERE invite_code IS NULL;
CREATE UNIQUE INDEX accounts_invite_code ON accounts (invite_code);
-- The inviter, forever (set at sign-up, or once before the first top-up).
ALTER TABLE accounts ADD COLUMN referred_by TEXT REFERENCES accounts (id);
CREATE INDEX accounts_referred_by ON accounts (referred_by);

ALTER TABLE management_keys ADD COLUMN hint TEXT NOT NULL DEFAULT 'sk-rm-…';
ALTER TABLE management_keys ADD COLUMN name TEXT;

-- Existing ledger kinds are renamed to the new vocabulary: the opening/top-up 'credit' is an
-- operator adjustment (no payment existed before this migration).
UPDATE ledger_entries SET kind = 'adjustment' WHERE kind = 'credit';

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
    provider                TEXT    NOT NULL,
    payment_id              TEXT    NOT NULL,
    session_id              TEXT    NOT NULL UNIQUE REFERENCES checkout_sessions (id),
    account_id              TEXT    NOT NULL REFERENCES accounts (id),
    credited_units          BIGINT  NOT NULL,
    referrer_id             TEXT    REFERENCES accounts (id),
    commission_units        BIGINT  NOT NULL,
    status                  TEXT    NOT NULL,
    reversed_units          BIGINT  NOT NULL DEFAULT 0,
    commission_reversed_units BIGINT NOT NULL DEFAULT 0,
    created_at_us           BIGINT  NOT NULL,
    reversed_at_us          BIGINT,
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
