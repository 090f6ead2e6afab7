-- The ledger follower reads only non-`usage` entries (`ledger_since`, `ledger_head` and each
-- account's `ledger_head`), while `usage` debits are one per account per usage batch and soon
-- outnumber everything else: these partial indexes find the followed entries without walking
-- past the usage debits. PostgreSQL has the same two.
CREATE INDEX ledger_entries_followed ON ledger_entries (id) WHERE kind <> 'usage';
CREATE INDEX ledger_entries_account_followed ON ledger_entries (account_id, id) WHERE kind <> 'usage';
