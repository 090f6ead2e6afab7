-- Several gateway nodes on one database: the node registry and budget leases
-- (`router_one_core::cluster`, design `scale-out.md` §3–§4). Money stays BIGINT units of
-- 10^-10 USD. Times of the registry and of lease closes are `timestamptz` from the database's
-- own clock (`now()`), unlike the µs columns elsewhere: liveness compares heartbeats of many
-- hosts, and the one clock they share is the database's.
--
-- Invariants (kept by `postgres::cluster` and the usage batch, checked by the store suite):
--   per scope:    leased_units = Σ GREATEST(amount_units - committed_units, 0) of its open leases
--   per key row:  spent_units + leased_units <= limit_units   (only a grant raises leased_units)
--   per account:  balance_units - leased_units >= 0          (only a grant raises leased_units)
-- They are not CHECK constraints: a usage record is never refused, so a record that spends
-- more than its lease held (an upstream reporting past the worst case, or a record arriving
-- after its node was forgotten) is stored and debited, and written to `overshoot_events`.
--
-- Lock order, everywhere (so concurrent grants, shrinks, closes, usage batches and payments
-- cannot deadlock): gateway_nodes row → api_keys rows (id order) → key_budgets rows
-- ((key_id, period_start_us) order) → accounts rows (id order) → leases rows (lease_id order).

-- One row per node id; `epoch` counts its starts (a run is (node_id, epoch)).
CREATE TABLE gateway_nodes (
    node_id         TEXT        PRIMARY KEY,
    epoch           BIGINT      NOT NULL,
    heartbeat_at    TIMESTAMPTZ NOT NULL,
    -- Usage records the current run's journal holds that are not committed yet.
    journal_pending BIGINT      NOT NULL DEFAULT 0,
    -- Set by `forget-node`: no run of the node is granted anything until it registers again.
    forgotten_at    TIMESTAMPTZ
);

-- Σ holds of the account's open leases: money promised to nodes, not spendable by others.
ALTER TABLE accounts ADD COLUMN leased_units BIGINT NOT NULL DEFAULT 0;

-- A key's `max_spend` in one budget period (period_start_us 0: lifetime), created on first
-- grant from the key's current max_spend and the spend of its records in that period. No
-- foreign key: a usage batch locks `api_keys` rows, and a key share lock taken by an insert
-- here would only add ways to wait.
CREATE TABLE key_budgets (
    key_id          TEXT    NOT NULL,
    period_start_us BIGINT  NOT NULL,
    limit_units     BIGINT  NOT NULL,
    -- Σ cost of the key's records in the period: the records at creation, then every record
    -- a usage batch draws on this row's leases.
    spent_units     BIGINT  NOT NULL DEFAULT 0,
    leased_units    BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, period_start_us)
);

-- One lease per scope per node run. scope_kind: 'a' an account's balance (period_start_us 0),
-- 'k' a key budget. hold = amount_units - committed_units. A closed lease holds nothing:
-- amount_units was set to committed_units when it closed (records arriving later still add to
-- committed_units, for the audit).
CREATE TABLE leases (
    lease_id        BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope_kind      TEXT        NOT NULL CHECK (scope_kind IN ('a', 'k')),
    scope_id        TEXT        NOT NULL,
    period_start_us BIGINT      NOT NULL,
    node_id         TEXT        NOT NULL,
    node_epoch      BIGINT      NOT NULL,
    amount_units    BIGINT      NOT NULL,
    committed_units BIGINT      NOT NULL DEFAULT 0,
    closed_at       TIMESTAMPTZ,
    UNIQUE (scope_kind, scope_id, period_start_us, node_id, node_epoch)
);

CREATE INDEX leases_open_by_node ON leases (node_id, node_epoch) WHERE closed_at IS NULL;

-- Written by a usage batch when a record spent more than its lease held (or its lease was
-- missing or closed) and the scope's invariant is broken afterwards. Should stay empty:
-- alert material.
CREATE TABLE overshoot_events (
    id              BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    scope_kind      TEXT        NOT NULL,
    scope_id        TEXT        NOT NULL,
    period_start_us BIGINT      NOT NULL,
    node_id         TEXT        NOT NULL,
    node_epoch      BIGINT      NOT NULL,
    -- 'open', 'closed' or 'missing': the lease the records drew on, when the batch ran.
    lease_state     TEXT        NOT NULL,
    -- Σ cost of this batch's records on the lease that its hold did not cover.
    unheld_units    BIGINT      NOT NULL,
    -- How far past the invariant the scope is after the batch: spent + leased - limit (key),
    -- leased - balance (account); saturated.
    over_units      BIGINT      NOT NULL,
    -- The batch's first and last request ids on the lease.
    first_request   TEXT        NOT NULL,
    last_request    TEXT        NOT NULL
);

-- The node run whose leases paid for a record (NULL: a single node, no leases), so an audit
-- can find every record's leases.
ALTER TABLE usage_records
    ADD COLUMN node_id             TEXT,
    ADD COLUMN node_epoch          BIGINT,
    ADD COLUMN key_period_start_us BIGINT;

-- Extends (p_node, p_epoch)'s lease on one scope by up to p_ask, at least p_min: one round
-- trip, atomic, and the only statement that raises `leased_units`. The node row is locked
-- FOR SHARE first, so a register (new epoch) or a forget waits for grants in flight and every
-- later grant sees it; then the scope row FOR NO KEY UPDATE, which returns its latest version
-- (READ COMMITTED), so two grants cannot both take the last unit. Arithmetic on the scope is
-- NUMERIC, so no value stored can make it overflow.
-- status: 'granted', 'refused' (less than p_min available), 'fenced' (not the node's current
-- run, or forgotten), 'no_scope' (no such account / key budget row yet).
CREATE FUNCTION grant_lease(p_kind TEXT, p_scope TEXT, p_period BIGINT, p_node TEXT, p_epoch BIGINT,
                            p_ask BIGINT, p_min BIGINT,
                            OUT status TEXT, OUT granted BIGINT, OUT available BIGINT, OUT holders BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    v_available NUMERIC;
    v_current   BOOLEAN;
BEGIN
    granted := 0;
    PERFORM 1 FROM gateway_nodes
     WHERE node_id = p_node AND epoch = p_epoch AND forgotten_at IS NULL FOR SHARE;
    v_current := FOUND;
    IF p_kind = 'k' THEN
        IF v_current THEN
            SELECT limit_units::numeric - spent_units - leased_units INTO v_available FROM key_budgets
             WHERE key_id = p_scope AND period_start_us = p_period FOR NO KEY UPDATE;
        ELSE
            SELECT limit_units::numeric - spent_units - leased_units INTO v_available FROM key_budgets
             WHERE key_id = p_scope AND period_start_us = p_period;
        END IF;
    ELSE
        IF v_current THEN
            SELECT balance_units::numeric - leased_units INTO v_available FROM accounts
             WHERE id = p_scope FOR NO KEY UPDATE;
        ELSE
            SELECT balance_units::numeric - leased_units INTO v_available FROM accounts WHERE id = p_scope;
        END IF;
    END IF;
    IF NOT FOUND THEN
        status := 'no_scope';
        available := 0;
        holders := 0;
        RETURN;
    END IF;
    v_available := GREATEST(v_available, 0);
    IF NOT v_current THEN
        status := 'fenced';
    ELSIF LEAST(p_ask, v_available) < GREATEST(p_min, 1) THEN
        status := 'refused';
    ELSE
        status := 'granted';
        -- ≤ available, so leased + granted ≤ limit - spent (or ≤ balance): no overflow.
        granted := LEAST(p_ask, v_available)::bigint;
        v_available := v_available - granted;
        IF p_kind = 'k' THEN
            UPDATE key_budgets SET leased_units = leased_units + granted
             WHERE key_id = p_scope AND period_start_us = p_period;
        ELSE
            UPDATE accounts SET leased_units = leased_units + granted WHERE id = p_scope;
        END IF;
        INSERT INTO leases AS l (scope_kind, scope_id, period_start_us, node_id, node_epoch, amount_units)
        VALUES (p_kind, p_scope, p_period, p_node, p_epoch, granted)
        ON CONFLICT (scope_kind, scope_id, period_start_us, node_id, node_epoch)
        DO UPDATE SET amount_units = l.amount_units + EXCLUDED.amount_units WHERE l.closed_at IS NULL;
        IF NOT FOUND THEN
            -- Unreachable while the node row is locked: a run's leases close only once it is
            -- no longer current, or forgotten.
            RAISE EXCEPTION 'lease of % on %/% is closed', p_node, p_scope, p_period;
        END IF;
    END IF;
    available := LEAST(v_available, 9223372036854775807)::bigint;
    -- Other runs holding money of the scope (a lease with nothing left to spend does not count):
    -- while there are some, a refusal here is transient for the asking node.
    SELECT count(*) INTO holders FROM leases
     WHERE scope_kind = p_kind AND scope_id = p_scope AND period_start_us = p_period AND closed_at IS NULL
       AND amount_units > committed_units AND NOT (node_id = p_node AND node_epoch = p_epoch);
END $$;

-- Gives back up to p_amount of (p_node, p_epoch)'s open lease on one scope: at most its hold.
-- Not fenced (a run that is no longer current may still give back). Locks the scope row, then
-- the lease row (the lock order). Returns what was given back.
CREATE FUNCTION shrink_lease(p_kind TEXT, p_scope TEXT, p_period BIGINT, p_node TEXT, p_epoch BIGINT,
                             p_amount BIGINT)
RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    v_given BIGINT;
BEGIN
    IF p_kind = 'k' THEN
        PERFORM 1 FROM key_budgets WHERE key_id = p_scope AND period_start_us = p_period FOR NO KEY UPDATE;
    ELSE
        PERFORM 1 FROM accounts WHERE id = p_scope FOR NO KEY UPDATE;
    END IF;
    -- amount and committed are ≥ 0, so their difference cannot overflow.
    UPDATE leases l SET amount_units = l.amount_units - g.given
      FROM (SELECT lease_id, LEAST(GREATEST(p_amount, 0), GREATEST(amount_units - committed_units, 0)) AS given
              FROM leases
             WHERE scope_kind = p_kind AND scope_id = p_scope AND period_start_us = p_period
               AND node_id = p_node AND node_epoch = p_epoch AND closed_at IS NULL
               FOR UPDATE) g
     WHERE l.lease_id = g.lease_id
    RETURNING g.given INTO v_given;
    v_given := COALESCE(v_given, 0);
    IF v_given > 0 THEN
        IF p_kind = 'k' THEN
            UPDATE key_budgets SET leased_units = leased_units - v_given
             WHERE key_id = p_scope AND period_start_us = p_period;
        ELSE
            UPDATE accounts SET leased_units = leased_units - v_given WHERE id = p_scope;
        END IF;
    END IF;
    RETURN v_given;
END $$;
